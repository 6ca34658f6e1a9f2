"""Outbound delivery over real loopback sockets: an aiosmtpd "remote MX" on 127.0.0.2,
the stub DNS server, the real store; retries, bounces, routes, smarthost."""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailstead.outbound.dsn import Failure, build_dsn
from mailstead.outbound.mx import order_mx
from mailstead.store.api import Appended, ChangeBatch
from outbound_harness import Sink, World, start_dns, start_smtp, tls_pair, until, write_config


@pytest.fixture
async def mx(tmp_path: Path) -> AsyncIterator[Sink]:
    ctx, _ = tls_pair(tmp_path / "mxtls", "mx.example.net")
    sink = Sink()
    server, port = await start_smtp(sink, tls=ctx)
    sink.port = port  # type: ignore[attr-defined]
    yield sink
    server.close()
    await server.wait_closed()


async def open_world(tmp_path: Path, sink: Sink, *, start: bool = True, queue: str = "",
                     extra: str = "") -> tuple[World, object]:
    dns = await start_dns()
    cfg = write_config(tmp_path / "w", sink.port, dns.port, extra, queue)  # type: ignore[attr-defined]
    world = await World(cfg).open(start)
    return world, dns


async def close_world(world: World, dns: object) -> None:
    await world.close()
    dns.stop()  # type: ignore[attr-defined]


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def dsn_fields(data: bytes) -> tuple[str, list[dict[str, str]]]:
    """(report-type, per-recipient fields) of a DSN, read with the email package."""
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    blocks = parts[1].get_payload()
    per_rcpt = [dict(block.items()) for block in blocks[1:]]
    return msg.get_param("report-type"), per_rcpt


async def test_delivers_to_the_mx_in_one_transaction_over_starttls(
    tmp_path: Path, mx: Sink
) -> None:
    world, dns = await open_world(tmp_path, mx)
    try:
        qid = await world.enqueue(["bob@example.net", "carol@example.net"])
        await until(lambda: mx.received, what="delivery")
        await until(lambda: _gone(world, qid), what="queue entry gone")
        (got,) = mx.received
        assert got.mail_from == "alice@example.org"
        assert sorted(got.rcpts) == ["bob@example.net", "carol@example.net"]
        assert got.tls  # STARTTLS was offered, so it was used
        assert b"\r\nSubject: test\r\n" in got.data
        assert await world.inbox() == []
        assert ("outbound_delivered", {}) in world.counts
    finally:
        await close_world(world, dns)


async def _gone(world: World, qid: int) -> bool:
    return await world.store.queue_message(qid) is None


async def test_messages_of_one_domain_share_a_connection(tmp_path: Path, mx: Sink) -> None:
    world, dns = await open_world(tmp_path, mx, start=False)
    try:
        for i in range(3):
            await world.enqueue([f"r{i}@example.net"], body=f"message {i}")
        assert world.queue is not None
        world.queue.start()
        await until(lambda: len(mx.received) == 3, what="three deliveries")
        assert mx.connections == 1
        assert [r.rcpts for r in mx.received] == [["r0@example.net"], ["r1@example.net"],
                                                   ["r2@example.net"]]
    finally:
        await close_world(world, dns)


async def test_4xx_is_retried_and_then_delivered_once(tmp_path: Path, mx: Sink) -> None:
    mx.data_replies = ["451 4.3.0 try again later"]
    world, dns = await open_world(tmp_path, mx)
    try:
        qid = await world.enqueue(["bob@example.net"])
        await until(lambda: mx.datas == 1, what="first attempt")
        await until(lambda: _gone(world, qid), what="delivered on retry")
        assert len(mx.received) == 1 and mx.datas == 2
        assert await world.inbox() == []
        assert ("outbound_deferred", {}) in world.counts
    finally:
        await close_world(world, dns)


