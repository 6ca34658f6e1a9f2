"""Sending, end to end, as a newcomer's mail client does it (issue 14's "done when").

A client that knows only the address asks the server's autoconfig document where to send,
connects to the submission listener it names (TLS verified against the server's CA, by
the advertised host name), logs in with ``%EMAILADDRESS%`` and sends to a local user and to
a remote one. The remote one is a "remote MX" (aiosmtpd on 127.0.0.2) found through a
loopback DNS stub that publishes exactly what ``mailstead dns example.org`` printed, so the
remote copy's DKIM signature is checked against the record the operator would paste. A
recipient the remote refuses yields exactly one bounce in the sender's INBOX.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import dkim
import pytest

from conftest import BASE_CONFIG, ServerProcess, stored_messages
from dns_stub import DnsStub
from outbound_harness import MX_HOST, Sink, ThreadedMx, wait_sync


def zone(output: str) -> dict[tuple[str, str], list[str]]:
    """The records of ``mailstead dns``'s zone lines, as DnsStub takes them."""
    records: dict[tuple[str, str], list[str]] = {}
    for line in output.splitlines():
        if line and not line.startswith(";"):
            name, _ttl, _klass, rtype, value = line.split("\t")
            records.setdefault((name.rstrip(".").lower(), rtype), []).append(value)
    return records


class World:
    def __init__(self, srv: ServerProcess, sink: Sink, stub: DnsStub) -> None:
        self.srv, self.sink, self.stub = srv, sink, stub


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    sink = Sink(rcpt_replies={"nobody@refusing.example": "550 5.1.1 No such user"})
    mx = ThreadedMx(sink)
    stub = DnsStub({
        ("example.net", "MX"): ["10 mx.example.net."],
        ("refusing.example", "MX"): ["10 mx.example.net."],
        ("mx.example.net", "A"): [MX_HOST],
    })
    stub.start_thread()
    srv = ServerProcess(tmp_path_factory.mktemp("sending"), BASE_CONFIG + f"""
[submission]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]

[http]
listen = ["127.0.0.1:0"]

[auth]
plaintext_on_loopback = false

[queue]
retry_first = 0.3
retry_max = 0.6
poll_seconds = 0.3
mx_port = {mx.port}

[dns]
nameservers = ["127.0.0.1"]
port = {stub.port}
""")
    try:
        srv.cli("dkim", "keygen", "example.org", "--selector", "s1")
        # The operator pastes what `mailstead dns` prints; the stub publishes it.
        printed = srv.cli("dns", "example.org").stdout
        stub.records.update(zone(printed))
        srv.start()
        srv.add_user("alice")
        srv.add_user("bob")
        yield World(srv, sink, stub)
        srv.stop()
        assert "Traceback" not in srv.log_text(), srv.log_text()
    finally:
        srv.kill()
        mx.stop()
        stub.stop()


def outgoing_servers(srv: ServerProcess, address: str) -> list[dict[str, str]]:
    """The ``outgoingServer`` entries of the Mozilla autoconfig document for ``address``."""
    url = (f"http://127.0.0.1:{srv.port('http')}/mail/config-v1.1.xml"
           f"?emailaddress={address}")
    with urllib.request.urlopen(url, timeout=10) as reply:
        root = ET.fromstring(reply.read())
    return [{child.tag: (child.text or "") for child in server}
            for server in root.iter("outgoingServer")]


def client_tls(srv: ServerProcess) -> ssl.SSLContext:
    """What a client that trusts the server's CA checks: the chain and the host name."""
    return ssl.create_default_context(cafile=str(srv.data / "tls" / "ca.pem"))


