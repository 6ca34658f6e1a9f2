"""Issue 15 (defects 5, 9, 11): the ports the client documents advertise, a health check
that says whether mail can be taken, and metrics an operator can use, not for everyone."""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, IPv6Address

from conftest import BASE_CONFIG, ROOT, ServerProcess
from mailstead.config import load_config
from mailstead.web import site as web_site
from mailstead.web.autoconfig import SSL, STARTTLS, MailServer
from test_web import dummy_request, fake_ctx, fetch, render_async, scrape, web_config

TIMEOUT = 10


# --- defect 5: the ports clients are told ----------------------------------------------


def _documents(resource: web_site.MailsteadResource) -> list[tuple[str, str, str, str]]:
    """(type, hostname, port, socketType) of every server in the autoconfig file."""
    root = ET.fromstring(resource.render(dummy_request(b"/mail/config-v1.1.xml")))
    return [(n.get("type") or "", n.findtext("hostname") or "", n.findtext("port") or "",
             n.findtext("socketType") or "")
            for n in (*root.iter("incomingServer"), *root.iter("outgoingServer"))]


async def test_public_hostname_and_ports_replace_the_listeners_in_every_document() -> None:
    config = web_config(
        MAILSTEAD_HTTP__PUBLIC_HOSTNAME="imap.example.org",
        MAILSTEAD_HTTP__PUBLIC_PORTS='["imaps:993", "imap:143", "submissions:465"]',
    )
    resource = web_site.MailsteadResource(fake_ctx(config=config))
    assert _documents(resource) == [
        ("imap", "imap.example.org", "993", "SSL"), ("imap", "imap.example.org", "143", "STARTTLS"),
        ("smtp", "imap.example.org", "465", "SSL"),
    ]  # fmt: skip
    assert resource.settings().servers == (
        MailServer("imap", 993, SSL), MailServer("imap", 143, STARTTLS),
        MailServer("smtp", 465, SSL),
    )  # fmt: skip
    ad = ET.fromstring(await render_async(resource, dummy_request(
        b"/autodiscover/autodiscover.xml", emailaddress="bob@example.org")))
    ports = {p.findtext("{*}Type"): (p.findtext("{*}Server"), p.findtext("{*}Port"))
             for p in ad.iterfind(".//{*}Protocol")}
    assert ports == {"IMAP": ("imap.example.org", "993"), "SMTP": ("imap.example.org", "465")}
    # Without them: the listeners' own ports and the server's hostname, as before.
    plain = web_site.MailsteadResource(fake_ctx(config=web_config()))
    assert {(t, h, p) for t, h, p, _ in _documents(plain)} >= {("imap", "mail.test", "1993")}


def _compose() -> tuple[dict[int, int], dict[str, str]]:
    """The compose file's published ports (host → container) and its environment."""
    text = (ROOT / "docker" / "compose.yaml").read_text()
    published = {int(host): int(inside) for host, inside in
                 re.findall(r'(?m)^\s+- "(?:[\d.]+:)?(\d+):(\d+)"', text)}
    env = {name: value.strip().strip("'")
           for name, value in re.findall(r"(?m)^\s+(MAILSTEAD_\w+):\s*(.+?)\s*$", text)}
    return published, env


async def test_the_compose_file_advertises_the_ports_it_publishes() -> None:
    published, env = _compose()
    config = load_config(ROOT / "docker" / "mailstead.toml", env=env)
    resource = web_site.MailsteadResource(fake_ctx(config=config))
    listeners = {(proto, kind, addr.port) for proto, kind, addr in config.listeners()}
    servers = resource.settings().servers
    assert servers, "the documents advertise nothing"
    # Outgoing servers ("smtp" in the documents) are the submission listeners.
    listener_of = {"imap": "imap", "pop3": "pop3", "smtp": "submission"}
    for server in servers:
        assert server.port in published, f"{server} is not published"
        kind = "tls" if server.security == SSL else "plain"
        assert (listener_of[server.protocol], kind, published[server.port]) in listeners, server
    for proto, kind, port in listeners:
        outside = [h for h, inside in published.items() if inside == port]
        if proto in ("imap", "pop3", "submission") and outside:
            security = SSL if kind == "tls" else STARTTLS
            advertised = "smtp" if proto == "submission" else proto
            assert MailServer(advertised, outside[0], security) in servers, (proto, kind, port)
    assert all(s.port != 25 for s in servers), "port 25 takes no AUTH: never advertised"


# --- defect 9: metrics only for the allowed addresses ------------------------------------


@pytest.mark.parametrize(("allow", "client", "code"), [
    (None, IPv4Address("TCP", "127.0.0.1", 5000), 200),
    (None, IPv6Address("TCP", "::1", 5000), 200),
    (None, IPv6Address("TCP", "::ffff:127.0.0.1", 5000), 200),
    (None, IPv4Address("TCP", "192.0.2.7", 5000), 403),
    ('["192.0.2.0/24"]', IPv4Address("TCP", "192.0.2.7", 5000), 200),
    ('["192.0.2.0/24"]', IPv4Address("TCP", "127.0.0.1", 5000), 403),
    ("[]", IPv4Address("TCP", "127.0.0.1", 5000), 403),
])  # fmt: skip
async def test_metrics_answer_only_the_allowed_addresses(
    tmp_path: Path, allow: str | None, client: object, code: int
) -> None:
    env = {} if allow is None else {"MAILSTEAD_HTTP__METRICS_ALLOW": allow}
    resource = web_site.MailsteadResource(fake_ctx(config=web_config(tmp_path, **env)))
    request = dummy_request(b"/metrics")
    request.client = client
    body = await render_async(resource, request)
    assert (request.responseCode or 200) == code, body
    if code == 403:
        assert body == b"forbidden ([http] metrics_allow)\n"
    else:
        assert b"mailstead_build_info{" in body


