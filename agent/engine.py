"""The check-in engine: a pure state machine fed fixes and the time, emitting events.

It never reads a clock or a socket; time is the fixes' own, or `tick(now)` when none come.

Visits. A visit to a point opens on the first fix inside its radius and closes after
EXIT_FIXES good fixes beyond the radius plus a hysteresis margin (noise at the edge
neither splits a visit nor ends it early), or when fixes stop for SILENCE_S. Fixes whose
accuracy is poor relative to the radius are evidence of neither presence nor absence:
they cannot close a visit, and a visit seen only through them is `uncertain`. A closed
visit is a check-in when its span reaches the point's dwell and the median distance of its
fixes is inside the radius (a walker lingering at the edge is outside half the time);
`visited` when good fixes alone show that, `uncertain` otherwise, or when it overlaps a
suspicion. Where a point sets max_speed_mps, a visit whose 90th-percentile speed exceeds
it is a drive-by, never a check-in.

Suspicion. Implied speeds no person or vehicle reaches (a jump), receiver time going
backwards beyond the re-evaluation horizon, and positions that keep contradicting the
receiver's own Doppler speed for MISMATCH_HOLD_S (longer than a multipath excursion) raise
a `SuspicionEvent`; visits during the QUARANTINE_S after one are
at most uncertain.

Agenda. Given the device's agenda (points per line with windows, agent/plan.py), a
check-in inside a window satisfies it; a window closed MISSED_GRACE_S ago with no visit
is reported as missed.

Late fixes (a receiver replaying its buffer) are not dropped: the engine keeps the last
HORIZON_S of fixes and a checkpoint of its state every CHECKPOINT_S, rewinds to the
checkpoint before a late fix, replays, and emits only events it had not emitted before.
Points are found through a uniform grid, so the cost per fix stays flat as plans grow.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.fix import Fix
from agent.geo import M_PER_DEG_LAT, distance_m
from agent.plan import AgendaItem, Plan, Point
from agent.records import Verdict

EXIT_FIXES = 10  # a run of fixes: longer than a multipath excursion
EXIT_MARGIN_M = 5.0  # or 20 % of the radius, whichever is larger
ACCURACY_FRACTION = 0.75  # accuracy worse than 3/4 of the radius: no evidence either way
SILENCE_S = 600.0  # no fixes at all for this long closes open visits
MAX_GAP_S = 120.0  # a visit with a longer gap between its fixes is uncertain
JUMP_SPEED_MPS = 70.0  # faster than any patrol on the ground (250 km/h)
JUMP_MIN_M = 100.0
MISMATCH_WINDOW_S = 15.0
MISMATCH_SPEED_MPS = 4.0  # positions moving this fast while Doppler says standing
MISMATCH_HOLD_S = 6.0  # ... for this long: longer than a multipath excursion
DRAG_WINDOW_S = 90.0  # a slow drag: positions creep while Doppler says still
DRAG_MIN_S = 60.0
DRAG_EDGE = 11  # fixes whose median position stands for each end of the window
DRAG_SPEED_MPS = 1.0
STILL_MPS = 0.5
QUARANTINE_S = 30.0
MISSED_GRACE_S = 60.0
HORIZON_S = 600.0
CHECKPOINT_S = 30.0
CELL_M = 200.0


class SuspicionKind(enum.StrEnum):
    JUMP = "jump"
    TIME_BACKWARDS = "time_backwards"
    MOTION_MISMATCH = "motion_mismatch"


@dataclass(frozen=True, slots=True)
class CheckinEvent:
    point: Point
    arrival_ms: int
    departure_ms: int
    best_fix: Fix
    fixes_inside: int
    verdict: Verdict
    max_speed_mps: float = 0.0
    line: str | None = None
    suspect: bool = False

    @property
    def dwell_s(self) -> float:
        return (self.departure_ms - self.arrival_ms) / 1000


@dataclass(frozen=True, slots=True)
class MissedEvent:
    point: Point
    line: str
    order: int
    window_start_ms: int | None
    window_end_ms: int | None
    time_ms: int


@dataclass(frozen=True, slots=True)
class SuspicionEvent:
    kind: SuspicionKind
    time_ms: int
    fix: Fix
    detail: str


Event = CheckinEvent | MissedEvent | SuspicionEvent


def event_key(e: Event) -> tuple[object, ...]:
    if isinstance(e, CheckinEvent):
        return ("c", e.point.id, e.arrival_ms)
    if isinstance(e, MissedEvent):
        return ("m", e.line, e.order)
    return ("s", e.kind, e.time_ms)


@dataclass(slots=True)
class _Visit:
    first_ms: int
    last_ms: int
    good_first_ms: int | None = None
    good_last_ms: int | None = None
    best: Fix | None = None
    best_d: float = math.inf
    good_d: list[float] = field(default_factory=list)
    poor_d: list[float] = field(default_factory=list)
    speeds: list[float] = field(default_factory=list)
    outside: int = 0
    max_gap_ms: int = 0
    suspect: bool = False
    inside: int = 0  # fixes inside the radius (good or poor)

    def clone(self) -> _Visit:
        return _Visit(
            self.first_ms, self.last_ms, self.good_first_ms, self.good_last_ms, self.best,
            self.best_d, list(self.good_d), list(self.poor_d), list(self.speeds), self.outside,
            self.max_gap_ms, self.suspect, self.inside,
        )  # fmt: skip


@dataclass(slots=True)
class _State:
    last: Fix | None = None
    open: dict[str, _Visit] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)  # agenda items satisfied or reported
    quarantine_until: int = -1
    recent: deque[Fix] = field(default_factory=deque)  # for the Doppler check
    mismatch_until: int = -1
    mismatch_since: int | None = None  # positions began to contradict Doppler
    still: deque[Fix] = field(default_factory=deque)  # fixes since Doppler last said moving
    distrust_still: bool = False  # a mismatch was seen: distrust until Doppler says moving
    moving_ms: int | None = None  # the newest fix whose Doppler did not say still

    def clone(self) -> _State:
        return _State(
            self.last,
            {k: v.clone() for k, v in self.open.items()},
            set(self.done),
            self.quarantine_until,
            deque(self.recent),
            self.mismatch_until,
            self.mismatch_since,
            deque(self.still),
            self.distrust_still,
            self.moving_ms,
        )


class _Grid:
    """Uniform grid of CELL_M cells; each point is listed in every cell its reach touches."""

    def __init__(self, lat0: float) -> None:
        self.lon_scale = math.cos(math.radians(lat0))
        self.cells: dict[tuple[int, int], list[Point]] = defaultdict(list)

    def cell(self, lat: float, lon: float) -> tuple[int, int]:
        return (
            math.floor(lat * M_PER_DEG_LAT / CELL_M),
            math.floor(lon * M_PER_DEG_LAT * self.lon_scale / CELL_M),
        )

    def add(self, p: Point, reach_m: float) -> None:
        span = math.ceil(reach_m / CELL_M)
        ci, cj = self.cell(p.lat, p.lon)
        for di in range(-span, span + 1):
            for dj in range(-span, span + 1):
                self.cells[(ci + di, cj + dj)].append(p)

    def near(self, lat: float, lon: float) -> list[Point]:
        return self.cells.get(self.cell(lat, lon), [])


def exit_margin(p: Point) -> float:
    return max(EXIT_MARGIN_M, 0.2 * p.radius_m)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _p90(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)] if s else 0.0


@dataclass(slots=True)
class EngineStats:
    fixes: int = 0
    ignored: int = 0
    late: int = 0
    too_late: int = 0
    duplicates: int = 0
    replays: int = 0


class CheckinEngine:
    def __init__(self, plan: Plan, agenda: Sequence[AgendaItem] = ()) -> None:
        self.plan = plan
        self.agenda = list(agenda)
        self._grid = _Grid(plan.points[0].lat if plan.points else 0.0)
        for p in plan.points:
            self._grid.add(p, p.radius_m + exit_margin(p))
        self._state = _State()
        self._history: list[Fix] = []  # time-ordered, the last HORIZON_S
        self._times: list[int] = []  # their times, for bisect
        self._checkpoints: list[tuple[int, _State]] = []  # (time of the fix after which, state)
        # events already emitted, with the time of the newest fix when they were
        self._emitted: dict[tuple[object, ...], tuple[int, int]] = {}
        # check-ins already emitted: (point, arrival, departure, emitted at)
        self._checkins: list[tuple[str, int, int, int]] = []
        self.stats = EngineStats()

    # -- public ----------------------------------------------------------------------------

    def feed(self, fix: Fix) -> list[Event]:
        self.stats.fixes += 1
        if not fix.usable or fix.time_ms is None:
            self.stats.ignored += 1  # estimated, simulated, undated or of unknown accuracy
            return []
        t = fix.time_ms
        newest = self._times[-1] if self._times else None
        if newest is None or t > newest:
            self._history.append(fix)
            self._times.append(t)
            events = self._step(self._state, fix)
            self._checkpoint(t, self._state)
            self._trim(t)
            return self._fresh(events)
        i = bisect.bisect_left(self._times, t)
        if i < len(self._times) and self._times[i] == t:
            self.stats.duplicates += 1
            return []
        if t < newest - HORIZON_S * 1000:
            self.stats.too_late += 1
            return self._fresh([self._suspicion(SuspicionKind.TIME_BACKWARDS, fix, newest - t)])
        if not self._checkpoints or t < self._checkpoints[0][0]:
            self.stats.too_late += 1  # older than anything this engine has seen: no state
            return []
        self.stats.late += 1
        return self._fresh(self._replay_with(fix))

    def set_agenda(self, agenda: Sequence[AgendaItem]) -> None:
        """A new day's (or a new task bundle's) agenda replaces the old one."""
        self.agenda = list(agenda)
        self._state.done.clear()
        for _, snap in self._checkpoints:
            snap.done.clear()

    def tick(self, now_ms: int) -> list[Event]:
        """Time passes without fixes: close silent visits, report missed windows."""
        return self._fresh(self._advance(self._state, now_ms))

    def finish(self, now_ms: int | None = None) -> list[Event]:
        """End of shift or shutdown: close open visits (a completed dwell is never lost)."""
        st = self._state
        t = now_ms if now_ms is not None else (st.last.time_ms if st.last else 0)
        events: list[Event] = []
        for pid in list(st.open):
            events.extend(self._close(st, self.plan.point(pid)))
        events.extend(self._missed(st, t or 0))
        return self._fresh(events)

    def progress(self, line: str) -> tuple[int, int, str | None]:
        """(points done, points on the line, next point) for the agenda's items of `line`."""
        items = [(i, a) for i, a in enumerate(self.agenda) if a.line == line]
        done = [i for i, _ in items if i in self._state.done]
        nxt = next((a.point for i, a in items if i not in self._state.done), None)
        return len(done), len(items), nxt

    # -- one fix, in time order ----------------------------------------------------------

    def _step(self, st: _State, fix: Fix) -> list[Event]:
        assert fix.time_ms is not None and fix.accuracy_m is not None
        t = fix.time_ms
        events: list[Event] = self._motion_checks(st, fix)
        events.extend(self._close_silent(st, t))  # before this fix can extend a stale visit
        speed = self._speed(st, fix)
        for p in self._candidates(st, fix):
            events.extend(self._visit_step(st, p, fix, speed))
        st.last = fix
        if self.agenda:
            events.extend(self._missed(st, t))
        return events

    def _candidates(self, st: _State, fix: Fix) -> list[Point]:
        """Points with an open visit, and those of the fix's cell it may be inside: a point
        farther by latitude alone than its radius is not (a great circle is never shorter)."""
        lat = fix.lat
        found = {
            p.id: p
            for p in self._grid.near(lat, fix.lon)
            if abs(lat - p.lat) * M_PER_DEG_LAT <= p.radius_m + 0.001
        }
        for pid in st.open:
            if pid not in found:
                found[pid] = self.plan.point(pid)
        return list(found.values())

    def _speed(self, st: _State, fix: Fix) -> float:
        if fix.speed_mps is not None:
            return fix.speed_mps
        last = st.last
        if last is None or last.time_ms is None or fix.time_ms is None:
            return 0.0
        dt_s = (fix.time_ms - last.time_ms) / 1000
        return distance_m(last.lat, last.lon, fix.lat, fix.lon) / dt_s if dt_s > 0 else 0.0

    def _visit_step(self, st: _State, p: Point, fix: Fix, speed: float) -> list[Event]:
        assert fix.time_ms is not None and fix.accuracy_m is not None
        v = st.open.get(p.id)
        t = fix.time_ms
        d = distance_m(fix.lat, fix.lon, p.lat, p.lon)
        good = fix.accuracy_m <= p.radius_m * ACCURACY_FRACTION
        in_band = p.alt_min_m is None or (
            fix.alt_m is not None
            and p.alt_min_m <= fix.alt_m <= (p.alt_max_m if p.alt_max_m is not None else math.inf)
        )
        inside = d <= p.radius_m and in_band
        if v is None:
            if not inside:
                return []
            v = st.open[p.id] = _Visit(t, t, suspect=t <= st.quarantine_until)
        elif good and (d > p.radius_m + exit_margin(p) or not in_band):
            v.outside += 1
            if v.outside >= EXIT_FIXES:
                return self._close(st, p)
            return []
        v.max_gap_ms = max(v.max_gap_ms, t - v.last_ms)
        v.last_ms = t
        if t <= st.quarantine_until:
            v.suspect = True
        v.speeds.append(speed)
        if inside:
            v.outside = 0
            v.inside += 1
        if good:
            v.good_d.append(d)
            if v.good_first_ms is None:
                v.good_first_ms = t
            if inside:
                v.good_last_ms = t
            if d < v.best_d:
                v.best, v.best_d = fix, d
        else:
            v.poor_d.append(d)
            if v.best is None:
                v.best = fix
        return []

    def _close(self, st: _State, p: Point) -> list[Event]:
        v = st.open.pop(p.id)
        if v.best is None:
            return []
        dwell_ms = p.dwell_s * 1000
        if p.max_speed_mps is not None and v.speeds and _p90(v.speeds) > p.max_speed_mps:
            return []  # passing by at a speed this point forbids
        verdict: Verdict | None = None
        arrival, departure = v.first_ms, v.last_ms
        if (
            v.good_first_ms is not None
            and v.good_last_ms is not None
            and v.good_last_ms - v.good_first_ms >= dwell_ms
            and _median(v.good_d) <= p.radius_m
            and len(v.good_d) >= max(3, len(v.poor_d))
        ):
            verdict = Verdict.VISITED
            arrival, departure = v.good_first_ms, v.good_last_ms
        elif v.last_ms - v.first_ms >= dwell_ms and _median(v.good_d + v.poor_d) <= p.radius_m:
            verdict = Verdict.UNCERTAIN
        if verdict is None:
            return []
        if verdict is Verdict.VISITED and (v.suspect or v.max_gap_ms > MAX_GAP_S * 1000):
            verdict = Verdict.UNCERTAIN
        event = CheckinEvent(
            point=p,
            arrival_ms=arrival,
            departure_ms=departure,
            best_fix=v.best,
            fixes_inside=v.inside,
            verdict=verdict,
            max_speed_mps=max(v.speeds, default=0.0),
            line=self._satisfy(st, p.id, arrival),
            suspect=v.suspect,
        )
        return [event]

    # -- motion sanity -------------------------------------------------------------------

    def _suspicion(self, kind: SuspicionKind, fix: Fix, value: float) -> SuspicionEvent:
        assert fix.time_ms is not None
        detail = {
            SuspicionKind.JUMP: f"implied speed {value:.0f} m/s",
            SuspicionKind.TIME_BACKWARDS: f"{value / 1000:.0f} s behind the newest fix",
            SuspicionKind.MOTION_MISMATCH: f"positions move {value:.1f} m/s, Doppler says still",
        }[kind]
        return SuspicionEvent(kind, fix.time_ms, fix, detail)

    def _motion_checks(self, st: _State, fix: Fix) -> list[Event]:
        assert fix.time_ms is not None and fix.accuracy_m is not None
        out: list[Event] = []
        last = st.last
        if last is not None and last.time_ms is not None and last.accuracy_m is not None:
            dt_s = max((fix.time_ms - last.time_ms) / 1000, 0.001)
            d = distance_m(last.lat, last.lon, fix.lat, fix.lon)
            slack = JUMP_MIN_M + 3 * (fix.accuracy_m + last.accuracy_m)
            if d > slack and d / dt_s > JUMP_SPEED_MPS:
                out.append(self._suspicion(SuspicionKind.JUMP, fix, d / dt_s))
                st.quarantine_until = fix.time_ms + int(QUARANTINE_S * 1000)
                for v in st.open.values():
                    v.suspect = True
                st.recent.clear()
        st.recent.append(fix)
        if fix.speed_mps is None or fix.speed_mps > STILL_MPS:
            st.moving_ms = fix.time_ms
        while (
            st.recent
            and st.recent[0].time_ms is not None
            and (fix.time_ms - st.recent[0].time_ms > MISMATCH_WINDOW_S * 1000)
        ):
            st.recent.popleft()
        fired = self._doppler_check(st, fix)
        out.extend(fired or self._drag_check(st, fix))
        return out

    def _doppler_check(self, st: _State, fix: Fix) -> list[Event]:
        """Positions that move while the receiver's own Doppler speed says it stands still."""
        assert fix.time_ms is not None and fix.accuracy_m is not None
        first = st.recent[0]
        if first.time_ms is None or first.accuracy_m is None or fix.time_ms <= st.mismatch_until:
            return []
        span_s = (fix.time_ms - first.time_ms) / 1000
        d = 0.0
        # every fix of the window says still: none moving since its first (`moving_ms`)
        if span_s >= MISMATCH_WINDOW_S * 0.8 and (
            st.moving_ms is None or st.moving_ms < first.time_ms
        ):
            d = distance_m(first.lat, first.lon, fix.lat, fix.lon)
        if d < 40.0 + 3 * (first.accuracy_m + fix.accuracy_m) or d / span_s < MISMATCH_SPEED_MPS:
            st.mismatch_since = None
            return []
        # it must hold for a while: a multipath excursion at either end of the window looks
        # the same for a few seconds
        if st.mismatch_since is None:
            st.mismatch_since = fix.time_ms
        if fix.time_ms - st.mismatch_since < MISMATCH_HOLD_S * 1000:
            return []
        st.mismatch_since = None
        return self._mismatch(st, fix, d / span_s)

    def _drag_check(self, st: _State, fix: Fix) -> list[Event]:
        """A slow drag: over a minute and more, the median position at one end of a
        still-Doppler stretch is far from the median at the other (medians of DRAG_EDGE
        fixes, so multipath excursions of a few seconds cannot fake it)."""
        assert fix.time_ms is not None
        if fix.speed_mps is None or fix.speed_mps > STILL_MPS:
            st.still.clear()
            st.distrust_still = False
            return []
        if st.distrust_still:
            # the Doppler that went with a dragged position still says still: whatever
            # stands here now may be the spoofer's, so the quarantine lasts as long as it
            st.quarantine_until = max(st.quarantine_until, fix.time_ms + int(QUARANTINE_S * 1000))
        st.still.append(fix)
        while st.still and fix.time_ms - (st.still[0].time_ms or 0) > DRAG_WINDOW_S * 1000:
            st.still.popleft()
        span_s = (fix.time_ms - (st.still[0].time_ms or 0)) / 1000
        if span_s < DRAG_MIN_S or len(st.still) < 2 * DRAG_EDGE:
            return []
        still = st.still
        head = [still[i] for i in range(DRAG_EDGE)]  # (a deque indexes its ends in O(1))
        tail = [still[i] for i in range(-DRAG_EDGE, 0)]
        lat0, lon0 = _median([f.lat for f in head]), _median([f.lon for f in head])
        lat1, lon1 = _median([f.lat for f in tail]), _median([f.lon for f in tail])
        d = distance_m(lat0, lon0, lat1, lon1)
        if d <= 10.0 or d / span_s < DRAG_SPEED_MPS:
            return []  # (the usual case, decided before the accuracy median of the window)
        if d <= 10.0 + 5 * _median([f.accuracy_m or 0.0 for f in still]):
            return []
        st.still.clear()
        return self._mismatch(st, fix, d / span_s)

    def _mismatch(self, st: _State, fix: Fix, speed: float) -> list[Event]:
        assert fix.time_ms is not None
        st.mismatch_until = fix.time_ms + int(QUARANTINE_S * 1000)
        st.quarantine_until = max(st.quarantine_until, st.mismatch_until)
        st.distrust_still = True
        for v in st.open.values():
            v.suspect = True
        return [self._suspicion(SuspicionKind.MOTION_MISMATCH, fix, speed)]

    # -- agenda --------------------------------------------------------------------------

    def _satisfy(self, st: _State, point: str, arrival_ms: int) -> str | None:
        for i, a in enumerate(self.agenda):
            if i in st.done or a.point != point:
                continue
            if (a.start_ms is None or arrival_ms >= a.start_ms) and (
                a.end_ms is None or arrival_ms <= a.end_ms
            ):
                st.done.add(i)
                return a.line
        return None

    def _missed(self, st: _State, now_ms: int) -> list[Event]:
        out: list[Event] = []
        for i, a in enumerate(self.agenda):
            if i in st.done or a.end_ms is None or now_ms < a.end_ms + MISSED_GRACE_S * 1000:
                continue
            v = st.open.get(a.point)
            if v is not None and v.first_ms <= a.end_ms:
                continue  # a visit that began inside the window is still open
            st.done.add(i)
            p = self.plan.point(a.point)
            out.append(MissedEvent(p, a.line, a.order, a.start_ms, a.end_ms, now_ms))
        return out

    def _close_silent(self, st: _State, now_ms: int) -> list[Event]:
        events: list[Event] = []
        for pid in [k for k, v in st.open.items() if now_ms - v.last_ms > SILENCE_S * 1000]:
            events.extend(self._close(st, self.plan.point(pid)))
        return events

    def _advance(self, st: _State, now_ms: int) -> list[Event]:
        events = self._close_silent(st, now_ms)
        if self.agenda:
            events.extend(self._missed(st, now_ms))
        return events

    # -- history, checkpoints, late fixes ------------------------------------------------

    def _trim(self, now_ms: int) -> None:
        """Keep HORIZON_S of fixes, and every fix after the oldest checkpoint kept."""
        horizon = now_ms - int(HORIZON_S * 1000)
        cps = self._checkpoints
        if len(cps) < 2 or cps[1][0] > horizon:
            return
        while len(cps) > 1 and cps[1][0] <= horizon:
            cps.pop(0)
        cut = bisect.bisect_right(self._times, cps[0][0])
        del self._history[:cut]
        del self._times[:cut]
        # what was emitted before the oldest snapshot can never be produced again by a replay
        oldest = cps[0][0]
        for k in [k for k, (_, at) in self._emitted.items() if at < oldest]:
            del self._emitted[k]
        self._checkins = [c for c in self._checkins if c[3] >= oldest]

    def _checkpoint(self, t: int, state: _State) -> None:
        """Snapshot the state after the fix at `t`, every CHECKPOINT_S of fix time."""
        if not self._checkpoints or t - self._checkpoints[-1][0] >= CHECKPOINT_S * 1000:
            self._checkpoints.append((t, state.clone()))

    def _replay_with(self, fix: Fix) -> list[Event]:
        """Rewind to the newest checkpoint before a late fix and replay history with it."""
        assert fix.time_ms is not None
        t = fix.time_ms
        i = bisect.bisect_left(self._times, t)
        self._history.insert(i, fix)
        self._times.insert(i, t)
        idx = bisect.bisect_left([c[0] for c in self._checkpoints], t) - 1
        since, snap = self._checkpoints[idx]
        state = snap.clone()
        del self._checkpoints[idx + 1 :]
        self.stats.replays += 1
        events: list[Event] = []
        for f in self._history[bisect.bisect_right(self._times, since) :]:
            events.extend(self._step(state, f))
            self._checkpoint(f.time_ms or 0, state)
        self._state = state
        return events

    def _fresh(self, events: list[Event]) -> list[Event]:
        """Leave out what was emitted before: same key, or a check-in of the same stay.

        A replay with a late fix may move a visit's arrival or departure by a fix; the
        check-in already sent for that stay stands (a record cannot be taken back).
        """
        at = self._times[-1] if self._times else 0
        out = []
        for e in events:
            k = event_key(e)
            if k in self._emitted:
                continue
            if isinstance(e, CheckinEvent):
                pid, a, d = e.point.id, e.arrival_ms, e.departure_ms
                if any(p == pid and a <= d0 and a0 <= d for p, a0, d0, _ in self._checkins):
                    continue
                self._checkins.append((pid, a, d, at))
            self._emitted[k] = (0, at)
            out.append(e)
        return out