async def test_deferral_is_recorded_with_backoff(tmp_path: Path, mx: Sink) -> None:
    mx.data_replies = ["452 4.2.2 mailbox full"] * 5
    world, dns = await open_world(tmp_path, mx, queue="", extra="")
    try:
        qid = await world.enqueue(["bob@example.net"])
        await until(lambda: mx.datas >= 1, what="first attempt")

        async def recorded() -> bool:
            msg = await world.store.queue_message(qid)
            return msg is not None and msg.recipients[0].attempts == 1

        await until(recorded, what="the attempt recorded")
        msg = await world.store.queue_message(qid)
        assert msg is not None
        (rcpt,) = msg.recipients
        assert rcpt.state == "pending" and rcpt.last_reply.startswith("452 4.2.2")
        assert 0.2 < rcpt.next_attempt - msg.created < 5  # retry_first = 0.3 s
    finally:
        await close_world(world, dns)


async def test_5xx_gives_exactly_one_dsn_for_the_failed_recipients(
    tmp_path: Path, mx: Sink
) -> None:
    mx.rcpt_replies = {"nobody@example.net": "550 5.1.1 no such user",
                       "gone@example.net": "550 5.1.1 gone"}
    world, dns = await open_world(tmp_path, mx)
    user = await world.store.get_user("alice")
    assert user is not None
    inbox = await world.store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    pushed: list[ChangeBatch] = []
    sub = world.store.hub.subscribe(inbox.id, pushed.append)  # what an IDLE session hears
    try:
        qid = await world.enqueue(["bob@example.net", "nobody@example.net", "gone@example.net"])
        await until(lambda: _gone(world, qid), what="settled")
        await asyncio.sleep(0.8)  # several poll intervals: nothing more may come
        assert [r.rcpts for r in mx.received] == [["bob@example.net"]]
        (dsn,) = await world.inbox()
        kind, rcpts = dsn_fields(dsn)
        assert kind == "delivery-status"
        assert sorted(r["Final-Recipient"] for r in rcpts) == [
            "rfc822; gone@example.net", "rfc822; nobody@example.net"]
        assert {r["Status"] for r in rcpts} == {"5.1.1"}
        assert all(r["Action"] == "failed" for r in rcpts)
        assert b"Subject: test" in dsn  # the original header is returned
        assert any(isinstance(e, Appended) for b in pushed for e in b.events)
        assert ("outbound_bounces", {"reason": "rejected"}) in world.counts
    finally:
        sub.close()
        await close_world(world, dns)


async def test_expiry_gives_one_dsn(tmp_path: Path, mx: Sink) -> None:
    mx.data_replies = ["421 4.3.2 busy"] * 100
    world, dns = await open_world(tmp_path, mx, queue="queue_lifetime = 1.2")
    try:
        qid = await world.enqueue(["bob@example.net"])
        await until(lambda: _gone(world, qid), timeout=15, what="expired")
        await asyncio.sleep(0.8)
        (dsn,) = await world.inbox()
        _, (rcpt,) = dsn_fields(dsn)
        assert rcpt["Status"] == "4.4.7"
        assert "421 4.3.2 busy" in rcpt["Diagnostic-Code"]
        assert mx.datas >= 2 and mx.received == []
        assert ("outbound_bounces", {"reason": "expired"}) in world.counts
    finally:
        await close_world(world, dns)


async def test_null_mx_bounces_without_connecting(tmp_path: Path, mx: Sink) -> None:
    world, dns = await open_world(tmp_path, mx)
    try:
        qid = await world.enqueue(["someone@nullmx.test"])
        await until(lambda: _gone(world, qid), what="bounced")
        (dsn,) = await world.inbox()
        _, (rcpt,) = dsn_fields(dsn)
        assert rcpt["Status"] == "5.1.10"
        assert mx.connections == 0
        assert ("outbound_bounces", {"reason": "null_mx"}) in world.counts
    finally:
        await close_world(world, dns)


async def test_unknown_domain_bounces_and_null_sender_gets_no_bounce(
    tmp_path: Path, mx: Sink
) -> None:
    world, dns = await open_world(tmp_path, mx)
    try:
        qid = await world.enqueue(["x@no-such-domain.test"])
        quiet = await world.enqueue(["y@no-such-domain.test"], sender="")
        await until(lambda: _gone(world, qid), what="bounced")
        await until(lambda: _gone(world, quiet), what="dropped")
        await asyncio.sleep(0.5)
        (dsn,) = await world.inbox()
        _, (rcpt,) = dsn_fields(dsn)
        assert rcpt["Status"] == "5.1.2"
        assert await world.store.queue_list() == []  # no bounce queued for <>
    finally:
        await close_world(world, dns)


