"""Inbound SPF, DKIM and DMARC (smtp/inbound_auth.py, smtp/dmarc.py): the checks against
the loopback DNS stub, in process; the listener end to end is test_inbound_auth_smtp.py."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authlib import CLIENT_IP, auth_results, dkim_record, message, sign
from dns_stub import DnsStub
from mailstead.config import ConfigError, load_config
from mailstead.config_sections import DnsSection
from mailstead.smtp import dmarc
from mailstead.smtp.authresults import authserv_id, forged_results, header_fields
from mailstead.smtp.inbound_auth import MAX_SIGNATURES, AuthOutcome, InboundAuth

SPF_PASS = '"v=spf1 ip4:127.0.0.5 -all"'


def records() -> dict[tuple[str, str], list[str]]:
    return {
        ("pass.test", "TXT"): [SPF_PASS],
        ("fail.test", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"'],
        ("soft.test", "TXT"): ['"v=spf1 ~all"'],
        ("none.test", "A"): ["192.0.2.1"],
        ("slow.test", "TXT"): [SPF_PASS],  # silent: never answered
        ("sel._domainkey.signer.test", "TXT"): [dkim_record()],
        ("_dmarc.spfalign.test", "TXT"): ['"v=DMARC1; p=reject"'],
        ("mail.spfalign.test", "TXT"): [SPF_PASS],
        ("_dmarc.dkimalign.test", "TXT"): ['"v=DMARC1; p=reject; adkim=r"'],
        ("sel._domainkey.dkimalign.test", "TXT"): [dkim_record()],
        ("_dmarc.reject.test", "TXT"): ['"v=DMARC1; p=reject"'],
        ("_dmarc.quar.test", "TXT"): ['"v=DMARC1; p=quarantine"'],
        ("_dmarc.nonepol.test", "TXT"): ['"v=DMARC1; p=none"'],
        ("_dmarc.orgpol.test", "TXT"): ['"v=DMARC1; p=none; sp=reject"'],
        ("_dmarc.strict.test", "TXT"): ['"v=DMARC1; p=reject; aspf=s"'],
        ("mail.strict.test", "TXT"): [SPF_PASS],
        ("garbage.test", "TXT"): ['"v=spf1 ip4:999.1.1.1 include: -all"'],
        ("sel._domainkey.garbage.test", "TXT"): ['"not a key at all; p=!!!"'],
        ("_dmarc.garbage.test", "TXT"): ['"v=DMARC1; p=bogus"', '"\\255\\000junk"'],
        ("_dmarc.twice.test", "TXT"): ['"v=DMARC1; p=reject"', '"v=DMARC1; p=none"'],
    }


@pytest.fixture
async def stub() -> AsyncIterator[DnsStub]:
    async with DnsStub(records()) as s:
        s.silent.add("slow.test")
        yield s


def checker(stub: DnsStub, **kw: object) -> InboundAuth:
    return InboundAuth(authserv_id="mail.test", dns_cfg=DnsSection(("127.0.0.1",), stub.port),
                       seconds=2.0, trusted_networks=["127.0.0.1"], **kw)  # type: ignore[arg-type]


async def check(stub: DnsStub, data: bytes, mail_from: str, **kw: object) -> tuple[
        AuthOutcome, str]:
    outcome = await checker(stub, **kw).check(ip=CLIENT_IP, helo="client.test",
                                              mail_from=mail_from, data=data)
    [field] = auth_results(outcome.apply(data))
    return outcome, field


@pytest.mark.parametrize(("domain", "result"), [
    ("pass.test", "pass"), ("fail.test", "fail"), ("soft.test", "softfail"),
    ("none.test", "none"), ("slow.test", "temperror"), ("garbage.test", "permerror"),
])
async def test_spf_results(stub: DnsStub, domain: str, result: str) -> None:
    started = time.monotonic()
    outcome, field = await check(stub, message("a@elsewhere.test"), f"a@{domain}")
    assert field.startswith("mail.test; ")
    assert f"spf={result} smtp.mailfrom={domain}" in field
    assert outcome.refuse is None
    assert time.monotonic() - started < 4  # the 2 s budget, never a hang


async def test_null_sender_checks_the_helo_name(stub: DnsStub) -> None:
    outcome = await checker(stub).check(ip=CLIENT_IP, helo="pass.test", mail_from="",
                                        data=message("a@x.test"))
    assert "spf=pass smtp.helo=pass.test" in auth_results(outcome.apply(b"\r\n"))[0]


async def test_dkim_pass_and_tampering_fails(stub: DnsStub) -> None:
    signed = sign(message("a@signer.test"), "signer.test")
    _, field = await check(stub, signed, "a@fail.test")
    assert "dkim=pass header.d=signer.test header.s=sel header.b=" in field
    tampered_body = signed.replace(b"Hi there.", b"Hi thar.")
    _, field = await check(stub, tampered_body, "a@fail.test")
    assert "dkim=fail header.d=signer.test" in field
    tampered_header = signed.replace(b"Subject: hello", b"Subject: jello")
    _, field = await check(stub, tampered_header, "a@fail.test")
    assert "dkim=fail header.d=signer.test" in field


async def test_dmarc_pass_through_aligned_spf(stub: DnsStub) -> None:
    outcome, field = await check(stub, message("x@spfalign.test"), "bounce@mail.spfalign.test")
    assert "spf=pass" in field and "dkim=none" in field
    assert "dmarc=pass (p=reject dis=none) header.from=spfalign.test" in field
    assert outcome.refuse is None and not outcome.quarantine


async def test_dmarc_pass_through_aligned_dkim(stub: DnsStub) -> None:
    signed = sign(message("x@dkimalign.test"), "dkimalign.test")
    outcome, field = await check(stub, signed, "a@fail.test")
    assert "spf=fail" in field and "dkim=pass header.d=dkimalign.test" in field
    assert "dmarc=pass" in field and outcome.refuse is None


async def test_dmarc_reject_refuses_unless_configured_off(stub: DnsStub) -> None:
    outcome, field = await check(stub, message("x@reject.test"), "a@fail.test")
    assert outcome.refuse is not None and outcome.refuse.startswith("550 5.7.1 ")
    assert "reject.test" in outcome.refuse and "DMARC" in outcome.refuse
    assert "dmarc=fail (p=reject dis=reject) header.from=reject.test" in field
    # A passing signature of another domain does not align.
    signed = sign(message("x@reject.test"), "signer.test")
    outcome, _ = await check(stub, signed, "a@pass.test")
    assert outcome.refuse is not None
    outcome, _ = await check(stub, message("x@reject.test"), "a@fail.test", dmarc_reject=False)
    assert outcome.refuse is None and outcome.quarantine


async def test_quarantine_none_subdomain_policy_and_strict_alignment(stub: DnsStub) -> None:
    outcome, field = await check(stub, message("x@quar.test"), "a@fail.test")
    assert outcome.refuse is None and outcome.quarantine and "dis=quarantine" in field
    outcome, _ = await check(stub, message("x@quar.test"), "a@fail.test",
                             quarantine_to_junk=False)
    assert not outcome.quarantine
    outcome, field = await check(stub, message("x@nonepol.test"), "a@fail.test")
    assert "dmarc=fail (p=none dis=none) header.from=nonepol.test" in field
    assert outcome.refuse is None and not outcome.quarantine
    # No record at sub.orgpol.test: the organizational domain's sp= applies.
    outcome, field = await check(stub, message("x@sub.orgpol.test"), "a@fail.test")
    assert "dmarc=fail (p=reject dis=reject) header.from=sub.orgpol.test" in field
    assert outcome.refuse is not None
    # aspf=s: an SPF pass for a subdomain of the From domain does not align.
    outcome, field = await check(stub, message("x@strict.test"), "a@mail.strict.test")
    assert "spf=pass" in field and "dmarc=fail" in field and outcome.refuse is not None


async def test_garbage_records_and_signatures_give_results_not_errors(stub: DnsStub) -> None:
    broken = b"DKIM-Signature: v=1; this is = not;; a signature\r\n" + message("x@garbage.test")
    signed = sign(message("x@garbage.test"), "garbage.test")
    for data in (broken, signed, b"\x00\xff garbage without headers", b""):
        outcome, field = await check(stub, data, "a@garbage.test")
        assert outcome.refuse is None
        assert "spf=permerror" in field
    _, field = await check(stub, broken, "a@garbage.test")
    assert "dkim=permerror" in field and "dmarc=none header.from=garbage.test" in field
    _, field = await check(stub, signed, "a@garbage.test")
    assert "dkim=permerror header.d=garbage.test" in field  # the key is no key
    _, field = await check(stub, message("x@twice.test"), "a@fail.test")
    assert "dmarc=none header.from=twice.test" in field  # two records: no policy
    _, field = await check(stub, b"Subject: no from\r\n\r\nbody\r\n", "a@fail.test")
    assert "dmarc=permerror" in field


async def test_signatures_verified_per_message_are_capped(stub: DnsStub) -> None:
    data = message("a@signer.test")
    for _ in range(MAX_SIGNATURES + 2):
        data = sign(data, "signer.test")
    _, field = await check(stub, data, "a@pass.test")
    assert field.count("dkim=pass") == MAX_SIGNATURES


async def test_dns_outage_is_temperror_within_the_budget(stub: DnsStub) -> None:
    stub.silent.update({"_dmarc.reject.test", "sel._domainkey.signer.test"})
    started = time.monotonic()
    signed = sign(message("x@reject.test"), "signer.test")
    outcome, field = await check(stub, signed, "a@slow.test")
    assert time.monotonic() - started < 4
    assert "spf=temperror" in field and "dkim=temperror" in field
    assert "dmarc=temperror" in field and outcome.refuse is None


def test_forged_results_with_our_id_are_removed_others_kept() -> None:
    data = (b"Authentication-Results: mail.test; dkim=pass header.d=bank.test\r\n"
            b"Authentication-Results: other.example;\r\n\tspf=pass smtp.mailfrom=x.test\r\n"
            b"Authentication-Results: (comment) MAIL.TEST 1;\r\n spf=pass\r\n"
            b'Authentication-Results: "mail.test"; none\r\n'
            b"Authentication-Results: mail.test.evil; none\r\n"
            + message("a@x.test"))
    outcome = AuthOutcome("mail.test", b"Authentication-Results: mail.test; spf=none\r\n",
                          None, False)
    stored = outcome.apply(data)
    assert auth_results(stored) == ["mail.test; spf=none",
                                    "other.example; spf=pass smtp.mailfrom=x.test",
                                    "mail.test.evil; none"]
    assert stored.endswith(message("a@x.test"))


def test_header_parsing_edges() -> None:
    assert authserv_id(" (a (nested) comment) host.test; spf=pass") == "host.test"
    assert authserv_id("host.test") == "host.test"
    assert authserv_id("(unterminated") == ""
    fields = header_fields(b"A: 1\nAuthentication-Results: mail.test;\n x\n\nbody")
    assert [f.name for f in fields] == ["A", "Authentication-Results"]
    assert len(forged_results(b"Authentication-Results: mail.test\r\n", header_fields(
        b"Authentication-Results: mail.test\r\n"), "mail.test")) == 1


def test_dmarc_record_parsing_and_alignment() -> None:
    p = dmarc.parse_record("v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s; pct=50")
    assert p == dmarc.Policy("quarantine", "reject", "s", "s", 50)
    assert dmarc.parse_record("v=DMARC1;p=reject") == dmarc.Policy("reject", "reject", "r",
                                                                  "r", 100)
    assert dmarc.parse_record("p=reject; v=DMARC1") is None  # v= must come first
    assert dmarc.parse_record("v=DMARC1; p=bogus") is None
    assert dmarc.parse_record("v=DMARC1; p=bogus; rua=mailto:r@x.test") == dmarc.Policy(
        "none", "none", "r", "r", 100)
    assert dmarc.parse_record("v=DMARC1; p=reject; pct=abc; adkim=x").pct == 100  # type: ignore[union-attr]
    assert dmarc.parse_record("v=DMARC1; p=reject; junk") is None
    assert dmarc.org_domain("a.b.example.co.uk") == "example.co.uk"
    assert dmarc.org_domain("mail.example.com") == "example.com"
    assert dmarc.aligned("mail.example.com", "example.com", "r")
    assert not dmarc.aligned("mail.example.com", "example.com", "s")
    assert not dmarc.aligned("example.co.uk", "other.co.uk", "r")
    assert dmarc.normalise_domain("Bücher.Example.") == "xn--bcher-kva.example"
    assert dmarc.normalise_domain("bad domain") is None
    assert dmarc.normalise_domain("a" * 64 + ".test") is None


def test_pct_applies_the_policy_to_a_share_of_failures() -> None:
    lookup = dmarc.Lookup(dmarc.parse_record("v=DMARC1; p=reject; pct=30"), False)
    rng = random.Random(7)
    dispositions = [dmarc.evaluate("x.test", lookup, spf=("fail", "x.test"), dkim=[],
                                   rng=rng).disposition for _ in range(1000)]
    assert set(dispositions) == {"reject", "quarantine"}
    assert 200 < dispositions.count("reject") < 400


async def test_every_from_domain_is_held_to_its_policy(stub: DnsStub) -> None:
    data = b"From: a@nonepol.test, b@reject.test\r\nFrom: c@[192.0.2.1]\r\n\r\nbody\r\n"
    outcome, field = await check(stub, data, "a@fail.test")
    assert "header.from=nonepol.test" in field and "header.from=reject.test" in field
    assert "dmarc=permerror (no usable From domain)" in field
    assert outcome.refuse is not None and "reject.test" in outcome.refuse


def test_config_keys_are_validated(tmp_path: Path) -> None:
    cfg = load_config(None, env={})
    assert cfg.smtp.inbound_auth and cfg.smtp.dmarc_reject
    assert cfg.smtp.trusted_networks == ("127.0.0.0/8", "::1")
    assert InboundAuth.from_config(cfg) is not None
    for bad in ('trusted_networks = ["10.0.0.0/33"]', 'dmarc_quarantine = "spam"',
                "inbound_auth_seconds = 0"):
        path = tmp_path / "bad.toml"
        path.write_text(f"[smtp]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"\[smtp\]"):
            load_config(path, env={})
    path.write_text("[smtp]\ninbound_auth = false\n")
    assert InboundAuth.from_config(load_config(path, env={})) is None
