"""Maildir++ import and export (the layout Dovecot and Courier use).

Layout. INBOX is ``PATH/cur`` + ``PATH/new``; every other mailbox is a folder
``PATH/.<level>.<level>`` with its own ``cur``/``new``/``tmp``: ``.Archive.2026`` is
``Archive/2026``. Level names are modified UTF-7 on disk (Dovecot's default; a level that
is not valid modified UTF-7, such as ``R&D``, is taken literally, and 8-bit names are read
as UTF-8). Characters that Maildir++ cannot hold in a level (``.``, ``\\`` and a leading
``~``) are written as ``\\NN`` hex escapes, the convention of Dovecot's listescape plugin,
and such escapes are decoded on import.

Flags live in the file name after ``:2,``: D \\Draft, F \\Flagged, P $Forwarded,
R \\Answered, S \\Seen, T \\Deleted, and a-z are keywords numbered by the folder's
``dovecot-keywords`` file (lines ``N keyword``, 0 = a). Messages in ``new/`` are unseen and
recent; messages in ``cur/`` are old. INTERNALDATE is the file's mtime.

Order. Messages are imported in the order of the folder's ``dovecot-uidlist`` when there is
one (so they keep their relative UID order), then the rest by file name, comparing the
leading delivery timestamp and other digit runs numerically. Export writes a
``dovecot-uidlist`` with the current UIDs and UIDVALIDITY, so Dovecot (and a re-import)
keeps them.

Export writes ``PATH`` (which must not exist or be empty), every message to ``tmp/`` and
then renames it into ``cur/`` (the Maildir delivery protocol), with file mtime =
INTERNALDATE, ``,S=<file size>,W=<size with CRLF>`` in the name, a ``dovecot-keywords``
per folder that has keywords (at most 26 per folder: Maildir cannot name more), and a
``maildirfolder`` marker in each sub-folder. Line endings are LF by default (what Unix
mail tools and Dovecot write); ``eol="crlf"`` writes the stored octets unchanged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..imap.utf7 import decode_mailbox, encode_mailbox
from . import (
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

INFO_TO_FLAG = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
FLAG_TO_INFO = {flag.lower(): letter for letter, flag in INFO_TO_FLAG.items()}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
KEYWORDS_FILE = "dovecot-keywords"
UIDLIST_FILE = "dovecot-uidlist"

# ":2," info; "!" and ";" are the separators some tools use where ":" is not allowed.
_INFO = re.compile(r"[:!;]2,([^:!;/]*)$")
_ANY_INFO = re.compile(r"[:!;][12],")
_ESCAPE = re.compile(rb"\\([0-9a-fA-F]{2})")
_DIGITS = re.compile(r"(\d+)")


# --------------------------------------------------------------------------- names
def folder_name(entry: bytes) -> str:
    """Mailbox name of a Maildir++ folder directory name (``b".Archive.2026"``)."""
    if not entry.startswith(b".") or len(entry) < 2:
        raise ValueError("not a Maildir++ folder name")
    levels = []
    for raw in entry[1:].split(b"."):
        if not raw:
            raise ValueError("the folder name has an empty level")
        level = _ESCAPE.sub(lambda m: bytes((int(m[1], 16),)), raw)
        if level.isascii():
            try:
                text = decode_mailbox(level)
            except ValueError:
                text = level.decode("ascii")  # not modified UTF-7 (e.g. "R&D"): literal
        else:
            try:
                text = level.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("the folder name is neither modified UTF-7 nor UTF-8") from None
        levels.append(text)
    return canonical_mailbox("/".join(levels))


def folder_dirname(name: str) -> str:
    """Directory name of a mailbox (not INBOX) in a Maildir++: ``Archive/2026`` →
    ``.Archive.2026``. Raises ValueError for a name without a UTF-16 form."""
    out = []
    for level in name.split("/"):
        enc = encode_mailbox(level).replace(b"\\", b"\\5c").replace(b".", b"\\2e")
        if enc.startswith(b"~"):
            enc = b"\\7e" + enc[1:]
        out.append(enc.decode("ascii"))
    return "." + ".".join(out)


def parse_info(filename: str) -> tuple[str, str]:
    """(base name, info letters) of a Maildir file name."""
    m = _INFO.search(filename)
    if m:
        return filename[: m.start()], m.group(1)
    m = _ANY_INFO.search(filename)
    if m:
        return filename[: m.start()], ""
    return filename, ""


def _name_key(base: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in _DIGITS.split(base) if p]


# --------------------------------------------------------------------------- control files
def read_keywords(folder: Path, reporter: Reporter) -> dict[str, str]:
    """letter → keyword from ``dovecot-keywords`` (empty when there is none)."""
    path = folder / KEYWORDS_FILE
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        reporter.warn(str(path), f"cannot read: {exc.strerror or exc}; keywords are ignored")
        return {}
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        num, _, word = line.strip().partition(" ")
        word = word.strip()
        if not num.isdigit() or int(num) >= len(KEYWORD_LETTERS) or not word:
            reporter.warn(f"{path}:{lineno}", "not a 'N keyword' line; ignored")
            continue
        if not valid_keyword(word):
            reporter.warn(f"{path}:{lineno}", f"keyword {word!r} is not an IMAP atom; ignored")
            continue
        out[KEYWORD_LETTERS[int(num)]] = word
    return out


def read_uidlist(folder: Path) -> dict[str, int]:
    """base name → UID from ``dovecot-uidlist`` (empty when absent or unreadable)."""
    try:
        lines = (folder / UIDLIST_FILE).read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return {}
    if not lines:
        return {}
    version = lines[0].split(" ", 1)[0]
    out: dict[str, int] = {}
    try:
        for line in lines[1:]:
            if not line.strip():
                continue
            uid_text, _, rest = line.partition(" ")
            if version == "3":
                colon = rest.find(":")
                if colon < 0:
                    return {}
                rest = rest[colon + 1 :]
            out[parse_info(rest.strip())[0]] = int(uid_text)
    except ValueError:
        return {}
    return out


# --------------------------------------------------------------------------- scan
@dataclass
class Folder:
    name: str | None  # None: the directory name cannot be a mailbox name (error kept)
    path: Path
    files: list[tuple[Path, bool]] = field(default_factory=list)  # (file, in new/)
    error: str | None = None


def _list_files(folder: Path, reporter: Reporter) -> list[tuple[Path, bool]]:
    files: list[tuple[Path, bool]] = []
    for sub, is_new in (("cur", False), ("new", True)):
        d = folder / sub
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        except OSError as exc:
            reporter.fail(str(d), f"cannot list: {exc.strerror or exc}")
            continue
        files.extend((d / n, is_new) for n in names if not n.startswith("."))
    return files


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def scan_maildir(root: Path, reporter: Reporter) -> list[Folder]:
    """INBOX and every Maildir++ folder under ``root`` with the files to import."""
    if not root.is_dir():
        raise MigrateError(f"{root}: not a directory")
    if not _is_maildir(root):
        raise MigrateError(f"{root}: not a Maildir (it has no cur/ or new/ folder)")
    folders = [Folder("INBOX", root, _list_files(root, reporter))]
    try:
        entries = sorted(os.listdir(os.fsencode(root)))
    except OSError as exc:
        raise MigrateError(f"{root}: cannot list: {exc.strerror or exc}") from None
    for entry in entries:
        if not entry.startswith(b".") or entry in (b".", b".."):
            continue
        path = root / os.fsdecode(entry)
        if not path.is_dir() or not _is_maildir(path):
            continue
        folder = Folder(None, path, _list_files(path, reporter))
        try:
            folder.name = folder_name(entry)
        except ValueError as exc:
            folder.error = str(exc)
        folders.append(folder)
    return folders


def _order(folder: Folder) -> list[tuple[Path, bool]]:
    uids = read_uidlist(folder.path)

    def key(item: tuple[Path, bool]) -> tuple[int, int, list[tuple[int, int | str]]]:
        base = parse_info(item[0].name)[0]
        uid = uids.get(base)
        return (0, uid, []) if uid is not None else (1, 0, _name_key(base))

    return sorted(folder.files, key=key)


# --------------------------------------------------------------------------- import
def load_message(
    path: Path, in_new: bool, keywords: dict[str, str], limit: int, reporter: Reporter,
    unknown: set[str],
) -> SourceMessage | None:
    """Read one Maildir file; None (after reporting why) when it cannot be imported."""
    try:
        st = path.stat()
        if st.st_size > limit:
            reporter.fail(str(path), too_big(st.st_size, limit))
            return None
        raw = path.read_bytes()
    except OSError as exc:
        reporter.fail(str(path), f"cannot read: {exc.strerror or exc}")
        return None
    data, reason = prepare_data(raw, limit)
    if data is None:
        reporter.fail(str(path), reason or "invalid message")
        return None
    flags: set[str] = set()
    for letter in parse_info(path.name)[1]:
        if letter in INFO_TO_FLAG:
            flags.add(INFO_TO_FLAG[letter])
        elif letter in keywords:
            flags.add(keywords[letter])
        elif "a" <= letter <= "z" and letter not in unknown:
            unknown.add(letter)
            reporter.warn(str(path.parent.parent), f"keyword letter {letter!r} is not in "
                          f"{KEYWORDS_FILE}; ignored")
    if in_new:
        flags.discard("\\Seen")
    when = datetime.fromtimestamp(st.st_mtime, UTC).astimezone()
    return SourceMessage(str(path), data, frozenset(flags), when, recent=in_new)


async def import_maildir(
    store: Any, username: str, root: Path, limit: int, reporter: Reporter,
    progress: bool | None = None,
) -> None:
    from ..store.api import InvalidName, LimitExceeded

    user = await resolve_user(store, username)
    folders = scan_maildir(root, reporter)
    reporter.start(sum(len(f.files) for f in folders), enabled=progress)
    for folder in folders:
        if folder.name is None:
            reporter.fail(str(folder.path), f"skipped folder: {folder.error}",
                          count=len(folder.files))
            continue
        try:
            box, created = await get_or_create_mailbox(store, user, folder.name)
        except InvalidName as exc:
            reporter.fail(str(folder.path), f"skipped folder: mailbox name "
                          f"{folder.name!r} refused: {exc}", count=len(folder.files))
            continue
        except LimitExceeded as exc:  # [limits] max_mailboxes_per_user
            reporter.fail(str(folder.path), f"skipped folder: mailbox {folder.name!r} "
                          f"not created: {exc} ([limits] max_mailboxes_per_user)",
                          count=len(folder.files))
            continue
        if created:
            reporter.note(f"created mailbox {folder.name}")
        keywords = read_keywords(folder.path, reporter)
        importer = MailboxImporter(store, box, reporter)
        await importer.prepare()
        unknown: set[str] = set()
        for path, in_new in _order(folder):
            msg = load_message(path, in_new, keywords, limit, reporter, unknown)
            if msg is None:
                reporter.tick()
                continue
            await importer.add(msg)
        await importer.finish()
    reporter.finish()
