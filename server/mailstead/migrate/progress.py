"""Progress and outcome reporting for the migration commands.

On a terminal (stderr is a TTY) a single ``\\r``-rewritten status line shows how far a run
is; anywhere else nothing is drawn, so logs and pipes only get the error lines and the
summary. Error lines always go to stderr, one per problem, naming the file (or the file
and the message number) so that the person can find it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover - loop always returns


class Progress:
    """A ``\\r``-updated status line: count/total, percentage and rate.

    ``total`` counts messages, or bytes when ``unit == "bytes"`` (an mbox file, whose
    message count is only known at the end). Redraws at most ``interval`` seconds apart.
    """

    def __init__(
        self,
        total: int,
        *,
        unit: str = "messages",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.1,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self.total = total
        self.unit = unit
        self.interval = interval
        self.count = 0
        self.done = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0

    def update(self, count: int, done: int | None = None, *, force: bool = False) -> None:
        """``count`` messages handled so far; ``done`` progress toward ``total`` (for
        messages it defaults to ``count``; for bytes the last position given is kept)."""
        self.count = count
        if done is not None:
            self.done = done
        elif self.unit != "bytes":
            self.done = count
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < self.interval:
            return
        self._drawn_at = now
        self._draw(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._started, 1e-6)
        rate = self.count / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if self.unit == "bytes":
            return (f"{self.count} messages, {_size(self.done)}/{_size(self.total)} "
                    f"({pct:.0f}%), {rate:.0f} msg/s")
        return f"{self.count}/{self.total} messages ({pct:.0f}%), {rate:.0f} msg/s"

    def _draw(self, text: str) -> None:
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Erase the status line (before printing something else on the terminal)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
            self._drawn_at = 0.0  # redraw at the next update

    def close(self) -> None:
        if self.enabled:
            self.update(self.count, self.done, force=True)
            self.clear()


class Reporter:
    """Counts outcomes and prints one line per problem.

    ``failed`` counts messages (or passwd lines) that were not imported because of a
    problem; warnings are printed but do not count.
    """

    def __init__(
        self, stream: TextIO | None = None, out: TextIO | None = None, prog: str = "mailstead"
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.prog = prog
        self.imported = 0
        self.skipped = 0
        self.failed = 0
        self.progress: Progress | None = None

    def start(self, total: int, *, unit: str = "messages", enabled: bool | None = None
              ) -> Progress:
        self.progress = Progress(total, unit=unit, stream=self.stream, enabled=enabled)
        return self.progress

    def tick(self, done: int | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self.imported + self.skipped + self.failed, done)

    def _print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.clear()
        print(f"{self.prog}: {text}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line of information for stdout (mailbox created, user updated, ...)."""
        if self.progress is not None:
            self.progress.clear()
        print(text, file=self.out, flush=True)

    def fail(self, where: str, reason: str, count: int = 1) -> None:
        self.failed += count
        self._print(f"{where}: {reason}")

    def warn(self, where: str, reason: str) -> None:
        self._print(f"warning: {where}: {reason}")

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def summary(self) -> str:
        return (f"imported {self.imported}, skipped {self.skipped} duplicates, "
                f"{self.failed} failed")

    @property
    def exit_status(self) -> int:
        """0 when every message was imported or skipped as a duplicate, else 1."""
        return 1 if self.failed else 0
