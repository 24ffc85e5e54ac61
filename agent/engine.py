"""The check-in engine: a pure state machine fed `Fix` values, emitting check-ins.

It never reads a clock or a socket: time is the fixes' own. A visit opens on the first
fix inside a point's radius and closes after EXIT_FIXES fixes beyond the radius plus a
hysteresis margin with no fix inside in between, so GNSS noise at the edge neither
splits one visit into two nor ends it early. A closed visit whose span reaches the
point's minimum dwell is a check-in carrying its evidence (best fix, fixes inside,
dwell). Fixes whose accuracy is poor relative to the radius are no evidence either way.
Points are found through a uniform grid so the cost per fix does not grow with the
size of the district's plan.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from agent.fix import Fix
from agent.geo import M_PER_DEG_LAT, distance_m
from agent.plan import Plan, Point
from agent.records import Verdict

EXIT_MARGIN_M = 5.0
EXIT_FIXES = 3
ACCURACY_FRACTION = 0.5  # a fix with accuracy worse than half the radius proves nothing
CELL_M = 200.0


@dataclass(frozen=True, slots=True)
class CheckinEvent:
    point: Point
    arrival_ms: int
    departure_ms: int
    best_fix: Fix
    fixes_inside: int
    verdict: Verdict


@dataclass(slots=True)
class _Visit:
    arrival_ms: int
    last_inside_ms: int
    best: Fix
    best_d: float
    fixes: int = 1
    outside: int = 0


@dataclass(slots=True)
class _Grid:
    lat0: float
    lon_scale: float
    cells: dict[tuple[int, int], list[Point]] = field(default_factory=lambda: defaultdict(list))

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


class CheckinEngine:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        lat0 = plan.points[0].lat if plan.points else 0.0
        self._grid = _Grid(lat0, math.cos(math.radians(lat0)))
        for p in plan.points:
            self._grid.add(p, p.radius_m + EXIT_MARGIN_M)
        self._open: dict[str, _Visit] = {}
        self.fixes_seen = 0
        self.fixes_ignored = 0

    def feed(self, fix: Fix) -> list[CheckinEvent]:
        self.fixes_seen += 1
        events: list[CheckinEvent] = []
        if fix.time_ms is None or fix.accuracy_m is None or not fix.usable:
            self.fixes_ignored += 1  # estimated, simulated, undated or of unknown accuracy
            return events
        time_ms, accuracy = fix.time_ms, fix.accuracy_m
        candidates = {p.id: p for p in self._grid.near(fix.lat, fix.lon)}
        for pid in self._open:
            if pid not in candidates:
                candidates[pid] = self.plan.point(pid)
        for p in candidates.values():
            if accuracy > p.radius_m * ACCURACY_FRACTION:
                self.fixes_ignored += 1
                continue
            d = distance_m(fix.lat, fix.lon, p.lat, p.lon)
            visit = self._open.get(p.id)
            if d <= p.radius_m:
                if visit is None:
                    self._open[p.id] = _Visit(time_ms, time_ms, fix, d)
                else:
                    visit.fixes += 1
                    visit.outside = 0
                    visit.last_inside_ms = time_ms
                    if d < visit.best_d:
                        visit.best, visit.best_d = fix, d
            elif visit is not None and d > p.radius_m + EXIT_MARGIN_M:
                visit.outside += 1
                if visit.outside >= EXIT_FIXES:
                    events.extend(self._close(p))
        return events

    def close_all(self) -> list[CheckinEvent]:
        """End of shift or shutdown: close open visits, emitting those that met their dwell."""
        events: list[CheckinEvent] = []
        for pid in list(self._open):
            events.extend(self._close(self.plan.point(pid)))
        return events

    def _close(self, p: Point) -> list[CheckinEvent]:
        v = self._open.pop(p.id)
        if v.last_inside_ms - v.arrival_ms < p.dwell_s * 1000:
            return []
        return [CheckinEvent(p, v.arrival_ms, v.last_inside_ms, v.best, v.fixes, Verdict.CONFIRMED)]
