"""The check-in engine: fixes in, events out, on the fixes' own time."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.checkin.engine import (
    CELL_M,
    HORIZON_S,
    MISSED_GRACE_S,
    SILENCE_S,
    CheckinEngine,
    CheckinEvent,
    Event,
    MissedEvent,
)
from agent.checkin.geo import M_PER_DEG_LAT, distance_m, offset
from agent.checkin.motion import MISMATCH_WINDOW_S, QUARANTINE_S, SuspicionEvent, SuspicionKind
from agent.checkin.plan import AgendaItem, Line, Plan, Point
from agent.checkin.visits import ACCURACY_FRACTION, EXIT_FIXES, EXIT_MARGIN_M, MAX_GAP_S
from agent.gnss.nmea import NmeaParser
from contract.fix import Fix, FixMode, Quality
from contract.records import Verdict
from simulators.district import generate_district
from simulators.walker import Walker

T0 = 1_767_223_800_000
LAT0, LON0 = 29.265, 106.255
RADIUS, DWELL = 25.0, 60.0
OUT = RADIUS + EXIT_MARGIN_M + 5.0  # clearly beyond radius + margin
FAR = OUT + 5.0
LIMIT = RADIUS * ACCURACY_FRACTION  # the worst accuracy that is still evidence
POOR = LIMIT + 0.5


def point(pid: str = "A", north: float = 0.0, east: float = 0.0, **kw: object) -> Point:
    lat, lon = offset(LAT0, LON0, north, east)
    kw.setdefault("radius_m", RADIUS)
    kw.setdefault("dwell_s", DWELL)
    return Point(pid, lat, lon, **kw)


def plan_of(*points: Point) -> Plan:
    return Plan(1, points, (Line("L1", tuple(p.id for p in points)),))


class Track:
    """Fixes at 1 Hz built by hand, positions in metres from (LAT0, LON0)."""

    def __init__(self, start_ms: int = T0) -> None:
        self.t = start_ms
        self.fixes: list[Fix] = []

    def at(
        self,
        north: float,
        east: float = 0.0,
        *,
        accuracy: float = 3.0,
        doppler: float | None = 0.0,
        alt: float | None = None,
    ) -> Fix:
        lat, lon = offset(LAT0, LON0, north, east)
        fix = Fix(
            time_ms=self.t,
            lat=lat,
            lon=lon,
            accuracy_m=accuracy,
            hdop=accuracy / 3.0,
            alt_m=alt,
            mode=FixMode.FIX_3D,
            satellites=9,
            speed_mps=doppler,
        )
        self.fixes.append(fix)
        self.t += 1000
        return fix

    def stand(self, seconds: int, north: float = 0.0, east: float = 0.0, **kw: object) -> list[Fix]:
        return [self.at(north, east, **kw) for _ in range(seconds)]

    def walk(
        self, a: tuple[float, float], b: tuple[float, float], speed: float = 1.3, **kw: object
    ) -> list[Fix]:
        """From a to b (exclusive of b) at `speed`, one fix a second, Doppler = speed."""
        kw.setdefault("doppler", speed)
        d = math.dist(a, b)
        steps = max(1, math.ceil(d / speed))
        return [
            self.at(a[0] + (b[0] - a[0]) * k / steps, a[1] + (b[1] - a[1]) * k / steps, **kw)
            for k in range(steps)
        ]

    def pause(self, seconds: float) -> None:
        """No fixes for `seconds` (the next fix comes `seconds` + 1 s after the last)."""
        self.t += int(seconds * 1000)


def run(engine: CheckinEngine, fixes: Iterable[Fix]) -> list[tuple[int, Event]]:
    """Feed fixes; the events with the index of the fix that produced them."""
    out: list[tuple[int, Event]] = []
    for i, fix in enumerate(fixes):
        out += [(i, e) for e in engine.feed(fix)]
    return out


def checkins(events: Iterable[Event | tuple[int, Event]]) -> list[CheckinEvent]:
    evs = [e[1] if isinstance(e, tuple) else e for e in events]
    return [e for e in evs if isinstance(e, CheckinEvent)]


def of_kind(events: Iterable[tuple[int, Event]], kind: type) -> list[tuple[int, Event]]:
    return [(i, e) for i, e in events if isinstance(e, kind)]


def inside(fixes: Iterable[Fix], p: Point) -> list[Fix]:
    return [f for f in fixes if distance_m(f.lat, f.lon, p.lat, p.lon) <= p.radius_m]


# --------------------------------------------------------------------------- one visit


def test_standing_then_leaving_is_one_checkin_with_its_evidence() -> None:
    p = point()
    tr = Track()
    tr.walk((80.0, 0.0), (10.0, 0.0))  # approach from the north at 1.3 m/s
    first_inside = inside(tr.fixes, p)[0]
    stay = tr.stand(30, 3.0, 1.0)
    best = tr.at(0.4, -0.2)  # the closest fix of the visit
    stay += [best, *tr.stand(40, -4.0, 2.0)]
    last_inside = stay[-1]
    engine = CheckinEngine(plan_of(p))
    assert run(engine, tr.fixes) == []

    # walking away: nothing until EXIT_FIXES fixes beyond radius + margin
    leaving = [tr.at(RADIUS + 2.0), tr.at(RADIUS + EXIT_MARGIN_M - 0.5)]  # inside the margin
    leaving += [tr.at(OUT + k) for k in range(EXIT_FIXES)]
    events = run(engine, leaving)
    assert len(events) == 1
    index, ev = events[0]
    assert index == len(leaving) - 1  # on the EXIT_FIXES-th fix beyond the margin, not before
    assert isinstance(ev, CheckinEvent)
    assert ev.point == p
    assert ev.verdict is Verdict.VISITED
    assert not ev.suspect
    assert ev.line is None  # no agenda
    assert ev.arrival_ms == first_inside.time_ms
    assert ev.departure_ms == last_inside.time_ms
    assert ev.dwell_s == (last_inside.time_ms - first_inside.time_ms) / 1000
    assert ev.fixes_inside == len(inside(tr.fixes[: -len(leaving)], p))
    assert ev.best_fix == best
    assert ev.max_speed_mps == 1.3  # the approach, from the receiver's Doppler speed
    # nothing more: the visit is closed
    assert run(engine, [tr.at(OUT + 20) for _ in range(10)]) == []
    assert engine.finish() == []
    assert engine.stats.fixes == len(tr.fixes)
    assert engine.stats.ignored == engine.stats.late == engine.stats.duplicates == 0


def test_transit_at_walking_pace_is_no_checkin() -> None:
    p = point()
    tr = Track()
    tr.walk((-100.0, 8.0), (100.0, 8.0), speed=1.3)  # ~36 s inside, dwell is 60 s
    tr.stand(10, 100.0, 8.0)
    assert 30 <= len(inside(tr.fixes, p)) < DWELL  # it really went through the geofence
    engine = CheckinEngine(plan_of(p))
    assert run(engine, tr.fixes) == []
    assert engine.finish() == []


@pytest.mark.parametrize(("span_s", "expected"), [(DWELL - 1, 0), (DWELL, 1), (DWELL + 30, 1)])
def test_dwell_threshold(span_s: float, expected: int) -> None:
    """Inside from t to t + span_s (span_s + 1 fixes): a check-in once the span reaches dwell."""
    tr = Track()
    tr.stand(5, FAR)
    tr.stand(int(span_s) + 1, 5.0)
    tr.stand(EXIT_FIXES, FAR)
    engine = CheckinEngine(plan_of(point()))
    events = checkins(run(engine, tr.fixes))
    assert len(events) == expected
    if expected:
        assert events[0].dwell_s == span_s
        assert events[0].fixes_inside == span_s + 1
        assert events[0].verdict is Verdict.VISITED
    assert engine.finish() == []


# --------------------------------------------------------------------------- noise


def test_edge_noise_does_not_split_a_visit() -> None:
    p = point()
    tr = Track()
    tr.stand(3, FAR)
    first = tr.at(RADIUS - 1.0)
    rng = random.Random(3)
    n_inside = 1
    for k in range(40):  # mostly inside, flicker into the margin, short excursions beyond it
        for _ in range(2):
            tr.at(RADIUS - rng.uniform(0.5, 6.0))
            n_inside += 1
        tr.at(RADIUS + rng.uniform(0.5, EXIT_MARGIN_M - 0.5))  # within the margin
        if k % 5 == 4:  # a short excursion beyond the margin: fewer than EXIT_FIXES fixes
            for _ in range(EXIT_FIXES - 1):
                tr.at(OUT + rng.uniform(0, 10))
        tr.at(RADIUS - rng.uniform(0.5, 3.0))
        n_inside += 1
    last = tr.fixes[-1]
    tr.stand(EXIT_FIXES, FAR)
    events = run(CheckinEngine(plan_of(p)), tr.fixes)
    assert [e.point.id for e in checkins(events)] == ["A"]
    assert len(events) == 1
    index, ev = events[0]
    assert isinstance(ev, CheckinEvent)
    assert ev.verdict is Verdict.VISITED
    assert ev.arrival_ms == first.time_ms
    assert ev.departure_ms == last.time_ms
    assert ev.fixes_inside == n_inside
    assert index == len(tr.fixes) - 1


def test_exit_needs_fixes_beyond_the_margin() -> None:
    """Standing in the margin band keeps the visit open; the departure is the last fix inside."""
    tr = Track()
    tr.stand(90, 2.0)
    tr.stand(60, RADIUS + EXIT_MARGIN_M - 0.5)
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, tr.fixes) == []
    events = run(engine, [tr.at(OUT) for _ in range(EXIT_FIXES)])
    assert len(events) == 1
    ev = events[0][1]
    assert isinstance(ev, CheckinEvent)
    assert ev.departure_ms == T0 + 89_000
    assert ev.fixes_inside == 90


# --------------------------------------------------------------------------- verdicts


def stay_good(tr: Track) -> None:
    tr.stand(70, 3.0)


def stay_at_accuracy_limit(tr: Track) -> None:
    tr.stand(70, 3.0, accuracy=LIMIT)


def stay_poor_only(tr: Track) -> None:
    tr.stand(70, 3.0, accuracy=POOR)


def stay_mostly_poor(tr: Track) -> None:
    tr.stand(2, 3.0)
    tr.stand(68, 3.0, accuracy=POOR)


def stay_with_gap(gap_s: float) -> Callable[[Track], None]:
    def build(tr: Track) -> None:
        tr.stand(2, 3.0)  # two fixes before the silence: no evidence on their own
        tr.pause(gap_s - 1)
        tr.stand(35, 3.0)  # 34 s after it: less than the dwell

    return build


def linger_at_edge(tr: Track) -> None:
    for k in range(90):  # one fix in three inside, the rest just beyond the radius
        tr.at(RADIUS - 2.0 if k % 3 == 0 else RADIUS + 3.0)


def stay_too_short(tr: Track) -> None:
    tr.stand(int(DWELL) - 10, 3.0)


@pytest.mark.parametrize(
    ("build", "verdict"),
    [
        pytest.param(stay_good, Verdict.VISITED, id="good-fixes"),
        pytest.param(stay_at_accuracy_limit, Verdict.VISITED, id="accuracy-at-limit"),
        pytest.param(stay_poor_only, Verdict.UNCERTAIN, id="poor-fixes-only"),
        pytest.param(stay_mostly_poor, Verdict.UNCERTAIN, id="mostly-poor-fixes"),
        pytest.param(stay_with_gap(MAX_GAP_S), Verdict.VISITED, id="gap-at-max"),
        pytest.param(stay_with_gap(MAX_GAP_S + 1), Verdict.UNCERTAIN, id="gap-over-max"),
        pytest.param(linger_at_edge, None, id="lingering-at-the-edge"),
        pytest.param(stay_too_short, None, id="too-short"),
    ],
)
def test_verdicts(build: Callable[[Track], None], verdict: Verdict | None) -> None:
    p = point()
    tr = Track()
    tr.stand(5, FAR)
    start = len(tr.fixes)
    build(tr)
    stay = tr.fixes[start:]
    tr.stand(EXIT_FIXES, FAR)
    engine = CheckinEngine(plan_of(p))
    events = run(engine, tr.fixes)
    assert engine.finish() == []  # closed by the exit, if at all
    if verdict is None:
        assert events == []
        return
    assert len(events) == 1
    index, ev = events[0]
    assert index == len(tr.fixes) - 1
    assert isinstance(ev, CheckinEvent)
    assert ev.verdict is verdict
    assert ev.arrival_ms == stay[0].time_ms
    assert ev.departure_ms == stay[-1].time_ms
    assert ev.fixes_inside == len(inside(stay, p))
    assert not ev.suspect


def test_poor_fixes_do_not_close_a_visit() -> None:
    tr = Track()
    arrival = tr.at(3.0)
    tr.stand(29, 3.0)
    for _ in range(20):  # a multipath burst far away, poor accuracy: no evidence
        tr.at(OUT + 50, accuracy=POOR)
    tr.stand(40, 3.0)
    last = tr.fixes[-1]
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, tr.fixes) == []
    events = checkins(run(engine, [tr.at(OUT) for _ in range(EXIT_FIXES)]))
    assert len(events) == 1
    ev = events[0]
    assert ev.verdict is Verdict.VISITED
    assert ev.arrival_ms == arrival.time_ms
    assert ev.departure_ms == last.time_ms
    assert ev.fixes_inside == 70


def test_poor_fixes_alone_give_an_uncertain_checkin_with_their_evidence() -> None:
    tr = Track()
    stay = tr.stand(120, 0.0, accuracy=POOR)
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, tr.fixes) == []
    events = engine.finish()
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, CheckinEvent)
    assert ev.verdict is Verdict.UNCERTAIN
    assert (ev.arrival_ms, ev.departure_ms) == (stay[0].time_ms, stay[-1].time_ms)
    assert ev.fixes_inside == 120
    assert ev.best_fix.accuracy_m == POOR


# --------------------------------------------------------------------------- finish, tick


def test_finish_emits_met_dwell_and_drops_the_rest() -> None:
    a, b = point("A"), point("B", north=300.0)
    engine = CheckinEngine(plan_of(a, b))
    tr = Track()
    tr.stand(int(DWELL) + 5, 1.0)
    run(engine, tr.fixes)
    events = checkins(engine.finish())
    assert [e.point.id for e in events] == ["A"]
    assert events[0].fixes_inside == int(DWELL) + 5
    assert events[0].departure_ms == tr.fixes[-1].time_ms
    assert events[0].verdict is Verdict.VISITED
    assert engine.finish() == []  # nothing left open

    engine = CheckinEngine(plan_of(a, b))
    tr2 = Track()
    tr2.stand(int(DWELL) - 10, 300.0)
    run(engine, tr2.fixes)
    assert engine.finish() == []
    # the dropped visit does not come back: 30 s more there make a new, short visit
    tr2.stand(30, 300.0)
    tr2.walk((300.0, 0.0), (400.0, 0.0))
    assert run(engine, tr2.fixes[int(DWELL) - 10 :]) == []
    assert engine.finish() == []


def test_tick_closes_a_visit_after_silence() -> None:
    tr = Track()
    stay = tr.stand(70, 2.0)
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, tr.fixes) == []
    last = stay[-1].time_ms
    assert last is not None
    assert engine.tick(last + int(SILENCE_S * 1000)) == []  # not yet
    events = engine.tick(last + int(SILENCE_S * 1000) + 1)
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, CheckinEvent)
    assert ev.verdict is Verdict.VISITED
    assert (ev.arrival_ms, ev.departure_ms) == (stay[0].time_ms, last)
    assert engine.tick(last + 2 * int(SILENCE_S * 1000)) == []
    assert engine.finish() == []


@pytest.mark.parametrize("ticked", [True, False])
def test_silence_closes_a_visit_with_or_without_tick(ticked: bool) -> None:
    """Two stays at one point SILENCE_S + 100 s apart are two check-ins, tick() or not."""
    tr = Track()
    first = tr.stand(80, 2.0)
    tr.pause(SILENCE_S + 100)
    second = tr.stand(80, 2.0)
    tr.stand(EXIT_FIXES, FAR)
    engine = CheckinEngine(plan_of(point()))
    events = run(engine, tr.fixes[:80])
    if ticked:
        events += [(0, e) for e in engine.tick(T0 + 80_000 + int(SILENCE_S * 1000) + 50_000)]
    events += run(engine, tr.fixes[80:])
    got = [(e.arrival_ms, e.departure_ms, e.verdict) for e in checkins(events)]
    assert got == [
        (first[0].time_ms, first[-1].time_ms, Verdict.VISITED),
        (second[0].time_ms, second[-1].time_ms, Verdict.VISITED),
    ]


# --------------------------------------------------------------------------- speed gate


def drive_loop(tr: Track, speed: float, *, doppler: bool = True, seconds: int = 110) -> None:
    """Circling 40 m around the point at `speed`, then driving straight away."""
    r = 40.0
    for k in range(seconds):
        a = speed * k / r
        tr.at(r * math.cos(a), r * math.sin(a), doppler=speed if doppler else None)
    a = speed * seconds / r
    here = (r * math.cos(a), r * math.sin(a))
    tr.walk(here, (here[0] * 5, here[1] * 5), speed=speed, doppler=speed if doppler else None)


def walk_in_and_stand(tr: Track, speed: float, *, doppler: bool = True) -> None:
    tr.walk((120.0, 0.0), (0.0, 0.0), speed=speed, doppler=speed if doppler else None)
    tr.stand(70)
    tr.walk((0.0, 0.0), (120.0, 0.0), speed=speed, doppler=speed if doppler else None)


@pytest.mark.parametrize(
    ("gate", "build", "speed", "doppler", "verdict", "max_speed"),
    [
        pytest.param(2.5, drive_loop, 4.0, True, None, None, id="car-4mps-gated"),
        pytest.param(2.5, drive_loop, 5.0, True, None, None, id="car-5mps-gated"),
        pytest.param(2.5, drive_loop, 8.0, True, None, None, id="car-8mps-gated"),
        pytest.param(2.5, drive_loop, 5.0, False, None, None, id="car-no-doppler-gated"),
        pytest.param(None, drive_loop, 5.0, True, Verdict.VISITED, 5.0, id="car-ungated"),
        pytest.param(
            None, drive_loop, 5.0, False, Verdict.VISITED, 5.0, id="car-no-doppler-ungated"
        ),
        pytest.param(2.5, walk_in_and_stand, 1.3, True, Verdict.VISITED, 1.3, id="walker-gated"),
    ],
)
def test_speed_gate(
    *,
    gate: float | None,
    build: Callable[..., None],
    speed: float,
    doppler: bool,
    verdict: Verdict | None,
    max_speed: float | None,
) -> None:
    p = point("S", radius_m=60.0, dwell_s=60.0, max_speed_mps=gate)
    tr = Track()
    build(tr, speed, doppler=doppler)
    assert len(inside(tr.fixes, p)) >= 100  # the dwell is met either way
    engine = CheckinEngine(plan_of(p))
    events = run(engine, tr.fixes)
    events += [(len(tr.fixes), e) for e in engine.finish()]
    assert of_kind(events, SuspicionEvent) == []
    got = checkins(events)
    if verdict is None:
        assert got == []
        return
    assert len(got) == 1
    assert got[0].verdict is verdict
    assert got[0].max_speed_mps == pytest.approx(max_speed, rel=0.02)


# --------------------------------------------------------------------------- altitude


AERIAL = {"radius_m": 40.0, "dwell_s": 60.0, "alt_min_m": 80.0, "alt_max_m": 150.0}


@pytest.mark.parametrize(
    ("alt", "checked_in"),
    [
        (50.0, False),
        (79.0, False),
        (80.0, True),
        (100.0, True),
        (150.0, True),
        (200.0, False),
        (None, False),
    ],
)
def test_altitude_band(alt: float | None, checked_in: bool) -> None:
    p = point("D", **AERIAL)
    tr = Track()
    hover = tr.stand(90, 5.0, alt=alt)
    tr.walk((5.0, 0.0), (200.0, 0.0), speed=10.0, alt=alt)
    engine = CheckinEngine(plan_of(p))
    events = checkins(run(engine, tr.fixes)) + checkins(engine.finish())
    if not checked_in:
        assert events == []
        return
    assert len(events) == 1
    assert events[0].verdict is Verdict.VISITED
    assert events[0].fixes_inside == len(inside(hover, p)) + len(inside(tr.fixes[90:], p))


def test_leaving_the_band_vertically_closes_the_visit() -> None:
    p = point("D", **AERIAL)
    tr = Track()
    hover = tr.stand(70, 5.0, alt=100.0)
    tr.stand(EXIT_FIXES, 5.0, alt=40.0)  # straight down, still above the point
    events = run(CheckinEngine(plan_of(p)), tr.fixes)
    assert len(events) == 1
    index, ev = events[0]
    assert index == len(tr.fixes) - 1
    assert isinstance(ev, CheckinEvent)
    assert (ev.arrival_ms, ev.departure_ms) == (hover[0].time_ms, hover[-1].time_ms)
    assert ev.fixes_inside == 70


# --------------------------------------------------------------------------- suspicion


@pytest.mark.parametrize(
    ("wait_s", "suspect"), [(0, True), (10, True), (int(QUARANTINE_S) + 10, False)]
)
def test_jump_raises_suspicion_and_taints_visits_in_quarantine(wait_s: int, suspect: bool) -> None:
    tr = Track()
    tr.stand(10, 5000.0, doppler=1.0)  # 5 km north
    jump = tr.at(30.0, doppler=1.0)  # one second later: 4970 m away, in the margin band
    tr.stand(wait_s, 30.0, doppler=1.0)
    tr.walk((30.0, 0.0), (0.0, 0.0))
    stay = tr.stand(70)
    tr.walk((0.0, 0.0), (60.0, 0.0))
    engine = CheckinEngine(plan_of(point()))
    events = run(engine, tr.fixes)
    jumps = of_kind(events, SuspicionEvent)
    assert len(jumps) == 1
    index, sus = jumps[0]
    assert isinstance(sus, SuspicionEvent)
    assert sus.kind is SuspicionKind.JUMP
    assert (index, sus.time_ms, sus.fix) == (10, jump.time_ms, jump)
    got = checkins(events)
    assert len(got) == 1
    assert got[0].suspect is suspect
    assert got[0].verdict is (Verdict.UNCERTAIN if suspect else Verdict.VISITED)
    assert got[0].arrival_ms < stay[0].time_ms < got[0].departure_ms


@pytest.mark.parametrize(("doppler", "raised"), [(0.0, True), (0.3, True), (6.0, False)])
def test_positions_moving_while_doppler_says_still(doppler: float, raised: bool) -> None:
    tr = Track()
    tr.stand(10, 200.0)
    start = len(tr.fixes)
    tr.walk((200.0, 0.0), (200.0, 6.0 * (MISMATCH_WINDOW_S + 10)), speed=6.0, doppler=doppler)
    end = len(tr.fixes)
    tr.stand(10, 200.0, 6.0 * (MISMATCH_WINDOW_S + 10))
    events = run(CheckinEngine(plan_of(point())), tr.fixes)
    sus = of_kind(events, SuspicionEvent)
    if not raised:
        assert events == []
        return
    assert len(sus) == 1  # once per quarantine, not on every fix
    index, ev = sus[0]
    assert isinstance(ev, SuspicionEvent)
    assert ev.kind is SuspicionKind.MOTION_MISMATCH
    assert start < index < end
    assert ev.fix == tr.fixes[index]
    assert checkins(events) == []


@pytest.mark.parametrize(
    ("behind_s", "too_late"),
    [(HORIZON_S + 0.5, True), (HORIZON_S + 3600, True), (HORIZON_S - 0.5, False)],
)
def test_fix_far_behind_the_newest_is_time_backwards(behind_s: float, too_late: bool) -> None:
    tr = Track()
    tr.stand(int(HORIZON_S) + 100, 200.0)
    newest = tr.fixes[-1].time_ms
    assert newest is not None
    engine = CheckinEngine(plan_of(point()))
    run(engine, tr.fixes)
    lat, lon = offset(LAT0, LON0, 200.0, 0.0)
    old = Fix(time_ms=newest - int(behind_s * 1000), lat=lat, lon=lon, accuracy_m=3.0)
    events = engine.feed(old)
    if too_late:
        assert len(events) == 1
        ev = events[0]
        assert isinstance(ev, SuspicionEvent)
        assert (ev.kind, ev.time_ms, ev.fix) == (SuspicionKind.TIME_BACKWARDS, old.time_ms, old)
        assert (engine.stats.too_late, engine.stats.late) == (1, 0)
    else:
        assert events == []
        assert (engine.stats.too_late, engine.stats.late) == (0, 1)


# --------------------------------------------------------------------------- late fixes


def visit_track() -> Track:
    tr = Track()
    tr.stand(3, 60.0)
    tr.walk((60.0, 0.0), (0.0, 0.0))
    tr.stand(90, 1.0)
    tr.walk((0.0, 0.0), (60.0, 0.0))
    tr.stand(5, 60.0)
    return tr


def summary(events: Iterable[Event | tuple[int, Event]]) -> list[tuple[str, int, int, int]]:
    return sorted(
        (e.point.id, e.arrival_ms, e.departure_ms, e.fixes_inside) for e in checkins(events)
    )


def test_middle_of_a_stay_delivered_late_gives_the_same_checkin() -> None:
    tr = visit_track()
    fixes = tr.fixes
    in_order = CheckinEngine(plan_of(point()))
    expected = [e for _, e in run(in_order, fixes)]
    assert len(checkins(expected)) == 1
    # the receiver holds 40 s of the stay in its buffer and replays it later
    stay_start = next(i for i, f in enumerate(fixes) if f.speed_mps == 0.0 and i > 3)
    held = slice(stay_start + 20, stay_start + 60)
    order = fixes[: held.start] + fixes[held.stop : stay_start + 90] + fixes[held]
    order += fixes[stay_start + 90 :]
    assert sorted(order, key=lambda f: f.time_ms or 0) == fixes
    engine = CheckinEngine(plan_of(point()))
    got = [e for _, e in run(engine, order)]
    assert got == expected  # one check-in, same arrival, departure, fixes, best fix
    assert engine.stats.late == 40
    assert engine.finish() == []


def test_duplicates_are_counted_and_ignored() -> None:
    tr = visit_track()
    expected = [e for _, e in run(CheckinEngine(plan_of(point())), tr.fixes)]
    engine = CheckinEngine(plan_of(point()))
    order: list[Fix] = []
    for i, f in enumerate(tr.fixes):
        order.append(f)
        if i % 10 == 5:
            order.append(f)  # the same fix again
            assert f.time_ms is not None
            lat, lon = offset(LAT0, LON0, 500.0, 0.0)  # and another with the same time
            order.append(Fix(time_ms=f.time_ms, lat=lat, lon=lon, accuracy_m=3.0))
    got = [e for _, e in run(engine, order)]
    assert got == expected
    dups = 2 * len(range(5, len(tr.fixes), 10))
    assert engine.stats.duplicates == dups
    assert engine.stats.fixes == len(tr.fixes) + dups


def short_visit_track() -> Track:
    tr = Track()
    tr.stand(3, FAR)
    tr.walk((FAR, 0.0), (0.0, 0.0))
    tr.stand(45, 1.0)
    tr.walk((0.0, 0.0), (FAR, 0.0))
    tr.stand(20, FAR)  # long enough for the exit (12 s) to close the visit before the end
    return tr


SHORT = short_visit_track().fixes
SHORT_EXPECTED = summary(run(CheckinEngine(plan_of(point())), SHORT))
# the fix whose arrival closes the visit when fed in order
SHORT_CLOSE = next(
    i for i, e in run(CheckinEngine(plan_of(point())), SHORT) if isinstance(e, CheckinEvent)
)
MAX_DELAY_S = 120


def delivered(fixes: Sequence[Fix], delays: Sequence[int], until: int | None) -> list[Fix]:
    """Fixes in the order they arrive when fix i is `delays[i]` seconds late.

    With `until`, late fixes dated before fix `until` all arrive before it.
    """
    cap = math.inf if until is None else (fixes[until].time_ms or 0) - 1
    keys = []
    for i, (f, d) in enumerate(zip(fixes, delays, strict=True)):
        t = f.time_ms or 0
        due = t + d * 1000 if i else t  # the first fix anchors the engine's history
        keys.append((min(due, cap) if until is not None and i < until else due, t))
    return [f for _, f in sorted(zip(keys, fixes, strict=True), key=lambda kf: kf[0])]


def test_short_visit_track_is_one_checkin() -> None:
    assert len(SHORT_EXPECTED) == 1
    arrival, departure = SHORT_EXPECTED[0][1:3]
    assert DWELL * 1000 <= departure - arrival < MAX_DELAY_S * 1000  # late fixes can cross it


DELAYS = st.lists(st.integers(0, MAX_DELAY_S), min_size=len(SHORT), max_size=len(SHORT))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(DELAYS)
def test_late_fixes_before_the_exit_give_the_same_checkins(delays: list[int]) -> None:
    """Up to MAX_DELAY_S late, all arriving before the visit's closing fix: same check-ins."""
    order = delivered(SHORT, delays, until=SHORT_CLOSE)
    engine = CheckinEngine(plan_of(point()))
    events = [e for _, e in run(engine, order)] + engine.finish()
    assert summary(events) == SHORT_EXPECTED
    assert len(checkins(events)) == 1
    assert engine.stats.too_late == 0


