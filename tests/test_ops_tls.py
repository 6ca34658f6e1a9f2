"""The generated CA cannot mint certificates for other sites (issue 15 #2).

Its X.509 name constraints permit only the server's names, its private key is never
written, and the pair is replaced when the names change, when it was made by an older
version that kept the CA key, or when it nears its end. Checked by two verifiers: the
one in ``cryptography`` and OpenSSL (through ``ssl``, as Python mail clients use it).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from conftest import ServerProcess
from mailstead.tls import build_ca, build_leaf, ensure_tls, generate_self_signed, server_names

NOW = datetime.datetime.now(datetime.UTC)
NAMES = ["mail.test", "autoconfig.example.org", "autodiscover.example.org", "localhost"]


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "data" / "tls" / "cert.pem", tmp_path / "data" / "tls" / "key.pem"


def _chain(cert: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(cert.read_bytes())


def _verify(ca: x509.Certificate, leaf: x509.Certificate, name: x509.GeneralName) -> None:
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(name)
    verifier.verify(leaf, [])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _handshake(tmp_path: Path, chain: bytes, key: bytes, ca: bytes, hostname: str) -> None:
    """A TLS handshake in memory: our server context, OpenSSL verifying as a client."""
    (tmp_path / "hs-cert.pem").write_bytes(chain)
    (tmp_path / "hs-key.pem").write_bytes(key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "hs-cert.pem", tmp_path / "hs-key.pem")
    client_ctx = ssl.create_default_context(cadata=ca.decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_the_generated_ca_permits_only_the_server_names_and_its_key_is_gone(
    tmp_path: Path,
) -> None:
    cert, key = _pair(tmp_path)
    ensure_tls(cert, key, "mail.test", configured=False, domains=["example.org"])
    assert sorted(p.name for p in cert.parent.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    leaf, ca = _chain(cert)
    assert x509.load_pem_x509_certificate((cert.parent / "ca.pem").read_bytes()) == ca
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.excluded_subtrees is None
    assert constraints.value.permitted_subtrees == [
        *(x509.DNSName(n) for n in NAMES),
        x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    ]
    for name in NAMES:
        _verify(ca, leaf, x509.DNSName(name))
    _verify(ca, leaf, x509.IPAddress(ipaddress.ip_address("::1")))
    # Only the leaf's key is on disk, and it is the leaf's.
    written = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert written.public_key() == leaf.public_key()
    # OpenSSL (what Python's ssl, and so imaplib/poplib/smtplib, use) accepts it too.
    _handshake(tmp_path, cert.read_bytes(), key.read_bytes(),
               (cert.parent / "ca.pem").read_bytes(), "autodiscover.example.org")


def test_a_certificate_for_another_site_under_such_a_ca_is_refused(tmp_path: Path) -> None:
    """Were the CA key ever copied before it was dropped, the constraints still hold."""
    names, ips = server_names("mail.test", ["example.org"])
    ca, ca_key = build_ca("mail.test", names, ips, days=30, now=NOW)
    for foreign_name, foreign_ip in (("bank.example", None), ("example.org", None),
                                     ("mail.test.evil.example", None),
                                     ("localhost", ipaddress.ip_address("192.0.2.7"))):
        evil, evil_key = build_leaf(ca, ca_key, foreign_name, [foreign_name],
                                    [foreign_ip] if foreign_ip else [], days=30, now=NOW)
        target: x509.GeneralName = (x509.IPAddress(foreign_ip) if foreign_ip
                                    else x509.DNSName(foreign_name))
        with pytest.raises(VerificationError, match="name constraint"):
            _verify(ca, evil, target)
        with pytest.raises(ssl.SSLCertVerificationError, match=r"subtree|constraint"):
            _handshake(tmp_path, _pem(evil) + _pem(ca), _key_pem(evil_key), _pem(ca),
                       str(foreign_ip or foreign_name))
    # RFC 5280 DNS subtrees include the names below a permitted one.
    ok, _ = build_leaf(ca, ca_key, "mail.test", ["imap.mail.test"], [], days=30, now=NOW)
    _verify(ca, ok, x509.DNSName("imap.mail.test"))


def test_the_pair_is_kept_while_names_stay_and_replaced_when_they_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = _pair(tmp_path)
    ensure_tls(cert, key, "mail.test", configured=False, domains=["example.org"])
    first = cert.read_bytes(), key.read_bytes()
    ensure_tls(cert, key, "MAIL.test", configured=False, domains=["example.org"])
    assert (cert.read_bytes(), key.read_bytes()) == first
    with caplog.at_level(logging.WARNING, logger="mailstead.tls"):
        ensure_tls(cert, key, "mail.test", configured=False,
                   domains=["example.org", "example.net"])
    assert "names changed" in caplog.text and "trust the new CA" in caplog.text
    leaf, ca = _chain(cert)
    assert leaf.public_key() != x509.load_pem_x509_certificates(first[0])[0].public_key()
    _verify(ca, leaf, x509.DNSName("autoconfig.example.net"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mailstead.tls"):
        ensure_tls(cert, key, "mx.test", configured=False, domains=["example.org", "example.net"])
    assert "names changed (now mx.test," in caplog.text
    _verify(_chain(cert)[1], _chain(cert)[0], x509.DNSName("mx.test"))


def _legacy_pair(cert: Path, key: Path, issuer_cn: str, names: list[str]) -> None:
    """A chain as Mailstead before name constraints wrote it (or someone else's chain)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(NOW - datetime.timedelta(days=1))
          .not_valid_after(NOW + datetime.timedelta(days=400))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=400))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(ca_key, hashes.SHA256()))
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.write_bytes(_pem(leaf) + _pem(ca))
    key.write_bytes(_key_pem(leaf_key))
    (cert.parent / "ca.pem").write_bytes(_pem(ca))
    (cert.parent / "ca-key.pem").write_bytes(_key_pem(ca_key))


