"""Outbound operations: DKIM keys and signatures the remote verifies, the queue CLI, and
a server SIGKILLed with mail in flight that sends it exactly once after the restart."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import dkim
import dns.resolver
import pytest

from conftest import BASE_CONFIG, ServerProcess
from dns_stub import DnsStub
from mailstead.config import load_config
from mailstead.outbound.dkim import keygen
from mailstead.outbound.queue import OutboundQueue
from mailstead.store.sqlite import SqliteStore
from outbound_harness import (
    RECORDS,
    Sink,
    ThreadedMx,
    World,
    start_smtp,
    until,
    wait_sync,
    write_config,
)


@pytest.fixture
async def mx() -> AsyncIterator[Sink]:
    sink = Sink()
    server, port = await start_smtp(sink)
    sink.port = port  # type: ignore[attr-defined]
    yield sink
    server.close()
    await server.wait_closed()


def txt_rdata(record: str) -> str:
    """The rdata of ``keygen``'s zone-file line: the quoted strings inside ( )."""
    match = re.search(r"\((.*)\)", record)
    assert match
    return match.group(1).strip()


async def test_dkim_signatures_verify_at_the_remote_and_tampering_fails(
    tmp_path: Path, mx: Sink
) -> None:
    dns_stub = DnsStub(dict(RECORDS))
    dns_stub.start_thread()
    cfg = write_config(tmp_path / "w", mx.port, dns_stub.port)  # type: ignore[attr-defined]
    old = os.umask(0)  # keys and folders stay owner-only whatever the umask
    try:
        for selector, algorithm in (("r1", "rsa"), ("e1", "ed25519")):
            path, record = keygen(cfg.data_dir, "example.org", selector, algorithm)
            dns_stub.records[(f"{selector}._domainkey.example.org", "TXT")] = [
                txt_rdata(record)]
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
            assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    finally:
        os.umask(old)
    world = await World(cfg).open()
    try:
        await world.enqueue(["bob@example.net"], subject="signed")
        await until(lambda: mx.received, what="delivery")
        data = mx.received[0].data
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = dns_stub.port

        def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
            answer = resolver.resolve(name.decode(), "TXT")
            return b"".join(s for rdata in answer for s in rdata.strings)

        def verify(message: bytes) -> list[bool]:
            checker = dkim.DKIM(message)
            return [checker.verify(idx=i, dnsfunc=dnsfunc) for i in range(2)]

        assert await asyncio.to_thread(verify, data) == [True, True]
        header = data.split(b"\r\n\r\n", 1)[0].decode()
        algorithms = re.findall(r"a=([a-z0-9-]+);", header)
        assert sorted(algorithms) == ["ed25519-sha256", "rsa-sha256"]
        assert header.count("c=relaxed/relaxed") == 2
        for signed in re.findall(r"[;\s]h=([^;]+);", header.replace("\r\n", "")):
            fields = [f.strip().lower() for f in signed.split(":")]
            assert fields.count("from") == 2  # oversigned: no From: can be added
        tampered = data.replace(b"Subject: signed", b"Subject: changed")
        assert await asyncio.to_thread(verify, tampered) == [False, False]
        added = data.replace(b"\r\n\r\n", b"\r\nFrom: mallory@evil.test\r\n\r\n", 1)
        assert await asyncio.to_thread(verify, added) == [False, False]
    finally:
        await world.close()
        dns_stub.stop()


def outbound_config(mx_port: int, dns_port: int, retry_first: float = 0.3) -> str:
    return BASE_CONFIG + f"""
[queue]
retry_first = {retry_first}
retry_max = {max(retry_first, 0.6)}
poll_seconds = 0.5
connect_timeout = 5
command_timeout = 30
mx_port = {mx_port}

[dns]
nameservers = ["127.0.0.1"]
port = {dns_port}
"""


def enqueue_from_outside(srv: ServerProcess, rcpts: list[str]) -> int:
    """Queue a message through ``OutboundQueue.enqueue`` in this process, as a second
    process would: the server's runner finds it at its next look at the queue."""
    cfg = load_config(srv.config)

    async def run() -> int:
        store = SqliteStore(cfg.db_path)
        await store.open()
        try:
            queue = OutboundQueue(store, cfg)
            data = b"From: <alice@example.org>\r\nTo: x\r\nSubject: once\r\n\r\nhi\r\n"
            return await queue.enqueue("alice@example.org", rcpts, data)
        finally:
            await store.close()

    return asyncio.run(run())


def queue_json(srv: ServerProcess) -> list[dict[str, object]]:
    return json.loads(srv.cli("queue", "list", "--json").stdout)