FIRST_INSIDE = SHORT.index(inside(SHORT, point())[0])
HELD_FIRST = [100 if i == FIRST_INSIDE else 0 for i in range(len(SHORT))]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@example(HELD_FIRST)
@given(DELAYS)
def test_any_delay_up_to_the_bound_gives_the_same_checkins(delays: list[int]) -> None:
    """Whatever arrives late, the stay gives exactly one check-in, of the same stay.

    A late fix that comes after the visit closed cannot change the check-in already
    emitted (a record cannot be taken back), so arrival and departure may differ from
    in-order delivery by the fixes that were held back; never a second check-in.
    """
    order = delivered(SHORT, delays, until=None)
    engine = CheckinEngine(plan_of(point()))
    events = [e for _, e in run(engine, order)] + engine.finish()
    got = summary(events)
    assert len(got) == 1
    (pid, arrive, depart, _), (pid0, arrive0, depart0, _) = got[0], SHORT_EXPECTED[0]
    assert pid == pid0
    assert arrive <= depart0 and arrive0 <= depart  # the same stay
    late_ms = max(delays, default=0) * 1000 + 1000
    assert abs(arrive - arrive0) <= late_ms and abs(depart - depart0) <= late_ms


def test_first_fix_of_a_stay_arriving_after_the_exit_is_not_a_second_checkin() -> None:
    order = delivered(SHORT, HELD_FIRST, until=None)
    held, close = order.index(SHORT[FIRST_INSIDE]), order.index(SHORT[SHORT_CLOSE])
    assert held > close  # it really comes after the fix that closes the visit
    events = [e for _, e in run(CheckinEngine(plan_of(point())), order)]
    assert len(checkins(events)) == 1


