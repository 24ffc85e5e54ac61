"""Bytes in, lines out: the bounded line buffer under both GNSS decoders.

NMEA 0183 and gpsd's JSON are both one report per line, and both decoders are fed whatever
the transport delivers: split lines, merged lines, garbage with no line end at all. This
one splitter serves both, so a line is cut the same way whichever protocol it carries and
the two decoders keep only what is theirs (sentences, reports). It is pure and holds at
most `max_line` bytes of a line in progress. What happens when a line outgrows that is the
one thing the protocols disagree on, so it is a parameter: NMEA marks every sentence start
with `$` and resynchronises on the last one, while a gpsd report has no such mark inside a
line, so the overlong line is dropped up to its end.
"""

from __future__ import annotations

__all__ = ["LineSplitter"]


class LineSplitter:
    """Complete lines, stripped and non-empty, from bytes fed in pieces of any size.

    `resync`: on overflow, keep the line in progress from the last `resync` mark when what
    follows it fits, else drop it, and treat whatever comes next as the start of a line
    (NMEA's `$`). None: drop the overlong line up to and including its line end (gpsd).
    """

    def __init__(self, max_line: int, *, resync: bytes | None = None) -> None:
        self.max_line = max_line
        self.resync = resync
        self._buf = bytearray()
        self._skipping = False  # inside an overlong line: drop bytes up to its end

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """The lines `data` completes, and how many overflows it caused: with `resync`, each
        time the line in progress was cut; without, each overlong line once."""
        buf = self._buf
        buf += data
        lines: list[bytes] = []
        overflows = 0
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self.max_line:
                    if self.resync is not None:
                        # garbage with no line end: drop it, but keep a line that has begun
                        start = buf.rfind(self.resync)
                        keep = start >= 0 and len(buf) - start <= self.max_line
                        overflows += 1
                        del buf[: start if keep else None]
                    else:
                        if not self._skipping:
                            overflows += 1
                        self._skipping = True
                        buf.clear()
                return lines, overflows
            line = bytes(buf[:nl]).strip()
            del buf[: nl + 1]
            if self._skipping:
                self._skipping = False  # the tail of an overlong line
                continue
            if line:
                lines.append(line)

    def flush(self) -> bytes:
        """End of input: the line in progress without its line end (b"" if none, or if it
        was overlong), and the buffer starts afresh."""
        line, skipping = bytes(self._buf).strip(), self._skipping
        self._buf.clear()
        self._skipping = False
        return b"" if skipping else line
