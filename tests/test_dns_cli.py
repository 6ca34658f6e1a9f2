"""``mailstead dns``: the printed records, and ``--check`` against a loopback DNS stub."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from conftest import ServerProcess
from dns_stub import DnsStub

CONFIG = """
[server]
hostname = "mail.example.org"
data_dir = "data"
domains = ["example.org", "example.net"]

[imap]
listen = ["0.0.0.0:143"]
listen_tls = ["0.0.0.0:993"]

[pop3]
listen = []
listen_tls = ["0.0.0.0:995"]

[submission]
listen = ["0.0.0.0:587"]
listen_tls = ["0.0.0.0:465"]

[dns]
nameservers = ["127.0.0.1"]
port = {port}
"""


def make_keys(data: Path) -> dict[str, str]:
    """An RSA and an Ed25519 key as `dkim keygen` writes them; selector -> expected p=."""
    folder = data / "dkim" / "example.org"
    folder.mkdir(parents=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "s2048.key").write_bytes(rsa_key.private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()))
    ed_key = ed25519.Ed25519PrivateKey.generate()
    (folder / "ed.key").write_bytes(ed_key.private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    return {
        "s2048": base64.b64encode(rsa_key.public_key().public_bytes(
            ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)).decode(),
        "ed": base64.b64encode(ed_key.public_key().public_bytes(
            ser.Encoding.Raw, ser.PublicFormat.Raw)).decode(),
    }


def zone(output: str) -> dict[tuple[str, str], list[str]]:
    """The records of the printed zone lines, as DnsStub takes them."""
    records: dict[tuple[str, str], list[str]] = {}
    for line in output.splitlines():
        if not line or line.startswith(";"):
            continue
        name, ttl, klass, rtype, value = line.split("\t")
        assert ttl == "3600" and klass == "IN"
        records.setdefault((name.rstrip(".").lower(), rtype), []).append(value)
    return records


@pytest.fixture
def stub() -> Iterator[DnsStub]:
    server = DnsStub({})
    server.start_thread()
    yield server
    server.stop()


def test_printed_records_are_complete(tmp_path: Path, stub: DnsStub) -> None:
    srv = ServerProcess(tmp_path, CONFIG.replace("{port}", str(stub.port)))
    keys = make_keys(srv.data)
    out = srv.cli("dns", "example.org").stdout
    records = zone(out)
    assert records[("example.org", "MX")] == ["10 mail.example.org."]
    assert records[("example.org", "TXT")] == ['"v=spf1 mx -all"']
    rsa_txt = "".join(records[("s2048._domainkey.example.org", "TXT")][0].split('"')[1::2])
    assert rsa_txt == f"v=DKIM1; k=rsa; p={keys['s2048']}"
    assert records[("ed._domainkey.example.org", "TXT")] == [
        f'"v=DKIM1; k=ed25519; p={keys["ed"]}"']
    assert records[("_dmarc.example.org", "TXT")] == [
        '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"']
    srv_records = {name: values[0] for (name, rtype), values in records.items() if rtype == "SRV"}
    assert srv_records == {
        "_imaps._tcp.example.org": "0 1 993 mail.example.org.",
        "_imap._tcp.example.org": "0 1 143 mail.example.org.",
        "_pop3s._tcp.example.org": "0 1 995 mail.example.org.",
        "_pop3._tcp.example.org": "0 0 0 .",  # not offered
        "_submissions._tcp.example.org": "0 1 465 mail.example.org.",
        "_submission._tcp.example.org": "0 1 587 mail.example.org.",
    }
    assert records[("autoconfig.example.org", "CNAME")] == ["mail.example.org."]
    assert records[("autodiscover.example.org", "CNAME")] == ["mail.example.org."]
    assert "port 25" not in out and "\t25 " not in out
    # Without keys: how to make one.
    other = srv.cli("dns", "example.net").stdout
    assert "mailstead dkim keygen example.net" in other and "_domainkey" not in other


def test_check_passes_when_the_printed_records_are_published(tmp_path: Path,
                                                            stub: DnsStub) -> None:
    srv = ServerProcess(tmp_path, CONFIG.replace("{port}", str(stub.port)))
    make_keys(srv.data)
    published = zone(srv.cli("dns", "example.org").stdout)
    del published[("_pop3._tcp.example.org", "SRV")]  # optional: not offered here
    published[("mail.example.org", "A")] = ["192.0.2.25"]
    stub.records.update(published)
    res = srv.cli("dns", "example.org", "--check")
    assert res.returncode == 0 and "all records are in place" in res.stdout, res.stdout
    assert ("_submissions._tcp.example.org", "SRV") in stub.queries


def test_check_says_what_is_missing_or_wrong(tmp_path: Path, stub: DnsStub) -> None:
    srv = ServerProcess(tmp_path, CONFIG.replace("{port}", str(stub.port)))
    make_keys(srv.data)
    published = zone(srv.cli("dns", "example.org").stdout)
    published[("example.org", "MX")] = ["10 mx.elsewhere.net."]
    published[("example.org", "TXT")] = ['"v=spf1 a:other.example.net -all"',
                                          '"google-site-verification=x"']
    del published[("ed._domainkey.example.org", "TXT")]
    published[("s2048._domainkey.example.org", "TXT")] = ['"v=DKIM1; k=rsa; p=AAAA"']
    published[("_submission._tcp.example.org", "SRV")] = ["0 1 2525 mail.example.org."]
    published[("autoconfig.example.org", "CNAME")] = ["web.example.org."]
    stub.records.update(published)
    res = srv.cli("dns", "example.org", "--check", check=False)
    assert res.returncode == 1, res.stdout
    lines = res.stdout.splitlines()

    def line(start: str) -> str:
        [found] = [ln for ln in lines if ln.split(":")[0].split() == start.split()]
        return found

    assert "mx.elsewhere.net" in line("WRONG MX example.org")
    assert "add mx" in line("WRONG TXT example.org")
    line("MISSING TXT ed._domainkey.example.org")
    assert "not this server's key" in line("WRONG TXT s2048._domainkey.example.org")
    assert "mail.example.org:2525" in line("WRONG SRV _submission._tcp.example.org")
    assert "web.example.org" in line("WRONG CNAME autoconfig.example.org")
    line("MISSING A/AAAA mail.example.org")
    line("ok TXT _dmarc.example.org")
    assert "problem(s) found" in lines[-1] and "Traceback" not in res.stderr


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, CONFIG.replace("{port}", "1"))
    res = srv.cli("dns", "other.org", check=False)
    assert res.returncode == 1 and "not one of this server's domains" in res.stderr
    # Nobody answers on port 1: a clear failure, not a traceback or a hang.
    res = srv.cli("dns", "example.org", "--check", check=False)
    assert res.returncode == 1 and "cannot look up" in res.stderr
    assert "Traceback" not in res.stderr
    bad = ServerProcess(tmp_path / "bad", CONFIG.replace("{port}", "53").replace(
        '"127.0.0.1"', '"dns.example"'))
    res = bad.cli("dns", "example.org", check=False)
    assert res.returncode == 78 and "is not an IP address" in res.stderr
