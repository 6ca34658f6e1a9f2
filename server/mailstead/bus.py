"""The worker's end of the bus to its supervisor: change hints, shared counters, control.

Each worker process of ``[server] workers = N`` inherits one end of a Unix stream socket
pair from the supervisor (``supervisor.py``); nothing else can connect to it, and when
either side dies the other reads end-of-file. Messages are JSON objects, one per line:

==================================================  ======================================
worker → supervisor                                 supervisor → worker
==================================================  ======================================
``{"op": "ready", "pid"}`` once listening           ``{"op": "hint", "mailboxes"}`` another
``{"op": "hint", "mailboxes": [ids]}`` after a      worker committed changes to these
commit with change events                           ``{"op": "block", "ip", "seconds"}`` a
``{"op": "acquire", "id", "holds": [[key, n]]}``    burst of failures blocked an address
``{"op": "release", "keys": [...]}``                ``{"op": "reply", "id", …}`` answers
``{"op": "failure", "id", "ip", "user"}``           ``{"op": "control", "id", "request"}``
``{"op": "success", "ip", "user"}``                 a ``mailstead who``/``kick`` request
``{"op": "queue"}`` outbound mail was queued         ``{"op": "queue"}`` another worker
                                                    queued outbound mail
``{"op": "rate", "id", "user", "per_hour"}`` may
this user submit one more message
``{"op": "sent", "user"}`` a submission accepted
``{"op": "reply", "id", "answer"}`` to a control
==================================================  ======================================

A hint carries no change: on a hint the worker's store looks at the database at once
(``store.look_outside_soon``), exactly as its writer thread does every
``EXTERNAL_POLL_SECONDS`` anyway, so a lost hint costs latency, never a change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mailstead.bus")

ENV_WORKER = "MAILSTEAD_WORKER"  # "index:bus_fd:lock_fd", set by the supervisor only
MAX_LINE = 1 << 20  # a control answer listing many sessions is the longest message


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What the supervisor told a worker process it started."""

    index: int
    bus_fd: int
    lock_fd: int

    def environment(self) -> str:
        return f"{self.index}:{self.bus_fd}:{self.lock_fd}"

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> WorkerSetup | None:
        """The setup named by ``MAILSTEAD_WORKER`` (removed, so no child inherits it)."""
        value = (os.environ if env is None else env).pop(ENV_WORKER, None)
        if value is None:
            return None
        try:
            index, bus_fd, lock_fd = (int(part) for part in value.split(":"))
        except ValueError:
            raise ValueError(f"{ENV_WORKER}={value!r} is not index:bus_fd:lock_fd") from None
        return cls(index, bus_fd, lock_fd)


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class BusClient:
    """One worker's connection to the supervisor (see the module docstring)."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.on_hint: Callable[[], None] = lambda: None
        self.on_queue: Callable[[], None] = lambda: None
        self.on_block: Callable[[str, float], None] = lambda ip, seconds: None
        self.on_control: Callable[[bytes], dict[str, Any]] = lambda _: {
            "ok": False, "error": "not ready"}
        self.on_lost: Callable[[], None] = lambda: None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self.hints_sent = self.hints_received = 0

    async def connect(self) -> None:
        sock = socket.socket(fileno=self.setup.bus_fd)
        sock.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
        self._task = asyncio.get_running_loop().create_task(self._read(reader))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # --- sending ------------------------------------------------------------------
    def _send(self, message: Mapping[str, Any]) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        writer.write(encode(message))
        return True

    async def _ask(self, message: dict[str, Any]) -> dict[str, Any] | None:
        self._next_id += 1
        message["id"] = ident = self._next_id
        fut = asyncio.get_running_loop().create_future()
        self._waiting[ident] = fut
        if not self._send(message):
            self._waiting.pop(ident, None)
            return None
        try:
            return await fut
        finally:
            self._waiting.pop(ident, None)

    def ready(self) -> None:
        self._send({"op": "ready", "pid": os.getpid()})

    def hint(self, mailboxes: Collection[int]) -> None:
        """Tell the other workers that this one committed changes to ``mailboxes``."""
        if self._send({"op": "hint", "mailboxes": sorted(mailboxes)}):
            self.hints_sent += 1

    def queued(self) -> None:
        """Tell the worker running the outbound queue that this one queued mail."""
        self._send({"op": "queue"})

    # --- shared.SharedCounters and shared.SharedThrottle ---------------------------
    async def acquire(self, holds: Sequence[tuple[str, int]]) -> int:
        reply = await self._ask({"op": "acquire", "holds": [list(h) for h in holds]})
        # Without a supervisor this worker is stopping: admit nothing more.
        return 0 if reply is None else int(reply.get("failed", 0))

    def release(self, keys: Sequence[str]) -> None:
        self._send({"op": "release", "keys": list(keys)})

    async def failure(self, ip: str, user: str) -> float:
        reply = await self._ask({"op": "failure", "ip": ip, "user": user})
        return 1.0 if reply is None else float(reply.get("delay", 1.0))

    def success(self, ip: str, user: str) -> None:
        self._send({"op": "success", "ip": ip, "user": user})

    # --- shared.SharedRate ----------------------------------------------------------
    async def rate_allowed(self, user_id: int, per_hour: int) -> bool:
        reply = await self._ask({"op": "rate", "user": user_id, "per_hour": per_hour})
        return reply is not None and bool(reply.get("allowed", False))

    def rate_record(self, user_id: int) -> None:
        self._send({"op": "sent", "user": user_id})

    # --- receiving ----------------------------------------------------------------
    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self._dispatch(json.loads(line))
        except asyncio.CancelledError:
            raise
        except (ConnectionError, ValueError) as exc:
            log.error("bus to the supervisor failed: %s", exc)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result({})
        self._waiting.clear()
        self._writer = None
        self.on_lost()

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "hint":
            self.hints_received += 1
            self.on_hint()
        elif op == "queue":
            self.on_queue()
        elif op == "reply":
            fut = self._waiting.get(message.get("id", -1))
            if fut is not None and not fut.done():
                fut.set_result(message)
        elif op == "block":
            self.on_block(str(message.get("ip", "")), float(message.get("seconds", 0)))
        elif op == "control":
            answer = self.on_control(json.dumps(message.get("request")).encode())
            self._send({"op": "reply", "id": message.get("id"), "answer": answer})
