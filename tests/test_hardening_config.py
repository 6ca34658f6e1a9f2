"""Configuration that must not start a broken server (issue 12 #12): absurd line lengths,
and a configured certificate that is not there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BASE_CONFIG, ServerProcess
from mailstead.config import ConfigError, load_config
from mailstead.tls import TLSError, ensure_tls


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("value", [0, 1, 999, 1024 * 1024 + 1, 10**12])
def test_absurd_max_line_length_is_a_clear_error(tmp_path: Path, value: int) -> None:
    path = _config(tmp_path, f"[limits]\nmax_line_length = {value}\n")
    with pytest.raises(ConfigError, match=r"\[limits\] max_line_length: must be") as err:
        load_config(path, env={})
    assert "1,000" in str(err.value) and "1,048,576" in str(err.value)


@pytest.mark.parametrize("value", [1000, 4096, 65536, 1024 * 1024])
def test_sane_max_line_length_is_accepted(tmp_path: Path, value: int) -> None:
    cfg = load_config(_config(tmp_path, f"[limits]\nmax_line_length = {value}\n"), env={})
    assert cfg.limits.max_line_length == value


def test_the_environment_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_line_length"):
        load_config(None, env={"MAILSTEAD_LIMITS__MAX_LINE_LENGTH": "5"})


def test_the_example_config_is_valid() -> None:
    cfg = load_config(Path(__file__).resolve().parent.parent / "config" / "mailstead.toml",
                      env={})
    assert cfg.smtp.postmaster == ""


def test_a_configured_certificate_that_is_missing_is_not_generated(tmp_path: Path) -> None:
    cert, key = tmp_path / "live" / "cert.pem", tmp_path / "live" / "key.pem"
    with pytest.raises(TLSError, match="does not exist"):
        ensure_tls(cert, key, "mail.test", configured=True)
    assert not cert.exists() and not key.exists() and not (tmp_path / "live").exists()
    # The default location still gets a generated pair on a first run.
    ensure_tls(cert, key, "mail.test", configured=False)
    assert cert.exists() and key.exists()


def test_the_server_refuses_to_start_with_a_missing_configured_certificate(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path)
    srv.config.write_text(BASE_CONFIG + f"""
[tls]
cert = "{tmp_path / 'nowhere' / 'cert.pem'}"
key = "{tmp_path / 'nowhere' / 'key.pem'}"
""")
    res = subprocess.run([sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
                         capture_output=True, text=True, env=srv.env, timeout=60)
    assert res.returncode == 1
    assert "does not exist" in res.stderr and "cert.pem" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()
