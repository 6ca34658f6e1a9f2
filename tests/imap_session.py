"""A line-level IMAP client for tests that watch untagged responses arrive (IDLE)."""

from __future__ import annotations

import itertools
import re
import socket
import time


class Session:
    """A minimal line-level IMAP client that keeps every untagged response."""

    _tags = itertools.count(1)

    def __init__(self, port: int, user: str, password: str = "secret") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self._exists = 0
        assert self.line().startswith(b"* OK")
        self.ok(f"LOGIN {user} {password}")

    def line(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        m = re.search(rb"\{(\d+)\}$", line)
        if m:  # a literal: take its octets and the rest of the line
            n = int(m.group(1))
            while len(self.buf) < n:
                self.buf += self.sock.recv(65536)
            lit, self.buf = self.buf[:n], self.buf[n:]
            return line + b"\r\n" + lit + self.line(timeout)
        m = re.match(rb"\* (\d+) (EXISTS|EXPUNGE)$", line)
        if m:  # track the mailbox size the way a client must
            n = int(m.group(1))
            self._exists = n if m.group(2) == b"EXISTS" else self._exists - 1
        return line

    def command(self, text: str) -> tuple[list[bytes], bytes]:
        tag = f"t{next(self._tags)}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)

    def ok(self, text: str) -> list[bytes]:
        untagged, done = self.command(text)
        assert b" OK" in done[:20], (text, done)
        return untagged

    def idle(self) -> None:
        self.idle_tag = f"t{next(self._tags)}".encode()
        self.sock.sendall(self.idle_tag + b" IDLE\r\n")
        assert self.line().startswith(b"+ ")

    def done(self) -> list[bytes]:
        self.sock.sendall(b"DONE\r\n")
        untagged = []
        while True:
            line = self.line()
            if line.startswith(self.idle_tag + b" "):
                assert b"OK" in line
                return untagged
            untagged.append(line)

    def wait_for(self, pattern: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
        """The first untagged line matching ``pattern`` and how long it took."""
        start = time.perf_counter()
        while True:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                raise TimeoutError(pattern)
            line = self.line(left)
            if re.search(pattern, line):
                return line, time.perf_counter() - start

    def uid_map(self) -> list[int]:
        lines = self.ok("UID FETCH 1:* (UID)") if self.exists() else []
        out = {}
        for line in lines:
            m = re.match(rb"\* (\d+) FETCH \(.*UID (\d+)", line)
            if m:
                out[int(m.group(1))] = int(m.group(2))
        return [out[k] for k in sorted(out)]

    def exists(self) -> int:
        self.ok("NOOP")
        return self._exists

    def select(self, mailbox: str = "INBOX") -> list[bytes]:
        return self.ok(f"SELECT {mailbox}")

    def close(self) -> None:
        try:
            self.sock.sendall(b"z LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()
