"""LIST/LSUB mailbox patterns (RFC 3501 §6.3.8), matched in time linear in the name.

``*`` matches any run of characters, ``%`` any run that does not cross the hierarchy
delimiter. A backtracking regex (``*`` -> ``.*``, ``%`` -> ``[^/]*``) explodes on
patterns such as ``%%%%…Q`` or ``*a*a*a*a*b`` — seconds to hours per name, on the event
loop. Here the pattern is an automaton with one state per pattern position, run on all
positions at once as the bits of an integer ("shift-and"): every character of a name
costs the same few integer operations on a mask of ``len(pattern) + 1`` bits, whatever
the pattern, so a match is ``O(len(name))`` steps for a pattern of bounded length.

Several patterns (LIST-EXTENDED) are one automaton: their positions side by side in one
mask, so a name is read once whatever their number. Patterns are bounded
(:data:`MAX_PATTERN_LENGTH`, :data:`MAX_WILDCARDS`, :data:`MAX_PATTERNS`,
:data:`MAX_TOTAL_LENGTH`) so that the cost of one step stays small too; a longer or wilder
one raises :class:`PatternTooComplex` with a message for the client.
"""

from __future__ import annotations

from dataclasses import dataclass

# Mailbox names are at most 512 characters (store/names.py); a reference plus a pattern
# may be somewhat longer, but never needs more than this.
MAX_PATTERN_LENGTH = 1024
# Real clients send one to three wildcards; this leaves plenty of room.
MAX_WILDCARDS = 64
# LIST-EXTENDED (RFC 5258) takes a list of patterns; all of them run as one automaton, so
# what bounds a step is their total length.
MAX_PATTERNS = 32
MAX_TOTAL_LENGTH = 2048

_STAR, _PERCENT = "*", "%"


class PatternTooComplex(ValueError):
    """The pattern exceeds a limit; the text is meant for the client."""


def _canonical_inbox(pattern: str) -> str:
    """``inbox``, ``Inbox/…`` or ``INBOX*`` name INBOX, whose name is case-insensitive
    (RFC 3501 §5.1); other names are matched case-sensitively."""
    if pattern[:5].upper() == "INBOX" and (len(pattern) == 5 or pattern[5] in "/*%"):
        return "INBOX" + pattern[5:]
    return pattern


def _tokens(pattern: str) -> list[str]:
    """The pattern with each run of wildcards collapsed to one: ``%%`` is ``%``, and a run
    holding a ``*`` is ``*`` (``*`` already matches whatever ``%`` could add)."""
    out: list[str] = []
    for ch in pattern:
        if ch in (_STAR, _PERCENT) and out and out[-1] in (_STAR, _PERCENT):
            if ch == _STAR:
                out[-1] = _STAR
            continue
        out.append(ch)
    return out


@dataclass(frozen=True, slots=True)
class MailboxPattern:
    """A compiled pattern; :meth:`match` tells whether a whole mailbox name matches.

    Bit ``i`` of a state mask means "the first ``i`` tokens matched a prefix of the name";
    bit ``len(tokens)`` is the accepting state. A union of patterns puts each one's bits
    after the previous one's.
    """

    text: str
    delimiter: str
    literal_masks: dict[str, int]  # character -> positions whose token is that character
    star_mask: int  # positions holding "*"
    percent_mask: int  # positions holding "%"
    accept: int  # the accepting position of each pattern
    start: int  # the first position of each pattern

    @classmethod
    def compile(cls, pattern: str, delimiter: str = "/") -> MailboxPattern:
        return cls.union([pattern], delimiter)

    @classmethod
    def union(cls, patterns: list[str], delimiter: str = "/") -> MailboxPattern:
        """One automaton matching a name that any of ``patterns`` matches."""
        if len(delimiter) != 1:
            raise ValueError("the hierarchy delimiter is one character")
        if len(patterns) > MAX_PATTERNS:
            raise PatternTooComplex(f"LIST takes at most {MAX_PATTERNS} patterns")
        if sum(len(p) for p in patterns) > MAX_TOTAL_LENGTH:
            raise PatternTooComplex(
                f"LIST patterns are longer than {MAX_TOTAL_LENGTH} characters in all"
            )
        literal: dict[str, int] = {}
        star = percent = accept = start = 0
        base = 0
        for pattern in patterns:
            if len(pattern) > MAX_PATTERN_LENGTH:
                raise PatternTooComplex(
                    f"LIST pattern is longer than {MAX_PATTERN_LENGTH} characters"
                )
            if pattern.count(_STAR) + pattern.count(_PERCENT) > MAX_WILDCARDS:
                raise PatternTooComplex(
                    f"LIST pattern has more than {MAX_WILDCARDS} wildcards"
                )
            tokens = _tokens(_canonical_inbox(pattern))
            start |= 1 << base
            for i, token in enumerate(tokens, base):
                if token == _STAR:
                    star |= 1 << i
                elif token == _PERCENT:
                    percent |= 1 << i
                else:
                    literal[token] = literal.get(token, 0) | 1 << i
            # The accepting bit of this pattern sits between it and the next one: no mask
            # holds it, so nothing shifts out of it into the next pattern's first position.
            accept |= 1 << (base + len(tokens))
            base += len(tokens) + 1
        return cls(" ".join(patterns), delimiter, literal, star, percent, accept, start)

    def _closure(self, state: int) -> int:
        # A wildcard may match nothing: its position also stands for the next one. No two
        # wildcards are adjacent (see _tokens), so one shift reaches every such position.
        return state | (state & (self.star_mask | self.percent_mask)) << 1

    def match_steps(self, name: str) -> tuple[bool, int]:
        """Whether ``name`` matches, and the steps taken: one per character consumed,
        each the same few operations on the state mask (see :meth:`_closure`)."""
        wild = self.star_mask | self.percent_mask
        star, literal, delimiter = self.star_mask, self.literal_masks, self.delimiter
        state = self._closure(self.start)
        steps = 0
        for ch in name:
            steps += 1
            state = ((state & literal.get(ch, 0)) << 1) | (
                state & (star if ch == delimiter else wild)
            )
            state |= (state & wild) << 1  # _closure, inlined: this is the hot loop
            if not state:  # no position is alive: nothing further can match
                return False, steps
        return bool(state & self.accept), steps

    def match(self, name: str) -> bool:
        return self.match_steps(name)[0]


def compile_pattern(pattern: str, delimiter: str = "/") -> MailboxPattern:
    """Compile a LIST/LSUB pattern (reference already prepended); may raise
    :class:`PatternTooComplex`."""
    return MailboxPattern.compile(pattern, delimiter)


def compile_patterns(reference: str, patterns: tuple[str, ...] | list[str],
                     delimiter: str = "/") -> MailboxPattern:
    """One matcher for a LIST command's patterns, each prefixed by the reference; may
    raise :class:`PatternTooComplex`."""
    return MailboxPattern.union([reference + p for p in patterns], delimiter)
