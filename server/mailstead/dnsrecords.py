"""The DNS records a mail domain served here needs, as data (``mailstead dns``).

Pure: the configuration and the DKIM key files in, ``Record``s out; ``cli_dns`` prints
them as zone-file lines and, with ``--check``, compares them with what DNS answers.

* MX: the domain's mail goes to ``[server] hostname``.
* SPF (RFC 7208): ``v=spf1 mx -all``, only the domain's MX hosts send its mail.
* DKIM (RFC 6376): one TXT per key under ``<data_dir>/dkim/<domain>/<selector>.key``
  (the private keys ``mailstead dkim keygen`` writes), the public key derived here.
* DMARC (RFC 7489): ``p=quarantine`` as a start; reports to postmaster@<domain>.
* SRV (RFC 6186, RFC 8314): IMAP, POP3 and submission, on the ports clients are told
  (``[http] public_ports`` when set, else the listeners'); a service not offered gets
  the "not available" record (target ``.``).
* ``autoconfig`` and ``autodiscover`` CNAMEs to the host name (Thunderbird, Outlook).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .config import Config
from .config_rules import parse_public_port
from .web.autoconfig import SSL, MailSettings


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # fully qualified, without the final dot
    rtype: str  # "MX", "TXT", "SRV", "CNAME"
    value: str  # the record's data as the check compares it (TXT: the joined text)
    what: str  # what it is for, one short phrase
    optional: bool = False  # a check does not fail when it is missing


class DkimKeyError(ValueError):
    """A key file that is not a private key we can publish."""


def dkim_public_value(pem: bytes) -> str:
    """The DKIM TXT text (``v=DKIM1; k=…; p=…``) for a PEM private key (RSA or Ed25519).

    RSA's ``p=`` is the SubjectPublicKeyInfo (RFC 6376 §3.6.1); Ed25519's the raw 32-octet
    public key (RFC 8463 §4.2).
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # (cryptography's message points to its web FAQ: not for this operator.)
        raise DkimKeyError("not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    raise DkimKeyError(f"a {type(key).__name__}: DKIM signs with RSA or Ed25519 only")


def dkim_keys(data_dir: Path, domain: str) -> tuple[list[tuple[str, str]], list[str]]:
    """((selector, TXT text) for each ``*.key``, problems worded for the operator)."""
    folder = data_dir / "dkim" / domain
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    try:
        paths = sorted(folder.glob("*.key"))
    except OSError as exc:
        return [], [f"cannot read {folder}: {exc}"]
    for path in paths:
        try:
            found.append((path.stem, dkim_public_value(path.read_bytes())))
        except (OSError, DkimKeyError) as exc:
            problems.append(f"{path}: {exc}")
    return found, problems


# RFC 6186 and RFC 8314 service labels: (label, protocol in the documents, TLS from the
# first byte or not).
SRV_SERVICES = (
    ("_imaps._tcp", "imap", True),
    ("_imap._tcp", "imap", False),
    ("_pop3s._tcp", "pop3", True),
    ("_pop3._tcp", "pop3", False),
    ("_submissions._tcp", "smtp", True),
    ("_submission._tcp", "smtp", False),
)


def client_settings(cfg: Config) -> MailSettings:
    """What clients are told (the autoconfig documents' rule, ``web/site.py``)."""
    public = [(p, k, "*", port) for p, k, port in map(parse_public_port, cfg.http.public_ports)]
    configured = [(p, k, a.host, a.port) for p, k, a in cfg.listeners()]
    hostname = cfg.http.public_hostname or cfg.hostname
    return MailSettings.from_listeners(hostname, cfg.domains, public or configured, True)


def expected_records(cfg: Config, domain: str, dkim: list[tuple[str, str]]) -> list[Record]:
    host = cfg.http.public_hostname or cfg.hostname
    records = [
        Record(domain, "MX", f"10 {host}", "mail for the domain goes to this server"),
        Record(domain, "TXT", "v=spf1 mx -all", "SPF: only the MX hosts send its mail"),
    ]
    for selector, text in dkim:
        records.append(Record(f"{selector}._domainkey.{domain}", "TXT", text,
                              f"DKIM public key, selector {selector}"))
    records.append(Record(f"_dmarc.{domain}", "TXT",
                          f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}",
                          "DMARC policy (start with p=none to watch reports first)"))
    settings = client_settings(cfg)
    for label, protocol, tls in SRV_SERVICES:
        ports = [s.port for s in settings.of(protocol) if (s.security == SSL) == tls]
        if ports:
            records.append(Record(f"{label}.{domain}", "SRV", f"0 1 {ports[0]} {host}",
                                  "client settings (RFC 6186)"))
        else:
            records.append(Record(f"{label}.{domain}", "SRV", "0 0 0 .",
                                  "not offered here (RFC 6186: target '.')", optional=True))
    for name in ("autoconfig", "autodiscover"):
        records.append(Record(f"{name}.{domain}", "CNAME", host,
                              f"{name} documents ([http] listeners)"))
    return records


def zone_line(record: Record) -> str:
    """One zone-file line: names with the final dot, TXT split into 255-octet strings."""
    value = record.value
    if record.rtype == "TXT":
        value = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    elif record.rtype in ("MX", "SRV", "CNAME") and not value.endswith("."):
        value += "."
    return f"{record.name}.\t3600\tIN\t{record.rtype}\t{value}"
