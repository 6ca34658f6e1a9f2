"""``mailstead queue list|show ID|retry [ID]|delete ID`` and ``mailstead dkim keygen``.

The queue commands work on the store directly, whether or not a server runs: the
running server's queue runner rereads due entries every ``[queue] poll_seconds``, so a
``retry`` is picked up within that time, and a message deleted while it is being sent
is simply not recorded again (the attempt in flight may still reach its remote).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import Any

from .cli_common import CLIError, confirm, load, run_store

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _message_json(msg: Any) -> dict[str, Any]:
    return {
        "id": msg.id, "from": msg.mail_from, "created": msg.created, "size": msg.size,
        "recipients": [
            {"address": r.address, "state": r.state, "attempts": r.attempts,
             "next_attempt": r.next_attempt, "last_reply": r.last_reply}
            for r in msg.recipients
        ],
    }


def cmd_queue_list(args: argparse.Namespace) -> int:
    cfg = load(args)
    messages = run_store(cfg, lambda store: store.queue_list())
    if args.json:
        print(json.dumps([_message_json(m) for m in messages], indent=1))
        return 0
    if not messages:
        print("the queue is empty")
        return 0
    header = ("ID", "FROM", "SIZE", "QUEUED", "PENDING", "NEXT ATTEMPT")
    rows = [header]
    for m in messages:
        pending = [r for r in m.recipients if r.state == "pending"]
        nxt = min((r.next_attempt for r in pending), default=None)
        rows.append((str(m.id), f"<{m.mail_from}>", str(m.size), _when(m.created),
                     f"{len(pending)}/{len(m.recipients)}", _when(nxt) if nxt else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _get(cfg: Any, queue_id: int) -> tuple[Any, bytes]:
    async def read(store: Any) -> tuple[Any, bytes | None]:
        return await store.queue_message(queue_id), await store.queue_data(queue_id)

    msg, data = run_store(cfg, read)
    if msg is None or data is None:
        raise CLIError(f"no queued message {queue_id}")
    return msg, data


def cmd_queue_show(args: argparse.Namespace) -> int:
    cfg = load(args)
    msg, data = _get(cfg, args.id)
    if args.json:
        print(json.dumps(_message_json(msg), indent=1))
        return 0
    end = data.find(b"\r\n\r\n")
    headers = BytesHeaderParser().parsebytes(data if end < 0 else data[: end + 2])
    print(f"message {msg.id}: from <{msg.mail_from}>, {msg.size} octets, "
          f"queued {_when(msg.created)}")
    for name in ("From", "To", "Subject", "Message-ID", "Date"):
        if headers.get(name) is not None:
            print(f"  {name}: {' '.join(str(headers[name]).split())}")
    for r in msg.recipients:
        nxt = f", next attempt {_when(r.next_attempt)}" if r.state == "pending" else ""
        print(f"  <{r.address}>: {r.state}, {r.attempts} attempts{nxt}")
        if r.last_reply:
            print(f"      last reply: {r.last_reply}")
    return 0


def cmd_queue_retry(args: argparse.Namespace) -> int:
    cfg = load(args)
    if args.id is not None:
        _get(cfg, args.id)
    count = run_store(cfg, lambda store: store.queue_retry(args.id, time.time()))
    print(f"{count} recipients due now"
          f"{'' if args.id is None else f' in message {args.id}'}; a running server "
          f"tries them within {cfg.queue.poll_seconds:g} s")
    return 0


def cmd_queue_delete(args: argparse.Namespace) -> int:
    cfg = load(args)
    confirm(f"Delete queued message {args.id} without telling its sender?", args.yes,
            "deleting")
    if not run_store(cfg, lambda store: store.queue_delete(args.id)):
        raise CLIError(f"no queued message {args.id}")
    print(f"deleted queued message {args.id}")
    return 0


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    from .files import private_dir
    from .outbound.dkim import DkimError, keygen

    cfg = load(args)
    try:
        private_dir(cfg.data_dir)
        path, record = keygen(cfg.data_dir, args.domain, args.selector, args.algorithm,
                              force=args.force)
    except DkimError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write the key: {exc.strerror or exc}") from None
    print(f"wrote {path}; mail from {args.domain.lower()} is signed with it from now on.")
    print("Publish this DNS record:")
    print(record)
    return 0


def _queue_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a queue id: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a queue id: {text!r}")
    return value


def add_queue_commands(sub: Any, with_config: WithConfig) -> None:
    queue = sub.add_parser("queue", help="inspect and manage the outbound queue")
    qsub = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = with_config(qsub.add_parser("list", help="queued messages"))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_queue_list)
    p = with_config(qsub.add_parser("show", help="one message: recipients, attempts, replies"))
    p.add_argument("id", type=_queue_id)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_queue_show)
    p = with_config(qsub.add_parser("retry", help="make pending recipients due now"))
    p.add_argument("id", type=_queue_id, nargs="?", help="one message (default: all)")
    p.set_defaults(func=cmd_queue_retry)
    p = with_config(qsub.add_parser("delete", help="drop a queued message, no bounce"))
    p.add_argument("id", type=_queue_id)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_queue_delete)

    dkim = sub.add_parser("dkim", help="DKIM signing keys")
    dsub = dkim.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = with_config(dsub.add_parser(
        "keygen", help="create a signing key for DOMAIN and print its DNS record"))
    p.add_argument("domain")
    p.add_argument("--selector", default="mail", help="the DKIM selector (default: mail)")
    p.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                   help="rsa (2048 bits, the default) or ed25519")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=cmd_dkim_keygen)
