"""One client process of the real-socket sync test (``test_sync_model_socket``).

Run as ``python sync_model_client.py PORT USER NAME SEED SECONDS [PASSWORD]``. It logs in
over a real socket, drives a seeded random IMAP program for SECONDS while other processes
do the same on the same user, and checks every response with ``imap_model.SessionModel``.
Then it selects INBOX, prints ``READY`` and waits for one JSON line on stdin: the store's
INBOX (``{"uids": [...], "flags": {uid: [...]}}``), read by the parent once every client
is quiet, or ``null`` for a server whose store the parent cannot read (e.g. Dovecot, to
show that the checker finds nothing wrong with a correct server). It sends NOOP, checks
its view against that truth at the tagged OK, and prints one JSON line: its violation (or
null), the UIDs of INBOX it saw with ``\\Recent`` in a read-write selection, and how many
commands it ran.
"""

from __future__ import annotations

import json
import random
import re
import socket
import sys
import time

from imap_model import Cmd, SessionModel, SilentStore, Truth, Violation

TIMEOUT = 10.0
BOXES = ("INBOX", "Archive")
FLAGS = ("\\Seen", "\\Flagged", "\\Deleted", "\\Deleted", "\\Answered", "$Work")
_LITERAL = re.compile(rb"\{(\d+)\}$")
MESSAGE = (b"From: p@example.net\r\nTo: u@example.org\r\nSubject: socket %d\r\n"
           b"Message-ID: <%d.%d@sync.test>\r\n\r\nbody\r\n")


