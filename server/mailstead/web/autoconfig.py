"""Client self-configuration documents, as pure functions of a small settings object.

Three formats describe the same facts (host name, ports, security, login name):

- Mozilla autoconfig ``config-v1.1.xml`` (Thunderbird, K-9/Thunderbird for Android, Evolution),
- Microsoft Autodiscover "POX" (Outlook's ``autodiscover.xml``),
- an Apple configuration profile (``.mobileconfig``, a plist) for iOS and macOS Mail.

Nothing here touches sockets or the server context: ``MailSettings.from_listeners`` turns the
listener list into settings, and each ``build_*`` returns the bytes to send, so every field is
testable with a real XML or plist parser.
"""

from __future__ import annotations

import ipaddress
import plistlib
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field

SSL = "SSL"  # implicit TLS from the first byte (993, 995, 465)
STARTTLS = "STARTTLS"  # plain connect, then STARTTLS/STLS upgrade
PLAIN = "plain"  # no TLS at all: only when the server has no certificate

# Most secure first: clients take the first server of a type that they can use.
_SECURITY_RANK = {SSL: 0, STARTTLS: 1, PLAIN: 2}
_PROTOCOLS = ("imap", "pop3", "smtp")
# Listener protocol -> the protocol the documents name. Clients send through submission
# (587 STARTTLS, 465 SSL) and log in there; the receiving SMTP listener (25) takes no
# AUTH, so it is never advertised.
_ADVERTISED = {"imap": "imap", "pop3": "pop3", "submission": "smtp"}

AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)
MOBILECONFIG_CONTENT_TYPE = "application/x-apple-aspen-config"

# RFC 5322 dot-atom text, ASCII only: the local parts Mailstead users can have. Anything else
# (quotes, spaces, control characters) is refused rather than echoed into a document.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


class AddressError(ValueError):
    """An e-mail address that is malformed or not in one of our domains."""


@dataclass(frozen=True, slots=True)
class MailServer:
    """One way to reach one protocol: ``protocol`` is imap, pop3 or smtp (outgoing mail:
    a submission listener)."""

    protocol: str
    port: int
    security: str  # SSL, STARTTLS or plain


@dataclass(frozen=True, slots=True)
class MailSettings:
    """What every client needs to know; ``servers`` are ordered best first per protocol."""

    hostname: str
    domains: tuple[str, ...]
    servers: tuple[MailServer, ...] = field(default_factory=tuple)

    @classmethod
    def from_listeners(
        cls,
        hostname: str,
        domains: Iterable[str],
        listeners: Iterable[tuple[str, str, str, int]],
        tls: bool,
    ) -> MailSettings:
        """Settings from ``(protocol, "plain"|"tls", host, port)`` listeners.

        Outgoing mail is the ``submission`` listeners (``smtp`` in the documents); the
        receiving ``smtp`` listeners, LMTP and HTTP are not for mail clients and are
        skipped. A ``tls`` listener is implicit TLS (SSL); a plain one is STARTTLS when
        the server has a certificate (``tls``), else plain. A listener bound to loopback
        only is left out when the same protocol also listens on another address: remote
        clients could not reach it. Duplicates (IPv4 and
        IPv6 on one port) collapse into one entry.
        """
        candidates = [
            (_ADVERTISED[proto], kind, host, port)
            for proto, kind, host, port in listeners
            if proto in _ADVERTISED and port > 0
        ]
        reachable = {proto for proto, _, host, _ in candidates if not _is_loopback(host)}
        seen: set[MailServer] = set()
        servers: list[MailServer] = []
        for proto, kind, host, port in candidates:
            if proto in reachable and _is_loopback(host):
                continue
            security = SSL if kind == "tls" else STARTTLS if tls else PLAIN
            server = MailServer(proto, port, security)
            if server not in seen:
                seen.add(server)
                servers.append(server)
        # Stable sort: protocol order, then security, keeping configured order within a rank.
        servers.sort(key=lambda s: (_PROTOCOLS.index(s.protocol), _SECURITY_RANK[s.security]))
        return cls(hostname, tuple(d.lower() for d in domains), tuple(servers))

    def of(self, protocol: str) -> list[MailServer]:
        """Every server for ``protocol``, best first."""
        return [s for s in self.servers if s.protocol == protocol]

    def best(self, protocol: str) -> MailServer | None:
        """The server a client that takes only one should use."""
        found = self.of(protocol)
        return found[0] if found else None

    def normalise_address(self, address: str | None) -> str:
        """``local@domain`` with the domain lower-cased, or AddressError.

        The domain must be one we serve: a document for someone else's address would send
        their client to us with a password we cannot check.
        """
        if not address:
            raise AddressError("an e-mail address is required")
        text = address.strip()
        local, at, domain = text.rpartition("@")
        if not at or len(text) > 254 or not _LOCAL_PART.fullmatch(local) or len(local) > 64:
            raise AddressError("not a valid e-mail address")
        domain = domain.lower()
        if domain not in self.domains:
            raise AddressError("not an address in a domain served here")
        return f"{local}@{domain}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _xml_bytes(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