async def test_drop_mid_data_is_retried(tmp_path: Path, mx: Sink) -> None:
    mx.drops = 1
    world, dns = await open_world(tmp_path, mx)
    try:
        qid = await world.enqueue(["bob@example.net"])
        await until(lambda: _gone(world, qid), what="delivered after the drop")
        assert mx.datas == 2 and len(mx.received) == 1
        assert mx.connections == 2
        assert await world.inbox() == []
    finally:
        await close_world(world, dns)


async def test_mx_preference_fallback_and_implicit_mx(tmp_path: Path, mx: Sink) -> None:
    world, dns = await open_world(tmp_path, mx)
    try:
        first = await world.enqueue(["a@fallback.test"])  # pref 10 refuses connections
        second = await world.enqueue(["b@implicit.test"])  # no MX: the A record
        await until(lambda: _gone(world, first), what="fallback delivery")
        await until(lambda: _gone(world, second), what="implicit MX delivery")
        assert sorted(r.rcpts[0] for r in mx.received) == ["a@fallback.test",
                                                           "b@implicit.test"]
    finally:
        await close_world(world, dns)


def test_mx_order_is_by_preference_and_random_among_equals() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    seen = {tuple(order_mx(records, random.Random(seed))) for seed in range(40)}
    assert seen == {("a", "b", "c", "d"), ("b", "a", "c", "d")}


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
# aiosmtpd warns because it counts only STARTTLS as TLS; the implicit relay is all TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smarthost_with_auth_over_tls(tmp_path: Path, mode: str) -> None:
    ctx, ca = tls_pair(tmp_path / "relaytls", "localhost")
    sink = Sink()
    server, port = await start_smtp(sink, "127.0.0.1", tls=ctx, implicit=mode == "implicit",
                                    auth=True)
    sink.port = port  # type: ignore[attr-defined]
    relay = f"""
[relay]
host = "localhost"
port = {port}
tls = "{mode}"
ca_file = "{ca}"
username = "relayuser"
password = "relaypass"
"""
    world, dns = await open_world(tmp_path, sink, extra=relay)
    try:
        qid = await world.enqueue(["bob@anywhere.test"])  # no DNS needed: the relay takes it
        await until(lambda: _gone(world, qid), what="relayed")
        (got,) = sink.received
        assert got.rcpts == ["bob@anywhere.test"] and got.tls
        assert sink.logins == [(b"relayuser", b"relaypass")]
    finally:
        await close_world(world, dns)
        server.close()
        await server.wait_closed()


async def test_smarthost_with_wrong_password_defers(tmp_path: Path) -> None:
    ctx, ca = tls_pair(tmp_path / "relaytls", "localhost")
    sink = Sink()
    server, port = await start_smtp(sink, "127.0.0.1", tls=ctx, auth=True)
    sink.port = port  # type: ignore[attr-defined]
    relay = f"""
[relay]
host = "localhost"
port = {port}
ca_file = "{ca}"
username = "relayuser"
password = "wrong"
"""
    world, dns = await open_world(tmp_path, sink, extra=relay)
    try:
        qid = await world.enqueue(["bob@anywhere.test"])

        async def deferred() -> bool:
            msg = await world.store.queue_message(qid)
            return msg is not None and msg.recipients[0].attempts >= 1

        await until(deferred, what="deferred")
        msg = await world.store.queue_message(qid)
        assert msg is not None and msg.recipients[0].state == "pending"
        assert "AUTH refused" in msg.recipients[0].last_reply
        assert sink.received == [] and await world.inbox() == []
    finally:
        await close_world(world, dns)
        server.close()
        await server.wait_closed()


