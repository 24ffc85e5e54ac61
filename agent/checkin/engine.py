"""The check-in engine: a pure state machine fed fixes and the time, emitting events.

It never reads a clock or a socket; time is the fixes' own, or `tick(now)` when none come.
This module drives; the gates it drives are apart, each a pure function of its own state:
what a fix means for one visit to one point, and the verdict on a closed visit
(agent/checkin/visits.py), and whether the fixes are believable at all
(agent/checkin/motion.py). What stays here is what needs all of them at once: finding the
points near a fix, the agenda, the history and the replays.

Visits. Each fix goes first to the motion checks; a suspicion they raise marks every open
visit suspect. Then the visits to the points near the fix take it, and a visit that ends
becomes a `CheckinEvent` if its verdict says so. When fixes stop for SILENCE_S, open
visits close. Fixes may come at any rate, and change it: each stands for the time since
the fix before it, at most a second (CREDIT_MS), and every rule is stated in seconds.

Agenda. Given the device's agenda (points per line with windows, agent/checkin/plan.py), a
check-in inside a window satisfies it; a window closed MISSED_GRACE_S ago with no visit
is reported as missed. Each event names the item it settled, so that its driver can keep
that fact with the record; after a restart the driver hands the settled items back with
the agenda (`set_agenda(agenda, done)`), and the engine neither satisfies nor reports
them again.

Late fixes (a receiver replaying its buffer) are not dropped: the engine keeps the last
HORIZON_S of fixes and a checkpoint of its state every CHECKPOINT_S, rewinds to the
checkpoint before a late fix, replays, and emits only events it had not emitted before. A
fix older than the horizon is a suspicion (receiver time going backwards). Points are
found through a uniform grid, so the cost per fix stays flat as plans grow.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from agent.checkin.geo import M_PER_DEG_LAT, distance_m
from agent.checkin.motion import Motion, SuspicionEvent, SuspicionKind, suspicion
from agent.checkin.plan import AgendaItem, Plan, Point
from agent.checkin.visits import CREDIT_MS, Visit, exit_margin, judge, observe
from contract.fix import Fix
from contract.records import Verdict

SILENCE_S = 600.0  # no fixes at all for this long closes open visits
MISSED_GRACE_S = 60.0
HORIZON_S = 600.0
CHECKPOINT_S = 30.0
CELL_M = 200.0


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
    item: AgendaItem | None = None  # the agenda item it satisfied (`line` is its line)

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

    @property
    def item(self) -> AgendaItem:
        """The agenda item reported missed."""
        return AgendaItem(
            self.line, self.point.id, self.order, self.window_start_ms, self.window_end_ms
        )


Event = CheckinEvent | MissedEvent | SuspicionEvent


def event_key(e: Event) -> tuple[object, ...]:
    if isinstance(e, CheckinEvent):
        return ("c", e.point.id, e.arrival_ms)
    if isinstance(e, MissedEvent):
        return ("m", e.line, e.order)
    return ("s", e.kind, e.time_ms)


@dataclass(slots=True)
class _State:
    last: Fix | None = None
    open: dict[str, Visit] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)  # agenda items satisfied or reported
    motion: Motion = field(default_factory=Motion)

    def clone(self) -> _State:
        return _State(
            self.last,
            {k: v.clone() for k, v in self.open.items()},
            set(self.done),
            self.motion.clone(),
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
            return self._fresh([suspicion(SuspicionKind.TIME_BACKWARDS, fix, newest - t)])
        if not self._checkpoints or t <= self._checkpoints[0][0]:
            # at or before the oldest state kept (which holds a fix of that time): nothing
            # to replay from
            self.stats.too_late += 1
            return []
        self.stats.late += 1
        return self._fresh(self._replay_with(fix))

    def set_agenda(self, agenda: Sequence[AgendaItem], done: Collection[AgendaItem] = ()) -> None:
        """A new day's (or a new task bundle's) agenda replaces the old one. `done`: its
        items already settled (checked in or reported missed), as the device recorded them
        before a restart: none is satisfied or reported again."""
        self.agenda = list(agenda)
        settled = {i for i, a in enumerate(self.agenda) if a in done}
        self._state.done = set(settled)
        for _, snap in self._checkpoints:
            snap.done = set(settled)

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
        events: list[Event] = []
        suspicions = st.motion.check(st.last, fix)
        if suspicions:
            for v in st.open.values():
                v.suspect = True
            events.extend(suspicions)
        events.extend(self._close_silent(st, t))  # before this fix can extend a stale visit
        speed = fix.speed_mps if fix.speed_mps is not None else self._implied_speed(fix)
        # the time this fix stands for: since the one before, at most CREDIT_MS
        last_ms = st.last.time_ms if st.last is not None else None
        weight = CREDIT_MS if last_ms is None else min(t - last_ms, CREDIT_MS)
        for p in self._candidates(st, fix):
            events.extend(self._visit_step(st, p, fix, speed, weight))
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

    def _implied_speed(self, fix: Fix) -> float:
        """For a receiver without Doppler: the speed since the newest fix at least CREDIT_MS
        before this one (at 10 Hz, a metre of noise between two fixes a tenth of a second
        apart would be 10 m/s). The history holds it, replays included."""
        assert fix.time_ms is not None
        i = bisect.bisect_right(self._times, fix.time_ms - CREDIT_MS) - 1
        if i < 0:
            return 0.0
        last = self._history[i]
        dt_s = (fix.time_ms - (last.time_ms or 0)) / 1000
        return distance_m(last.lat, last.lon, fix.lat, fix.lon) / dt_s if dt_s > 0 else 0.0

    def _visit_step(
        self, st: _State, p: Point, fix: Fix, speed: float, weight_ms: int
    ) -> list[Event]:
        if observe(st.open, p, fix, speed, weight_ms, st.motion.quarantine_until):
            return self._close(st, p)
        return []

    def _close(self, st: _State, p: Point) -> list[Event]:
        v = st.open.pop(p.id)
        if v.best is None:
            return []
        judged = judge(v, p)
        if judged is None:
            return []
        item = self._satisfy(st, p.id, judged.arrival_ms)
        event = CheckinEvent(
            point=p,
            arrival_ms=judged.arrival_ms,
            departure_ms=judged.departure_ms,
            best_fix=v.best,
            fixes_inside=v.inside,
            verdict=judged.verdict,
            max_speed_mps=max(v.speeds, default=0.0),
            line=None if item is None else item.line,
            suspect=v.suspect,
            item=item,
        )
        return [event]

    # -- agenda --------------------------------------------------------------------------

    def _satisfy(self, st: _State, point: str, arrival_ms: int) -> AgendaItem | None:
        for i, a in enumerate(self.agenda):
            if i in st.done or a.point != point:
                continue
            if (a.start_ms is None or arrival_ms >= a.start_ms) and (
                a.end_ms is None or arrival_ms <= a.end_ms
            ):
                st.done.add(i)
                return a
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
