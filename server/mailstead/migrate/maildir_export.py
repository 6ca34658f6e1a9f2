"""Maildir++ export: the layout of ``maildir`` (see its docstring), written so Dovecot and a
re-import keep the UIDs, flags and keywords."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

from ..files import open_private, private_dir, private_file, write_private
from . import MigrateError, resolve_user
from .maildir import FLAG_TO_INFO, KEYWORD_LETTERS, KEYWORDS_FILE, UIDLIST_FILE, folder_dirname
from .progress import Reporter


def _hostname() -> str:
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072")


def info_letters(flags: frozenset[str], letters: dict[str, str]) -> str:
    """The ``:2,`` letters of a message, in ASCII order as Maildir requires."""
    out = set()
    for flag in flags:
        low = flag.lower()
        if low in FLAG_TO_INFO:
            out.add(FLAG_TO_INFO[low])
        elif flag in letters:
            out.add(letters[flag])
    return "".join(sorted(out))


def assign_letters(infos: list[Any]) -> tuple[dict[str, str], list[str]]:
    """(keyword → letter, keywords that did not fit) for one folder."""
    words = sorted({f for i in infos for f in i.flags
                    if not f.startswith("\\") and f.lower() not in FLAG_TO_INFO})
    fit = words[: len(KEYWORD_LETTERS)]
    return {w: KEYWORD_LETTERS[n] for n, w in enumerate(fit)}, words[len(fit):]


def _prepare_root(root: Path) -> None:
    try:
        if root.exists():
            if not root.is_dir():
                raise MigrateError(f"{root}: exists and is not a directory")
            if any(root.iterdir()):
                raise MigrateError(f"{root}: is not empty; export into a new or empty folder")
        private_dir(root)  # an export is someone's mail: owner-only, whatever the umask
    except OSError as exc:
        raise MigrateError(f"{root}: {exc.strerror or exc}") from None


async def export_maildir(
    store: Any, username: str, root: Path, reporter: Reporter, *, eol: str = "lf",
    progress: bool | None = None,
) -> int:
    """Write every mailbox of the user; returns how many mailboxes were written."""
    user = await resolve_user(store, username)
    _prepare_root(root)
    boxes = await store.list_mailboxes(user.id)
    listings = {box.id: await store.list_messages(box.id) for box in boxes}
    reporter.start(sum(len(v) for v in listings.values()), enabled=progress)
    host = _hostname()
    written = 0
    for box in boxes:
        infos = listings[box.id]
        if box.name == "INBOX":
            folder = root
        else:
            try:
                folder = root / folder_dirname(box.name)
            except ValueError as exc:
                reporter.fail(f"mailbox {box.name!r}", f"cannot be named in a Maildir: {exc}",
                              count=len(infos))
                continue
        try:
            written += await _export_folder(store, box, infos, folder, host, eol, reporter)
        except OSError as exc:
            raise MigrateError(f"{exc.filename or folder}: {exc.strerror or exc}") from None
    reporter.finish()
    return written


async def _export_folder(
    store: Any, box: Any, infos: list[Any], folder: Path, host: str, eol: str,
    reporter: Reporter,
) -> int:
    from . import READ_CHUNK

    for sub in ("cur", "new", "tmp"):
        private_dir(folder / sub)
    if folder.name.startswith("."):
        private_file(folder / "maildirfolder")
    letters, dropped = assign_letters(infos)
    if dropped:
        reporter.warn(f"mailbox {box.name!r}", "Maildir holds 26 keywords per folder; not "
                      f"exported: {' '.join(dropped)}")
    uidlist: list[str] = []
    for start in range(0, len(infos), READ_CHUNK):
        chunk = infos[start : start + READ_CHUNK]
        blobs = await store.read_messages(box.id, [i.uid for i in chunk])
        for info in chunk:
            data = blobs.get(info.uid)
            if data is None:  # expunged meanwhile
                continue
            data = bytes(data)
            if eol == "lf":
                data = data.replace(b"\r\n", b"\n")
            ts = int(info.internaldate.timestamp())
            base = (f"{ts}.U{info.uid}V{box.uidvalidity}.{host}"
                    f",S={len(data)},W={info.size}")
            name = f"{base}:2,{info_letters(info.flags, letters)}"
            tmp = folder / "tmp" / base
            with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as fh:
                fh.write(data)
            os.utime(tmp, (ts, ts))
            os.rename(tmp, folder / "cur" / name)
            uidlist.append(f"{info.uid} :{name}\n")
            reporter.imported += 1
            reporter.tick()
    if letters:
        write_private(folder / KEYWORDS_FILE, "".join(
            f"{KEYWORD_LETTERS.index(c)} {w}\n" for w, c in letters.items()).encode())
    uidnext = max([box.uidnext, *(i.uid + 1 for i in infos)])
    write_private(folder / UIDLIST_FILE, (
        f"3 V{box.uidvalidity} N{uidnext} G{uuid.uuid4().hex}\n" + "".join(uidlist)).encode())
    return 1