def test_late_fix_after_a_long_gap_does_not_repeat_a_checkin() -> None:
    tr = Track()
    tr.walk((100.0, 0.0), (0.0, 0.0))
    tr.stand(83)
    tr.walk((0.0, 0.0), (50.0, 0.0))  # the receiver then loses the sky (indoors) for 22 min
    engine = CheckinEngine(plan_of(point()))
    first = checkins(run(engine, tr.fixes))
    assert len(first) == 1
    tr.pause(1300)
    assert run(engine, tr.stand(3, 50.0)) == []
    lat, lon = offset(LAT0, LON0, 50.0, 0.0)
    late = Fix(time_ms=tr.t - 60_000, lat=lat, lon=lon, accuracy_m=3.0)  # buffered, in the gap
    assert checkins(engine.feed(late)) == []


# --------------------------------------------------------------------------- unusable fixes


@pytest.mark.parametrize(
    "change",
    [
        {"quality": Quality.ESTIMATED},
        {"quality": Quality.SIMULATION},
        {"quality": Quality.INVALID},
        {"quality": Quality.MANUAL},
        {"time_ms": None},
        {"accuracy_m": None},
        {"mode": FixMode.NO_FIX},
    ],
    ids=["estimated", "simulation", "invalid", "manual", "no-time", "no-accuracy", "no-fix"],
)
def test_unusable_fixes_are_ignored(change: dict[str, object]) -> None:
    tr = Track()
    tr.stand(120, 0.0)
    bad = [dataclasses.replace(f, **change) for f in tr.fixes]
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, bad) == []
    assert engine.finish() == []
    assert (engine.stats.fixes, engine.stats.ignored) == (120, 120)

    # nor are they evidence of absence: far away in the middle of a stay, they close nothing
    tr2 = Track()
    stay = tr2.stand(40, 1.0)
    far = tr2.stand(20, 3000.0)
    stay += tr2.stand(40, 1.0)
    fixes = stay[:40] + [dataclasses.replace(f, **change) for f in far] + stay[40:]
    engine = CheckinEngine(plan_of(point()))
    assert run(engine, fixes) == []
    events = engine.finish()
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, CheckinEvent)
    assert ev.fixes_inside == 80
    assert ev.verdict is Verdict.VISITED  # the 21 s hole is no gap: nothing usable was there
    assert engine.stats.ignored == 20


