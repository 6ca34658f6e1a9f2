"""RFC 2047 decoding for SEARCH in linear time (issue 12 #7): the same answers as the
stdlib decoder on small inputs, work proportional to the input on huge ones, a budget."""

from __future__ import annotations

import base64
from email.errors import HeaderParseError
from email.header import decode_header

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailstead.mime import header_values, parse_message, search_text
from mailstead.mime.encoded_words import DEFAULT_BUDGET, DecodeBudget, decode_encoded_words
from mailstead.mime.search import _decode_charset, _guess_text, decode_header_value


def stdlib_decode(value: bytes) -> str:
    """What decode_header_value answered before: email.header.decode_header's chunks,
    decoded by the same charset rules."""
    value = value.replace(b"\r\n", b"")
    text = value.decode("latin-1")
    if "=?" not in text:
        return _guess_text(value)
    out: list[str] = []
    for chunk, charset in decode_header(text):
        data = chunk.encode("latin-1") if isinstance(chunk, str) else chunk
        out.append(_decode_charset(data, charset))
    return "".join(out)


def _octets(charset: str, text: str) -> bytes:
    codec = "utf-8" if charset == "x-unknown" else charset.split("*")[0]
    return text.encode(codec, "replace")


def q_word(charset: str, text: str) -> str:
    data = _octets(charset, text)
    body = "".join(
        "_" if b == 0x20 else chr(b) if chr(b).isalnum() and b < 128 else f"={b:02X}"
        for b in data
    )
    return f"=?{charset}?{'q' if len(text) % 2 else 'Q'}?{body}?="


def b_word(charset: str, text: str) -> str:
    data = _octets(charset, text)
    return f"=?{charset}?{'b' if len(text) % 2 else 'B'}?{base64.b64encode(data).decode()}?="


CHARSETS = ["utf-8", "UTF-8", "iso-8859-1", "utf-8*en", "x-unknown"]
words = st.builds(
    lambda f, cs, t: f(cs, t),
    st.sampled_from([q_word, b_word]),
    st.sampled_from(CHARSETS),
    st.text(alphabet="aéü€ ßz_=?", max_size=6),
)
# Fragments that trip a decoder up: half words, stray markers, odd whitespace.
fragments = st.sampled_from([
    " ", "\t", "  ", "=?", "?=", "?q?", "?Q?", "?b?", "=?utf-8?", "=?utf-8?q?", "=?utf-8?x?",
    "?", "=", "_", "=C3", "=A9", "abc", "\xa0", "\x1f", "Å", "\xe9", "=?=?", "?==?",
    "=?utf-8?q?a?=", "=?iso-8859-1?q?=E9?=",
])
# Latin-1 code points except those str.splitlines treats as line breaks (see the module
# docstring of mailstead.mime.encoded_words: that split is a difference on purpose).
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85"
plain = st.text(alphabet=st.characters(max_codepoint=255, exclude_characters=LINE_BREAKS),
                max_size=4)
header_text = st.lists(st.one_of(words, fragments, plain), max_size=12).map("".join)


@settings(max_examples=1500, deadline=None)
@given(header_text)
@example("=?=??q?=?utf-8?Q??= =?utf-8?q?a?=")  # an empty charset is still an encoded word
def test_same_answer_as_the_stdlib_decoder(text: str) -> None:
    value = text.encode("latin-1", "replace")
    try:
        expected = stdlib_decode(value)
    except HeaderParseError:  # a bad base64 word: covered by its own test below
        return
    assert decode_header_value(value) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(CHARSETS), st.text(alphabet="aé€ z", max_size=5)),
                min_size=1, max_size=6), st.sampled_from([" ", "\t", "  ", ""]))
def test_words_joined_by_whitespace_decode_like_the_stdlib(
    parts: list[tuple[str, str]], sep: str
) -> None:
    value = sep.join(b_word(cs, t) if i % 2 else q_word(cs, t)
                     for i, (cs, t) in enumerate(parts)).encode()
    assert decode_header_value(value) == stdlib_decode(value)