# --- Mozilla autoconfig ---------------------------------------------------------------------


def build_autoconfig(settings: MailSettings) -> bytes:
    """``config-v1.1.xml``: the same for every address (usernames are ``%EMAILADDRESS%``).

    Thunderbird refuses a file without an ``outgoingServer``, so the submission listeners are
    listed there (465 SSL first, then 587 STARTTLS); with none the file is still
    well-formed, but the client will ask the user for an outgoing server.
    """
    provider_id = settings.domains[0] if settings.domains else settings.hostname
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider")
    provider.set("id", provider_id)
    for domain in settings.domains:
        _sub(provider, "domain", domain)
    _sub(provider, "displayName", f"{provider_id} mail")
    _sub(provider, "displayShortName", provider_id)
    for protocol in ("imap", "pop3"):
        for server in settings.of(protocol):
            _moz_server(provider, "incomingServer", server, settings.hostname)
    for server in settings.of("smtp"):
        _moz_server(provider, "outgoingServer", server, settings.hostname)
    return _xml_bytes(root)


def _moz_server(parent: ET.Element, tag: str, server: MailServer, hostname: str) -> None:
    node = _sub(parent, tag)
    node.set("type", server.protocol)
    _sub(node, "hostname", hostname)
    _sub(node, "port", server.port)
    _sub(node, "socketType", server.security)
    _sub(node, "username", "%EMAILADDRESS%")
    _sub(node, "authentication", "password-cleartext")


# --- Microsoft Autodiscover (POX) -----------------------------------------------------------


class AutodiscoverRequestError(ValueError):
    """A POST body that is not an Autodiscover request we can read."""


