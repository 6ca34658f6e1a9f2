"""mbox import and export (mboxrd, reading mboxo too).

Reading. A message starts at a line beginning ``From `` that follows a blank line (or
starts the file), or that carries a parseable date even without the blank line. Lines
``>From ``, ``>>From `` ... lose one ``>`` (mboxrd; an mboxo file only has the first kind,
so it reads the same way, except for an original ``>From `` line, which mboxo cannot tell
apart). The blank line that ends each message is the separator, not part of it. The file
is streamed: memory holds one message at a time.

Metadata. ``Status:`` (R → \\Seen, O → old, i.e. not \\Recent), ``X-Status:``
(A → \\Answered, F → \\Flagged, T → \\Draft, D → \\Deleted) and ``X-Keywords:`` become
flags, and these bookkeeping fields of mbox writers are removed from the stored message,
together with ``X-UID``, ``X-IMAP``, ``X-IMAPbase`` and ``Content-Length`` (the set Dovecot
hides in mbox), so that an exported and re-imported message is the same message.
INTERNALDATE is the ``From `` line date (read as UTC unless the line carries a numeric
zone), else the ``Date:`` header, else the time of import.

Writing. ``From <Return-Path or MAILER-DAEMON> <INTERNALDATE in UTC, asctime format>``,
then the message with ``Status``/``X-Status``/``X-Keywords`` lines at the end of its
header (any such fields it had are replaced), lines matching ``>*From `` quoted with one
more ``>``, and a blank line. Nothing else in the message changes, except that line
endings are LF by default (``eol="crlf"`` keeps the stored CRLF) and a message that does
not end with a line break gets one.
"""

from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from ..files import open_private
from . import (
    READ_CHUNK,
    MailboxImporter,
    MigrateError,
    SourceMessage,
    canonical_mailbox,
    get_or_create_mailbox,
    prepare_data,
    resolve_user,
    too_big,
    valid_keyword,
)
from .progress import Reporter