def test_metrics_allow_is_validated() -> None:
    from mailstead.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[http\] metrics_allow: '10.0.0.0/40' is not"):
        web_config(MAILSTEAD_HTTP__METRICS_ALLOW='["10.0.0.0/40"]')
    with pytest.raises(ConfigError, match=r"public_ports: port 0 in 'imap:0' is out of range"):
        web_config(MAILSTEAD_HTTP__PUBLIC_PORTS='["imap:0"]')


# --- defect 9 end to end: a full store is not healthy, and the metrics say why -----------

LIMIT = 256 * 1024
FULL_CONFIG = BASE_CONFIG + f"max_store_bytes = {LIMIT}\n" + """
[http]
listen = ["127.0.0.1:0"]
"""


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("full"), FULL_CONFIG).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_text(), srv.log_text()


def _fill(srv: ServerProcess) -> None:
    """Create users from this process until the store refuses (as another tool would)."""
    from mailstead.store import open_store
    from mailstead.store.api import StorageFull

    async def fill() -> None:
        store = await open_store(load_config(srv.config, env={}))
        try:
            with pytest.raises(StorageFull):
                for n in range(100_000):
                    await store.create_user(f"filler{n:06d}", "$fake$" + "h" * 200)
        finally:
            await store.close()

    asyncio.run(fill())


def test_a_full_store_fails_health_answers_overquota_and_is_counted(full: ServerProcess) -> None:
    full.add_user("quinn")
    assert fetch(full, "/healthz")[::2] == (200, b"ok\n")
    with smtplib.SMTP("127.0.0.1", full.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.docmd("MAIL", "FROM:<a@x.net>")[0] == 250
        assert smtp.docmd("RCPT", "TO:<someone@elsewhere.net>")[0] == 550
    before = scrape(full)
    assert before['mailstead_rejections_total{protocol="smtp",reason="relay_denied"}'] == 1
    assert before['mailstead_connections_total{protocol="smtp"}'] >= 1
    assert before["mailstead_accepting_mail"] == 1
    assert before["mailstead_store_limit_bytes"] == LIMIT

    _fill(full)
    status, _, body = fetch(full, "/healthz")
    assert status == 503 and body.startswith(b"store full: "), body
    assert b"[limits] max_store_bytes 256 KiB" in body
    with smtplib.SMTP("127.0.0.1", full.port("smtp"), timeout=TIMEOUT) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("a@x.net", ["quinn@example.org"],
                          b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 1000)
        assert refused.value.smtp_code == 452
    with imaplib.IMAP4("127.0.0.1", full.port("imap"), timeout=TIMEOUT) as imap:
        imap.login("quinn", "secret")
        typ, data = imap.append("INBOX", "", None,
                                b"Subject: x\r\n\r\n" + (b"y" * 70 + b"\r\n") * 700)
        assert (typ, data) == ("NO", [b"[OVERQUOTA] The mail store is full; nothing was changed"])
    after = scrape(full)
    assert after['mailstead_rejections_total{protocol="smtp",reason="store_full"}'] == 1
    assert after["mailstead_accepting_mail"] == 0
    assert after["mailstead_store_used_bytes"] > LIMIT * 0.9
    assert after["mailstead_store_bytes"] >= after["mailstead_store_used_bytes"]


def test_metrics_carry_process_build_and_certificate(full: ServerProcess) -> None:
    samples = scrape(full)
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_resident_memory_bytes"] > 1_000_000
    assert samples["process_open_fds"] > 0
    build = [k for k in samples if k.startswith("mailstead_build_info{")]
    assert len(build) == 1 and 'version="0.1.0"' in build[0], build
    expiry = samples["mailstead_tls_certificate_expiry_timestamp_seconds"]
    assert 800 * 86400 < expiry - time.time() < 826 * 86400  # the generated one: 825 days


async def test_public_ports_advertise_submission_and_never_port_25() -> None:
    config = web_config(
        MAILSTEAD_HTTP__PUBLIC_PORTS='["imaps:993", "smtp:25", "submission:587", "smtps:465"]')
    resource = web_site.MailsteadResource(fake_ctx(config=config))
    outgoing = [d for d in _documents(resource) if d[0] == "smtp"]
    assert outgoing == [("smtp", "mail.test", "465", "SSL"),
                        ("smtp", "mail.test", "587", "STARTTLS")]
    root = ET.fromstring(resource.render(dummy_request(b"/mail/config-v1.1.xml")))
    [server] = [n for n in root.iter("outgoingServer") if n.findtext("port") == "587"]
    assert server.findtext("username") == "%EMAILADDRESS%"
    assert server.findtext("authentication") == "password-cleartext"