# --------------------------------------------------------------------------- agenda


W_START, W_END = T0 + 600_000, T0 + 1_200_000
GRACE_MS = int(MISSED_GRACE_S * 1000)


def item(pid: str = "A", order: int = 0, line: str = "L1") -> AgendaItem:
    return AgendaItem(line, pid, order, W_START, W_END)


def stay_at(start_ms: int, seconds: int, north: float = 0.0) -> list[Fix]:
    tr = Track(start_ms)
    tr.stand(seconds, north + 1.0)
    tr.stand(EXIT_FIXES, north + FAR)
    return tr.fixes


def test_checkin_inside_the_window_sets_the_line_and_advances_progress() -> None:
    a, b = point("A"), point("B", north=300.0)
    agenda = [item("A", 0), AgendaItem("L1", "B", 1, None, None)]
    engine = CheckinEngine(plan_of(a, b), agenda)
    assert engine.progress("L1") == (0, 2, "A")
    assert engine.progress("L2") == (0, 0, None)
    got = checkins(run(engine, stay_at(W_START + 10_000, 70)))
    assert [(e.point.id, e.line) for e in got] == [("A", "L1")]
    assert engine.progress("L1") == (1, 2, "B")
    got = checkins(run(engine, stay_at(W_START + 200_000, 70, north=300.0)))
    assert [(e.point.id, e.line) for e in got] == [("B", "L1")]
    assert engine.progress("L1") == (2, 2, None)
    # a second visit to A satisfies nothing more
    got = checkins(run(engine, stay_at(W_START + 400_000, 70)))
    assert [(e.point.id, e.line) for e in got] == [("A", None)]
    assert engine.tick(W_END + 10 * GRACE_MS) == []  # nothing missed


