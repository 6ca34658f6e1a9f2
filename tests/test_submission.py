"""Submission (587 STARTTLS, 465 implicit TLS) with smtplib over real loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import re
import smtplib
import time
from pathlib import Path

import pytest

from memory_session import MemorySession
from submission_harness import SubmissionWorld, message, open_submission


async def users(sub: SubmissionWorld, *names: str) -> None:
    for name in names:
        await sub.world.add_user(name)


async def test_starttls_login_delivers_locally_at_once_and_idle_sees_it(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice", "bob")
        watcher = await MemorySession.open(sub.world, "bob")
        await watcher.select()
        await watcher.idle()
        refused = await sub.client(sub.send, "alice", "alice@example.org",
                                   ["bob@example.org"],
                                   message("Alice <alice@example.org>", "bob@example.org"))
        assert refused == {}
        # In the store before the 250 (the client has its answer): IDLE hears at once.
        _, waited = await watcher.wait_for(rb"^\* 1 EXISTS$", timeout=5)
        assert waited < 1.0
        await watcher.done()
        await watcher.close()
        [stored] = await sub.world.messages("bob")
        assert stored.startswith(b"Return-Path: <alice@example.org>\r\nReceived: by mail.test")
        assert b"with ESMTPSA id " in stored
        assert re.search(rb"\r\nMessage-ID: <[0-9a-f]{24}@mail\.test>\r\n", stored)
        assert re.search(rb"\r\nDate: \w\w\w, \d", stored)
        assert b"127.0.0.1" not in stored and b"client.test" not in stored
        assert stored.endswith(b"Subject: hello\r\n\r\nHi there.\r\n")
        assert sub.queue.calls == []  # nothing remote


async def test_implicit_tls_465_hands_remote_recipients_to_the_queue(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice", "bob")
        msg = message("alice@example.org", "x@remote.example",
                      extra="Message-ID: <keep@client>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n")
        refused = await sub.client(sub.send, "alice@example.org", "alice@example.org",
                                   ["x@remote.example", "Y@Other.Example", "bob@example.org"],
                                   msg, "secret", "implicit")
        assert refused == {}
        [(sender, rcpts, data)] = sub.queue.calls
        assert sender == "alice@example.org"
        assert rcpts == ["x@remote.example", "Y@Other.Example"]  # one call, all remote ones
        assert data.count(b"Message-ID:") == 1 and b"<keep@client>" in data
        assert data.count(b"\r\nDate:") == 1
        assert data.startswith(b"Received: by mail.test (Mailstead) with ESMTPSA id ")
        assert not data.startswith(b"Return-Path")  # that is the final MTA's to add
        [local] = await sub.world.messages("bob")
        assert local.endswith(data)


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_no_auth_before_tls_and_nothing_before_auth(tmp_path: Path) -> None:
    cfg = {"auth": {"plaintext_on_loopback": False}}
    async with open_submission(tmp_path, cfg) as sub:
        await users(sub, "alice")

        def before_tls() -> tuple[object, ...]:
            conn = sub.smtp()
            try:
                offered = conn.has_extn("auth"), conn.has_extn("starttls")
                auth = conn.docmd("AUTH", "PLAIN " + _plain("alice", "secret"))
                mail = conn.docmd("MAIL", "FROM:<alice@example.org>")
                conn.starttls(context=sub.client_tls)
                conn.ehlo("client.test")
                after = (conn.esmtp_features.get("auth"),
                         conn.docmd("MAIL", "FROM:<alice@example.org>"))
                conn.login("alice", "secret")
                ok = conn.docmd("MAIL", "FROM:<alice@example.org>")
                return offered, auth, mail, after, ok
            finally:
                conn.close()

        offered, auth, mail, after, ok = await sub.client(before_tls)
        assert offered == (False, True)
        assert auth[0] == 538 and auth[1].startswith(b"5.7.11")
        assert mail[0] == 530
        assert after[0] == " LOGIN PLAIN" and after[1][0] == 530
        assert ok[0] == 250


async def test_loopback_may_authenticate_without_tls_when_configured(tmp_path: Path) -> None:
    async with open_submission(tmp_path, {"auth": {"plaintext_on_loopback": True}}) as sub:
        await users(sub, "alice")

        def plain_login() -> tuple[bool, tuple[int, bytes]]:
            conn = sub.smtp()
            try:
                offered = conn.has_extn("auth")
                return offered, conn.login("alice", "secret")
            finally:
                conn.close()

        offered, reply = await sub.client(plain_login)
        assert offered and reply[0] == 235


async def test_wrong_passwords_are_throttled_like_imap_logins(tmp_path: Path) -> None:
    cfg = {"auth": {"failure_delay": 0.2, "failure_delay_max": 0.2, "failure_burst": 3,
                    "throttle_loopback": True, "max_failures_per_connection": 10}}
    async with open_submission(tmp_path, cfg) as sub:
        await users(sub, "alice")

        def attempts() -> list[tuple[int, bytes, float]]:
            conn = sub.starttls()
            out = []
            try:
                for password in ("wrong1", "wrong2", "wrong3", "secret"):
                    start = time.monotonic()
                    code, text = conn.docmd("AUTH", "PLAIN " + _plain("alice", password))
                    out.append((code, text, time.monotonic() - start))
            finally:
                conn.close()
            return out

        results = await sub.client(attempts)
        assert [r[0] for r in results[:3]] == [535, 535, 535]
        assert all(r[2] >= 0.15 for r in results[:3]), results  # each failure waited
        # The burst blocked this address: the right password is not even checked...
        assert results[3][0] == 454 and b"Too many failed logins" in results[3][1]
        # ... and the block is the login policy's, shared with IMAP.
        imap = await sub.world.connect()
        reply = await imap.cmd("LOGIN alice secret")
        assert b"NO" in reply.tagged and b"UNAVAILABLE" in reply.tagged


async def test_too_many_failures_close_the_connection(tmp_path: Path) -> None:
    cfg = {"auth": {"failure_delay": 0.01, "failure_delay_max": 0.01,
                    "max_failures_per_connection": 2}}
    async with open_submission(tmp_path, cfg) as sub:
        await users(sub, "alice")

        def attempts() -> list[int]:
            conn = sub.starttls()
            codes = [conn.docmd("AUTH", "PLAIN " + _plain("alice", "bad"))[0]]
            codes.append(conn.docmd("AUTH", "PLAIN " + _plain("alice", "bad"))[0])
            with pytest.raises(smtplib.SMTPServerDisconnected):
                conn.docmd("NOOP")
            return codes

        assert await sub.client(attempts) == [535, 421]


async def test_login_and_plain_garbage_get_clear_errors(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice")

        def exchange() -> list[tuple[int, bytes]]:
            conn = sub.starttls()
            try:
                out = [conn.docmd("AUTH", "PLAIN !!!notbase64")]
                out.append(conn.docmd("AUTH", "PLAIN " + base64.b64encode(b"just-one").decode()))
                out.append(conn.docmd("AUTH", "LOGIN"))  # 334 Username:
                out.append(conn.docmd(base64.b64encode(b"alice").decode()))  # 334 Password:
                out.append(conn.docmd(base64.b64encode(b"secret").decode()))
                out.append(conn.docmd("AUTH", "PLAIN " + _plain("alice", "secret")))
                return out
            finally:
                conn.close()

        bad64, fields, user_prompt, pass_prompt, ok, again = await sub.client(exchange)
        assert bad64[0] == 501 and fields[0] == 501
        assert user_prompt == (334, base64.b64encode(b"Username:"))
        assert pass_prompt == (334, base64.b64encode(b"Password:"))
        assert ok[0] == 235 and again[0] == 503


async def test_sender_must_be_the_users_own(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice", "bob")
        alice = await sub.world.user("alice")
        await sub.store.add_alias("sales@example.org", [alice.id])
        await sub.store.add_alias("@example.net", [alice.id])
        bob = await sub.world.user("bob")
        await sub.store.add_alias("bobs@example.org", [bob.id])

        def try_senders() -> dict[str, int]:
            conn = sub.starttls()
            conn.login("alice", "secret")
            out = {}
            try:
                for sender in ("bob@example.org", "bobs@example.org", "alice@elsewhere.com",
                               "alice@example.org", "ALICE+lists@example.net",
                               "sales@example.org", "anything@example.net",
                               "bob@example.net"):
                    out[sender] = conn.docmd("MAIL", f"FROM:<{sender}>")[0]
                    conn.rset()
            finally:
                conn.close()
            return out

        codes = await sub.client(try_senders)
        assert codes == {
            "bob@example.org": 550, "bobs@example.org": 550, "alice@elsewhere.com": 550,
            "alice@example.org": 250, "ALICE+lists@example.net": 250,
            "sales@example.org": 250, "anything@example.net": 250,  # alice's catch-all
            "bob@example.net": 550,  # a user's name beats the catch-all
        }

        # The From: header is checked too, after the data.
        with pytest.raises(smtplib.SMTPDataError) as err:
            await sub.client(sub.send, "alice", "alice@example.org", ["bob@example.org"],
                             message("Bob <bob@example.org>", "bob@example.org"))
        assert err.value.smtp_code == 550 and b"5.7.1 From: address <bob@example.org>" in (
            err.value.smtp_error)
        with pytest.raises(smtplib.SMTPDataError):
            await sub.client(sub.send, "alice", "alice@example.org", ["bob@example.org"],
                             message("alice@example.org, bob@example.org", "bob@example.org"))
        assert await sub.world.messages("bob") == []
        # An alias and a +tag in From: are hers.
        await sub.client(sub.send, "alice", "sales@example.org", ["bob@example.org"],
                         message("Sales <sales@example.org>", "bob@example.org"))
        await sub.client(sub.send, "alice", "alice+x@example.org", ["bob@example.org"],
                         message("alice+x@example.org", "bob@example.org"))
        assert len(await sub.world.messages("bob")) == 2


async def test_from_addresses_are_bounded_and_a_big_header_is_read_off_the_loop(
        tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice", "bob")
        many = ", ".join(["alice@example.org"] * 51)
        with pytest.raises(smtplib.SMTPDataError) as err:
            await sub.client(sub.send, "alice", "alice@example.org", ["bob@example.org"],
                             message(many, "bob@example.org"))
        assert err.value.smtp_code == 550 and b"More than 50 From: addresses" in (
            err.value.smtp_error)
        # Over INLINE_PARSE octets of header (a long folded field): parsed on a thread,
        # the same answer as inline.
        long_field = "X-Long: " + "\r\n ".join(["y" * 70] * 1200) + "\r\n"
        await sub.client(sub.send, "alice", "alice@example.org", ["bob@example.org"],
                         message("Alice <alice@example.org>", "bob@example.org",
                                 extra=long_field))
        [stored] = await sub.world.messages("bob")
        assert b"X-Long: yyyy" in stored


async def test_a_missing_from_is_the_envelope_sender(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice", "bob")
        await sub.client(sub.send, "alice", "alice@example.org", ["bob@example.org"],
                         b"Subject: no from\r\n\r\nbody\r\n")
        [stored] = await sub.world.messages("bob")
        assert b"\r\nFrom: <alice@example.org>\r\n" in stored


async def test_alias_recipients_reach_every_user_once(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice", "bob", "carol")
        ids = [(await sub.world.user(n)).id for n in ("bob", "carol")]
        await sub.store.add_alias("team@example.org", ids)
        await sub.client(sub.send, "alice", "alice@example.org",
                         ["team@example.org", "bob@example.org", "nobody@example.org"],
                         message("alice@example.org", "team@example.org"))
        assert len(await sub.world.messages("bob")) == 1
        assert len(await sub.world.messages("carol")) == 1


async def test_250_only_after_the_queue_committed(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice", "bob")
        sub.queue.gate = asyncio.Event()
        sending = asyncio.ensure_future(sub.client(
            sub.send, "alice", "alice@example.org", ["bob@example.org", "far@remote.example"],
            message("alice@example.org", "far@remote.example")))
        await asyncio.wait_for(sub.queue.entered.wait(), 10)
        # The local copy is committed before the queue is asked; no answer yet.
        assert len(await sub.world.messages("bob")) == 1
        await asyncio.sleep(0.3)
        assert not sending.done()
        sub.queue.gate.set()
        assert await sending == {}
        assert len(sub.queue.calls) == 1


async def test_a_queue_failure_is_a_temporary_error(tmp_path: Path) -> None:
    async with open_submission(tmp_path) as sub:
        await users(sub, "alice")
        sub.queue.fail = True
        with pytest.raises(smtplib.SMTPDataError) as err:
            await sub.client(sub.send, "alice", "alice@example.org", ["x@remote.example"],
                             message("alice@example.org", "x@remote.example"))
        assert err.value.smtp_code == 451
        sub.world.errors.records.clear()  # the logged traceback is the point


async def test_without_a_queue_remote_recipients_are_refused_at_rcpt(tmp_path: Path) -> None:
    async with open_submission(tmp_path, outbound=False) as sub:
        await users(sub, "alice", "bob")
        refused = await sub.client(sub.send, "alice", "alice@example.org",
                                   ["x@remote.example", "bob@example.org"],
                                   message("alice@example.org", "bob@example.org"))
        code, text = refused["x@remote.example"]
        assert code == 451 and text.startswith(b"4.3.0") and b"other domains" in text
        assert len(await sub.world.messages("bob")) == 1


async def test_recipient_message_rate_and_size_limits(tmp_path: Path) -> None:
    cfg = {"submission": {"max_recipients": 2, "max_messages_per_hour": 2},
           "limits": {"max_message_size": 20000}}
    async with open_submission(tmp_path, cfg) as sub:
        await users(sub, "alice", "bob")

        def session() -> dict[str, object]:
            conn = sub.starttls()
            conn.login("alice", "secret")
            out: dict[str, object] = {}
            try:
                conn.docmd("MAIL", "FROM:<alice@example.org>")
                out["rcpts"] = [conn.docmd("RCPT", f"TO:<{a}>")[0]
                                for a in ("bob@example.org", "a@remote.example",
                                          "b@remote.example")]
                conn.rset()
                out["big"] = conn.docmd("MAIL", "FROM:<alice@example.org> SIZE=30000")[0]
                conn.rset()
                for _ in range(2):
                    conn.sendmail("alice@example.org", ["bob@example.org"],
                                  message("alice@example.org", "bob@example.org"))
                out["third"] = conn.docmd("MAIL", "FROM:<alice@example.org>")
            finally:
                conn.close()
            return out

        out = await sub.client(session)
        assert out["rcpts"] == [250, 250, 452]
        assert out["big"] == 552
        code, text = out["third"]  # type: ignore[misc]
        assert code == 451 and text.startswith(b"4.7.1")
        assert len(await sub.world.messages("bob")) == 2


async def test_received_header_names_the_client_only_when_configured(tmp_path: Path) -> None:
    async with open_submission(tmp_path, {"submission": {"received_header": True}}) as sub:
        await users(sub, "alice", "bob")
        await sub.client(sub.send, "alice", "alice@example.org", ["bob@example.org"],
                         message("alice@example.org", "bob@example.org"))
        [stored] = await sub.world.messages("bob")
        assert b"Received: from client.test ([127.0.0.1])\r\n\tby mail.test" in stored


def test_the_hourly_count_slides() -> None:
    from mailstead.smtp.ratelimit import SubmissionRate

    now = [1000.0]
    rate = SubmissionRate(2, clock=lambda: now[0])
    rate.record(1)
    now[0] += 1800
    rate.record(1)
    assert not rate.allowed(1) and rate.allowed(2)  # per user
    now[0] += 1801  # the first one is over an hour old
    assert rate.allowed(1)
    rate.record(1)
    assert not rate.allowed(1)
