"""The HTTP listener: autoconfig, autodiscover, mobileconfig, metrics and health.

Unit tests parse the pure builders' output with real parsers (ElementTree, plistlib) and
check every field against the listeners; end-to-end tests drive a real server process over
127.0.0.1 with urllib, imaplib and smtplib.
"""

from __future__ import annotations

import asyncio
import http.client
import imaplib
import json
import plistlib
import smtplib
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.web.test.requesthelper import DummyRequest

from conftest import BASE_CONFIG, ServerProcess
from mailstead.config import Config, Listen, load_config
from mailstead.metrics import Metrics, install_metrics
from mailstead.web import site as web_site
from mailstead.web.autoconfig import (
    AUTODISCOVER_OUTLOOK_NS,
    AUTODISCOVER_RESPONSE_NS,
    MOBILECONFIG_CONTENT_TYPE,
    PLAIN,
    SSL,
    STARTTLS,
    AddressError,
    AutodiscoverRequestError,
    MailServer,
    MailSettings,
    build_autoconfig,
    build_autodiscover,
    build_mobileconfig,
    parse_autodiscover_request,
)

TIMEOUT = 10
DOMAINS = ("example.org", "mail.test")
LISTENERS = [
    ("imap", "plain", "127.0.0.1", 1143),
    ("imap", "tls", "127.0.0.1", 1993),
    ("imap", "tls", "::1", 1993),  # same port on IPv6: one entry
    ("pop3", "plain", "127.0.0.1", 1110),
    ("pop3", "tls", "127.0.0.1", 1995),
    ("smtp", "plain", "127.0.0.1", 1025),  # receives only (no AUTH): never advertised
    ("smtp", "tls", "127.0.0.1", 1466),
    ("submission", "plain", "127.0.0.1", 1587),
    ("submission", "tls", "127.0.0.1", 1465),
    ("lmtp", "plain", "127.0.0.1", 1024),
    ("http", "plain", "127.0.0.1", 8080),
]
AD_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"


def settings(
    listeners: list[tuple[str, str, str, int]] = LISTENERS, tls: bool = True
) -> MailSettings:
    return MailSettings.from_listeners("mail.test", DOMAINS, listeners, tls)