class _ToLoopback:
    """smtplib's connection step sent to loopback: the advertised host name stands for
    this server (as DNS would resolve it), and TLS is verified against that name."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout)
        context = getattr(self, "context", None)
        if context is None:  # plain SMTP: STARTTLS comes later, checking ``host``
            return sock
        return context.wrap_socket(sock, server_hostname=host)


class _Smtp(_ToLoopback, smtplib.SMTP):
    pass


class _Smtps(_ToLoopback, smtplib.SMTP_SSL):
    pass


def connect(srv: ServerProcess, server: dict[str, str]) -> smtplib.SMTP:
    """Connect as the document says: implicit TLS, or STARTTLS before anything else."""
    host, port = server["hostname"], int(server["port"])
    if server["socketType"] == "SSL":
        return _Smtps(host, port, timeout=10, context=client_tls(srv))
    conn = _Smtp(host, port, timeout=10)
    conn.ehlo("client.test")
    conn.starttls(context=client_tls(srv))
    return conn


def send(conn: smtplib.SMTP, server: dict[str, str], address: str, to: list[str],
         message: bytes) -> dict[str, tuple[int, bytes]]:
    assert server["username"] == "%EMAILADDRESS%"
    conn.ehlo("client.test")
    conn.login(address, "secret")
    try:
        return conn.sendmail(address, to, message)
    finally:
        conn.quit()


def mail(to: str, subject: str) -> bytes:
    return (f"From: Alice <alice@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n"
            "Hello from the newcomer's client.\r\n").encode()


def test_a_client_set_up_from_the_address_sends_locally_and_remotely(world: World) -> None:
    srv, sink = world.srv, world.sink
    servers = outgoing_servers(srv, "alice@example.org")
    assert [(s["socketType"], s["authentication"]) for s in servers] == [
        ("SSL", "password-cleartext"), ("STARTTLS", "password-cleartext")]
    assert all(s["port"] != "25" and int(s["port"]) != srv.port("smtp") for s in servers)
    for server in servers:  # 465 first, then 587, as a client falls back
        before_local = len(stored_messages(srv, "bob"))
        before_remote = len(sink.received)
        subject = f"via {server['socketType']}"
        refused = send(connect(srv, server), server, "alice@example.org",
                       ["bob@example.org", "carol@example.net"],
                       mail("bob@example.org, carol@example.net", subject))
        assert refused == {}
        local = stored_messages(srv, "bob")[before_local:]
        assert len(local) == 1 and f"Subject: {subject}".encode() in local[0]  # at once
        wait_sync(lambda n=before_remote: len(sink.received) > n, what="the remote copy")
        remote = sink.received[before_remote]
        assert remote.rcpts == ["carol@example.net"]
        assert f"Subject: {subject}".encode() in remote.data

        def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
            values = world.stub.records.get((name.decode().rstrip(".").lower(), "TXT"), [])
            return "".join("".join(v.split('"')[1::2]) for v in values).encode()

        assert dkim.verify(remote.data, dnsfunc=dnsfunc), remote.data[:600]
        assert re.search(rb"DKIM-Signature:[^\r]*d=example\.org", remote.data.replace(
            b"\r\n\t", b" ").replace(b"\r\n ", b" "))
        assert not dkim.verify(remote.data.replace(subject.encode(), b"changed"),
                               dnsfunc=dnsfunc)


def test_a_refused_remote_recipient_gives_exactly_one_bounce(world: World) -> None:
    srv = world.srv
    server = outgoing_servers(srv, "alice@example.org")[0]
    before = len(stored_messages(srv, "alice"))
    assert send(connect(srv, server), server, "alice@example.org",
                ["nobody@refusing.example"], mail("nobody@refusing.example", "doomed")) == {}

    def bounces() -> list[bytes]:
        return [m for m in stored_messages(srv, "alice")[before:]
                if b"multipart/report" in m]

    wait_sync(lambda: bounces(), what="the bounce")
    time.sleep(1.5)  # several retry intervals: nothing more may come
    (bounce,) = bounces()
    assert b"report-type=delivery-status" in bounce
    assert b"nobody@refusing.example" in bounce and b"5.1.1" in bounce
    assert b"Subject: doomed" in bounce  # the original header is returned
    assert srv.cli("queue", "list").stdout.strip() == "the queue is empty"


def test_the_printed_records_check_out(world: World) -> None:
    published = zone(world.srv.cli("dns", "example.org").stdout)
    assert {rtype for _, rtype in published} >= {"MX", "TXT", "SRV", "CNAME"}
    assert ("s1._domainkey.example.org", "TXT") in published
    assert ("_dmarc.example.org", "TXT") in published
    world.stub.records[("mail.test", "A")] = ["192.0.2.25"]
    res = world.srv.cli("dns", "example.org", "--check", check=False)
    assert res.returncode == 0 and "all records are in place" in res.stdout, res.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("kind", ["SSL", "STARTTLS"])
def test_curl_sends_through_the_advertised_submission_servers(world: World, kind: str) -> None:
    """curl as a second real client, on exactly what autoconfig advertises: the host name
    (resolved to loopback with --resolve, verified against the server's CA), the port and
    the TLS mode; one local and one remote recipient."""
    srv, sink = world.srv, world.sink
    (server,) = [s for s in outgoing_servers(srv, "alice@example.org") if s["socketType"] == kind]
    host, port = server["hostname"], server["port"]
    url = f"smtps://{host}:{port}" if kind == "SSL" else f"smtp://{host}:{port}"
    before_local, before_remote = len(stored_messages(srv, "bob")), len(sink.received)
    subject = f"curl over {kind}"
    res = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", url,
         "--resolve", f"{host}:{port}:127.0.0.1", "--cacert", str(srv.data / "tls" / "ca.pem"),
         *(["--ssl-reqd"] if kind == "STARTTLS" else []),
         "--user", "alice@example.org:secret", "--mail-from", "alice@example.org",
         "--mail-rcpt", "bob@example.org", "--mail-rcpt", "carol@example.net",
         "--upload-file", "-"],
        input=mail("bob@example.org, carol@example.net", subject), capture_output=True,
        timeout=30)
    assert res.returncode == 0, res.stderr
    local = stored_messages(srv, "bob")[before_local:]
    assert len(local) == 1 and f"Subject: {subject}".encode() in local[0]
    wait_sync(lambda: len(sink.received) > before_remote, what="the remote copy")
    assert f"Subject: {subject}".encode() in sink.received[before_remote].data