def test_an_older_pair_that_kept_its_ca_key_is_replaced(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path)
    names, _ = server_names("mail.test", ["example.org"])
    _legacy_pair(cert, key, "Mailstead local CA for mail.test", names)
    ensure_tls(cert, key, "mail.test", configured=False, domains=["example.org"])
    assert not (cert.parent / "ca-key.pem").exists()
    leaf, ca = _chain(cert)
    assert ca.extensions.get_extension_for_class(x509.NameConstraints).critical
    _verify(ca, leaf, x509.DNSName("mail.test"))


def test_a_certificate_someone_else_issued_is_never_replaced(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path)
    _legacy_pair(cert, key, "Example Corp Issuing CA", ["imap.example.com"])
    (cert.parent / "ca-key.pem").unlink()
    before = cert.read_bytes(), key.read_bytes()
    ensure_tls(cert, key, "mail.test", configured=False, domains=["example.org"])
    assert (cert.read_bytes(), key.read_bytes()) == before


def test_a_pair_near_its_end_is_replaced(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path)
    generate_self_signed(cert, key, "mail.test", domains=["example.org"], days=10)
    ensure_tls(cert, key, "mail.test", configured=False, domains=["example.org"])
    leaf = _chain(cert)[0]
    assert leaf.not_valid_after_utc > NOW + datetime.timedelta(days=800)


def test_cert_self_signed_keeps_no_ca_key_and_removes_an_old_one(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    out.mkdir()
    (out / "ca-key.pem").write_text("an old CA key\n")
    (out / "cert.pem").write_text("old\n")
    srv = ServerProcess(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "mailstead", "cert", "self-signed", "--hostname", "mx.test",
         "--domain", "example.org", "--out", str(out), "--force"],
        capture_output=True, text=True, env=srv.env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "name constraints" in res.stdout and "not kept" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    leaf, ca = _chain(out / "cert.pem")
    _verify(ca, leaf, x509.DNSName("autodiscover.example.org"))
    with pytest.raises(VerificationError):
        _verify(ca, leaf, x509.DNSName("example.org"))