def ad_request(address: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{AD_REQUEST_NS}">'
        f"<Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>"
        f"{AUTODISCOVER_OUTLOOK_NS}</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


# --- settings ------------------------------------------------------------------------------


def test_settings_order_security_and_skipped_listeners() -> None:
    s = settings()
    assert s.servers == (
        MailServer("imap", 1993, SSL),
        MailServer("imap", 1143, STARTTLS),
        MailServer("pop3", 1995, SSL),
        MailServer("pop3", 1110, STARTTLS),
        MailServer("smtp", 1465, SSL),
        MailServer("smtp", 1587, STARTTLS),
    )
    no_tls = settings([("imap", "plain", "127.0.0.1", 143), ("submission", "plain", "::1", 587),
                       ("smtp", "plain", "::1", 25)], False)
    assert no_tls.servers == (MailServer("imap", 143, PLAIN), MailServer("smtp", 587, PLAIN))


def test_settings_leave_out_loopback_only_ports_and_unbound_ones() -> None:
    s = settings(
        [
            ("imap", "plain", "127.0.0.1", 1143),  # local only: a remote client can't use it
            ("imap", "tls", "0.0.0.0", 993),
            ("pop3", "plain", "::1", 110),  # the only POP3 listener: kept
            ("submission", "plain", "0.0.0.0", 0),  # not bound yet: no port to tell
            ("smtp", "plain", "0.0.0.0", 25),  # receives only: never advertised
        ]
    )
    assert s.servers == (MailServer("imap", 993, SSL), MailServer("pop3", 110, STARTTLS))


@pytest.mark.parametrize(
    ("given", "expected"),
    [("bob@example.org", "bob@example.org"), (" Bob.X+tag@MAIL.TEST ", "Bob.X+tag@mail.test")],
)
def test_normalise_address_accepts_ours(given: str, expected: str) -> None:
    assert settings().normalise_address(given) == expected


@pytest.mark.parametrize(
    "bad",
    [None, "", "bob", "@example.org", "bob@", "bob@evil.org", "a b@example.org",
     'a"b@example.org', "bob@@example.org", ".bob@example.org", "x\n@example.org",
     "a" * 65 + "@example.org", "b\u00e9@example.org"],
)  # fmt: skip
def test_normalise_address_refuses_malformed_or_foreign(bad: str | None) -> None:
    with pytest.raises(AddressError):
        settings().normalise_address(bad)


# --- Mozilla autoconfig --------------------------------------------------------------------


def moz_servers(root: ET.Element, tag: str) -> list[dict[str, str]]:
    out = []
    for node in root.iter(tag):
        entry = {child.tag: child.text or "" for child in node}
        entry["type"] = node.get("type", "")
        out.append(entry)
    return out


def expected_moz(s: MailSettings, protocols: tuple[str, ...]) -> list[dict[str, str]]:
    return [
        {
            "type": srv.protocol,
            "hostname": s.hostname,
            "port": str(srv.port),
            "socketType": srv.security,
            "username": "%EMAILADDRESS%",
            "authentication": "password-cleartext",
        }
        for proto in protocols
        for srv in s.of(proto)
    ]


def check_autoconfig(body: bytes, s: MailSettings) -> None:
    root = ET.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == s.domains[0]
    assert [d.text for d in provider.findall("domain")] == list(s.domains)
    assert moz_servers(root, "incomingServer") == expected_moz(s, ("imap", "pop3"))
    assert moz_servers(root, "outgoingServer") == expected_moz(s, ("smtp",))


def test_autoconfig_lists_every_listener() -> None:
    s = settings()
    check_autoconfig(build_autoconfig(s), s)
    socket_types = [n.findtext("socketType") for n in ET.fromstring(build_autoconfig(s)).iter()
                    if n.tag in ("incomingServer", "outgoingServer")]  # fmt: skip
    assert socket_types == ["SSL", "STARTTLS", "SSL", "STARTTLS", "SSL", "STARTTLS"]


def test_autoconfig_without_tls_says_plain_and_escapes_text() -> None:
    s = MailSettings.from_listeners(
        "mail.test", ["a&b.example"], [("imap", "plain", "10.0.0.1", 143)], tls=False
    )
    root = ET.fromstring(build_autoconfig(s))
    assert root.find("emailProvider").get("id") == "a&b.example"  # type: ignore[union-attr]
    assert moz_servers(root, "incomingServer")[0]["socketType"] == "plain"
    assert moz_servers(root, "outgoingServer") == []


# --- Microsoft Autodiscover ----------------------------------------------------------------


def test_parse_autodiscover_request_finds_the_address_in_any_namespace() -> None:
    assert parse_autodiscover_request(ad_request("bob@example.org")) == "bob@example.org"
    assert parse_autodiscover_request(
        b"<Autodiscover><Request><EMailAddress> x@y </EMailAddress></Request></Autodiscover>"
    ) == "x@y"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<Autodiscover><Request>",
        b"not xml at all",
        b"<Autodiscover><Request><EMailAddress/></Request></Autodiscover>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
    ],
)
def test_parse_autodiscover_request_refuses_bad_bodies(body: bytes) -> None:
    with pytest.raises(AutodiscoverRequestError):
        parse_autodiscover_request(body)


def check_autodiscover(body: bytes, s: MailSettings, address: str) -> None:
    ns = {"r": AUTODISCOVER_RESPONSE_NS, "o": AUTODISCOVER_OUTLOOK_NS}
    root = ET.fromstring(body)
    assert root.tag == f"{{{AUTODISCOVER_RESPONSE_NS}}}Autodiscover"
    assert root.findtext("o:Response/o:User/o:AutoDiscoverSMTPAddress", namespaces=ns) == address
    account = root.find("o:Response/o:Account", ns)
    assert account is not None
    assert account.findtext("o:AccountType", namespaces=ns) == "email"
    assert account.findtext("o:Action", namespaces=ns) == "settings"
    protocols = [
        {child.tag.rpartition("}")[2]: child.text for child in proto}
        for proto in account.findall("o:Protocol", ns)
    ]
    expected = []
    for name in ("imap", "pop3", "smtp"):
        best = s.best(name)
        assert best is not None
        expected.append(
            {
                "Type": name.upper(),
                "Server": s.hostname,
                "Port": str(best.port),
                "DomainRequired": "off",
                "LoginName": address,
                "SPA": "off",
                "SSL": "off" if best.security == PLAIN else "on",
                "Encryption": {SSL: "SSL", STARTTLS: "TLS", PLAIN: "None"}[best.security],
                "AuthRequired": "on",
            }
        )
    assert protocols == expected