def test_known_values() -> None:
    assert decode_header_value(b"=?utf-8?q?Caf=C3=A9?= =?utf-8?q?_au_lait?=") == "Café au lait"
    assert decode_header_value(b"=?iso-8859-1?q?R=E9union?= demain") == "Réunion demain"
    # A UTF-8 character split across two words of one charset comes out whole.
    assert decode_header_value(b"=?utf-8?b?4oI=?= =?utf-8?b?rA==?=") == "€"
    assert decode_header_value(b"plain text") == "plain text"


def test_raw_utf8_with_an_0x85_byte_is_not_split_into_lines() -> None:
    # "Å" is C3 85 in UTF-8; the stdlib decoder splits the latin-1 reading at 0x85.
    value = "Åsa =?utf-8?q?S=C3=B6derberg?=".encode()
    assert decode_header_value(value) == "Åsa Söderberg"


def test_a_bad_base64_word_stays_raw_and_the_others_decode() -> None:
    value = b"=?utf-8?q?ok?= =?utf-8?b?abcde?= =?utf-8?q?fine?="
    with pytest.raises(HeaderParseError):
        stdlib_decode(value)
    assert decode_header_value(value) == "ok =?utf-8?b?abcde?= fine"


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("words", "=?utf-8?q?ab?= "),
        ("adjacent words", "=?utf-8?b?YWI=?="),
        ("unterminated", "=?utf-8?q?"),
        ("bad encoding letter", "=?utf-8?x?"),
        ("no closing ?=", "=?a?q?b"),
        ("line feed inside", "=?a?q?x\n?= "),
        ("stray markers", "=?=??=?="),
    ],
)
def test_work_is_linear_on_100k_encoded_words(name: str, unit: str) -> None:
    """Work counted by the decoder (characters scanned + emitted), not wall time: at
    most a small constant times the input, and 10x the input costs about 10x the work."""
    work = {}
    for n in (10_000, 100_000):
        text = unit * n
        budget = DecodeBudget(chars=len(text))
        decode_encoded_words(text, budget)
        assert budget.steps <= 4 * len(text) + 16, (name, n, budget.steps)
        work[n] = budget.steps
    assert work[100_000] <= 11 * work[10_000], (name, work)


def test_the_budget_bounds_work_and_keeps_the_rest_raw() -> None:
    word = "=?utf-8?q?caf=C3=A9?= "
    text = word * 100_000  # 2.2 MB
    budget = DecodeBudget()
    chunks = decode_encoded_words(text, budget)
    assert chunks is not None
    # Decoding work stops at the budget; the rest costs one copy, as raw text.
    assert budget.steps <= 4 * DEFAULT_BUDGET + (len(text) - DEFAULT_BUDGET)
    decoded = "".join(_decode_charset(d, cs) for d, cs in chunks)
    assert decoded.startswith("cafécafé")
    assert decoded.endswith(word * 2)  # past the budget: raw, still searchable text
    # The budget is shared by a header block: once spent, later fields stay raw.
    block = ("Subject: " + text + "\r\nX-Other: =?utf-8?q?late?=\r\n\r\n").encode()
    assert header_values(block, "x-other") == ["late"]  # a field of its own budget
    raw = block + b"body\r\n"
    headers, _ = search_text(raw, parse_message(raw))
    assert "X-Other: =?utf-8?q?late?=" in headers


def test_search_on_a_hostile_subject_is_cheap() -> None:
    """The attack from the issue: 100k encoded words in a Subject. The stdlib path took
    16 s of CPU per SEARCH; counted work is now bounded by the budget."""
    subject = b"=?utf-8?q?x?= " * 100_000
    block = b"Subject: " + subject + b"\r\n\r\n"
    budget = DecodeBudget()
    decode_header_value(subject, budget)
    assert budget.steps <= 4 * DEFAULT_BUDGET + (len(subject) - DEFAULT_BUDGET)
    [value] = header_values(block, "subject")
    assert value.startswith("xxxx")
