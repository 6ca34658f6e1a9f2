"""TLS material: a self-signed CA + leaf pair for first runs, and reloadable server contexts.

Thunderbird refuses a lone self-signed certificate that is its own CA, so the generated
pair is a real chain: a small CA (kept beside the leaf, for users to trust) and a leaf
with CA:FALSE and a SAN for the hostname, the autoconfig/autodiscover names of the mail
domains, ``localhost``, ``127.0.0.1`` and ``::1``.
``TLSContexts`` hands out contexts for Twisted (pyOpenSSL) and asyncio (stdlib ``ssl``)
and re-reads the files on SIGHUP; existing connections keep the context they started with.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


class TLSError(Exception):
    """Certificate or key missing, unreadable or not a pair."""


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mailstead"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def generate_self_signed(
    cert_path: Path,
    key_path: Path,
    hostname: str,
    *,
    domains: Iterable[str] = (),
    days: int = 825,
) -> Path:
    """Write a leaf certificate chain (leaf + CA) and key; returns the CA certificate path.

    Besides the hostname, the leaf names ``autoconfig.<domain>`` and ``autodiscover.<domain>``
    of each mail domain: the names Thunderbird and Outlook look up for their settings."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"Mailstead local CA for {hostname}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [hostname]
    for domain in domains:
        names += [f"autoconfig.{domain}", f"autodiscover.{domain}"]
    if "localhost" not in names:
        names.append("localhost")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(names)]
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(hostname))
        .issuer_name(ca_name)
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
    pem = serialization.Encoding.PEM
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(leaf.public_bytes(pem) + ca_cert.public_bytes(pem))
    _write_private(
        key_path,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    ca_path = cert_path.with_name("ca.pem")
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    _write_private(
        cert_path.with_name("ca-key.pem"),
        ca_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return ca_path


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
    return TLSContexts(cert, key)