@pytest.mark.parametrize("how", ["tick", "finish"])
def test_window_closing_without_a_visit_is_missed_after_the_grace(how: str) -> None:
    p = point()
    engine = CheckinEngine(plan_of(p), [item()])
    assert engine.tick(W_END + GRACE_MS - 1) == []
    due = W_END + GRACE_MS
    events = engine.tick(due) if how == "tick" else engine.finish(now_ms=due)
    assert events == [MissedEvent(p, "L1", 0, W_START, W_END, due)]
    assert engine.tick(due + 3_600_000) == []  # reported once


def test_missed_is_reported_by_fixes_elsewhere() -> None:
    p = point()
    engine = CheckinEngine(plan_of(p), [item()])
    tr = Track(W_END - 10_000)
    tr.stand(100, 800.0)
    events = run(engine, tr.fixes)
    assert len(events) == 1
    index, ev = events[0]
    assert ev == MissedEvent(p, "L1", 0, W_START, W_END, W_END + GRACE_MS)
    assert tr.fixes[index].time_ms == W_END + GRACE_MS


def test_visit_still_open_at_the_window_end_is_not_missed() -> None:
    p = point()
    engine = CheckinEngine(plan_of(p), [item()])
    fixes = stay_at(W_END - 30_000, 30 + int(MISSED_GRACE_S) + 120)
    events = run(engine, fixes)
    assert of_kind(events, MissedEvent) == []
    got = checkins(events)
    assert [(e.line, e.arrival_ms) for e in got] == [("L1", W_END - 30_000)]
    assert engine.progress("L1") == (1, 1, None)
    assert engine.tick(W_END + 100 * GRACE_MS) == []
    assert engine.finish() == []