class Client:
    def __init__(self, port: int, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.model = SessionModel(name, on_recent=self._recent)
        self.recent: set[int] = set()
        self.tags = 0
        self.commands = 0
        self.model.note("S:", self.response())

    def _recent(self, model: SessionModel, box: str, uid: int) -> None:
        if box == "INBOX":
            self.recent.add(uid)

    # --- wire ------------------------------------------------------------------------
    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise self.model.fail("connection-closed", self.buf, "the server keeps the session")
        self.buf += data
        return True

    def response(self, timeout: float = TIMEOUT) -> bytes:
        """One whole response (literals inline); b"" if none within ``timeout``."""
        deadline = time.monotonic() + timeout
        pos = 0
        while True:
            end = self.buf.find(b"\r\n", pos)
            if end >= 0:
                m = _LITERAL.search(self.buf[pos:end])
                if m is None:
                    line, self.buf = self.buf[:end], self.buf[end + 2:]
                    return line
                need = end + 2 + int(m.group(1))
                if len(self.buf) >= need:
                    pos = need
                    continue
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                if timeout >= TIMEOUT:
                    raise self.model.fail("no-response", self.buf, f"a response in {timeout} s")
                return b""

    def feed(self, line: bytes) -> bool:
        """Hand one response to the model; True when it was the tagged one."""
        if line.startswith(b"+"):
            self.model.continuation(line)
        elif line.startswith(b"* "):
            self.model.untagged(line)
            if self.model.bye and (self.model.cmd is None or self.model.cmd.verb != "LOGOUT"):
                raise self.model.fail("unexpected-bye", line, "the server keeps the session")
        else:
            self.model.tagged(line, self.truth_for_tagged)
            return True
        return False

    truth_for_tagged: Truth | None = None

    def run(self, verb: str, text: str, *, mailbox: str | None = None,
            silent: SilentStore | None = None, literal: bytes | None = None) -> None:
        self.tags += 1
        self.commands += 1
        cmd = Cmd(b"C%d" % self.tags, verb, text, mailbox, silent)
        self.model.begin(cmd)
        data = cmd.tag + b" " + text.encode() + b"\r\n"
        self.sock.sendall(data + (literal + b"\r\n" if literal is not None else b""))
        if verb == "IDLE":
            while not self.model.idling:
                if self.feed(self.response()):
                    return
            linger = time.monotonic() + random.uniform(0.02, 0.3)  # others change meanwhile
            while (left := linger - time.monotonic()) > 0:
                line = self.response(left)
                if line:
                    self.feed(line)
            self.model.note("C:", "DONE")
            self.sock.sendall(b"DONE\r\n")
        while not self.feed(self.response()):
            pass
        status = self.model.transcript[-1].split(" ")[2] if self.model.transcript else ""
        if status == "BAD":
            raise self.model.fail("unexpected-status", self.model.transcript[-1], "no BAD")


def step(c: Client, rng: random.Random, n: int) -> None:
    m = c.model
    count = m.count
    choice = rng.random()
    if m.selected is None or choice < 0.06:
        box = "INBOX" if rng.random() < 0.8 else "Archive"
        verb = "EXAMINE" if rng.random() < 0.2 else "SELECT"
        c.run(verb, f"{verb} {box}", mailbox=box)
    elif choice < 0.16:
        c.run("NOOP", "NOOP")
    elif choice < 0.28 and count:
        c.run("FETCH", f"FETCH {rng.randint(1, count)}:* (UID FLAGS)")
    elif choice < 0.34 and m.known_uids():
        uids = sorted(rng.sample(sorted(m.known_uids()), min(3, len(m.known_uids()))))
        c.run("UID FETCH", f"UID FETCH {','.join(map(str, uids))} (UID FLAGS)")
    elif choice < 0.50 and count:
        first = rng.randint(1, count)
        last = min(count, first + rng.randint(0, 3))
        flags = sorted(set(rng.sample(FLAGS, rng.randint(1, 2))))
        mode = rng.choice(("+", "+", "-"))
        silent = rng.random() < 0.3
        targets = m.entries[first - 1:last]
        plan = SilentStore(mode, frozenset(flags), targets, False) if silent else None
        c.run("STORE", f"STORE {first}:{last} {mode}FLAGS{'.SILENT' if silent else ''} "
              f"({' '.join(flags)})", silent=plan)
    elif choice < 0.56:
        c.run("EXPUNGE", "EXPUNGE")
    elif choice < 0.66 and (count < 40 or m.selected != "INBOX"):
        data = MESSAGE % (n, n, rng.getrandbits(30))
        box = m.selected if rng.random() < 0.7 else rng.choice(BOXES)
        c.run("APPEND", f"APPEND {box} () {{{len(data)}+}}", mailbox=box, literal=data)
    elif choice < 0.74 and count:
        verb = rng.choice(("MOVE", "COPY", "MOVE"))
        dest = m.selected if rng.random() < 0.4 else rng.choice(BOXES)
        c.run(verb, f"{verb} {rng.randint(1, count)} {dest}", mailbox=dest)
    elif choice < 0.80:
        c.run("SEARCH", f"SEARCH {rng.choice(('ALL', 'DELETED', 'UNSEEN', 'FLAGGED'))}")
    elif choice < 0.84:
        box = rng.choice(BOXES)
        c.run("STATUS", f"STATUS {box} (MESSAGES UIDNEXT UNSEEN)", mailbox=box)
    elif choice < 0.95:
        c.run("IDLE", "IDLE")
    elif count > 20:
        c.run("STORE", f"STORE 1:{count // 2} +FLAGS.SILENT (\\Deleted)",
              silent=SilentStore("+", frozenset({"\\Deleted"}), m.entries[:count // 2], False))
    else:
        c.run("UNSELECT", "UNSELECT")


def on_worker(port: int, name: str, worker: int | None) -> Client:
    """A connection served by worker process ``worker`` (its IMAP ID says which), found
    by connecting again until one is; any connection when ``worker`` is None."""
    for _ in range(100):
        c = Client(port, name)
        if worker is None:
            return c
        c.sock.sendall(b"w ID NIL\r\n")
        while b"\r\nw OK" not in b"\r\n" + c.buf or not c.buf.endswith(b"\r\n"):
            c._fill(TIMEOUT)
        found = re.search(rb'"x-worker" "(\d+)"', c.buf)
        c.buf = b""
        if found is not None and int(found.group(1)) == worker:
            return c
        c.sock.close()
    raise OSError(f"no connection landed on worker {worker}")


def main(argv: list[str]) -> int:
    port, user, name, seed, seconds = int(argv[1]), argv[2], argv[3], int(argv[4]), float(argv[5])
    password = argv[6] if len(argv) > 6 else "secret"
    worker = int(argv[7]) if len(argv) > 7 else None
    rng = random.Random(seed)
    result: dict[str, object] = {"name": name, "violation": None}
    c: Client | None = None
    ready = False
    try:
        c = on_worker(port, name, worker)
        c.run("LOGIN", f"LOGIN {user} {password}")
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            step(c, rng, n)
            n += 1
        if c.model.selected != "INBOX" or c.model.readonly:
            c.run("SELECT", "SELECT INBOX", mailbox="INBOX")
        print("READY", flush=True)
        ready = True
        truth_json = json.loads(sys.stdin.readline())
        if truth_json is not None:
            c.truth_for_tagged = Truth("INBOX", tuple(truth_json["uids"]), {
                int(k): frozenset(v) for k, v in truth_json["flags"].items()})
        c.run("NOOP", "NOOP")
        c.run("LOGOUT", "LOGOUT")
    except Violation as exc:
        result["violation"] = exc.render()
    except OSError as exc:
        result["violation"] = f"[socket-error] {name}: {exc!r}"
    if not ready:
        print("READY", flush=True)  # the parent need not wait for this one
    if c is not None:
        result["recent"] = sorted(c.recent)
        result["commands"] = c.commands
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