def test_autodiscover_gives_the_best_server_per_protocol() -> None:
    s = settings()
    body = build_autodiscover(s, "bob@example.org")
    check_autodiscover(body, s, "bob@example.org")
    # Conventional spelling: two default namespaces, no invented ns0: prefixes.
    assert b"ns0:" not in body and f'<Response xmlns="{AUTODISCOVER_OUTLOOK_NS}">'.encode() in body


def test_autodiscover_starttls_and_plain_encryption() -> None:
    plain = [("imap", "plain", "10.0.0.1", 143), ("pop3", "plain", "10.0.0.1", 110),
             ("submission", "plain", "10.0.0.1", 587)]  # fmt: skip
    for tls in (True, False):
        s = settings(plain, tls)
        check_autodiscover(build_autodiscover(s, "a@mail.test"), s, "a@mail.test")


# --- Apple configuration profile -----------------------------------------------------------


def test_mobileconfig_fields() -> None:
    s = settings()
    profile = plistlib.loads(build_mobileconfig(s, "bob@example.org"))
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == "bob@example.org"
    assert mail["IncomingMailServerHostName"] == "mail.test"
    assert mail["IncomingMailServerPortNumber"] == 1993
    assert mail["IncomingMailServerUseSSL"] is True
    assert mail["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    assert mail["IncomingMailServerUsername"] == "bob@example.org"
    assert mail["OutgoingMailServerHostName"] == "mail.test"
    assert mail["OutgoingMailServerPortNumber"] == 1465
    assert mail["OutgoingMailServerUseSSL"] is True
    assert mail["OutgoingMailServerAuthentication"] == "EmailAuthPassword"
    assert mail["OutgoingMailServerUsername"] == "bob@example.org"
    uuids = {profile["PayloadUUID"], mail["PayloadUUID"]}
    assert len(uuids) == 2 and all(uuid.UUID(u).version == 5 for u in uuids)
    assert mail["PayloadIdentifier"].startswith("test.mail.")


def test_mobileconfig_uuids_are_stable_per_address() -> None:
    s = settings()
    first = plistlib.loads(build_mobileconfig(s, "bob@example.org"))
    again = plistlib.loads(build_mobileconfig(settings(), "bob@example.org"))
    other = plistlib.loads(build_mobileconfig(s, "carol@example.org"))
    assert first["PayloadUUID"] == again["PayloadUUID"] != other["PayloadUUID"]
    assert (
        first["PayloadContent"][0]["PayloadUUID"]
        == again["PayloadContent"][0]["PayloadUUID"]
        != other["PayloadContent"][0]["PayloadUUID"]
    )


def test_mobileconfig_pop3_only_and_without_tls() -> None:
    s = settings([("pop3", "plain", "10.0.0.1", 110), ("submission", "plain", "10.0.0.1", 587)],
                 False)
    mail = plistlib.loads(build_mobileconfig(s, "a@mail.test"))["PayloadContent"][0]
    assert mail["EmailAccountType"] == "EmailTypePOP"
    assert mail["IncomingMailServerPortNumber"] == 110
    assert mail["IncomingMailServerUseSSL"] is False
    assert mail["OutgoingMailServerUseSSL"] is False


# --- metrics -------------------------------------------------------------------------------


def test_metrics_map_events_onto_families() -> None:
    sessions = [1, 2, 3]
    m = Metrics(open_sessions=lambda: len(sessions))
    for event, n, labels in [
        ("connections", 2, {"protocol": "imap"}), ("connections", 1, {"protocol": "pop3"}),
        ("logins", 1, {"protocol": "imap", "result": "ok"}),
        ("logins", 3, {"protocol": "imap", "result": "failed"}),
        ("logins", 1, {"protocol": "pop3", "result": "ok"}),
        ("commands", 5, {"protocol": "imap", "command": "fetch"}),
        ("commands", 1, {"protocol": "imap", "command": "UID"}),
        ("commands", 2, {"protocol": "pop3", "command": "RETR"}),
        ("delivered", 4, {}), ("delivered_bytes", 1000, {}),
        ("pop3_in_use", 1, {}), ("imap_appends", 0, {}), ("something_new", 7, {}),
    ]:  # fmt: skip
        m.count(event, n, **labels)
    m.observe("command", 0.002, protocol="imap", command="FETCH")
    m.observe("command", 0.5, protocol="pop3", command="retr")
    m.observe("store", 0.01, op="read")
    m.observe("other", 1.0, label="x")
    get = m.registry.get_sample_value
    assert get("mailstead_connections_total", {"protocol": "imap"}) == 2
    assert get("mailstead_connections_total", {"protocol": "pop3"}) == 1
    assert get("mailstead_logins_total", {"protocol": "imap", "result": "ok"}) == 1
    assert get("mailstead_logins_total", {"protocol": "imap", "result": "failed"}) == 3
    assert get("mailstead_logins_total", {"protocol": "pop3", "result": "ok"}) == 1
    assert get("mailstead_commands_total", {"protocol": "imap", "command": "FETCH"}) == 5
    assert get("mailstead_commands_total", {"protocol": "imap", "command": "UID"}) == 1
    assert get("mailstead_commands_total", {"protocol": "pop3", "command": "RETR"}) == 2
    assert get("mailstead_deliveries_total") == 4
    assert get("mailstead_delivered_bytes_total") == 1000
    assert get("mailstead_events_total", {"event": "pop3_in_use"}) == 1
    assert get("mailstead_events_total", {"event": "something_new"}) == 7
    assert get("mailstead_events_total", {"event": "imap_appends"}) is None  # n=0: nothing
    assert get("mailstead_command_seconds_count", {"protocol": "imap", "command": "FETCH"}) == 1
    assert get("mailstead_command_seconds_sum", {"protocol": "pop3", "command": "RETR"}) == 0.5
    assert get("mailstead_store_seconds_count", {"op": "read"}) == 1
    assert get("mailstead_duration_seconds_count", {"name": "other", "label": "x"}) == 1
    assert get("mailstead_open_sessions") == 3
    sessions.pop()
    text = m.render().decode()
    assert "mailstead_open_sessions 2.0" in text
    assert 'mailstead_logins_total{protocol="imap",result="failed"} 3.0' in text


def test_metrics_refuse_labels_that_do_not_fit_the_event() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="protocol"):
        m.count("connections")
    with pytest.raises(ValueError, match="result"):
        m.count("logins", protocol="imap")
    with pytest.raises(ValueError, match="command"):
        m.count("imap_appends", command="APPEND")
    with pytest.raises(ValueError, match="command"):
        m.observe("command", 0.1, protocol="imap")
    assert m.registry.get_sample_value("mailstead_connections_total", {"protocol": "None"}) is None


