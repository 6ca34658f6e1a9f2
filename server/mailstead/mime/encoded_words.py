"""RFC 2047 encoded words, decoded in linear time within a size budget.

``email.header.decode_header`` is quadratic on hostile input: it joins decoded words with
repeated ``bytes +=``, deletes whitespace words from a list one by one, and its regex
rescans the rest of the line from every ``=?`` that never closes. A Subject of 100,000
encoded words (1.7 MB, any sender can deliver one) cost 16 s of CPU per SEARCH. This
module finds the same words with ``str.find`` scans that never go back over text already
passed, joins with ``b"".join``, and stops decoding once a budget of characters is spent
(the rest of the text is kept as it is, so it can still be searched as raw text).

It yields what ``decode_header`` yields for one line of header text: the same words (the
same leftmost, shortest ``=?charset?q|b?text?=`` matches), the first unencoded run
left-stripped, whitespace between two encoded words dropped, adjacent words of one
charset joined before decoding. Two deliberate differences:

* The value is one line. ``decode_header`` splits on ``str.splitlines`` boundaries, which,
  on header bytes read as latin-1, include the 0x85 byte inside UTF-8 text such as "Å"
  (C3 85), and then re-joins the pieces with spaces: that garbles such headers. An
  unfolded header value has no line breaks, so none are looked for (a stray LF still ends
  an encoded word's text, as the regex's ``.`` does).
* A base64 word that cannot be decoded is kept as its raw text, instead of the whole
  header losing its decoding (``HeaderParseError``).
"""

from __future__ import annotations

import binascii
import email.base64mime
import email.quoprimime
from dataclasses import dataclass

__all__ = ["DEFAULT_BUDGET", "DecodeBudget", "decode_encoded_words"]

# Characters of header text one header block may have scanned for encoded words. Real
# headers need far less (a To: of 500 encoded names is ~20 KB); past the budget the text
# is searched as it stands.
DEFAULT_BUDGET = 128 * 1024

# A failed base64 word keeps its raw text under this "charset": not None, so it never
# merges with a neighbouring unencoded run, and decoded like undeclared 8-bit text. No real
# charset can contain "?" (it ends the charset), so this never collides with one — the
# empty charset of "=??q?...?=" included, which decode_header treats as an encoded word.
RAW_WORD = "?"


@dataclass(slots=True)
class DecodeBudget:
    """Characters left to scan, and the work done so far (characters scanned by ``find``
    plus characters emitted), which the complexity tests read."""

    chars: int = DEFAULT_BUDGET
    steps: int = 0

    def scan_limit(self, length: int) -> int:
        """Characters of a text of ``length`` that a decode within this budget scans (and
        takes from it): two decodes with equal limits give equal answers."""
        return min(length, max(self.chars, 0))


class _Scanner:
    """``str.find`` over one text, counting the characters each call walks over."""

    __slots__ = ("budget", "text")

    def __init__(self, text: str, budget: DecodeBudget) -> None:
        self.text = text
        self.budget = budget

    def find(self, needle: str, start: int, end: int) -> int:
        at = self.text.find(needle, start, end)
        self.budget.steps += (at if at >= 0 else end) - start + 1
        return at


# (text, encoding, charset, raw): encoding None for unencoded text; raw is the whole
# "=?...?=" of an encoded word, kept in case its base64 does not decode.
_Word = tuple[str, str | None, str | None, str]


