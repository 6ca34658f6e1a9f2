"""SASL PLAIN and LOGIN decoding (auth/sasl.py): pure functions, no server."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.auth.sasl import (
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USER_PROMPT,
    Credentials,
    SaslCancelled,
    SaslError,
    SaslExchange,
    decode_base64,
    decode_initial_response,
    decode_login_field,
    decode_plain,
    decode_response,
)


def test_decode_plain_fields() -> None:
    assert decode_plain(b"\0bob\0secret") == ("", "bob", "secret")
    assert decode_plain(b"admin\0bob\0pass word") == ("admin", "bob", "pass word")
    assert decode_plain("\0j\u00f6rg\0p\u00e4ss".encode()) == ("", "j\u00f6rg", "p\u00e4ss")


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"bob\0secret", "must be authzid NUL authcid NUL password"),
        (b"\0bob\0sec\0ret", "must be authzid NUL authcid NUL password"),
        (b"", "must be authzid NUL authcid NUL password"),
        (b"\0\0secret", "empty user name"),
        (b"\0bob\0", "empty password"),
        (b"\0b\xffb\0secret", "user name is not valid UTF-8"),
        (b"\0bob\0\xc3", "password is not valid UTF-8"),
        (b"\0" + b"a" * 5000 + b"\0x", "too long"),
    ],
)
def test_decode_plain_rejects_malformed(blob: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_plain(blob)


def test_base64_is_strict_and_star_cancels() -> None:
    assert decode_base64("AGJvYgBzZWNyZXQ=") == b"\0bob\0secret"
    assert decode_response(b"AGJvYgBzZWNyZXQ=\r\n") == b"\0bob\0secret"
    assert decode_response(b"") == b""
    for bad in ("AGJvYgBzZWNyZXQ", "AGJv YgBz", "not*base64", "=", "\u00e9"):
        with pytest.raises(SaslError, match="Invalid base64"):
            decode_base64(bad)
    with pytest.raises(SaslCancelled):
        decode_response(b"*")
    with pytest.raises(SaslError, match="too long"):
        decode_base64(b"A" * 10_000)
    assert decode_initial_response("=") == b""
    assert decode_initial_response("Ym9i") == b"bob"


def test_login_field() -> None:
    assert decode_login_field(b"bob", "user name") == "bob"
    with pytest.raises(SaslError, match="empty"):
        decode_login_field(b"", "password")
    with pytest.raises(SaslError, match="NUL"):
        decode_login_field(b"a\0b", "user name")


def test_plain_exchange_with_and_without_initial_response() -> None:
    ex = SaslExchange.start("plain", b"\0bob\0pw")
    assert ex.next_step() == Credentials("", "bob", "pw")
    ex = SaslExchange.start("PLAIN")
    assert ex.next_step() == b""
    ex.feed(b"\0bob\0pw")
    assert ex.next_step() == Credentials("", "bob", "pw")
    with pytest.raises(SaslError, match="Unexpected"):
        ex.feed(b"more")


def test_login_exchange() -> None:
    ex = SaslExchange.start("LOGIN")
    assert ex.next_step() == LOGIN_USER_PROMPT == b"Username:"
    ex.feed(b"bob")
    assert ex.next_step() == LOGIN_PASSWORD_PROMPT == b"Password:"
    ex.feed(b"pw")
    assert ex.next_step() == Credentials("", "bob", "pw")
    ex = SaslExchange.start("login", b"bob")  # initial response carries the user name
    assert ex.next_step() == LOGIN_PASSWORD_PROMPT
    ex = SaslExchange.start("LOGIN", b"")
    with pytest.raises(SaslError, match="empty"):
        ex.next_step()


def test_unknown_mechanism_and_password_never_in_repr() -> None:
    with pytest.raises(SaslError, match="Unsupported SASL mechanism 'CRAM-MD5'"):
        SaslExchange.start("CRAM-MD5")
    assert "hunter2" not in repr(Credentials("", "bob", "hunter2"))


_field = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40
)


@given(_field, _field.filter(bool), _field.filter(bool))
def test_plain_round_trip(authzid: str, authcid: str, password: str) -> None:
    blob = f"{authzid}\0{authcid}\0{password}".encode()
    wire = base64.b64encode(blob)
    assert decode_plain(decode_response(wire)) == (authzid, authcid, password)


@given(st.binary(max_size=300))
def test_decoders_only_raise_value_errors(data: bytes) -> None:
    for fn in (decode_plain, decode_response, decode_initial_response):
        try:
            fn(data)
        except ValueError:
            pass