def test_dsn_is_a_well_formed_report() -> None:
    original = b"From: a@example.org\r\nSubject: hi\r\n\r\nsecret body\r\n"
    data = build_dsn(hostname="mail.example.org", sender="a@example.org", original=original,
                     arrival=1_700_000_000, failures=[
                         Failure("x@example.net", "550 5.7.1 refused", "mx.example.net"),
                         Failure("y@example.net", "554 no", None)])
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"secret body" not in data
    kind, rcpts = dsn_fields(data)
    assert kind == "delivery-status"
    assert [r["Status"] for r in rcpts] == ["5.7.1", "5.0.0"]
    assert rcpts[0]["Remote-MTA"] == "dns; mx.example.net"
    assert "Remote-MTA" not in rcpts[1]
    assert parse(data)["Auto-Submitted"] == "auto-replied"


async def test_stop_does_not_wait_for_a_silent_remote(tmp_path: Path, mx: Sink) -> None:
    mx.hangs = 1
    world, dns = await open_world(tmp_path, mx)
    try:
        qid = await world.enqueue(["bob@example.net"])
        await until(lambda: mx.datas == 1, what="DATA sent, never answered")
        assert world.queue is not None
        started = asyncio.get_running_loop().time()
        await world.queue.stop(0.3)
        assert asyncio.get_running_loop().time() - started < 3  # not command_timeout
        world.queue = None
        msg = await world.store.queue_message(qid)
        assert msg is not None and msg.recipients[0].state == "pending"  # sent again later
    finally:
        await close_world(world, dns)


def test_outbound_metrics_families() -> None:
    from mailstead.metrics import Metrics

    metrics = Metrics(queue_size=lambda: 7)
    for event in ("outbound_attempts", "outbound_delivered", "outbound_deferred"):
        metrics.count(event)
    metrics.count("outbound_bounces", reason="null_mx")
    text = metrics.render().decode()
    for line in ("mailstead_outbound_attempts_total 1.0",
                 "mailstead_outbound_deliveries_total 1.0",
                 "mailstead_outbound_deferrals_total 1.0",
                 'mailstead_outbound_bounces_total{reason="null_mx"} 1.0',
                 "mailstead_queue_recipients 7.0"):
        assert line in text
    with pytest.raises(ValueError):
        metrics.count("outbound_bounces")  # the reason is required


async def test_a_non_ascii_address_bounces_when_the_mx_lacks_smtputf8(
    tmp_path: Path, mx: Sink
) -> None:
    world, dns = await open_world(tmp_path, mx)
    try:
        qid = await world.enqueue(["jürgen@example.net"])
        await until(lambda: _gone(world, qid), what="bounced")
        (dsn,) = await world.inbox()
        _, (rcpt,) = dsn_fields(dsn)
        assert rcpt["Status"] == "5.6.7"
        assert mx.received == []
    finally:
        await close_world(world, dns)


async def test_a_failing_starttls_falls_back_to_plain_for_an_mx(tmp_path: Path) -> None:
    import ssl

    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: every handshake fails
    sink = Sink()
    server, port = await start_smtp(sink, tls=broken)
    sink.port = port  # type: ignore[attr-defined]
    world, dns = await open_world(tmp_path, sink)
    try:
        qid = await world.enqueue(["bob@example.net"])
        await until(lambda: _gone(world, qid), what="delivered in plain")
        (got,) = sink.received
        assert not got.tls and sink.connections == 2
    finally:
        await close_world(world, dns)
        server.close()
        await server.wait_closed()


async def test_an_outcome_the_store_refused_is_recorded_later_and_not_sent_again(
    tmp_path: Path, mx: Sink
) -> None:
    from mailstead.store.api import StorageFull

    world, dns = await open_world(tmp_path, mx, start=False)
    real = world.store.queue_record
    refused: list[int] = []

    async def full_once(queue_id: int, outcomes: object, bounce: object = None) -> None:
        if not refused:  # fault injection: the disk is full when the first 250 arrives
            refused.append(queue_id)
            raise StorageFull("the mail store is full")
        await real(queue_id, outcomes, bounce)  # type: ignore[arg-type]

    world.store.queue_record = full_once  # type: ignore[method-assign]
    try:
        qid = await world.enqueue(["bob@example.net"])
        assert world.queue is not None
        world.queue.start()
        await until(lambda: _gone(world, qid), what="recorded at the next look")
        await asyncio.sleep(0.6)
        assert refused == [qid] and len(mx.received) == 1 and mx.datas == 1
    finally:
        await close_world(world, dns)