def test_metrics_have_their_own_registries() -> None:
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    a.count("connections", protocol="imap")
    assert a.registry.get_sample_value("mailstead_connections_total", {"protocol": "imap"}) == 1
    assert b.registry.get_sample_value("mailstead_connections_total", {"protocol": "imap"}) is None
    assert b"mailstead_open_sessions" not in b.render()


@dataclass
class FakeStore:
    delay: float = 0.0
    error: Exception | None = None
    on_latency: Any = None
    asked: list[str] = field(default_factory=list)

    async def get_user(self, name: str) -> None:
        self.asked.append(name)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error


def web_config(data_dir: Path = Path("/nonexistent"), **env: str) -> Config:
    """A real configuration with the ``LISTENERS`` above; ``env``: more MAILSTEAD_* keys."""
    addresses: dict[str, list[str]] = {}
    for proto, kind, host, port in LISTENERS:
        key = f"MAILSTEAD_{proto.upper()}__LISTEN" + ("_TLS" if kind == "tls" else "")
        addresses.setdefault(key, []).append(str(Listen(host, port)))
    return load_config(None, env={
        "MAILSTEAD_SERVER__HOSTNAME": "mail.test",
        "MAILSTEAD_SERVER__DOMAINS": json.dumps(list(DOMAINS)),
        "MAILSTEAD_SERVER__DATA_DIR": str(data_dir),
        **{key: json.dumps(value) for key, value in addresses.items()},
        **env,
    })