def _words(text: str, limit: int, budget: DecodeBudget) -> list[_Word] | None:
    """The words of ``text``; encoded words are looked for in ``text[:limit]`` only.

    None when there is no encoded word. Every "=?" candidate either matches or fails in
    O(1) beyond the scans, and the scans for "?", "?=" and a line feed only move forward
    (a later candidate reuses an earlier scan's answer), so the work is linear; past
    ``limit`` at most one scan for each runs on, to finish the word that began before it.
    """
    scan = _Scanner(text, budget)
    n = len(text)
    words: list[_Word] = []
    pos = 0  # start of the current unencoded run
    i = 0  # where the next "=?" is looked for
    close_from, close_at = -1, -1  # a "?=" scan: first "?=" at or after close_from
    lf_from, lf_at, lf_end = -1, -1, -1  # the same for a line feed, see below
    while True:
        start = scan.find("=?", i, limit)
        if start < 0:
            break
        q = scan.find("?", start + 2, n)  # the charset is everything up to the next "?"
        if q < 0:
            break  # no later candidate has a "?" after its "=?" either
        if text[q + 1 : q + 2] not in ("q", "Q", "b", "B") or text[q + 2 : q + 3] != "?":
            i = start + 1
            continue
        body = q + 3
        # Later candidates have later bodies, and no "?=" lies between an earlier body and
        # the "?=" found for it: an earlier answer still holds while body <= close_at.
        if not (close_from <= body <= close_at):
            close_from, close_at = body, scan.find("?=", body, n)
            if close_at < 0:
                break  # and no later candidate closes either
        # lf_at: the first line feed in [lf_from, lf_end), or lf_end when there is none.
        if not (lf_from <= body and (body <= lf_at < lf_end or close_at <= lf_end)):
            lf_from, lf_end = body, max(limit, close_at)
            lf_at = scan.find("\n", body, lf_end)
            if lf_at < 0:
                lf_at = lf_end
        if lf_at < close_at:  # the regex's "." does not cross a line feed
            i = start + 1
            continue
        if start > pos:
            words.append((text[pos:start], None, None, ""))
        words.append((text[body:close_at], text[q + 1].lower(), text[start + 2 : q].lower(),
                      text[start : close_at + 2]))
        pos = i = close_at + 2
        if i >= limit:
            break
    if not words:
        return None
    if pos < n:
        words.append((text[pos:], None, None, ""))
    if words[0][1] is None:
        first = words[0][0].lstrip()
        words[0] = (first, None, None, "")
        if not first:
            del words[0]  # once, at the front: O(n) at most
    return words


def _drop_spaces(
    words: list[_Word], decoded: list[tuple[bytes, str | None]]
) -> list[tuple[bytes, str | None]]:
    """Whitespace between two encoded words is not text (RFC 2047 §6.2): decode_header's
    exact rule, in one pass instead of one ``del`` per dropped word. A word whose base64
    failed counts as plain text, so the spaces around it stay."""
    encoded = [w[1] is not None and d[1] != RAW_WORD for w, d in zip(words, decoded, strict=True)]
    dropped = {
        k - 1
        for k in range(2, len(words))
        if encoded[k] and encoded[k - 2] and words[k - 1][0].isspace()
    }
    if not dropped:
        return decoded
    return [d for k, d in enumerate(decoded) if k not in dropped]


def _decode_word(word: _Word) -> tuple[bytes, str | None]:
    text, encoding, charset, raw = word
    if encoding is None:
        return text.encode("latin-1"), None
    if encoding == "q":
        return email.quoprimime.header_decode(text).encode("latin-1"), charset
    missing = len(text) % 4
    padded = text + "==="[: 4 - missing] if missing else text
    try:
        return email.base64mime.decode(padded), charset
    except binascii.Error:
        return raw.encode("latin-1"), RAW_WORD


def decode_encoded_words(
    text: str, budget: DecodeBudget | None = None
) -> list[tuple[bytes, str | None]] | None:
    """(octets, lower-case charset or None) chunks of a header value read as latin-1.

    Adjacent words of one charset are joined, as ``decode_header`` does, so a character
    split across two encoded words comes out whole. None when the text holds no encoded
    word (within the budget): the caller then uses the text as it is.
    """
    budget = budget if budget is not None else DecodeBudget()
    limit = budget.scan_limit(len(text))
    budget.chars -= limit
    if limit < 2:
        return None
    words = _words(text, limit, budget)
    if words is None:
        return None
    out: list[tuple[bytes, str | None]] = []
    run: list[bytes] = []
    run_charset: str | None = None
    for data, charset in _drop_spaces(words, [_decode_word(w) for w in words]):
        budget.steps += len(data)
        if run and charset != run_charset:
            out.append((b"".join(run), run_charset))
            run = []
        run.append(data)
        run_charset = charset
    if run:
        out.append((b"".join(run), run_charset))
    return out