META_FIELDS = frozenset(
    {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase",
     b"content-length"}
)
X_STATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
_MONTHS = {m: n for n, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_FROM_LINE = re.compile(
    rb"From \S*\s+(?:[A-Za-z]{3},?\s+)?([A-Za-z]{3})\s+(\d{1,2})\s+(\d{1,2}):(\d{2})"
    rb"(?::(\d{2}))?\s+(?:([A-Za-z]{1,5}|[+-]\d{4})\s+)?(\d{4})(?:\s+([+-]\d{4}))?"
)
_QUOTED_FROM = re.compile(rb">+From ")
_ESCAPE_FROM = re.compile(rb"^(>*From )", re.MULTILINE)
_RETURN_PATH = re.compile(rb"(?im)^Return-Path:[ \t]*<([^<>\s]*)>")


# --------------------------------------------------------------------------- helpers
def _zone(text: bytes | None) -> timezone | None:
    if not text or text[:1] not in (b"+", b"-"):
        return None
    sign = -1 if text[:1] == b"-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[3:5])))


def parse_from_line(line: bytes) -> datetime | None:
    """The date of an mbox ``From `` line, or None."""
    m = _FROM_LINE.match(line)
    if not m:
        return None
    mon = _MONTHS.get(m[1].decode("ascii").lower())
    if mon is None:
        return None
    tz = _zone(m[6]) or _zone(m[8]) or UTC
    try:
        return datetime(int(m[7]), mon, int(m[2]), int(m[3]), int(m[4]), int(m[5] or 0),
                        tzinfo=tz)
    except ValueError:
        return None


def from_line(sender: str, when: datetime) -> bytes:
    stamp = time.asctime(when.astimezone(UTC).timetuple())
    return f"From {sender} {stamp}".encode("ascii")


def _header_split(data: bytes) -> tuple[bytes, bytes]:
    """(header lines including the CRLF of the last one, rest from the blank line on)."""
    if data.startswith(b"\r\n"):
        return b"", data
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data, b""
    return data[: end + 2], data[end + 2 :]


@dataclass(slots=True)
class MboxMeta:
    status: str = ""
    x_status: str = ""
    keywords: tuple[str, ...] = ()
    date: datetime | None = None  # from the Date: header


def take_meta(data: bytes) -> tuple[bytes, MboxMeta]:
    """Remove the mbox bookkeeping fields from a CRLF message; return what they said."""
    header, rest = _header_split(data)
    meta = MboxMeta()
    kept: list[bytes] = []
    drop = False
    keywords: list[str] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not drop:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        lname = name.strip().lower()
        drop = bool(colon) and lname in META_FIELDS
        if not drop:
            kept.append(line)
            if colon and lname == b"date" and meta.date is None:
                meta.date = _header_date(value)
            continue
        text = value.decode("ascii", "replace").strip()
        if lname == b"status":
            meta.status += text
        elif lname == b"x-status":
            meta.x_status += text
        elif lname == b"x-keywords":
            keywords.extend(w for w in re.split(r"[\s,]+", text) if w)
    meta.keywords = tuple(keywords)
    return b"".join(kept) + rest, meta


def _header_date(value: bytes) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value.decode("ascii", "replace").strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


# --------------------------------------------------------------------------- reading
@dataclass(slots=True)
class MboxEntry:
    number: int  # 1-based position in the file
    line: int  # line number of its From line
    from_line: bytes
    data: bytes | None  # None when it grew over the limit (size still counted)
    size: int
    end: int  # file offset after the message, for progress


def iter_mbox(fh: IO[bytes], limit: int) -> Iterator[MboxEntry]:
    """Split an mbox stream into messages (unescaped, separator blank line removed)."""
    number = 0
    start_line = 0
    head: bytes | None = None
    lines: list[bytes] = []
    size = 0
    over = False
    prev_blank = True
    last_len = 0
    pos = 0

    def build(end: int) -> MboxEntry:
        nonlocal size
        if prev_blank and size:  # the separator line is not part of the message
            size -= last_len
            if not over and lines:
                lines.pop()
        assert head is not None
        return MboxEntry(number, start_line, head, None if over else b"".join(lines), size,
                         end)

    for lineno, raw in enumerate(fh, 1):
        if raw.startswith(b"From ") and (
            prev_blank or head is None or parse_from_line(raw) is not None
        ):
            if head is not None:
                yield build(pos)
            number += 1
            start_line, head, lines, size, over = lineno, raw.rstrip(b"\r\n"), [], 0, False
            prev_blank = False
            pos += len(raw)
            continue
        pos += len(raw)
        if head is None:
            if raw.strip():
                raise MigrateError(f"not an mbox file: line {lineno} is not a 'From ' line")
            continue
        prev_blank = raw in (b"\n", b"\r\n")
        last_len = len(raw)
        if raw[:1] == b">" and _QUOTED_FROM.match(raw):
            raw = raw[1:]
        size += len(raw)
        if over:
            continue
        if size > limit:
            over = True
            lines = []
        else:
            lines.append(raw)
    if head is not None:
        yield build(pos)


def _check_start(fh: IO[bytes], path: Path) -> None:
    for line in fh:
        if line.strip():
            if not line.startswith(b"From "):
                raise MigrateError(f"{path}: not an mbox file (it does not start with a "
                                   "'From ' line)")
            break
    fh.seek(0)


def entry_message(entry: MboxEntry, where: str, limit: int, reporter: Reporter
                  ) -> SourceMessage | None:
    if entry.data is None:
        reporter.fail(where, too_big(entry.size, limit))
        return None
    data, reason = prepare_data(entry.data, limit)
    if data is None:
        reporter.fail(where, reason or "invalid message")
        return None
    data, meta = take_meta(data)
    flags: set[str] = set()
    if "R" in meta.status:
        flags.add("\\Seen")
    for letter, flag in X_STATUS_FLAGS.items():
        if letter in meta.x_status:
            flags.add(flag)
    for word in meta.keywords:
        if valid_keyword(word):
            flags.add(word)
        else:
            reporter.warn(where, f"keyword {word!r} is not an IMAP atom; ignored")
    when = parse_from_line(entry.from_line) or meta.date
    return SourceMessage(where, data, frozenset(flags), when, recent="O" not in meta.status)


async def import_mbox(
    store: Any, username: str, path: Path, mailbox: str, limit: int, reporter: Reporter,
    progress: bool | None = None,
) -> None:
    from ..store.api import InvalidName, LimitExceeded

    user = await resolve_user(store, username)
    name = canonical_mailbox(mailbox)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, around awaits
    except OSError as exc:
        raise MigrateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        try:
            total = os.fstat(fh.fileno()).st_size
            _check_start(fh, path)
        except OSError as exc:
            raise MigrateError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            box, created = await get_or_create_mailbox(store, user, name)
        except InvalidName as exc:
            raise MigrateError(f"mailbox name {name!r} refused: {exc}") from None
        except LimitExceeded as exc:  # [limits] max_mailboxes_per_user
            raise MigrateError(
                f"mailbox {name!r} not created: {exc} ([limits] max_mailboxes_per_user)"
            ) from None
        if created:
            reporter.note(f"created mailbox {name}")
        importer = MailboxImporter(store, box, reporter)
        await importer.prepare()
        reporter.start(total, unit="bytes", enabled=progress)
        try:
            for entry in iter_mbox(fh, limit):
                where = f"{path}: message {entry.number} (line {entry.line})"
                msg = entry_message(entry, where, limit, reporter)
                if msg is None:
                    reporter.tick(entry.end)
                    continue
                await importer.add(msg)
                reporter.tick(entry.end)
        except OSError as exc:
            raise MigrateError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except MigrateError as exc:
            raise MigrateError(f"{path}: {exc}") from None
        finally:
            await importer.finish()
    reporter.finish()


# --------------------------------------------------------------------------- writing
def status_lines(flags: frozenset[str]) -> bytes:
    lower = {f.lower() for f in flags}
    out = b"Status: " + (b"RO" if "\\seen" in lower else b"O") + b"\r\n"
    xs = "".join(letter for letter, flag in X_STATUS_FLAGS.items() if flag.lower() in lower)
    if xs:
        out += f"X-Status: {xs}\r\n".encode("ascii")
    keywords = sorted(f for f in flags if not f.startswith("\\"))
    if keywords:
        out += ("X-Keywords: " + " ".join(keywords) + "\r\n").encode("utf-8", "replace")
    return out


def mbox_entry(data: bytes, flags: frozenset[str], when: datetime, eol: str = "lf") -> bytes:
    """One message (stored CRLF octets) as an mboxrd entry, separator blank line included."""
    data, _ = take_meta(data)
    header, rest = _header_split(data)
    if header and not header.endswith(b"\r\n"):
        header += b"\r\n"
    m = _RETURN_PATH.search(header)
    sender = "MAILER-DAEMON"
    if m and m[1] and all(0x21 <= c <= 0x7E for c in m[1]):
        sender = m[1].decode("ascii")
    body = header + status_lines(flags) + rest
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = _ESCAPE_FROM.sub(rb">\1", body)
    out = from_line(sender, when) + b"\r\n" + body + b"\r\n"
    return out.replace(b"\r\n", b"\n") if eol == "lf" else out


async def export_mbox(
    store: Any, username: str, mailbox: str, path: Path, reporter: Reporter, *,
    eol: str = "lf", force: bool = False, progress: bool | None = None,
) -> None:
    user = await resolve_user(store, username)
    name = canonical_mailbox(mailbox)
    box = await store.get_mailbox(user.id, name)
    if box is None:
        raise MigrateError(f"no such mailbox: {mailbox}")
    if path.exists() and not force:
        raise MigrateError(f"{path}: exists; use --force to replace it")
    infos = await store.list_messages(box.id)
    reporter.start(len(infos), enabled=progress)
    tmp = path.with_name(f".{path.name}.mailstead-tmp")
    try:
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as fh:
            for start in range(0, len(infos), READ_CHUNK):
                chunk = infos[start : start + READ_CHUNK]
                blobs = await store.read_messages(box.id, [i.uid for i in chunk])
                for info in chunk:
                    data = blobs.get(info.uid)
                    if data is None:  # expunged meanwhile
                        continue
                    fh.write(mbox_entry(bytes(data), info.flags, info.internaldate, eol))
                    reporter.imported += 1
                    reporter.tick()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise MigrateError(f"{exc.filename or path}: {exc.strerror or exc}") from None
    reporter.finish()