@pytest.mark.parametrize(
    "arrival_ms", [W_START - 200_000, W_END + 1_000], ids=["before-window", "after-window"]
)
def test_checkin_outside_the_window_does_not_satisfy_it(arrival_ms: int) -> None:
    p = point()
    engine = CheckinEngine(plan_of(p), [item()])
    events = run(engine, stay_at(arrival_ms, 70))
    events += [(0, e) for e in engine.tick(W_END + GRACE_MS + 200_000)]
    got = checkins(events)
    assert [(e.point.id, e.line) for e in got] == [("A", None)]
    missed = [e for _, e in of_kind(events, MissedEvent)]
    assert len(missed) == 1
    assert isinstance(missed[0], MissedEvent)
    assert (missed[0].point, missed[0].line) == (p, "L1")


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
    assert [e.point.id for e in checkins(events)] == ["A", "B"]
    (ia, ea), (ib, eb) = events
    assert isinstance(ea, CheckinEvent)
    assert isinstance(eb, CheckinEvent)
    assert ea.departure_ms < eb.arrival_ms
    assert ia < ib
    assert ea.verdict is eb.verdict is Verdict.VISITED


@dataclass
class _RefVisit:
    first: int
    last: int
    good_last: int
    distances: list[float]
    inside: int
    outside: int = 0


