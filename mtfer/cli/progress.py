"""Progress on the terminal for long commands: one line rewritten in place (done / total, rate, time left),
plain lines when the output is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import IO, Any


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TextProgress:
    """``progress(done, total)`` callback that draws a one-line bar with rate and ETA on stderr.

    On a terminal the line is redrawn in place (at most every `min_interval` seconds); elsewhere (a log file)
    a new line is written at most every `log_interval` seconds. The last call (done == total) always draws and
    ends the line.
    """

    def __init__(
        self,
        label: str = "",
        *,
        stream: IO[str] | None = None,
        width: int = 30,
        min_interval: float = 0.1,
        log_interval: float = 10.0,
    ) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self.min_interval = min_interval
        self.log_interval = log_interval
        self._start: float | None = None
        self._last = -float("inf")

    def format(self, done: int, total: int, elapsed: float) -> str:
        fraction = done / total if total else 1.0
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        if done >= total:  # the command's own summary gives the speed: one figure, not two that disagree
            tail = f"done in {_clock(elapsed)}"
        elif rate > 0:
            tail = f"{rate:,.0f}/s ETA {_clock((total - done) / rate)}"
        else:
            tail = "ETA ?"
        prefix = f"{self.label} " if self.label else ""
        return f"{prefix}[{bar}] {done:,}/{total:,} {fraction:4.0%} {tail}"

    def __call__(self, done: int, total: int) -> None:
        stream: Any = self.stream or sys.stderr
        now = time.monotonic()
        if self._start is None or done == 0:
            self._start = now
        finished = done >= total
        tty = bool(getattr(stream, "isatty", lambda: False)())
        interval = self.min_interval if tty else self.log_interval
        if not finished and now - self._last < interval:
            return
        self._last = now
        line = self.format(done, total, now - self._start)
        if tty:
            stream.write("\r\x1b[2K" + line + ("\n" if finished else ""))
        else:
            stream.write(line + "\n")
        stream.flush()
