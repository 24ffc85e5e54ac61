"""One direction of a serial line with injected bit errors, and what it did to the frames.

Pure and seeded: `carry(bytes)` returns the bytes as they arrive at the other end, and the
counters say how many frames went through and how many of them an error touched, so a soak
test knows exactly what it corrupted. It is its own module because two parts use it apart:
the simulated MCU (simulators/mcuboard.py) puts one on each direction of its line, and the
frame codec's tests run frames through one without any MCU at all.
"""

from __future__ import annotations

import math
import random

__all__ = ["SerialLine"]


class SerialLine:
    """One direction of the line: flips bits at `ber`, and counts the frames it touched.

    Errors are drawn as gaps between flipped bits (geometric), so 1e-6 costs nothing per
    byte. Frames are followed on the original bytes: a frame runs from its leading 0x00
    through its trailing one, and a frame with any flipped bit in that span is corrupted.
    """

    def __init__(self, ber: float, rng: random.Random) -> None:
        self.rng = rng
        self.ber = 0.0
        self._gap = 0
        self.set_ber(ber)
        self.bytes = 0
        self.bits_flipped = 0
        self.frames = 0  # whole frames that went through (original stream)
        self.corrupted = 0  # of which touched by an injected error
        self.cut = 0  # frames left unfinished by a reset
        self._in = False
        self._body = False
        self._touched = False

    def set_ber(self, ber: float) -> None:
        if not 0.0 <= ber < 1.0:
            raise ValueError("bit error rate must be in [0, 1)")
        self.ber = ber
        self._gap = self._draw()

    def _draw(self) -> int:
        if self.ber <= 0.0:
            return 1 << 62
        u = 1.0 - self.rng.random()  # (0, 1]
        return int(math.log(u) / math.log1p(-self.ber))

    def carry(self, data: bytes) -> bytes:
        """`data` as it arrives at the other end."""
        out = bytearray(data)
        flips: set[int] = set()
        bits = 8 * len(out)
        pos = self._gap
        while pos < bits:
            out[pos // 8] ^= 1 << (pos % 8)
            flips.add(pos // 8)
            self.bits_flipped += 1
            pos += 1 + self._draw()
        self._gap = pos - bits
        self._follow(data, flips)
        self.bytes += len(data)
        return bytes(out)

    def _follow(self, data: bytes, flips: set[int]) -> None:
        for i, b in enumerate(data):
            hit = i in flips
            if b == 0:
                if self._in and self._body:  # the trailing delimiter
                    self._end(self._touched or hit)
                else:  # a leading one
                    self._in, self._body, self._touched = True, False, hit
            else:
                if not self._in:
                    self._in, self._touched = True, False
                self._body = True
                self._touched = self._touched or hit

    def _end(self, touched: bool) -> None:
        self.frames += 1
        if touched:
            self.corrupted += 1
        self._in = self._body = self._touched = False

    def interrupt(self) -> None:
        """The sender reset: the frame in progress will never be finished."""
        if self._in and self._body:
            self.cut += 1
        self._in = self._body = self._touched = False
