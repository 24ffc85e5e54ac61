"""The pure check-in engine: fixes in, check-ins out, on the fixes' own time."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import pytest

from agent.engine import (
    ACCURACY_FRACTION,
    CELL_M,
    EXIT_FIXES,
    EXIT_MARGIN_M,
    CheckinEngine,
    CheckinEvent,
)
from agent.fix import Fix
from agent.geo import M_PER_DEG_LAT, distance_m, offset
from agent.gnss.nmea import NmeaParser
from agent.plan import Line, Plan, Point
from agent.records import Verdict
from simulators.district import generate_district
from simulators.walker import Walker

T0 = 1_767_223_800_000
LAT0, LON0 = 29.265, 106.255
RADIUS, DWELL = 25.0, 60.0
OUT = RADIUS + EXIT_MARGIN_M + 5.0  # clearly beyond radius + margin


def point(pid: str = "A", north: float = 0.0, east: float = 0.0) -> Point:
    lat, lon = offset(LAT0, LON0, north, east)
    return Point(pid, lat, lon, RADIUS, DWELL)


def plan_of(*points: Point) -> Plan:
    return Plan(1, points, (Line("L1", tuple(p.id for p in points)),))


class Track:
    """Fixes at 1 Hz built by hand, positions in metres from (LAT0, LON0)."""

    def __init__(self, start_ms: int = T0) -> None:
        self.t = start_ms
        self.fixes: list[Fix] = []

    def at(self, north: float, east: float = 0.0, accuracy: float = 3.0) -> Fix:
        lat, lon = offset(LAT0, LON0, north, east)
        fix = Fix(
            time_ms=self.t,
            lat=lat,
            lon=lon,
            accuracy_m=accuracy,
            hdop=accuracy / 3.0,
            satellites=9,
            speed_mps=0.0,
        )
        self.fixes.append(fix)
        self.t += 1000
        return fix

    def stand(self, seconds: int, north: float = 0.0, east: float = 0.0) -> list[Fix]:
        return [self.at(north, east) for _ in range(seconds)]

    def walk(self, a: tuple[float, float], b: tuple[float, float], speed: float = 1.3) -> None:
        """From a to b (exclusive of b) at `speed`, one fix a second."""
        d = math.dist(a, b)
        steps = max(1, math.ceil(d / speed))
        for k in range(steps):
            f = k / steps
            self.at(a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)


def run(engine: CheckinEngine, fixes: Iterable[Fix]) -> list[tuple[int, CheckinEvent]]:
    """Feed fixes; the events with the index of the fix that produced them."""
    out = []
    for i, fix in enumerate(fixes):
        out += [(i, e) for e in engine.feed(fix)]
    return out


# --------------------------------------------------------------------------- one visit


def test_standing_then_leaving_is_one_checkin_with_its_evidence() -> None:
    p = point()
    tr = Track()
    tr.walk((80.0, 0.0), (10.0, 0.0))  # approach from the north
    first_inside = next(f for f in tr.fixes if distance_m(f.lat, f.lon, p.lat, p.lon) <= RADIUS)
    inside = tr.stand(30, 3.0, 1.0)
    best = tr.at(0.4, -0.2)  # the closest fix of the visit
    inside += [best, *tr.stand(40, -4.0, 2.0)]
    last_inside = inside[-1]
    engine = CheckinEngine(plan_of(p))
    assert run(engine, tr.fixes) == []

    # walking away: nothing until EXIT_FIXES fixes beyond radius + margin
    leaving = [tr.at(RADIUS + 2.0), tr.at(RADIUS + EXIT_MARGIN_M - 0.5)]  # inside the margin
    leaving += [tr.at(OUT + k) for k in range(EXIT_FIXES)]
    events = run(engine, leaving)
    assert len(events) == 1
    index, ev = events[0]
    assert index == len(leaving) - 1  # on the EXIT_FIXES-th fix beyond the margin, not before
    assert ev.point == p
    assert ev.verdict is Verdict.VISITED
    assert ev.arrival_ms == first_inside.time_ms
    assert ev.departure_ms == last_inside.time_ms
    n_inside = sum(
        distance_m(f.lat, f.lon, p.lat, p.lon) <= RADIUS for f in tr.fixes[: -len(leaving)]
    )
    assert ev.fixes_inside == n_inside
    assert ev.best_fix == best
    # nothing more: the visit is closed
    assert run(engine, [tr.at(OUT + 20) for _ in range(10)]) == []
    assert engine.close_all() == []


def test_transit_at_walking_pace_is_no_checkin() -> None:
    p = point()
    tr = Track()
    tr.walk((-100.0, 8.0), (100.0, 8.0), speed=1.3)  # ~38 s inside, dwell is 60 s
    tr.stand(10, 100.0, 8.0)
    inside = [f for f in tr.fixes if distance_m(f.lat, f.lon, p.lat, p.lon) <= RADIUS]
    assert 30 <= len(inside) < DWELL  # it really went through the geofence
    engine = CheckinEngine(plan_of(p))
    assert run(engine, tr.fixes) == []
    assert engine.close_all() == []


@pytest.mark.parametrize(("span_s", "expected"), [(DWELL - 1, 0), (DWELL, 1), (DWELL + 30, 1)])
def test_dwell_threshold(span_s: float, expected: int) -> None:
    """Inside from t to t + span_s (span_s + 1 fixes): a check-in once the span reaches dwell."""
    tr = Track()
    tr.stand(5, OUT + 10)
    tr.stand(int(span_s) + 1, 5.0)
    tr.stand(EXIT_FIXES, OUT + 10)
    events = run(CheckinEngine(plan_of(point())), tr.fixes)
    assert len(events) == expected
    if expected:
        ev = events[0][1]
        assert ev.departure_ms - ev.arrival_ms == span_s * 1000
        assert ev.fixes_inside == span_s + 1


# --------------------------------------------------------------------------- noise


def test_edge_noise_does_not_split_a_visit() -> None:
    p = point()
    tr = Track()
    tr.stand(3, OUT + 20)
    first = tr.at(RADIUS - 1.0)
    rng = random.Random(3)
    inside = 1
    for k in range(40):  # inside / margin flicker, and short excursions beyond the margin
        for _ in range(2):  # just outside the radius, within the margin
            tr.at(RADIUS + rng.uniform(0.5, EXIT_MARGIN_M - 0.5))
        if k % 5 == 4:  # a short excursion beyond the margin: fewer than EXIT_FIXES fixes
            for _ in range(EXIT_FIXES - 1):
                tr.at(OUT + rng.uniform(0, 10))
        tr.at(RADIUS - rng.uniform(0.5, 3.0))
        inside += 1
    last = tr.fixes[-1]
    tr.stand(EXIT_FIXES, OUT + 20)
    events = run(CheckinEngine(plan_of(p)), tr.fixes)
    assert [e.point.id for _, e in events] == ["A"]
    ev = events[0][1]
    assert ev.arrival_ms == first.time_ms
    assert ev.departure_ms == last.time_ms
    assert ev.fixes_inside == inside
    assert events[0][0] == len(tr.fixes) - 1


def test_exit_needs_fixes_beyond_the_margin() -> None:
    """Lingering in the margin band keeps the visit open however long it lasts."""
    tr = Track()
    tr.stand(70, 2.0)
    tr.stand(200, RADIUS + EXIT_MARGIN_M - 0.5)
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, tr.fixes) == []
    events = run(engine, [tr.at(OUT) for _ in range(EXIT_FIXES)])
    assert len(events) == 1
    assert events[0][1].departure_ms == T0 + 69_000


# --------------------------------------------------------------------------- accuracy


def test_inaccurate_fixes_do_not_open_a_visit() -> None:
    bad = RADIUS * ACCURACY_FRACTION + 0.5
    tr = Track()
    for _ in range(120):
        tr.at(0.0, 0.0, accuracy=bad)
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, tr.fixes) == []
    assert engine.close_all() == []
    assert engine.fixes_seen == 120


def test_fix_at_the_accuracy_limit_counts() -> None:
    limit = RADIUS * ACCURACY_FRACTION
    tr = Track()
    for _ in range(61):
        tr.at(0.0, 0.0, accuracy=limit)
    engine = CheckinEngine(plan_of(point()))
    run(engine, tr.fixes)
    events = engine.close_all()
    assert len(events) == 1
    assert events[0].fixes_inside == 61


def test_inaccurate_fixes_do_not_close_a_visit() -> None:
    bad = RADIUS * ACCURACY_FRACTION + 0.5
    tr = Track()
    arrival = tr.at(3.0)
    tr.stand(29, 3.0)
    for _ in range(20):  # a multipath burst far away, poor accuracy: no evidence
        tr.at(OUT + 50, accuracy=bad)
    tr.stand(40, 3.0)
    last = tr.fixes[-1]
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, tr.fixes) == []
    events = run(engine, [tr.at(OUT) for _ in range(EXIT_FIXES)])
    assert len(events) == 1
    ev = events[0][1]
    assert ev.arrival_ms == arrival.time_ms
    assert ev.departure_ms == last.time_ms
    assert ev.fixes_inside == 70


# --------------------------------------------------------------------------- close_all


def test_close_all_emits_met_dwell_and_drops_the_rest() -> None:
    a, b = point("A"), point("B", north=300.0)
    engine = CheckinEngine(plan_of(a, b))
    tr = Track()
    tr.stand(int(DWELL) + 5, 1.0)
    run(engine, tr.fixes)
    events = engine.close_all()
    assert [e.point.id for e in events] == ["A"]
    assert events[0].fixes_inside == int(DWELL) + 5
    assert events[0].departure_ms == tr.fixes[-1].time_ms
    assert engine.close_all() == []  # nothing left open

    engine = CheckinEngine(plan_of(a, b))
    tr2 = Track()
    tr2.stand(int(DWELL) - 10, 300.0)
    run(engine, tr2.fixes)
    assert engine.close_all() == []
    # the dropped visit does not come back later either
    assert run(engine, [tr2.at(OUT + 400) for _ in range(5)]) == []


# --------------------------------------------------------------------------- several points


def test_two_points_visited_in_turn() -> None:
    a, b = point("A"), point("B", north=300.0, east=0.0)
    tr = Track()
    tr.walk((-60.0, 0.0), (0.0, 0.0))
    tr.stand(70, 0.5)
    tr.walk((0.0, 0.0), (300.0, 0.0))
    tr.stand(75, 299.0)
    tr.walk((300.0, 0.0), (380.0, 0.0))
    tr.stand(5, 380.0)
    events = run(CheckinEngine(plan_of(a, b)), tr.fixes)
    assert [e.point.id for _, e in events] == ["A", "B"]
    ea, eb = events[0][1], events[1][1]
    assert ea.departure_ms < eb.arrival_ms
    assert events[0][0] < events[1][0]


def reference(plan: Plan, fixes: Sequence[Fix]) -> list[tuple[str, int, int, int]]:
    """Brute force over every point for every fix: (point, arrival, departure, fixes)."""
    out = []
    state: dict[str, list[int]] = {}  # point -> [arrival, last inside, fixes, outside]
    for fix in fixes:
        for p in plan.points:
            if p.id not in state and abs(fix.lat - p.lat) * M_PER_DEG_LAT > p.radius_m + 1.0:
                continue  # only a shortcut: this fix cannot be inside p
            if fix.accuracy_m > p.radius_m * ACCURACY_FRACTION:
                continue
            d = distance_m(fix.lat, fix.lon, p.lat, p.lon)
            v = state.get(p.id)
            if d <= p.radius_m:
                if v is None:
                    state[p.id] = [fix.time_ms, fix.time_ms, 1, 0]
                else:
                    v[1], v[2], v[3] = fix.time_ms, v[2] + 1, 0
            elif v is not None and d > p.radius_m + EXIT_MARGIN_M:
                v[3] += 1
                if v[3] >= EXIT_FIXES:
                    del state[p.id]
                    if v[1] - v[0] >= p.dwell_s * 1000:
                        out.append((p.id, v[0], v[1], v[2]))
    return out


def test_large_plan_grid_index_finds_every_point() -> None:
    spacing = 80.0
    pts = [
        point(f"G{i:02d}{j:02d}", north=i * spacing + 7.0, east=j * spacing + 13.0)
        for i in range(30)
        for j in range(20)
    ]
    assert len(pts) == 600
    plan = plan_of(*pts)

    def to_cell_edge(p: Point) -> tuple[float, float] | None:
        """A spot 19 m from p just across the nearest index cell boundary, if one is near."""
        y = p.lat * M_PER_DEG_LAT
        below = y - math.floor(y / CELL_M) * CELL_M  # metres above the boundary below
        north = (p.lat - LAT0) * M_PER_DEG_LAT
        east = (p.lon - LON0) * M_PER_DEG_LAT * math.cos(math.radians(LAT0))
        if below < 17.0:
            return north - 19.0, east
        if CELL_M - below < 17.0:
            return north + 19.0, east
        return None

    near_edge = [(p, s) for p in pts if (s := to_cell_edge(p)) is not None]
    assert len(near_edge) >= 20
    rng = random.Random(11)
    pool = rng.sample(near_edge, 12)
    chosen = [pool.pop(0)]
    while pool:  # visit them nearest-first to keep the walk (and the brute force) short
        last = chosen[-1][1]
        chosen.append(pool.pop(min(range(len(pool)), key=lambda k: math.dist(pool[k][1], last))))
    tr = Track()
    here = (-100.0, -100.0)
    tr.stand(3, *here)
    for _, spot in chosen:
        tr.walk(here, spot, speed=3.0)
        tr.stand(int(DWELL) + 5, *spot)
        here = spot
    tr.walk(here, (-100.0, -100.0), speed=3.0)
    tr.stand(EXIT_FIXES, -100.0, -100.0)

    # the standing spots really lie in another index cell than their point
    for p, spot in chosen:
        lat, lon = offset(LAT0, LON0, *spot)
        assert math.floor(lat * M_PER_DEG_LAT / CELL_M) != math.floor(
            p.lat * M_PER_DEG_LAT / CELL_M
        )
        assert distance_m(lat, lon, p.lat, p.lon) < RADIUS - 5.0

    engine = CheckinEngine(plan)
    events = [e for _, e in run(engine, tr.fixes)] + engine.close_all()
    got = [(e.point.id, e.arrival_ms, e.departure_ms, e.fixes_inside) for e in events]
    assert got == reference(plan, tr.fixes)
    assert [e.point.id for e in events] == [p.id for p, _ in chosen]


# --------------------------------------------------------------------------- end to end


SHIFT_MS = 3_600_000


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_simulated_shift_yields_the_walkers_visits(seed: int) -> None:
    plan = generate_district(seed)
    line = plan.lines[seed % len(plan.lines)]
    walker = Walker(f"dev-{seed}", plan, line, random.Random(seed), T0, T0 + SHIFT_MS)
    parser = NmeaParser()
    engine = CheckinEngine(plan)
    events: list[CheckinEvent] = []
    now = T0
    while not walker.done and now < T0 + 2 * SHIFT_MS:
        for fix in parser.feed(walker.tick(now)):
            events += engine.feed(fix)
        now += 1000
    assert walker.done
    events += engine.close_all()
    truth = walker.visits
    assert len(truth) >= 5
    assert parser.stats.bad_checksum == parser.stats.malformed == 0
    assert [e.point.id for e in events] == [v.point_id for v in truth]
    prev_departure = T0
    for ev, visit in zip(events, truth, strict=True):
        p = plan.point(visit.point_id)
        assert ev.arrival_ms <= visit.arrival_ms
        assert ev.arrival_ms > prev_departure  # not before leaving the previous point
        assert ev.departure_ms >= visit.departure_ms - 5_000
        # walking away at >= 1 m/s from <= 2 m off centre, reported within 7 m of the truth
        assert ev.departure_ms <= visit.departure_ms + (p.radius_m + 9.0) * 1000
        assert ev.verdict is Verdict.VISITED
        assert ev.departure_ms - ev.arrival_ms >= p.dwell_s * 1000
        assert ev.fixes_inside >= p.dwell_s
        assert distance_m(ev.best_fix.lat, ev.best_fix.lon, p.lat, p.lon) <= p.radius_m
        prev_departure = visit.departure_ms
