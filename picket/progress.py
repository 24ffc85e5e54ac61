"""Progress for long runs: one self-rewriting line on a terminal, a line every few seconds
otherwise (CI logs), always on stderr so `--json` output on stdout stays machine-readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, every_s: float = 0.5, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s if self.tty else max(every_s, 5.0)
        self.quiet = quiet
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self._last < self.every_s):
            return
        self._last = now
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + text + " " * max(0, self._width - len(text)) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._width = 0