def fake_ctx(
    store: FakeStore | None = None, bound_listeners: Any = None, config: Config | None = None
) -> Any:
    """Enough of a ServerContext for the site: config, store, tls, loop, listeners, metrics."""
    config = config or web_config()
    ctx = SimpleNamespace(
        config=config, store=store or FakeStore(), tls=object(), bound_listeners=bound_listeners,
        metrics=None, sessions=[], loop=asyncio.get_running_loop(),
    )  # fmt: skip
    ctx.observe = lambda name, seconds, **labels: ctx.metrics.observe(name, seconds, **labels)
    return ctx


async def test_install_metrics_is_idempotent_and_hooks_store_latency() -> None:
    ctx = fake_ctx()
    metrics = install_metrics(ctx)
    assert install_metrics(ctx) is metrics and ctx.metrics is metrics
    ctx.store.on_latency("write", 0.25)
    assert metrics.registry.get_sample_value("mailstead_store_seconds_sum", {"op": "write"}) == 0.25
    assert metrics.registry.get_sample_value("mailstead_open_sessions") == 0


# --- the site without sockets --------------------------------------------------------------


def dummy_request(path: bytes, method: bytes = b"GET", **args: str) -> DummyRequest:
    request = DummyRequest([])
    request.path = path
    request.method = method
    request.args = {k.encode(): [v.encode()] for k, v in args.items()}
    return request


async def render_async(resource: web_site.MailsteadResource, request: DummyRequest) -> bytes:
    result = resource.render(request)
    if result != web_site.server.NOT_DONE_YET:
        return result  # type: ignore[return-value]
    async with asyncio.timeout(5):
        while not request.finished:
            await asyncio.sleep(0.01)
    return b"".join(request.written)


async def test_site_uses_bound_listeners_when_the_daemon_offers_them() -> None:
    bound = [("imap", "tls", "0.0.0.0", 40993), ("smtp", "plain", "0.0.0.0", 40025),
             ("submission", "plain", "0.0.0.0", 40587)]
    resource = web_site.MailsteadResource(fake_ctx(bound_listeners=lambda: bound))
    root = ET.fromstring(resource.render(dummy_request(b"/mail/config-v1.1.xml")))
    assert [n.findtext("port") for n in root.iter("incomingServer")] == ["40993"]
    assert [n.findtext("port") for n in root.iter("outgoingServer")] == ["40587"]


async def test_site_answers_500_without_details_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("secret internals")

    resource = web_site.MailsteadResource(fake_ctx(bound_listeners=broken))
    request = dummy_request(b"/mail/config-v1.1.xml")
    body = resource.render(request)
    assert request.responseCode == 500 and body == b"internal error\n"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None


async def test_healthz_ok_and_503_on_slow_or_failing_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = FakeStore()
    resource = web_site.MailsteadResource(fake_ctx(store, config=web_config(tmp_path)))
    request = dummy_request(b"/healthz")
    assert await render_async(resource, request) == b"ok\n"
    assert request.responseCode == 200 and store.asked == ["healthcheck-probe"]

    monkeypatch.setattr(web_site, "HEALTH_TIMEOUT", 0.05)
    store.delay = 1.0
    request = dummy_request(b"/healthz")
    assert await render_async(resource, request) == b"store not answering\n"
    assert request.responseCode == 503

    store.delay, store.error = 0.0, OSError("disk gone")
    request = dummy_request(b"/healthz")
    assert await render_async(resource, request) == b"store unavailable\n"
    assert request.responseCode == 503


# --- end to end ----------------------------------------------------------------------------

WEB_CONFIG = BASE_CONFIG + """
[submission]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]

[http]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
"""


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("web"), WEB_CONFIG).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_text(), srv.log_text()


@pytest.fixture(scope="module")
def web_settings(web: ServerProcess) -> MailSettings:
    listeners = json.loads((web.data / "listeners.json").read_text())
    return MailSettings.from_listeners(
        "mail.test",
        DOMAINS,
        [(e["protocol"], "tls" if e["tls"] else "plain", e["host"], e["port"]) for e in listeners],
        tls=True,
    )


