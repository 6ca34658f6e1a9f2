"""Issue 15 (defect 10, and the refusals of the metrics): one event vocabulary for every
protocol's session log, in human and JSON form, and every IMAP/POP3 refusal counted in
``mailstead_rejections_total{protocol,reason}``.

On the in-process harness (the real protocols, the real store); the daemon's JSON logs
are checked end to end in test_cli.py."""

from __future__ import annotations

import asyncio
import json
import logging
import poplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imap_harness import ImapWorld, running_world
from mailstead.cli import JsonFormatter
from mailstead.eventlog import FIELDS
from mailstead.metrics import install_metrics
from pop3_harness import MemoryPOP3


class Captured(logging.Handler):
    """The event records, formatted both ways."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.json: list[dict[str, Any]] = []
        self.human: list[str] = []
        self.levels: list[str] = []
        self._json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.json.append(json.loads(self._json.format(record)))
        self.human.append(record.getMessage())

    def of(self, proto: str) -> list[dict[str, Any]]:
        return [e for e in self.json if e["proto"] == proto]


@pytest.fixture
def events() -> Iterator[Captured]:
    logger = logging.getLogger("mailstead.events")
    handler = Captured()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def rejections(world: ImapWorld, proto: str, reason: str) -> float:
    value = world.ctx.metrics.registry.get_sample_value(
        "mailstead_rejections_total", {"protocol": proto, "reason": reason}
    )
    return value or 0.0


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_imap_and_pop3_sessions_speak_the_same_events(
    tmp_path: Path, events: Captured
) -> None:
    async with running_world(tmp_path, {"auth": {"failure_delay": 0.01}}) as world:
        name = await world.add_user()
        imap = await world.connect()
        bad = await imap.cmd(f"LOGIN {name} wrong")
        assert not bad.ok
        await imap.login(name)
        await imap.cmd("LOGOUT")
        await imap.settle()
        pop = await world.pop3()
        await pop.user(name)
        with pytest.raises(poplib.error_proto):
            await pop.pass_("wrong")
        await pop.login(name)
        await pop.quit()
        await pop.settle()
        await settle()
    sequences = {}
    for proto in ("imap", "pop3"):
        entries = events.of(proto)
        sequences[proto] = [(e["event"], e["level"]) for e in entries]
        assert all(set(FIELDS) - {"user", "mech", "reason"} <= e.keys() for e in entries)
        assert len({e["session_id"] for e in entries}) == 1, entries
        assert all(e["remote"] == "127.0.0.1:40000" and e["tls"] is False for e in entries)
        failed = next(e for e in entries if e["event"] == "login_failed")
        assert failed["user"] == name and failed["reason"] == "failed"
        login = next(e for e in entries if e["event"] == "login")
        assert login["user"] == name and login["mech"] == ("LOGIN" if proto == "imap" else "USER")
        assert entries[-1]["event"] == "disconnect" and entries[-1]["user"] == name
    assert sequences["imap"] == sequences["pop3"] == [
        ("connect", "info"), ("login_failed", "warning"), ("login", "info"),
        ("logout", "info"), ("disconnect", "info"),
    ]
    # The human form: one line, the protocol and event first, the fields as key=value.
    line = next(h for h in events.human if h.startswith("pop3 login "))
    assert f"user={name}" in line and "mech=USER" in line and "remote=127.0.0.1:40000" in line


async def test_sasl_mechanism_and_a_hostile_user_name_stay_one_token(
    tmp_path: Path, events: Captured
) -> None:
    import base64

    async with running_world(tmp_path, {"auth": {"failure_delay": 0.01}}) as world:
        name = await world.add_user()
        imap = await world.connect()
        blob = base64.b64encode(f"\0{name}\0secret".encode()).decode()
        assert (await imap.cmd(f"AUTHENTICATE PLAIN {blob}")).ok
        other = await world.connect()
        assert not (await other.cmd('LOGIN "a b=c\\"d" x')).ok
    login = next(e for e in events.json if e["event"] == "login")
    assert login["mech"] == "PLAIN" and login["user"] == name
    failed = next(h for h in events.human if " login_failed " in h)
    assert 'user="a b=c\\"d"' in failed


async def test_a_throttle_block_is_logged_and_counted_for_both_protocols(
    tmp_path: Path, events: Captured
) -> None:
    config = {"auth": {"failure_delay": 0.01, "failure_burst": 2, "throttle_loopback": True}}
    async with running_world(tmp_path, config) as world:
        install_metrics(world.ctx)
        name = await world.add_user()
        imap = await world.connect()
        for _ in range(2):
            assert not (await imap.cmd(f"LOGIN {name} wrong")).ok
        blocked = await world.connect()
        reply = await blocked.cmd(f"LOGIN {name} secret")
        assert b"[UNAVAILABLE]" in reply.tagged
        pop = await world.pop3()
        await pop.user(name)
        with pytest.raises(poplib.error_proto, match="SYS/TEMP"):
            await pop.pass_("secret")
        assert rejections(world, "imap", "failed_logins") == 1
        assert rejections(world, "pop3", "failed_logins") == 1
    lines = [e for e in events.json if e["event"] == "blocked"]
    assert [(e["proto"], e["level"], e["reason"], e["user"]) for e in lines] == [
        ("imap", "warning", "failed_logins", name), ("pop3", "warning", "failed_logins", name),
    ]


async def test_connection_caps_and_session_limits_are_counted_by_reason(
    tmp_path: Path, events: Captured
) -> None:
    config = {"limits": {"max_connections_per_ip": 1, "max_sessions_per_user": 1}}
    async with running_world(tmp_path, config) as world:
        install_metrics(world.ctx)
        name = await world.add_user()
        first = await world.login(name)
        refused = await world.connect(greeting=False)
        assert (await refused.response()).startswith(b"* BYE")
        pop = await world.pop3()
        await pop.user(name)
        with pytest.raises(poplib.error_proto, match="IN-USE"):
            await pop.pass_("secret")  # the one session of this user is IMAP's
        second_pop = MemoryPOP3(world)
        with pytest.raises(poplib.error_proto):
            await second_pop.status()  # per-IP cap of POP3
        assert rejections(world, "imap", "per_ip") == 1
        assert rejections(world, "pop3", "per_ip") == 1
        assert rejections(world, "pop3", "sessions_per_user") == 1
        await first.cmd("LOGOUT")
    refusals = [(e["proto"], e["reason"]) for e in events.json if e["event"] == "refused"]
    assert refusals == [("imap", "per_ip"), ("pop3", "sessions_per_user"), ("pop3", "per_ip")]


async def test_the_connection_cap_is_counted_for_both_protocols(
    tmp_path: Path, events: Captured
) -> None:
    async with running_world(tmp_path, {"limits": {"max_connections": 1}}) as world:
        install_metrics(world.ctx)
        await world.connect()
        refused = await world.connect(greeting=False)
        assert (await refused.response()).startswith(b"* BYE")
        with pytest.raises(poplib.error_proto):
            await MemoryPOP3(world).status()
        assert rejections(world, "imap", "server_full") == 1
        assert rejections(world, "pop3", "server_full") == 1
    assert [(e["proto"], e["level"]) for e in events.json if e["event"] == "refused"] == [
        ("imap", "warning"), ("pop3", "warning"),
    ]


async def test_the_login_deadline_is_a_counted_timeout(tmp_path: Path, events: Captured) -> None:
    async with running_world(tmp_path, {"limits": {"login_timeout_seconds": 0.2}}) as world:
        install_metrics(world.ctx)
        imap = await world.connect()
        pop = await world.pop3()
        bye = await asyncio.wait_for(imap.response(), 5)
        assert bye.startswith(b"* BYE")
        with pytest.raises(poplib.error_proto):
            await asyncio.wait_for(pop.status(), 5)
        assert rejections(world, "imap", "login_deadline") == 1
        assert rejections(world, "pop3", "login_deadline") == 1
    timeouts = [(e["proto"], e["reason"]) for e in events.json if e["event"] == "timeout"]
    assert sorted(timeouts) == [("imap", "login_deadline"), ("pop3", "login_deadline")]
