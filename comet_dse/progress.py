"""What a person at a terminal sees while a long command works: one status line on stderr,
rewritten in place (carriage return), and phase lines. Nothing at all when stderr is not a
terminal (a pipe, a log file, CI) or with --quiet, so outputs and logs stay clean."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return not quiet and stream.isatty()


def elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A status line updated in place, and phase lines that end it; inert when not enabled."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, prefix: str = "comet-dse") -> None:
        self.enabled, self.stream, self.prefix = enabled, stream or sys.stderr, prefix
        self.start = time.monotonic()
        self.width = 0  # of the status line on screen; 0 when none is

    def status(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{self.prefix}: {text}  {elapsed(time.monotonic() - self.start)}"
        self.stream.write("\r" + line.ljust(self.width))  # pad over a longer previous line
        self.stream.flush()
        self.width = len(line)

    def phase(self, text: str) -> None:
        """A line of its own (e.g. `writing report …`), after the status line if one is shown."""
        if not self.enabled:
            return
        self.end()
        self.stream.write(f"{self.prefix}: {text}\n")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


class SlowNotice:
    """A phase line for work that may be long: at once when `long` is known, else after
    `after_s` seconds (a timer thread); nothing if the work ends first or when not enabled."""

    def __init__(self, progress: Progress, text: str, long: bool, after_s: float = 2.0) -> None:
        self.progress, self.text, self.long, self.after_s = progress, text, long, after_s
        self.timer: threading.Timer | None = None

    def __enter__(self) -> SlowNotice:
        if not self.progress.enabled:
            return self
        if self.long:
            self.progress.phase(self.text)
        else:
            self.timer = threading.Timer(self.after_s, self.progress.phase, args=(self.text,))
            self.timer.daemon = True
            self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