def fetch(
    srv: ServerProcess, path: str, data: bytes | None = None, method: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    url = f"http://127.0.0.1:{srv.port('http')}{path}"
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "text/xml")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize(
    "path",
    ["/mail/config-v1.1.xml?emailaddress=bob%40example.org",
     "/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"],
)  # fmt: skip
def test_e2e_autoconfig(web: ServerProcess, web_settings: MailSettings, path: str) -> None:
    status, headers, body = fetch(web, path)
    assert status == 200 and headers["Content-Type"].startswith("text/xml")
    check_autoconfig(body, web_settings)
    ports = {(srv.protocol, srv.security): srv.port for srv in web_settings.servers}
    assert ports == {
        ("imap", SSL): web.port("imap", True), ("imap", STARTTLS): web.port("imap"),
        ("pop3", SSL): web.port("pop3", True), ("pop3", STARTTLS): web.port("pop3"),
        ("smtp", SSL): web.port("submission", True), ("smtp", STARTTLS): web.port("submission"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"]
)
def test_e2e_autodiscover_post(web: ServerProcess, web_settings: MailSettings, path: str) -> None:
    status, headers, body = fetch(web, path, ad_request("Bob@Example.org"))
    assert status == 200 and headers["Content-Type"].startswith("text/xml")
    check_autodiscover(body, web_settings, "Bob@example.org")


def test_e2e_autodiscover_over_https_with_the_generated_certificate(
    web: ServerProcess, web_settings: MailSettings
) -> None:
    # Outlook posts to https://autodiscover.<domain>/; the generated certificate names it.
    ctx = ssl.create_default_context(cafile=str(web.data / "tls" / "ca.pem"))
    body = ad_request("bob@example.org")
    for name in ("autodiscover.example.org", "autoconfig.mail.test", "mail.test"):
        sock = socket.create_connection(("127.0.0.1", web.port("http", True)), TIMEOUT)
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            tls.sendall(b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: %s\r\n"
                        b"Content-Type: text/xml\r\nContent-Length: %d\r\n"
                        b"Connection: close\r\n\r\n" % (name.encode(), len(body)) + body)
            resp = http.client.HTTPResponse(tls)
            resp.begin()
            assert resp.status == 200
            check_autodiscover(resp.read(), web_settings, "bob@example.org")
    sock = socket.create_connection(("127.0.0.1", web.port("http", True)), TIMEOUT)
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(sock, server_hostname="autodiscover.elsewhere.net")
    sock.close()


def test_e2e_autodiscover_get(web: ServerProcess, web_settings: MailSettings) -> None:
    status, _, body = fetch(web, "/autodiscover/autodiscover.xml?emailaddress=a%40mail.test")
    assert status == 200
    check_autodiscover(body, web_settings, "a@mail.test")
    status, _, body = fetch(web, "/autodiscover/autodiscover.xml")
    assert status == 400 and body == b"an e-mail address is required\n"


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (b"<Autodiscover><Request>", b"the request is not well-formed XML\n"),
        (b"\x00\xff garbage", b"the request is not well-formed XML\n"),
        (ad_request("bob@elsewhere.net"), b"not an address in a domain served here\n"),
        (ad_request("not an address"), b"not a valid e-mail address\n"),
    ],
)
def test_e2e_autodiscover_bad_requests_get_400(
    web: ServerProcess, body: bytes, answer: bytes
) -> None:
    status, headers, text = fetch(web, "/autodiscover/autodiscover.xml", body)
    assert (status, text) == (400, answer)
    assert headers["Content-Type"].startswith("text/plain")


def test_e2e_autodiscover_oversized_body_gets_413(web: ServerProcess) -> None:
    padding = b"<!-- " + b"x" * (web_site.MAX_BODY + 10) + b" -->"
    status, headers, text = fetch(
        web, "/autodiscover/autodiscover.xml", ad_request("bob@example.org") + padding
    )
    assert (status, text) == (413, b"request body too large\n")
    assert headers["Connection"] == "close"
    # Chunked, without a declared length: counted as it arrives.
    chunks = (b"y" * 8192 for _ in range(10))
    status, _, _ = fetch(web, "/autodiscover/autodiscover.xml", chunks)  # type: ignore[arg-type]
    assert status == 413