def test_sigkill_with_mail_in_flight_sends_it_once_after_restart(tmp_path: Path) -> None:
    sink = Sink(hangs=1)  # the first DATA is never answered: not acknowledged
    mx = ThreadedMx(sink)
    dns_stub = DnsStub(dict(RECORDS))
    dns_stub.start_thread()
    srv = ServerProcess(tmp_path / "srv", outbound_config(mx.port, dns_stub.port))
    try:
        srv.start()
        srv.add_user("alice")
        qid = enqueue_from_outside(srv, ["bob@example.net"])
        wait_sync(lambda: sink.datas == 1, what="the first DATA")
        srv.kill()
        assert [m["id"] for m in queue_json(srv)] == [qid]  # nothing lost
        srv.start()
        wait_sync(lambda: not queue_json(srv), what="delivered after the restart")
        assert len(sink.received) == 1 and sink.received[0].rcpts == ["bob@example.net"]
        # Acknowledged and recorded: a later restart sends nothing again.
        srv.stop()
        srv.start()
        wait_sync(lambda: "Mailstead ready" in srv.log_text(), what="ready")
        import time

        time.sleep(1.5)
        assert sink.datas == 2 and len(sink.received) == 1
        srv.stop()
        assert "Traceback" not in srv.log_text(), srv.log_text()
    finally:
        srv.kill()
        mx.stop()
        dns_stub.stop()


def test_queue_cli_and_a_retry_the_running_server_picks_up(tmp_path: Path) -> None:
    sink = Sink(data_replies=["451 4.3.0 later"])
    mx = ThreadedMx(sink)
    dns_stub = DnsStub(dict(RECORDS))
    dns_stub.start_thread()
    # retry_first of an hour: only `queue retry` brings the second attempt within the test.
    srv = ServerProcess(tmp_path / "srv", outbound_config(mx.port, dns_stub.port, 3600))
    try:
        assert srv.cli("queue", "list").stdout.strip() == "the queue is empty"
        qid = enqueue_from_outside(srv, ["bob@example.net", "carol@example.net"])
        listed = srv.cli("queue", "list").stdout
        assert re.search(rf"^{qid}\s+<alice@example.org>\s+\d+\s.*\s2/2\s", listed, re.M)
        shown = srv.cli("queue", "show", str(qid)).stdout
        assert "Subject: once" in shown and "<carol@example.net>: pending, 0 attempts" in shown
        srv.start()
        wait_sync(lambda: sink.datas == 1, what="the first attempt")
        wait_sync(lambda: queue_json(srv)[0]["recipients"][0]["attempts"] == 1,  # type: ignore[index]
                  what="the deferral recorded")
        (entry,) = queue_json(srv)
        assert {r["last_reply"] for r in entry["recipients"]} == {"451 4.3.0 later"}  # type: ignore[index,union-attr]
        out = srv.cli("queue", "retry", str(qid)).stdout
        assert out.startswith("2 recipients due now")
        wait_sync(lambda: not queue_json(srv), timeout=10, what="the retried delivery")
        assert sorted(sink.received[0].rcpts) == ["bob@example.net", "carol@example.net"]
        # Errors are one line and a non-zero status.
        for args in (("show", str(qid)), ("retry", "999"), ("delete", str(qid), "--yes")):
            res = srv.cli("queue", *args, check=False)
            assert res.returncode == 1 and res.stderr.startswith("mailstead: no queued message")
        res = srv.cli("queue", "show", "abc", check=False)
        assert res.returncode == 2 and "not a queue id" in res.stderr
        # delete: a message to a host that refuses connections, dropped without a bounce
        other = enqueue_from_outside(srv, ["x@stuck.test"])
        assert srv.cli("queue", "delete", str(other), check=False).returncode == 1  # no tty
        assert srv.cli("queue", "delete", str(other), "--yes").stdout.startswith("deleted")
        assert queue_json(srv) == []
        srv.stop()
        assert "Traceback" not in srv.log_text(), srv.log_text()
        assert re.search(r"outbound: \d+ <alice@example.org> -> <bob@example.net> via "
                         r"mx.example.net\[127.0.0.2\]: 451 4.3.0 later \(deferred, attempt 1\)",
                         srv.log_text())
    finally:
        srv.kill()
        mx.stop()
        dns_stub.stop()


def test_dkim_keygen_cli(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "srv")
    out = srv.cli("dkim", "keygen", "Example.ORG", "--selector", "s1").stdout
    assert re.search(r'^s1\._domainkey\.example\.org\. IN TXT \( "v=DKIM1; k=rsa; p=', out,
                     re.M)
    key = srv.data / "dkim" / "example.org" / "s1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = srv.cli("dkim", "keygen", "example.org", "--selector", "s1", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    ed = srv.cli("dkim", "keygen", "example.org", "--selector", "e1", "--algorithm",
                 "ed25519").stdout
    assert "k=ed25519; p=" in ed
    bad = srv.cli("dkim", "keygen", "exa mple.org", check=False)
    assert bad.returncode == 1 and "not a DNS name" in bad.stderr
    # `mailstead check` names the route and the keys; a broken key is a warning.
    (key.parent / "broken.key").write_bytes(b"not a key")
    checked = srv.cli("check").stdout
    assert "outbound: each domain's MX, port 25" in checked
    assert "dkim: example.org selector s1 (rsa-sha256)" in checked
    assert "dkim: example.org selector e1 (ed25519-sha256)" in checked
    assert re.search(r"^warning: cannot read the DKIM key .*broken\.key", checked, re.M)
    assert "configuration OK" in checked
