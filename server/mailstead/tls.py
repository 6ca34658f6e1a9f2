"""TLS material: a name-constrained CA + leaf pair for first runs, and reloadable contexts.

Thunderbird refuses a lone self-signed certificate that is its own CA, so the generated
pair is a real chain: a small CA (``ca.pem``, for users to trust) and a leaf with
CA:FALSE and a SAN for the hostname, the autoconfig/autodiscover names of the mail
domains, ``localhost``, ``127.0.0.1`` and ``::1``. Trusting a CA is trusting whoever holds
its key, so the CA carries critical X.509 name constraints (RFC 5280 §4.2.1.10) that
permit exactly the leaf's names, and its private key never touches the disk: it signs
the leaf in memory and is gone. A copy of the data folder can then mint nothing, and
even a key stolen from memory could not vouch for any other site. When the names change
(or the leaf nears its end) the pair is generated anew, and clients trust the new CA.
A real certificate (ACME) is the production path; this one is for first runs and tests.
``TLSContexts`` hands out contexts for Twisted (pyOpenSSL) and asyncio (stdlib ``ssl``)
and re-reads the files on SIGHUP; existing connections keep the context they started with.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import private_dir, tighten, write_private

if TYPE_CHECKING:
    from OpenSSL import SSL  # for annotations; the code imports it where it is used

log = logging.getLogger(__name__)


# Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are all modern); the
# "intermediate" profile that every mail client of the last decade supports.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
))
ORGANIZATION = "Mailstead"
CA_NAME_PREFIX = "Mailstead local CA for "
LEGACY_CA_KEY = "ca-key.pem"  # where versions before name constraints kept the CA key
RENEW_BEFORE = datetime.timedelta(days=30)

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class TLSError(Exception):
    """Certificate or key missing, unreadable or not a pair."""


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def server_names(hostname: str, domains: Iterable[str] = ()) -> tuple[list[str], list[IPAddr]]:
    """(DNS names, IP addresses) a generated leaf carries, in order, lower case.

    Besides the hostname: ``autoconfig.<domain>`` and ``autodiscover.<domain>`` of each
    mail domain (the names Thunderbird and Outlook look up for their settings), and the
    loopback names and addresses for local clients."""
    names: list[str] = []
    ips: list[IPAddr] = []
    try:
        ips.append(ipaddress.ip_address(hostname))
    except ValueError:
        names.append(hostname.lower().rstrip("."))
    for domain in domains:
        names += [f"autoconfig.{domain.lower()}", f"autodiscover.{domain.lower()}"]
    names.append("localhost")
    ips += [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    return list(dict.fromkeys(names)), list(dict.fromkeys(ips))


def _name_constraints(names: list[str], ips: list[IPAddr]) -> x509.NameConstraints:
    """Permit exactly these names (and, as RFC 5280 defines DNS subtrees, names below
    them) and these single addresses. Listing an iPAddress subtree matters: without one,
    IP SANs would be unconstrained."""
    subtrees: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    subtrees += [x509.IPAddress(ipaddress.ip_network(ip)) for ip in ips]
    return x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None)


def build_ca(
    hostname: str, names: list[str], ips: list[IPAddr], *, days: int,
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA certificate constrained to ``names``/``ips``, and its key (kept in memory)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"{CA_NAME_PREFIX}{hostname}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_name_constraints(names, ips), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def build_leaf(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, subject_cn: str,
    names: list[str], ips: list[IPAddr], *, days: int, now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for ``names``/``ips`` signed by the CA, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def generate_self_signed(
    cert_path: Path,
    key_path: Path,
    hostname: str,
    *,
    domains: Iterable[str] = (),
    days: int = 825,
) -> Path:
    """Write a leaf certificate chain (leaf + CA), its key and ``ca.pem``, all owner-only;
    returns the CA certificate's path. The CA's key is not written anywhere (and a key
    file an older version left beside the certificate is deleted)."""
    now = datetime.datetime.now(datetime.UTC)
    names, ips = server_names(hostname, domains)
    ca_cert, ca_key = build_ca(hostname, names, ips, days=days, now=now)
    leaf, key = build_leaf(ca_cert, ca_key, hostname, names, ips, days=days, now=now)
    del ca_key  # signing is all it was for
    pem = serialization.Encoding.PEM
    for folder in dict.fromkeys((cert_path.parent, key_path.parent)):
        private_dir(folder)
    ca_path = cert_path.with_name("ca.pem")
    write_private(ca_path, ca_cert.public_bytes(pem))
    write_private(
        key_path,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    write_private(cert_path, leaf.public_bytes(pem) + ca_cert.public_bytes(pem))
    cert_path.with_name(LEGACY_CA_KEY).unlink(missing_ok=True)
    return ca_path


def _why_regenerate(
    cert_path: Path, key_path: Path, hostname: str, domains: Iterable[str]
) -> str | None:
    """Why a pair generated by Mailstead at the default location must be made anew, or
    None (also for a certificate someone else issued: that one is never replaced)."""
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError):
        return None  # loading it reports the problem
    leaf = chain[0]
    issuer_cn = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not issuer_cn or not str(issuer_cn[0].value).startswith(CA_NAME_PREFIX):
        return None
    ca = next((c for c in chain[1:] if c.subject == leaf.issuer), None)
    if cert_path.with_name(LEGACY_CA_KEY).exists():
        return f"its CA's private key was kept on disk ({LEGACY_CA_KEY}, older Mailstead)"
    if ca is None or not any(isinstance(e.value, x509.NameConstraints) for e in ca.extensions):
        return "its CA has no name constraints (older Mailstead)"
    names, ips = server_names(hostname, domains)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = (set(san.get_values_for_type(x509.DNSName)),
                set(san.get_values_for_type(x509.IPAddress)))
    except x509.ExtensionNotFound:
        have = (set(), set())
    if have != (set(names), set(ips)):
        return f"the server's names changed (now {', '.join([*names, *map(str, ips)])})"
    if leaf.not_valid_after_utc - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return f"it expires on {leaf.not_valid_after_utc:%Y-%m-%d}"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return "its key cannot be read"
    if key.public_key() != leaf.public_key():
        return "its key does not belong to it"
    return None


def _stdlib_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise TLSError(f"TLS file missing: {exc.filename}") from None
    except PermissionError as exc:
        raise TLSError(f"TLS file not readable: {exc.filename}") from None
    except ssl.SSLError as exc:
        raise TLSError(
            f"TLS certificate {cert} and key {key} cannot be used together: {exc.reason}"
        ) from None
    return ctx


class TLSContexts:
    """The server's current TLS contexts; ``reload()`` swaps them atomically."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.stdlib: ssl.SSLContext = _stdlib_context(cert, key)
        self._openssl = self._make_openssl()

    def _make_openssl(self) -> SSL.Context:
        from OpenSSL import SSL

        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        ctx.set_cipher_list(TLS12_CIPHERS.encode())
        try:
            ctx.use_certificate_chain_file(str(self.cert))
            ctx.use_privatekey_file(str(self.key))
            ctx.check_privatekey()
        except SSL.Error as exc:
            raise TLSError(f"TLS certificate {self.cert} / key {self.key}: {exc}") from None
        return ctx

    def reload(self) -> None:
        """Re-read certificate and key; on error keep the old ones and raise."""
        _stdlib_context(self.cert, self.key)  # validate the pair before touching anything
        openssl = self._make_openssl()
        # asyncio listeners (SMTPS) hold this very SSLContext: load the new pair into it
        # so their next handshakes use it; Twisted listeners ask for the context anew.
        self.stdlib.load_cert_chain(str(self.cert), str(self.key))
        self._openssl = openssl
        log.info("TLS certificate reloaded from %s", self.cert)

    def creator(self) -> _ConnectionCreator:
        """An ``IOpenSSLServerConnectionCreator`` that always uses the current context."""
        return _ConnectionCreator(self)

    @property
    def openssl_context(self) -> SSL.Context:
        return self._openssl