def test_e2e_huge_declared_body_is_refused_before_it_is_sent(web: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", web.port("http")), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):  # the server closes after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


def test_e2e_mobileconfig(web: ServerProcess, web_settings: MailSettings) -> None:
    status, headers, body = fetch(web, "/mail/mobileconfig?emailaddress=bob%40example.org")
    assert status == 200
    assert headers["Content-Type"] == MOBILECONFIG_CONTENT_TYPE
    assert "example.org.mobileconfig" in headers["Content-Disposition"]
    expected = build_mobileconfig(web_settings, "bob@example.org")
    assert plistlib.loads(body) == plistlib.loads(expected)
    mail = plistlib.loads(body)["PayloadContent"][0]
    assert mail["IncomingMailServerPortNumber"] == web.port("imap", True)
    assert mail["OutgoingMailServerPortNumber"] == web.port("submission", True)
    for query in ("", "?emailaddress=bob", "?emailaddress=bob%40evil.org", "?emailaddress=%40x"):
        status, _, _ = fetch(web, "/mail/mobileconfig" + query)
        assert status == 400, query


def test_e2e_healthz_404_and_405(web: ServerProcess) -> None:
    assert fetch(web, "/healthz")[::2] == (200, b"ok\n")
    assert fetch(web, "/healthz", method="HEAD")[::2] == (200, b"")
    status, _, body = fetch(web, "/nothing-here")
    assert (status, body) == (404, b"not found\n")
    status, headers, _ = fetch(web, "/metrics", b"x")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def scrape(web: ServerProcess) -> dict[str, float]:
    """``{'name{labels}': value}`` of one /metrics scrape."""
    status, headers, body = fetch(web, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_e2e_metrics_count_imap_logins(web: ServerProcess) -> None:
    web.add_user("metrics1")
    key = 'mailstead_logins_total{protocol="imap",result="ok"}'
    before = scrape(web).get(key, 0.0)
    with imaplib.IMAP4("127.0.0.1", web.port("imap"), timeout=TIMEOUT) as imap:
        imap.login("metrics1@example.org", "secret")
        imap.select("INBOX")
        samples = scrape(web)
        assert samples["mailstead_open_sessions"] >= 1
        imap.logout()
    assert samples[key] == before + 1
    assert samples['mailstead_connections_total{protocol="imap"}'] >= 1
    assert samples['mailstead_commands_total{command="SELECT",protocol="imap"}'] >= 1
    assert samples['mailstead_command_seconds_count{command="SELECT",protocol="imap"}'] >= 1


def test_e2e_metrics_count_deliveries(web: ServerProcess) -> None:
    """Needs the SMTP handler to count through ``ctx.count`` (see the report on issue 6)."""
    web.add_user("metrics2")
    before = scrape(web)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@x.net", "metrics2@example.org", "hi"
    msg.set_content("counted\n")
    with smtplib.SMTP("127.0.0.1", web.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("a@x.net", ["metrics2@example.org"], msg.as_bytes())
    after = scrape(web)
    assert after["mailstead_deliveries_total"] == before.get("mailstead_deliveries_total", 0) + 1
    assert after["mailstead_delivered_bytes_total"] > before.get(
        "mailstead_delivered_bytes_total", 0
    )


def run_healthcheck(srv: ServerProcess) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).resolve().parent.parent / "docker" / "healthcheck.py"
    env = dict(srv.env, MAILSTEAD_CONFIG=str(srv.config))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=30)


def test_container_healthcheck_asks_healthz_or_a_greeting(
    web: ServerProcess, server: ServerProcess
) -> None:
    imap_lines = web.log_text().count("IMAP connection from")
    res = run_healthcheck(web)  # has HTTP: /healthz, which also asks the store
    assert (res.returncode, res.stdout) == (0, "healthy\n"), res.stdout + res.stderr
    assert web.log_text().count("IMAP connection from") == imap_lines  # nothing logged
    res = run_healthcheck(server)  # no HTTP listener: the IMAP greeting
    assert (res.returncode, res.stdout) == (0, "healthy\n"), res.stdout + res.stderr


def test_container_healthcheck_fails_for_a_server_not_running(tmp_path: Path) -> None:
    res = run_healthcheck(ServerProcess(tmp_path))
    assert res.returncode == 1 and res.stdout.startswith("unhealthy: "), res.stdout
    assert "listeners.json does not exist" in res.stdout
