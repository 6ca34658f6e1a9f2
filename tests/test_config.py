"""The typed configuration: every SCHEMA key as a typed attribute, env overrides included."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mailstead.config import SCHEMA, Config, ConfigError, Listen, load_config


def test_every_schema_key_is_an_attribute_with_its_default(tmp_path: Path) -> None:
    cfg = load_config(None, env={})
    for section, keys in SCHEMA.items():
        body = getattr(cfg, section)
        assert {f.name for f in dataclasses.fields(body)} == set(keys)
    assert cfg.limits.max_line_length == 65536
    assert cfg.auth.failure_delay == 0.5 and isinstance(cfg.auth.failure_delay, float)
    assert cfg.imap.listen == (Listen("127.0.0.1", 1143),)
    assert cfg.tls.cert is None and cfg.tls.key is None
    assert cfg.domains == ("localhost",)


def test_env_overrides_arrive_typed(tmp_path: Path) -> None:
    cfg = load_config(None, env={
        "MAILSTEAD_LIMITS__MAX_LINE_LENGTH": "1000",
        "MAILSTEAD_AUTH__FAILURE_DELAY": "2",
        "MAILSTEAD_POP3__RETR_SETS_SEEN": "false",
        "MAILSTEAD_IMAP__LISTEN": "127.0.0.1:1,[::1]:2",
        "MAILSTEAD_SERVER__DOMAINS": '["Example.ORG"]',
        "MAILSTEAD_TLS__CERT": "c.pem",
        "MAILSTEAD_TLS__KEY": "k.pem",
    })  # fmt: skip
    assert cfg.limits.max_line_length == 1000
    assert cfg.auth.failure_delay == 2.0 and isinstance(cfg.auth.failure_delay, float)
    assert cfg.pop3.retr_sets_seen is False
    assert cfg.imap.listen == (Listen("127.0.0.1", 1), Listen("::1", 2))
    assert cfg.domains == ("example.org",)
    assert cfg.tls_paths() == (Path.cwd() / "c.pem", Path.cwd() / "k.pem")
    with pytest.raises(ConfigError, match=r"\[limits\] max_line_length: expected an integer"):
        load_config(None, env={"MAILSTEAD_LIMITS__MAX_LINE_LENGTH": "many"})


def test_the_config_is_frozen_and_changed_by_replace() -> None:
    cfg = load_config(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.limits.max_line_length = 1  # type: ignore[misc]
    limits = dataclasses.replace(cfg.limits, max_line_length=1)
    changed = dataclasses.replace(cfg, limits=limits)
    assert isinstance(changed, Config) and changed.limits.max_line_length == 1
    assert cfg.limits.max_line_length == 65536


def test_listeners_follow_the_sections_in_order(tmp_path: Path) -> None:
    file = tmp_path / "m.toml"
    file.write_text('[imap]\nlisten_tls = ["127.0.0.1:993"]\n[http]\nlisten = ["[::1]:80"]\n')
    cfg = load_config(file, env={})
    assert [(p, k, str(a)) for p, k, a in cfg.listeners()] == [
        ("imap", "plain", "127.0.0.1:1143"), ("imap", "tls", "127.0.0.1:993"),
        ("pop3", "plain", "127.0.0.1:1110"), ("smtp", "plain", "127.0.0.1:1025"),
        ("lmtp", "plain", "127.0.0.1:1024"), ("http", "plain", "[::1]:80"),
    ]  # fmt: skip
    assert cfg.needs_tls() and cfg.path == file.resolve()


def test_a_schema_key_without_its_field_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailstead import config

    monkeypatch.setitem(SCHEMA["limits"], "max_widgets", (int, 1))
    with pytest.raises(AssertionError, match=r"\[limits\] fields of LimitsSection .*max_widgets"):
        config._check_sections_match_schema()
