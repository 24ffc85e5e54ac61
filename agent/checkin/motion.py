"""Motion sanity: fixes that no honest receiver on a walking or driving patrol produces.

The check-in engine (agent/checkin/engine.py) asks this on every fix, before any visit
sees it, and marks the visits open at that moment suspect when it answers. It is its own
small state machine, fed fixes in time order and reading no clock, because its evidence
(the last few seconds of positions against the receiver's own Doppler speed) has nothing
to do with points or plans; the engine clones it with the rest of its state for replays.

Implied speeds no person or vehicle reaches (a jump), and positions that keep
contradicting the receiver's Doppler speed for MISMATCH_HOLD_S (longer than a multipath
excursion), or drift slowly while it says still (a drag), raise a `SuspicionEvent` and a
quarantine of QUARANTINE_S: visits during it are at most uncertain. All of it is stated
in seconds, not fixes; the drag window keeps one fix per DRAG_STEP_S, so that its medians
stand for the same seconds (and cost the same) at 1, 5 or 10 Hz. Receiver time going
backwards beyond the engine's re-evaluation horizon is the third kind; the engine raises
it, as only it knows the horizon.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from agent.checkin.geo import distance_m
from agent.checkin.visits import median
from contract.fix import Fix

JUMP_SPEED_MPS = 70.0  # faster than any patrol on the ground (250 km/h)
JUMP_MIN_M = 100.0
MISMATCH_WINDOW_S = 15.0
MISMATCH_SPEED_MPS = 4.0  # positions moving this fast while Doppler says standing
MISMATCH_HOLD_S = 6.0  # ... for this long: longer than a multipath excursion
DRAG_WINDOW_S = 90.0  # a slow drag: positions creep while Doppler says still
DRAG_MIN_S = 60.0
DRAG_STEP_S = 1.0  # the drag window keeps one fix a second, whatever the receiver's rate
DRAG_EDGE = 11  # fixes (seconds) whose median position stands for each end of the window
DRAG_SPEED_MPS = 1.0
STILL_MPS = 0.5
QUARANTINE_S = 30.0


class SuspicionKind(enum.StrEnum):
    JUMP = "jump"
    TIME_BACKWARDS = "time_backwards"
    MOTION_MISMATCH = "motion_mismatch"


@dataclass(frozen=True, slots=True)
class SuspicionEvent:
    kind: SuspicionKind
    time_ms: int
    fix: Fix
    detail: str


def suspicion(kind: SuspicionKind, fix: Fix, value: float) -> SuspicionEvent:
    """The event for a suspicion of `kind` at `fix`; `value` is the figure its detail names."""
    assert fix.time_ms is not None
    detail = {
        SuspicionKind.JUMP: f"implied speed {value:.0f} m/s",
        SuspicionKind.TIME_BACKWARDS: f"{value / 1000:.0f} s behind the newest fix",
        SuspicionKind.MOTION_MISMATCH: f"positions move {value:.1f} m/s, Doppler says still",
    }[kind]
    return SuspicionEvent(kind, fix.time_ms, fix, detail)


@dataclass(slots=True)
class Motion:
    quarantine_until: int = -1
    recent: deque[Fix] = field(default_factory=deque)  # for the Doppler check
    mismatch_until: int = -1
    mismatch_since: int | None = None  # positions began to contradict Doppler
    still: deque[Fix] = field(default_factory=deque)  # fixes since Doppler last said moving
    distrust_still: bool = False  # a mismatch was seen: distrust until Doppler says moving
    moving_ms: int | None = None  # the newest fix whose Doppler did not say still

    def clone(self) -> Motion:
        return Motion(
            self.quarantine_until,
            deque(self.recent),
            self.mismatch_until,
            self.mismatch_since,
            deque(self.still),
            self.distrust_still,
            self.moving_ms,
        )

    def check(self, last: Fix | None, fix: Fix) -> list[SuspicionEvent]:
        """Take the next fix (`last` the one before it): the suspicions it raises, if any."""
        assert fix.time_ms is not None and fix.accuracy_m is not None
        out: list[SuspicionEvent] = []
        if last is not None and last.time_ms is not None and last.accuracy_m is not None:
            dt_s = max((fix.time_ms - last.time_ms) / 1000, 0.001)
            d = distance_m(last.lat, last.lon, fix.lat, fix.lon)
            slack = JUMP_MIN_M + 3 * (fix.accuracy_m + last.accuracy_m)
            if d > slack and d / dt_s > JUMP_SPEED_MPS:
                out.append(suspicion(SuspicionKind.JUMP, fix, d / dt_s))
                self.quarantine_until = fix.time_ms + int(QUARANTINE_S * 1000)
                self.recent.clear()
        self.recent.append(fix)
        if fix.speed_mps is None or fix.speed_mps > STILL_MPS:
            self.moving_ms = fix.time_ms
        while (
            self.recent
            and self.recent[0].time_ms is not None
            and (fix.time_ms - self.recent[0].time_ms > MISMATCH_WINDOW_S * 1000)
        ):
            self.recent.popleft()
        fired = self._doppler_check(fix)
        out.extend(fired or self._drag_check(fix))
        return out

    def _doppler_check(self, fix: Fix) -> list[SuspicionEvent]:
        """Positions that move while the receiver's own Doppler speed says it stands still."""
        assert fix.time_ms is not None and fix.accuracy_m is not None
        first = self.recent[0]
        if first.time_ms is None or first.accuracy_m is None or fix.time_ms <= self.mismatch_until:
            return []
        span_s = (fix.time_ms - first.time_ms) / 1000
        d = 0.0
        # every fix of the window says still: none moving since its first (`moving_ms`)
        if span_s >= MISMATCH_WINDOW_S * 0.8 and (
            self.moving_ms is None or self.moving_ms < first.time_ms
        ):
            d = distance_m(first.lat, first.lon, fix.lat, fix.lon)
        if d < 40.0 + 3 * (first.accuracy_m + fix.accuracy_m) or d / span_s < MISMATCH_SPEED_MPS:
            self.mismatch_since = None
            return []
        # it must hold for a while: a multipath excursion at either end of the window looks
        # the same for a few seconds
        if self.mismatch_since is None:
            self.mismatch_since = fix.time_ms
        if fix.time_ms - self.mismatch_since < MISMATCH_HOLD_S * 1000:
            return []
        self.mismatch_since = None
        return self._mismatch(fix, d / span_s)

    def _drag_check(self, fix: Fix) -> list[SuspicionEvent]:
        """A slow drag: over a minute and more, the median position at one end of a
        still-Doppler stretch is far from the median at the other (medians of DRAG_EDGE
        fixes, so multipath excursions of a few seconds cannot fake it)."""
        assert fix.time_ms is not None
        if fix.speed_mps is None or fix.speed_mps > STILL_MPS:
            self.still.clear()
            self.distrust_still = False
            return []
        if self.distrust_still:
            # the Doppler that went with a dragged position still says still: whatever
            # stands here now may be the spoofer's, so the quarantine lasts as long as it
            self.quarantine_until = max(
                self.quarantine_until, fix.time_ms + int(QUARANTINE_S * 1000)
            )
        if self.still and fix.time_ms - (self.still[-1].time_ms or 0) < DRAG_STEP_S * 1000:
            return []  # a faster receiver: its fixes within the second add nothing here
        self.still.append(fix)
        while self.still and fix.time_ms - (self.still[0].time_ms or 0) > DRAG_WINDOW_S * 1000:
            self.still.popleft()
        span_s = (fix.time_ms - (self.still[0].time_ms or 0)) / 1000
        if span_s < DRAG_MIN_S or len(self.still) < 2 * DRAG_EDGE:
            return []
        still = self.still
        head = [still[i] for i in range(DRAG_EDGE)]  # (a deque indexes its ends in O(1))
        tail = [still[i] for i in range(-DRAG_EDGE, 0)]
        lat0, lon0 = median([f.lat for f in head]), median([f.lon for f in head])
        lat1, lon1 = median([f.lat for f in tail]), median([f.lon for f in tail])
        d = distance_m(lat0, lon0, lat1, lon1)
        if d <= 10.0 or d / span_s < DRAG_SPEED_MPS:
            return []  # (the usual case, decided before the accuracy median of the window)
        if d <= 10.0 + 5 * median([f.accuracy_m or 0.0 for f in still]):
            return []
        self.still.clear()
        return self._mismatch(fix, d / span_s)

    def _mismatch(self, fix: Fix, speed: float) -> list[SuspicionEvent]:
        assert fix.time_ms is not None
        self.mismatch_until = fix.time_ms + int(QUARANTINE_S * 1000)
        self.quarantine_until = max(self.quarantine_until, self.mismatch_until)
        self.distrust_still = True
        return [suspicion(SuspicionKind.MOTION_MISMATCH, fix, speed)]