def parse_autodiscover_request(body: bytes) -> str:
    """The ``EMailAddress`` of an Outlook POX request, or AutodiscoverRequestError.

    Requests never carry a DTD, so any ``<!DOCTYPE`` is refused before parsing: no entity
    expansion tricks reach the parser. Namespaces are ignored when looking for the element,
    because clients differ in which request schema URI they send.
    """
    if b"<!doctype" in body.lower():
        raise AutodiscoverRequestError("DTDs are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise AutodiscoverRequestError("the request is not well-formed XML") from None
    for elem in root.iter():
        if isinstance(elem.tag, str) and elem.tag.rpartition("}")[2] == "EMailAddress":
            text = (elem.text or "").strip()
            if text:
                return text
    raise AutodiscoverRequestError("the request has no EMailAddress")


def build_autodiscover(settings: MailSettings, address: str) -> bytes:
    """The POX response for ``address``: one ``Protocol`` per type (IMAP, POP3, SMTP).

    One entry per type because Outlook takes the first entry of a type anyway; the best one
    (implicit TLS, then STARTTLS) is given. ``SPA off`` stops Outlook from trying NTLM;
    ``Encryption`` overrides the older ``SSL`` flag and distinguishes SSL from STARTTLS (TLS).
    """
    # Two nested default namespaces, spelled as plain xmlns attributes: ElementTree would
    # otherwise invent ns0:/ns1: prefixes, which are equivalent but not what Outlook is
    # known to accept.
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = _sub(root, "Response")
    response.set("xmlns", AUTODISCOVER_OUTLOOK_NS)
    user = _sub(response, "User")
    _sub(user, "DisplayName", address)
    _sub(user, "AutoDiscoverSMTPAddress", address)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for protocol in _PROTOCOLS:
        server = settings.best(protocol)
        if server is None:
            continue
        proto = _sub(account, "Protocol")
        _sub(proto, "Type", protocol.upper())
        _sub(proto, "Server", settings.hostname)
        _sub(proto, "Port", server.port)
        _sub(proto, "DomainRequired", "off")
        _sub(proto, "LoginName", address)
        _sub(proto, "SPA", "off")
        _sub(proto, "SSL", "off" if server.security == PLAIN else "on")
        _sub(proto, "Encryption", {SSL: "SSL", STARTTLS: "TLS", PLAIN: "None"}[server.security])
        _sub(proto, "AuthRequired", "on")
    return _xml_bytes(root)


# --- Apple configuration profile ------------------------------------------------------------


def payload_uuid(settings: MailSettings, address: str, part: str) -> str:
    """A UUID that stays the same for one address on one server.

    Installing a profile with the same PayloadUUIDs again replaces the account instead of
    adding a second copy of it.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailstead:{settings.hostname}:{part}:{address}"))


def build_mobileconfig(settings: MailSettings, address: str) -> bytes:
    """A ``.mobileconfig`` (unsigned plist XML) with one ``com.apple.mail.managed`` payload.

    ``address`` must already be normalised (``MailSettings.normalise_address``). IMAP is used
    when there is an IMAP listener, POP3 otherwise. ``UseSSL`` is true for implicit TLS and
    for STARTTLS ports alike: Apple Mail upgrades with STARTTLS when the port is not an
    implicit-TLS one.
    """
    incoming = settings.best("imap") or settings.best("pop3")
    if incoming is None:
        raise ValueError("no IMAP or POP3 listener to describe")
    outgoing = settings.best("smtp")
    reverse_host = ".".join(reversed(settings.hostname.split(".")))
    mail_uuid = payload_uuid(settings, address, "mail")
    mail: dict[str, object] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse_host}.mailstead.mail.{mail_uuid}",
        "PayloadUUID": mail_uuid,
        "PayloadDisplayName": f"Mail ({address})",
        "EmailAccountDescription": address,
        "EmailAccountName": address.partition("@")[0],
        "EmailAccountType": "EmailTypeIMAP" if incoming.protocol == "imap" else "EmailTypePOP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": settings.hostname,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": incoming.security != PLAIN,
        "IncomingMailServerUsername": address,
    }
    if outgoing is not None:
        mail.update(
            {
                "OutgoingMailServerAuthentication": "EmailAuthPassword",
                "OutgoingMailServerHostName": settings.hostname,
                "OutgoingMailServerPortNumber": outgoing.port,
                "OutgoingMailServerUseSSL": outgoing.security != PLAIN,
                "OutgoingMailServerUsername": address,
                "OutgoingPasswordSameAsIncomingPassword": True,
            }
        )
    profile_uuid = payload_uuid(settings, address, "profile")
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse_host}.mailstead.{profile_uuid}",
        "PayloadUUID": profile_uuid,
        "PayloadDisplayName": f"{address} mail account",
        "PayloadDescription": f"Sets up the mail account {address} on {settings.hostname}.",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