def reference(plan: Plan, fixes: Sequence[Fix]) -> list[tuple[str, int, int, int, Verdict]]:
    """Brute force over every point for every fix, good fixes only, no speed gates:
    (point, arrival, departure, fixes inside, verdict), sorted."""
    out = []
    state: dict[str, _RefVisit] = {}

    def close(p: Point, v: _RefVisit) -> None:
        s = sorted(v.distances)
        n = len(s)
        median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        if median > p.radius_m:
            return
        if v.good_last - v.first >= p.dwell_s * 1000 and n >= 3:
            out.append((p.id, v.first, v.good_last, v.inside, Verdict.VISITED))
        elif v.last - v.first >= p.dwell_s * 1000:
            out.append((p.id, v.first, v.last, v.inside, Verdict.UNCERTAIN))

    for fix in fixes:
        assert fix.time_ms is not None and fix.accuracy_m is not None
        t = fix.time_ms
        for p in plan.points:
            assert fix.accuracy_m <= p.radius_m * ACCURACY_FRACTION
            reach = p.radius_m + max(EXIT_MARGIN_M, 0.2 * p.radius_m)
            v = state.get(p.id)
            if v is None and abs(fix.lat - p.lat) * M_PER_DEG_LAT > p.radius_m + 1.0:
                continue  # only a shortcut: this fix cannot be inside p
            d = distance_m(fix.lat, fix.lon, p.lat, p.lon)
            if v is None:
                if d > p.radius_m:
                    continue
                v = state[p.id] = _RefVisit(t, t, t, [], 0)
            elif d > reach:
                v.outside += 1
                if v.outside >= EXIT_FIXES:
                    close(p, state.pop(p.id))
                continue
            v.last = t
            v.distances.append(d)
            if d <= p.radius_m:
                v.inside += 1
                v.outside = 0
                v.good_last = t
    for pid, v in state.items():
        close(plan.point(pid), v)
    return sorted(out)


