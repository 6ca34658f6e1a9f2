"""DKIM keys and signing (RFC 6376, with dkimpy): rsa-sha256 and ed25519-sha256 (RFC 8463).

Keys live in ``<data_dir>/dkim/<domain>/<selector>.key`` as PEM (PKCS #8, owner-only,
folders 0700): ``mailstead dkim keygen`` writes them, and a key dropped there by hand or
created while the server runs is used from the next message on. A message is signed with
every key of its ``From:`` domain, one signature per selector: RFC 8463 §4 recommends
signing with both an RSA and an Ed25519 key while verifiers learn Ed25519.

Signing happens at enqueue time, not at each delivery attempt: the signature is computed
once (an RSA-2048 signature costs about a millisecond of CPU) however many retries and
destinations there are, the queued bytes are exactly what every remote receives, and a
key rotated while a message waits does not change what was signed. Canonicalization is
relaxed/relaxed; the header set is dkimpy's (RFC 6376 §5.4.1), with ``From`` signed once
more than it occurs (oversigned), so nobody can add a second ``From:`` later.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..files import PRIVATE_DIR, private_dir, write_private

ALGORITHMS = ("rsa", "ed25519")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class DkimError(Exception):
    """A key that cannot be made or read, worded for the operator."""


def check_name(text: str, what: str) -> str:
    """A domain or selector as DNS labels, lower case; DkimError when it is not one."""
    name = text.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise DkimError(f"{what} {text!r} is not a DNS name (letters, digits, '-', '.')")
    return name


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    return data_dir / "dkim" / domain / f"{selector}.key"


def keygen(data_dir: Path, domain: str, selector: str, algorithm: str, *,
           force: bool = False) -> tuple[Path, str]:
    """Write a new private key; returns its path and the DNS TXT record to publish."""
    domain = check_name(domain, "domain")
    selector = check_name(selector, "selector")
    if algorithm not in ALGORITHMS:
        raise DkimError(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    path = key_path(data_dir, domain, selector)
    if path.exists() and not force:
        raise DkimError(f"{path} exists: a published key would stop matching (use --force)")
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "rsa" else ed25519.Ed25519PrivateKey.generate()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    for folder in (data_dir / "dkim", path.parent):
        private_dir(folder)
        os.chmod(folder, PRIVATE_DIR)  # 0700 exactly, whatever the umask left
    write_private(path, pem)
    return path, txt_record(domain, selector, key)


def txt_record(domain: str, selector: str,
               key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The zone-file line publishing ``key``'s public half (strings of at most 255)."""
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        tag = "rsa"
    else:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        tag = "ed25519"
    value = f"v=DKIM1; k={tag}; p={base64.b64encode(public).decode()}"
    parts = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {parts} )"


@dataclass(frozen=True)
class SigningKey:
    selector: str
    algorithm: bytes  # b"rsa-sha256" | b"ed25519-sha256"
    secret: bytes  # what dkimpy takes: PEM for RSA, the base64 seed for Ed25519


def load_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DkimError(f"cannot read the DKIM key {path}: {exc}") from None
    selector = path.name.removesuffix(".key")
    if isinstance(key, rsa.RSAPrivateKey):
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        return SigningKey(selector, b"rsa-sha256", pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return SigningKey(selector, b"ed25519-sha256", base64.b64encode(seed))
    raise DkimError(f"{path}: only RSA and Ed25519 keys can sign DKIM")


_RSA_KEYS: dict[int, rsa.RSAPrivateKey] = {}
_DIGESTS: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}


def _openssl_rsa_sign(digest: Any, key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA-PKCS1-v1_5 signature, computed by OpenSSL (``cryptography``).

    dkimpy signs with Python's own big-integer ``pow``: 9 ms of CPU per RSA-2048
    signature on this project's machine (measured), all of it holding the GIL, so the
    event loop stalls while an outbound thread signs. OpenSSL gives the same bytes
    (PKCS #1 v1.5 is deterministic) in a fraction of that. dkimpy still builds the
    header, canonicalizes and hashes; only this one step is replaced."""
    private = _RSA_KEYS.get(key["modulus"])
    if private is None:
        public = rsa.RSAPublicNumbers(key["publicExponent"], key["modulus"])
        private = rsa.RSAPrivateNumbers(
            key["prime1"], key["prime2"], key["privateExponent"], key["exponent1"],
            key["exponent2"], key["coefficient"], public,
        ).private_key()
        _RSA_KEYS[key["modulus"]] = private
    algorithm = _DIGESTS[digest.name.lower()]
    return private.sign(digest.digest(), padding.PKCS1v15(), Prehashed(algorithm))


def _dkim() -> Any:
    """dkimpy, with its RSA signing step done by OpenSSL (see ``_openssl_rsa_sign``)."""
    import dkim

    if getattr(dkim, "RSASSA_PKCS1_v1_5_sign", None) is not _openssl_rsa_sign:
        dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign
    return dkim


class DkimSigner:
    """Signs messages with the keys under ``<data_dir>/dkim``; thread-safe, blocking."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "dkim"
        self._cache: dict[Path, tuple[float, SigningKey]] = {}

    def keys(self, domain: str) -> list[SigningKey]:
        folder = self.root / domain
        try:
            paths = sorted(p for p in folder.iterdir() if p.suffix == ".key")
        except OSError:
            return []
        found = []
        for path in paths:
            mtime = path.stat().st_mtime
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, load_key(path))
                self._cache[path] = cached
            found.append(cached[1])
        return found

    def has_keys(self) -> bool:
        try:
            return any(self.root.iterdir())
        except OSError:
            return False

    def sign(self, data: bytes) -> bytes:
        """``data`` with a DKIM-Signature per key of its From: domain (unchanged if none)."""
        dkim = _dkim()
        domain = from_domain(data)
        if domain is None:
            return data
        signatures = []
        for key in self.keys(domain):
            signer = dkim.DKIM(data)
            signatures.append(signer.sign(
                key.selector.encode(), domain.encode(), key.secret,
                signature_algorithm=key.algorithm,
                canonicalize=(b"relaxed", b"relaxed"),
            ))
        return b"".join(signatures) + data


def from_domain(data: bytes) -> str | None:
    """The domain of the (first) From: address, lower case, or None."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]
    value = BytesHeaderParser().parsebytes(head).get("From")
    if value is None:
        return None
    addresses = getaddresses([str(value)])
    if not addresses or "@" not in addresses[0][1]:
        return None
    domain = addresses[0][1].rpartition("@")[2].lower()
    try:
        return check_name(domain, "domain")
    except DkimError:
        return None
