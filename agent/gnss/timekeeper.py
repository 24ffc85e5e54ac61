"""The device's sense of time: a pure core fed GNSS fixes and a monotonic clock.

A Raspberry Pi has no real-time clock, so after a reboot its wall clock may say 1970 or
whatever NTP last left. GNSS time is the trusted source. Between fixes, and when GNSS is
lost, time is the last anchor plus monotonic time elapsed. The floor is the last known
good time, persisted by the agent (outbox metadata) and passed in at start: time never
goes below it, across reboots and power cuts. A GNSS time behind the floor (a receiver
gone wrong, a replayed or spoofed signal) is not believed; the fix is restamped and says
so (time source PERSISTED, or NONE with nothing to go on). The receiver's clock still
ticks evenly, so the restamp keeps its progress: the offset between our estimate and the
receiver's time at the first distrusted fix is applied to the ones that follow, and a
dwell measured across them stays right.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from contract.fix import Fix, TimeSource

TOLERANCE_MS = 2_000  # GNSS time may sit this far below our estimate (receiver latency)
TRUSTED = frozenset({TimeSource.GNSS, TimeSource.GNSS_ROLLOVER, TimeSource.NTP})


@dataclass(frozen=True, slots=True)
class Stamp:
    time_ms: int | None
    source: TimeSource


class TimeKeeper:
    def __init__(self, *, persisted_ms: int | None, mono_ms: int) -> None:
        # anchor: (wall ms, monotonic ms, source) — time is anchor + elapsed monotonic
        self._anchor: tuple[int, int, TimeSource] | None = (
            None if persisted_ms is None else (persisted_ms, mono_ms, TimeSource.PERSISTED)
        )
        self._high = persisted_ms  # the latest time ever handed out: the floor
        self._offset: int | None = None  # estimate minus receiver time, while distrusted
        self.distrusted = 0

    def now(self, mono_ms: int) -> Stamp:
        """The current time; never less than a time handed out before."""
        if self._anchor is None:
            return Stamp(None, TimeSource.NONE)
        wall, mono, source = self._anchor
        t = wall + max(0, mono_ms - mono)
        if self._high is not None and t < self._high:
            t = self._high
        self._high = t
        return Stamp(t, source)

    def observe_clock(self, time_ms: int, source: TimeSource, mono_ms: int) -> Stamp:
        """Learn from a clock that comes without a fix (a dock's NTP-synced system clock):
        believed when trusted and not behind the floor, else counted as distrusted and
        ignored. Returns the time believed now."""
        if source in TRUSTED and (self._high is None or time_ms >= self._high - TOLERANCE_MS):
            self._offset = None
            self._anchor = (time_ms, mono_ms, source)
            self._high = max(time_ms, self._high or time_ms)
        else:
            self.distrusted += 1
        return self.now(mono_ms)

    def observe(self, fix: Fix, mono_ms: int) -> Fix:
        """Learn from a fix's time, or restamp the fix when its time cannot be trusted."""
        if fix.time_ms is not None and fix.time_source in TRUSTED:
            if self._high is None or fix.time_ms >= self._high - TOLERANCE_MS:
                self._offset = None
                self._anchor = (fix.time_ms, mono_ms, fix.time_source)
                self._high = max(fix.time_ms, self._high or fix.time_ms)
                return fix
            self.distrusted += 1
            estimate = self.now(mono_ms).time_ms
            if estimate is not None:
                if self._offset is None or fix.time_ms + self._offset < estimate - TOLERANCE_MS:
                    self._offset = estimate - fix.time_ms
                t = max(fix.time_ms + self._offset, estimate)
                self._anchor = (t, mono_ms, TimeSource.PERSISTED)
                self._high = t
                return dataclasses.replace(fix, time_ms=t, time_source=TimeSource.PERSISTED)
        stamp = self.now(mono_ms)
        source = TimeSource.PERSISTED if stamp.time_ms is not None else TimeSource.NONE
        return dataclasses.replace(fix, time_ms=stamp.time_ms, time_source=source)

    def to_persist(self, mono_ms: int) -> int | None:
        """The time to write down now: never less than anything believed before."""
        return self.now(mono_ms).time_ms
