"""Inbound SPF/DKIM/DMARC end to end: a real server process, smtplib from 127.0.0.5 (a
"foreign" client on loopback, published in the stub's SPF records), the DNS stub."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authlib import CLIENT_IP, auth_results, dkim_record, message, sign
from conftest import BASE_CONFIG, ServerProcess, stored_messages
from dns_stub import DnsStub

SPF_PASS = '"v=spf1 ip4:127.0.0.5 -all"'
RECORDS = {
    ("pass.test", "TXT"): [SPF_PASS],
    ("fail.test", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"'],
    ("soft.test", "TXT"): ['"v=spf1 ~all"'],
    ("none.test", "A"): ["192.0.2.1"],
    ("slow.test", "TXT"): [SPF_PASS],  # silent
    ("_dmarc.spfalign.test", "TXT"): ['"v=DMARC1; p=reject"'],
    ("mail.spfalign.test", "TXT"): [SPF_PASS],
    ("_dmarc.dkimalign.test", "TXT"): ['"v=DMARC1; p=reject"'],
    ("_dmarc.reject.test", "TXT"): ['"v=DMARC1; p=reject"'],
    ("_dmarc.quar.test", "TXT"): ['"v=DMARC1; p=quarantine"'],
    ("_dmarc.nonepol.test", "TXT"): ['"v=DMARC1; p=none"'],
    ("garbage.test", "TXT"): ['"v=spf1 redirect=garbage.test"', '"\\255 not spf"'],
    ("sel._domainkey.garbage.test", "TXT"): ['"k=rsa; p=QUJD"'],
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsStub]:
    records = dict(RECORDS)
    records[("sel._domainkey.dkimalign.test", "TXT")] = [dkim_record()]
    stub = DnsStub(records)
    stub.silent.add("slow.test")
    stub.start_thread()
    yield stub
    stub.stop()


def config(dns: DnsStub, smtp_extra: str = "") -> str:
    return BASE_CONFIG.replace('[smtp]\nlisten = ["127.0.0.1:0"]\n', f"""[smtp]
