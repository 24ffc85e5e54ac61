"""One visit to one point: when it opens, when it ends, and what it proves.

The check-in engine (agent/checkin/engine.py) finds the points near a fix and keeps the
history; what a fix means for one visit, and the verdict on a closed one, are the gates
described here, kept apart as pure functions of the visit and the point so that each gate
reads in one place and is tested through the engine that drives it.

Every rule here is stated in time, not in fixes, so that one walk gives the same check-ins
whether the receiver reports at 1, 5 or 10 Hz, or switches rate half-way. A fix stands for
the time since the fix before it, at most CREDIT_MS (one second): at 1 Hz every fix is one
second, at 10 Hz a tenth, and a fix after a silence is still one second, so that a rule of
N seconds always needs at least N fixes and one stray fix can never meet it alone.

A visit to a point opens on the first fix inside its radius and closes after EXIT_S of
good fixes beyond the radius plus a hysteresis margin (noise at the edge neither splits a
visit nor ends it early; a multipath excursion of a few seconds is not an exit at any
rate). Fixes whose accuracy is poor relative to the radius are evidence of neither
presence nor absence: they cannot close a visit, and a visit seen only through them is
`uncertain`. A closed visit is a check-in when its span reaches the point's dwell and the
median distance of its fixes (each weighted by its time) is inside the radius (a walker
lingering at the edge is outside half the time); `visited` when good fixes alone show
that, for at least GOOD_MIN_S and for at least as long as poor ones, and the stay is inside
even if the receiver is off towards the point by what it cannot see (the error budget:
`bias_allowance`, docs/engine.md); `uncertain` when it would be inside only were the
receiver off the other way, when only poor fixes show it, or when it overlaps a suspicion.
A silence longer than MAX_GAP_S (an arcade, a doorway) splits the visit's evidence into
sides: it stays `visited` only when the sides that prove the stay on their own (good fixes
inside for GOOD_MIN_S, as long as the poor ones, inside by the error budget) agree on where
the person stood (their median positions within one radius) and span the dwell between
them; a stray fix on one side counts for nothing, so a fix before and a fix after a long
silence are `uncertain`. Where a point sets max_speed_mps, a visit whose
90th-percentile speed (by time) exceeds it is a drive-by, never a check-in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from agent.checkin.geo import distance_m
from agent.checkin.plan import Point
from contract.fix import Fix
from contract.records import Verdict

CREDIT_MS = 1000  # the most time one fix stands for
EXIT_S = 12.0  # good fixes beyond the margin for this long end a visit: longer than an excursion
EXIT_FIXES = math.ceil(EXIT_S * 1000 / CREDIT_MS)  # ... so never fewer fixes than this
EXIT_MARGIN_M = 5.0  # or 20 % of the radius, whichever is larger
ACCURACY_FRACTION = 0.75  # accuracy worse than 3/4 of the radius: no evidence either way
GOOD_MIN_S = 3.0  # `visited` needs good fixes standing for at least this long
MAX_GAP_S = 120.0  # a longer silence splits a visit's evidence into sides, each proven alone
# The error budget: what the receiver may be wrong by without saying so, per metre of the
# accuracy it claims (docs/engine.md). HDOP x UERE is geometry alone, blind to a facade's
# reflection; GST is the receiver's own estimate from its residuals, which grows with it.
BIAS_PER_HDOP_M = 0.5
BIAS_PER_GST_M = 0.0


@dataclass(slots=True)
class Visit:
    first_ms: int
    last_ms: int
    good_first_ms: int | None = None
    good_last_ms: int | None = None
    best: Fix | None = None
    best_d: float = math.inf
    good_d: list[float] = field(default_factory=list)
    good_w: list[int] = field(default_factory=list)  # the time each good fix stands for, ms
    poor_d: list[float] = field(default_factory=list)
    poor_w: list[int] = field(default_factory=list)
    speeds: list[float] = field(default_factory=list)
    speed_w: list[int] = field(default_factory=list)
    outside_ms: int = 0  # time of good fixes beyond the margin since the last fix inside
    suspect: bool = False
    inside: int = 0  # fixes inside the radius (good or poor)
    good: list[Fix] = field(default_factory=list)  # the good fixes, for the error budget
    # before each silence over MAX_GAP_S: how many good and poor fixes came before it
    breaks: list[tuple[int, int]] = field(default_factory=list)

    def clone(self) -> Visit:
        return Visit(
            self.first_ms, self.last_ms, self.good_first_ms, self.good_last_ms, self.best,
            self.best_d, list(self.good_d), list(self.good_w), list(self.poor_d),
            list(self.poor_w), list(self.speeds), list(self.speed_w), self.outside_ms,
            self.suspect, self.inside, list(self.good), list(self.breaks),
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


def weighted_median(xs: Sequence[float], ws: Sequence[int]) -> float:
    """The median of `xs`, each counted for its weight in `ws` (integers); with equal
    weights, exactly `median(xs)`."""
    pairs = sorted(zip(xs, ws, strict=True))
    total = sum(ws)
    cum = 0
    for k, (x, w) in enumerate(pairs):
        cum += w
        if 2 * cum >= total:
            if 2 * cum == total and k + 1 < len(pairs):
                return (x + pairs[k + 1][0]) / 2
            return x
    return pairs[-1][0] if pairs else math.nan


def weighted_p90(xs: Sequence[float], ws: Sequence[int]) -> float:
    """The 90th percentile of `xs` by weight: the smallest value with 90 % of the weight at
    or below it (with equal weights, the ceil(0.9 n)-th smallest); 0 for none."""
    total = sum(ws)
    cum = 0
    for x, w in sorted(zip(xs, ws, strict=True)):
        cum += w
        if 10 * cum >= 9 * total:
            return x
    return 0.0


def observe(  # noqa: PLR0917 - one fix as the engine sees it, in its order
    visits: dict[str, Visit],
    p: Point,
    fix: Fix,
    speed: float,
    weight_ms: int,
    quarantine_until: int,
) -> bool:
    """Take one fix, standing for `weight_ms` (at most CREDIT_MS), into the visit to `p` in
    `visits` (opening it if the fix is inside); True when the visit has ended and must be
    closed."""
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
        v.outside_ms += weight_ms
        return v.outside_ms >= EXIT_S * 1000
    if t - v.last_ms > MAX_GAP_S * 1000:
        v.breaks.append((len(v.good_d), len(v.poor_d)))
    v.last_ms = t
    if t <= quarantine_until:
        v.suspect = True
    v.speeds.append(speed)
    v.speed_w.append(weight_ms)
    if inside:
        v.outside_ms = 0
        v.inside += 1
    if good:
        v.good_d.append(d)
        v.good_w.append(weight_ms)
        v.good.append(fix)
        if v.good_first_ms is None:
            v.good_first_ms = t
        if inside:
            v.good_last_ms = t
        if d < v.best_d:
            v.best, v.best_d = fix, d
    else:
        v.poor_d.append(d)
        v.poor_w.append(weight_ms)
        if v.best is None:
            v.best = fix
    return False


def bias_allowance(good: Sequence[Fix]) -> float:
    """The error budget's unseen part for a stay seen through `good` fixes: the median of
    what each fix's claimed accuracy may hide (BIAS_PER_HDOP_M or BIAS_PER_GST_M of it)."""
    return median(
        [(f.accuracy_m or 0.0) * (BIAS_PER_GST_M if f.accuracy_from_gst else BIAS_PER_HDOP_M)
         for f in good]
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Side:
    """The good fixes inside between two long silences, when they prove the stay alone."""

    first_ms: int
    last_ms: int
    lat: float
    lon: float


def _side(v: Visit, p: Point, good: tuple[int, int], poor: tuple[int, int]) -> _Side | None:
    """The side of a visit made of its good fixes `good` and poor fixes `poor` (slices of
    its lists), if it proves the stay on its own: good fixes inside the radius standing for
    at least GOOD_MIN_S, good ones for at least as long as poor ones, and their median
    distance inside by the error budget."""
    ds, ws, fixes = v.good_d[slice(*good)], v.good_w[slice(*good)], v.good[slice(*good)]
    inside = [(f, w) for f, d, w in zip(fixes, ds, ws, strict=True) if d <= p.radius_m]
    inside_ms = sum(w for _, w in inside)
    if inside_ms < GOOD_MIN_S * 1000 or sum(ws) < sum(v.poor_w[slice(*poor)]):
        return None
    if weighted_median(ds, ws) + bias_allowance(fixes) > p.radius_m:
        return None
    first, last = inside[0][0].time_ms, inside[-1][0].time_ms
    assert first is not None and last is not None
    return _Side(
        first,
        last,
        weighted_median([f.lat for f in fixes], ws),
        weighted_median([f.lon for f in fixes], ws),
    )


def proven_span(v: Visit, p: Point) -> tuple[int, int] | None:
    """For a visit split by silences over MAX_GAP_S: from the first to the last good fix
    inside of the sides that prove the stay alone (`_side`), when those sides agree on
    where the person stood (each median position within one radius of the one before);
    None when no side proves it or two disagree."""
    bounds = [(0, 0), *v.breaks, (len(v.good_d), len(v.poor_d))]
    sides: list[_Side] = []
    for (g0, p0), (g1, p1) in pairwise(bounds):
        side = _side(v, p, (g0, g1), (p0, p1))
        if side is None:
            continue
        if sides and distance_m(sides[-1].lat, sides[-1].lon, side.lat, side.lon) > p.radius_m:
            return None
        sides.append(side)
    return (sides[0].first_ms, sides[-1].last_ms) if sides else None


def judge(v: Visit, p: Point) -> Judged | None:
    """The verdict on a closed visit with a best fix; None when it is no check-in."""
    dwell_ms = p.dwell_s * 1000
    if (
        p.max_speed_mps is not None
        and v.speeds
        and weighted_p90(v.speeds, v.speed_w) > p.max_speed_mps
    ):
        return None  # passing by at a speed this point forbids
    verdict: Verdict | None = None
    arrival, departure = v.first_ms, v.last_ms
    good_ms = sum(v.good_w)
    if v.good_first_ms is not None and good_ms >= max(GOOD_MIN_S * 1000, sum(v.poor_w)):
        # the error budget: inside even if the receiver is off towards the point by what it
        # cannot see is proven; inside only were it off the other way is plausible, unproven
        stay_m = weighted_median(v.good_d, v.good_w)
        allowance = bias_allowance(v.good)
        if (
            stay_m + allowance <= p.radius_m
            and v.good_last_ms is not None
            and v.good_last_ms - v.good_first_ms >= dwell_ms
        ):
            verdict = Verdict.VISITED
            arrival, departure = v.good_first_ms, v.good_last_ms
        elif stay_m - allowance <= p.radius_m < stay_m + allowance and (
            v.last_ms - v.first_ms >= dwell_ms
        ):
            verdict = Verdict.UNCERTAIN
    if (
        verdict is None
        and v.last_ms - v.first_ms >= dwell_ms
        and weighted_median(v.good_d + v.poor_d, v.good_w + v.poor_w) <= p.radius_m
    ):
        verdict = Verdict.UNCERTAIN
    if verdict is None:
        return None
    if verdict is Verdict.VISITED and v.breaks:  # the evidence across a long silence
        span = proven_span(v, p)
        if span is None or span[1] - span[0] < dwell_ms:
            verdict = Verdict.UNCERTAIN
        else:
            arrival, departure = span
    if verdict is Verdict.VISITED and v.suspect:
        verdict = Verdict.UNCERTAIN
    return Judged(verdict, arrival, departure)