class _ConnectionCreator:
    def __init__(self, owner: TLSContexts) -> None:
        self._owner = owner

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        from OpenSSL import SSL

        return SSL.Connection(self._owner.openssl_context, None)


def _declare_interface() -> None:
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
    from zope.interface import classImplements

    classImplements(_ConnectionCreator, IOpenSSLServerConnectionCreator)


_declare_interface()


def ensure_tls(
    cert: Path, key: Path, hostname: str, *, configured: bool, domains: Iterable[str] = ()
) -> TLSContexts:
    """Load the pair. At the default location (``configured`` False) a self-signed pair
    is generated when both files are missing; a configured path that does not exist is an
    error: writing a fresh self-signed pair where a real certificate was expected (a typo,
    an unmounted volume, a renewal that has not run) would hide the mistake from the admin
    and serve a certificate no client trusts."""
    if configured:
        missing = [f"{what} {path}" for what, path in (("cert", cert), ("key", key))
                   if not path.exists()]
        if missing:
            raise TLSError(
                f"[tls] {' and '.join(missing)} does not exist: fix the path, or leave "
                "[tls] cert and key empty to use a generated self-signed certificate"
            )
    elif not cert.exists() and not key.exists():
        ca = generate_self_signed(cert, key, hostname, domains=domains)
        log.warning(
            "generated a self-signed TLS certificate for %s at %s; clients must trust %s "
            "or you should configure [tls] cert and key",
            hostname, cert, ca,
        )
    elif cert.exists() and key.exists():
        for path in (cert.parent, cert, key, cert.with_name("ca.pem")):
            tighten(path)
        reason = _why_regenerate(cert, key, hostname, domains)
        if reason is not None:
            ca = generate_self_signed(cert, key, hostname, domains=domains)
            log.warning(
                "replaced the generated TLS certificate at %s because %s; clients must "
                "trust the new CA %s (the old CA cannot sign anything: its key is gone)",
                cert, reason, ca,
            )
    return TLSContexts(cert, key)