listen = ["127.0.0.1:0"]
trusted_networks = ["127.0.0.1"]
inbound_auth_seconds = 2
{smtp_extra}
[dns]
nameservers = ["127.0.0.1"]
port = {dns.port}
""")


def start(root: Path, dns: DnsStub, smtp_extra: str = "") -> ServerProcess:
    srv = ServerProcess(root, config(dns, smtp_extra)).start()
    srv.add_user("bob")
    return srv


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory, dns: DnsStub) -> Iterator[ServerProcess]:
    srv = start(tmp_path_factory.mktemp("inauth"), dns)
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_text(), srv.log_text()


def send(srv: ServerProcess, mail_from: str, data: bytes, source: str = CLIENT_IP,
         helo: str = "client.test") -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), local_hostname=helo, timeout=20,
                      source_address=(source, 0)) as smtp:
        return smtp.sendmail(mail_from, ["bob@example.org"], data)


def last(srv: ServerProcess, mailbox: str = "INBOX") -> bytes:
    return stored_messages(srv, "bob", mailbox)[-1]


@pytest.mark.parametrize(("domain", "result"), [
    ("pass.test", "pass"), ("fail.test", "fail"), ("soft.test", "softfail"),
    ("none.test", "none"), ("slow.test", "temperror"),
])
def test_spf_result_is_recorded(mx: ServerProcess, domain: str, result: str) -> None:
    subject = f"spf {domain}"
    started = time.monotonic()
    assert send(mx, f"a@{domain}", message("x@elsewhere.test", subject)) == {}
    assert time.monotonic() - started < 6
    stored = last(mx)
    assert f"Subject: {subject}".encode() in stored
    [field] = auth_results(stored)
    assert field.startswith("mail.test;") and f"spf={result} smtp.mailfrom={domain}" in field
    # Below our trace headers, at the top of the message's own header.
    head = stored.split(b"\r\nAuthentication-Results: mail.test;", 1)[0]
    assert b"\r\nReceived: from client.test" in head and b"Subject:" not in head


def test_dmarc_pass_through_spf_and_through_dkim(mx: ServerProcess) -> None:
    send(mx, "bounce@mail.spfalign.test", message("x@spfalign.test", "aligned spf"))
    [field] = auth_results(last(mx))
    assert "spf=pass" in field and "dmarc=pass" in field and "header.from=spfalign.test" in field
    signed = sign(message("x@dkimalign.test", "aligned dkim"), "dkimalign.test")
    send(mx, "a@fail.test", signed)
    stored = last(mx)
    [field] = auth_results(stored)
    assert "dkim=pass header.d=dkimalign.test" in field and "dmarc=pass" in field
    assert stored.endswith(signed)  # the message itself is untouched


def test_dmarc_reject_is_refused_with_550(mx: ServerProcess) -> None:
    before = len(stored_messages(mx, "bob"))
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(mx, "a@fail.test", message("x@reject.test", "spoofed"))
    assert err.value.smtp_code == 550
    assert err.value.smtp_error.startswith(b"5.7.1 ") and b"DMARC" in err.value.smtp_error
    assert b"reject.test" in err.value.smtp_error
    assert len(stored_messages(mx, "bob")) == before


def test_quarantine_goes_to_junk_and_p_none_to_the_inbox(mx: ServerProcess) -> None:
    send(mx, "a@fail.test", message("x@quar.test", "quarantined"))
    junk = last(mx, "Junk")
    assert b"Subject: quarantined" in junk
    assert "dmarc=fail (p=quarantine dis=quarantine)" in auth_results(junk)[0]
    assert b"Subject: quarantined" not in last(mx)
    send(mx, "a@fail.test", message("x@nonepol.test", "monitored"))
    stored = last(mx)
    assert b"Subject: monitored" in stored
    assert "dmarc=fail (p=none dis=none) header.from=nonepol.test" in auth_results(stored)[0]


def test_forged_results_stripped_foreign_kept(mx: ServerProcess) -> None:
    forged = ("Authentication-Results: mail.test; dkim=pass header.d=bank.test;\r\n"
              "\tdmarc=pass header.from=bank.test\r\n"
              "Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=x.test\r\n")
    data = forged.encode() + message("x@pass.test", "forged")
    send(mx, "a@pass.test", data)
    fields = auth_results(last(mx))
    assert len(fields) == 2
    assert fields[0].startswith("mail.test;") and "bank.test" not in fields[0]
    assert fields[1] == "relay.other.test; spf=pass smtp.mailfrom=x.test"


def test_malformed_signature_and_garbage_records_are_delivered(mx: ServerProcess) -> None:
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=garbage.test; s=sel; b=;;==\r\n"
    send(mx, "a@garbage.test", broken + message("x@garbage.test", "garbage 1"))
    [field] = auth_results(last(mx))
    assert "dkim=permerror" in field and "spf=permerror" in field
    signed = sign(message("x@garbage.test", "garbage 2"), "garbage.test")
    send(mx, "a@garbage.test", signed)
    [field] = auth_results(last(mx))
    assert "dkim=permerror header.d=garbage.test" in field


def test_trusted_and_loopback_clients_are_not_evaluated(mx: ServerProcess) -> None:
    forged = b"Authentication-Results: mail.test; spf=pass\r\n"
    send(mx, "a@fail.test", forged + message("x@reject.test", "trusted"), source="127.0.0.1")
    stored = last(mx)
    assert b"Subject: trusted" in stored
    assert auth_results(stored) == ["mail.test; spf=pass"]  # ours to trust: left as is


def test_defaults_skip_loopback_and_switches_turn_it_off(
    tmp_path: Path, dns: DnsStub
) -> None:
    srv = ServerProcess(tmp_path / "default", BASE_CONFIG.replace(
        '[smtp]\nlisten = ["127.0.0.1:0"]\n',
        f'[smtp]\nlisten = ["127.0.0.1:0"]\n[dns]\nnameservers = ["127.0.0.1"]\n'
        f'port = {dns.port}\n')).start()
    try:
        srv.add_user("bob")
        send(srv, "a@fail.test", message("x@reject.test", "from 127.0.0.5"))
        assert auth_results(last(srv)) == []  # all of 127.0.0.0/8 is trusted by default
    finally:
        srv.stop()
    off = start(tmp_path / "off", dns, "dmarc_reject = false\ndmarc_quarantine = \"inbox\"")
    try:
        send(off, "a@fail.test", message("x@reject.test", "not refused"))
        stored = last(off)
        assert b"Subject: not refused" in stored
        assert "dmarc=fail (p=reject dis=reject)" in auth_results(stored)[0]
    finally:
        off.stop()
    disabled = start(tmp_path / "disabled", dns, "inbound_auth = false")
    try:
        send(disabled, "a@fail.test", message("x@reject.test", "unchecked"))
        assert auth_results(last(disabled)) == []
    finally:
        disabled.stop()
    for s in (srv, off, disabled):
        assert "Traceback" not in s.log_text()


def test_parallel_deliveries_are_all_checked(mx: ServerProcess) -> None:
    errors: list[BaseException] = []
    signed = [sign(message("x@dkimalign.test", f"parallel {i}"), "dkimalign.test")
              for i in range(30)]

    def one(i: int) -> None:
        try:
            send(mx, "a@pass.test", signed[i])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - started
    assert errors == []
    stored = [m for m in stored_messages(mx, "bob") if b"Subject: parallel " in m]
    assert len(stored) == 30
    for m in stored:
        [field] = auth_results(m)
        assert "spf=pass" in field and "dkim=pass" in field and "dmarc=pass" in field
    assert elapsed < 30, elapsed


def test_every_recipient_copy_has_one_field_and_lmtp_is_not_checked(
    mx: ServerProcess,
) -> None:
    mx.add_user("carol")
    forged = b"Authentication-Results: mail.test; dmarc=pass header.from=bank.test\r\n"
    data = forged + message("x@pass.test", "two copies")
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), local_hostname="client.test",
                      timeout=20, source_address=(CLIENT_IP, 0)) as smtp:
        assert smtp.sendmail("a@pass.test", ["bob@example.org", "carol@example.org"],
                             data) == {}
    for name in ("bob", "carol"):
        stored = stored_messages(mx, name)[-1]
        assert f"Delivered-To: {name}@example.org".encode() in stored
        [field] = auth_results(stored)
        assert field.startswith("mail.test;") and "spf=pass" in field
        assert stored.endswith(message("x@pass.test", "two copies"))
    # LMTP comes from an MTA that did its own checks: nothing added, nothing removed.
    with smtplib.LMTP("127.0.0.1", mx.port("lmtp"), local_hostname="mta.test",
                      timeout=20, source_address=(CLIENT_IP, 0)) as lmtp:
        assert lmtp.sendmail("a@fail.test", ["bob@example.org"],
                             forged + message("x@reject.test", "by lmtp")) == {}
    stored = last(mx)
    assert b"Subject: by lmtp" in stored
    assert auth_results(stored) == ["mail.test; dmarc=pass header.from=bank.test"]
