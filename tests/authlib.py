"""Test helpers for inbound SPF/DKIM/DMARC: a signing key, its DNS record, messages."""

from __future__ import annotations

import base64
import functools

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_IP = "127.0.0.5"  # a "foreign" client: on loopback, outside trusted_networks


@functools.cache
def rsa_key() -> tuple[bytes, str]:
    """(private key PEM, the p= of its DKIM record); one 2048-bit key per test run."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def txt(text: str) -> str:
    """A TXT rdata in zone-file form, split into strings of at most 255 octets."""
    return " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255))


def dkim_record() -> str:
    return txt(f"v=DKIM1; k=rsa; p={rsa_key()[1]}")


def message(from_addr: str, subject: str = "hello", extra: str = "",
            body: str = "Hi there.\r\n") -> bytes:
    return (f"From: Sender <{from_addr}>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@test>\r\n{extra}\r\n{body}").encode()


def sign(data: bytes, domain: str, selector: str = "sel") -> bytes:
    """``data`` with a DKIM-Signature of ``domain`` (relaxed/relaxed) on top."""
    sig = dkim.sign(data, selector.encode(), domain.encode(), rsa_key()[0],
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    return bytes(sig) + data


def auth_results(stored: bytes) -> list[str]:
    """Every Authentication-Results field of a stored message, unfolded."""
    head = stored.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        else:
            fields.append(line)
    return [f.split(":", 1)[1].strip() for f in fields
            if f.lower().startswith("authentication-results:")]