def results(
    engine: CheckinEngine, fixes: Iterable[Fix]
) -> list[tuple[str, int, int, int, Verdict]]:
    events = checkins(run(engine, fixes)) + checkins(engine.finish())
    return sorted(
        (e.point.id, e.arrival_ms, e.departure_ms, e.fixes_inside, e.verdict) for e in events
    )


def test_600_point_grid_index_finds_every_point() -> None:
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

    got = results(CheckinEngine(plan), tr.fixes)
    assert got == reference(plan, tr.fixes)
    assert {pid for pid, *_ in got} == {p.id for p, _ in chosen}
    assert all(v is Verdict.VISITED for *_, v in got)


BIG_N = 100_000
BIG_HALF_M = 25_000.0


def big_plan(seed: int = 5) -> Plan:
    rng = random.Random(seed)
    pts = []
    for i in range(BIG_N):
        lat, lon = offset(
            LAT0, LON0, rng.uniform(-BIG_HALF_M, BIG_HALF_M), rng.uniform(-BIG_HALF_M, BIG_HALF_M)
        )
        pts.append(
            Point(f"Q{i:06d}", lat, lon, rng.uniform(15.0, 40.0), float(rng.randint(30, 90)))
        )
    return Plan(1, tuple(pts))


def test_100k_point_plan_equals_brute_force_near_the_walk() -> None:
    plan = big_plan()
    engine = CheckinEngine(plan)
    # the 600 points nearest a spot in the middle, and a walk among the nearest of them
    by_distance = sorted(plan.points, key=lambda p: distance_m(LAT0, LON0, p.lat, p.lon))
    subset = by_distance[:600]
    rim_m = distance_m(LAT0, LON0, subset[-1].lat, subset[-1].lon)
    rng = random.Random(7)
    pool = rng.sample(by_distance[:25], 8)
    targets = [pool.pop(0)]
    while pool:  # nearest-first, to keep the walk short
        last = targets[-1]
        targets.append(
            pool.pop(
                min(
                    range(len(pool)),
                    key=lambda k: distance_m(last.lat, last.lon, pool[k].lat, pool[k].lon),
                )
            )
        )
    tr = Track()

    def local(p: Point) -> tuple[float, float]:
        north = (p.lat - LAT0) * M_PER_DEG_LAT
        east = (p.lon - LON0) * M_PER_DEG_LAT * math.cos(math.radians(LAT0))
        return north, east

    here = (0.0, 0.0)
    tr.stand(3, *here)
    for p in targets:
        spot = local(p)
        spot = (
            spot[0] + rng.uniform(-0.3, 0.3) * p.radius_m,
            spot[1] + rng.uniform(-0.3, 0.3) * p.radius_m,
        )
        tr.walk(here, spot, speed=1.4)
        tr.stand(int(p.dwell_s) + 10, *spot)
        here = spot
    tr.walk(here, (0.0, 0.0), speed=1.4)
    tr.stand(EXIT_FIXES, 0.0, 0.0)
    # no point outside the subset is within reach of any fix of the walk
    reach = max(p.radius_m + max(EXIT_MARGIN_M, 0.2 * p.radius_m) for p in plan.points)
    assert max(distance_m(LAT0, LON0, f.lat, f.lon) for f in tr.fixes) + reach < rim_m

    got = results(engine, tr.fixes)
    assert got == reference(Plan(1, tuple(subset)), tr.fixes)
    assert got == results(CheckinEngine(Plan(1, tuple(subset))), tr.fixes)
    assert {p.id for p in targets} <= {pid for pid, *_ in got}


# --------------------------------------------------------------------------- end to end


SHIFT_MS = 3_600_000


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_simulated_shift_yields_the_walkers_visits(seed: int) -> None:
    plan = generate_district(seed)
    line = plan.lines[seed % len(plan.lines)]
    walker = Walker(f"dev-{seed}", plan, line, random.Random(seed), T0, T0 + SHIFT_MS)
    parser = NmeaParser()
    engine = CheckinEngine(plan)
    events: list[Event] = []
    now = T0
    while not walker.done and now < T0 + 2 * SHIFT_MS:
        for fix in parser.feed(walker.tick(now)):
            events += engine.feed(fix)
        now += 1000
    assert walker.done
    events += engine.finish()
    assert [e for e in events if not isinstance(e, CheckinEvent)] == []
    got = checkins(events)
    truth = walker.visits
    assert len(truth) >= 5
    assert parser.stats.bad_checksum == parser.stats.malformed == 0
    assert engine.stats.ignored == engine.stats.late == engine.stats.duplicates == 0
    assert [e.point.id for e in got] == [v.point_id for v in truth]
    prev_departure = T0
    for ev, visit in zip(got, truth, strict=True):
        p = plan.point(visit.point_id)
        assert ev.arrival_ms <= visit.arrival_ms
        assert ev.arrival_ms > prev_departure  # not before leaving the previous point
        assert ev.departure_ms >= visit.departure_ms - 5_000
        # walking away at >= 1 m/s from <= 2 m off centre, reported within 7 m of the truth
        assert ev.departure_ms <= visit.departure_ms + (p.radius_m + 9.0) * 1000
        assert ev.verdict is Verdict.VISITED
        assert not ev.suspect
        assert ev.dwell_s >= p.dwell_s
        assert ev.fixes_inside >= p.dwell_s
        assert ev.max_speed_mps <= 1.7  # the walker's pace, as its receiver reported it
        assert distance_m(ev.best_fix.lat, ev.best_fix.lon, p.lat, p.lon) <= p.radius_m
        prev_departure = visit.departure_ms
