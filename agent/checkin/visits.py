"""One visit to one point: when it opens, when it ends, and what it proves.

The check-in engine (agent/checkin/engine.py) finds the points near a fix and keeps the
history; what a fix means for one visit, and the verdict on a closed one, are the gates
described here, kept apart as pure functions of the visit and the point so that each gate
reads in one place and is tested through the engine that drives it.

A visit to a point opens on the first fix inside its radius and closes after EXIT_FIXES
good fixes beyond the radius plus a hysteresis margin (noise at the edge neither splits a
visit nor ends it early). Fixes whose accuracy is poor relative to the radius are evidence
of neither presence nor absence: they cannot close a visit, and a visit seen only through
them is `uncertain`. A closed visit is a check-in when its span reaches the point's dwell
and the median distance of its fixes is inside the radius (a walker lingering at the edge
is outside half the time); `visited` when good fixes alone show that, `uncertain`
otherwise, or when it overlaps a suspicion or has a gap longer than MAX_GAP_S. Where a
point sets max_speed_mps, a visit whose 90th-percentile speed exceeds it is a drive-by,
never a check-in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.checkin.geo import distance_m
from agent.checkin.plan import Point
from contract.fix import Fix
from contract.records import Verdict

EXIT_FIXES = 10  # a run of fixes: longer than a multipath excursion
EXIT_MARGIN_M = 5.0  # or 20 % of the radius, whichever is larger
ACCURACY_FRACTION = 0.75  # accuracy worse than 3/4 of the radius: no evidence either way
MAX_GAP_S = 120.0  # a visit with a longer gap between its fixes is uncertain


@dataclass(slots=True)
class Visit:
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

    def clone(self) -> Visit:
        return Visit(
            self.first_ms, self.last_ms, self.good_first_ms, self.good_last_ms, self.best,
            self.best_d, list(self.good_d), list(self.poor_d), list(self.speeds), self.outside,
            self.max_gap_ms, self.suspect, self.inside,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Judged:
    """A closed visit that is a check-in: its verdict and the span it stands for."""

    verdict: Verdict
    arrival_ms: int
    departure_ms: int


def exit_margin(p: Point) -> float:
    return max(EXIT_MARGIN_M, 0.2 * p.radius_m)


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _p90(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)] if s else 0.0


def observe(
    visits: dict[str, Visit], p: Point, fix: Fix, speed: float, quarantine_until: int
) -> bool:
    """Take one fix into the visit to `p` in `visits` (opening it if the fix is inside);
    True when the visit has ended and must be closed."""
    assert fix.time_ms is not None and fix.accuracy_m is not None
    v = visits.get(p.id)
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
            return False
        v = visits[p.id] = Visit(t, t, suspect=t <= quarantine_until)
    elif good and (d > p.radius_m + exit_margin(p) or not in_band):
        v.outside += 1
        return v.outside >= EXIT_FIXES
    v.max_gap_ms = max(v.max_gap_ms, t - v.last_ms)
    v.last_ms = t
    if t <= quarantine_until:
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
    return False


def judge(v: Visit, p: Point) -> Judged | None:
    """The verdict on a closed visit with a best fix; None when it is no check-in."""
    dwell_ms = p.dwell_s * 1000
    if p.max_speed_mps is not None and v.speeds and _p90(v.speeds) > p.max_speed_mps:
        return None  # passing by at a speed this point forbids
    verdict: Verdict | None = None
    arrival, departure = v.first_ms, v.last_ms
    if (
        v.good_first_ms is not None
        and v.good_last_ms is not None
        and v.good_last_ms - v.good_first_ms >= dwell_ms
        and median(v.good_d) <= p.radius_m
        and len(v.good_d) >= max(3, len(v.poor_d))
    ):
        verdict = Verdict.VISITED
        arrival, departure = v.good_first_ms, v.good_last_ms
    elif v.last_ms - v.first_ms >= dwell_ms and median(v.good_d + v.poor_d) <= p.radius_m:
        verdict = Verdict.UNCERTAIN
    if verdict is None:
        return None
    if verdict is Verdict.VISITED and (v.suspect or v.max_gap_ms > MAX_GAP_S * 1000):
        verdict = Verdict.UNCERTAIN
    return Judged(verdict, arrival, departure)
