"""The check-in gates at their exact limits (agent/checkin/visits.py, engine.py, motion.py),
found by the mutation benchmark (bench/mutation.py; docs/testing.md).

tests/test_engine.py holds each rule with values well inside or outside it; these hold the
limit itself, one step either side: what a patrol member standing at the edge of a rule gets.
"""

from __future__ import annotations

import pytest

from agent.checkin.engine import (
    HORIZON_S,
    MISSED_GRACE_S,
    CheckinEngine,
    CheckinEvent,
    Event,
    MissedEvent,
)
from agent.checkin.geo import offset
from agent.checkin.motion import QUARANTINE_S, SuspicionEvent, SuspicionKind
from agent.checkin.plan import AgendaItem, Line, Plan, Point
from agent.checkin.visits import EXIT_FIXES, EXIT_MARGIN_M, MAX_GAP_S, median
from contract.fix import Fix, FixMode
from contract.records import Verdict

T0 = 1_767_223_800_000
LAT0, LON0 = 29.265, 106.255


def point(radius: float = 25.0, dwell: float = 60.0, **kw: object) -> Point:
    return Point("A", LAT0, LON0, radius_m=radius, dwell_s=dwell, **kw)  # type: ignore[arg-type]


def plan_of(p: Point) -> Plan:
    return Plan(1, (p,), (Line("L1", (p.id,)),))


class Track:
    """Fixes at 1 Hz, positions in metres north of the point."""

    def __init__(self) -> None:
        self.t = T0
        self.fixes: list[Fix] = []

    def at(self, north: float, doppler: float = 0.0, accuracy: float = 3.0) -> None:
        lat, lon = offset(LAT0, LON0, north, 0.0)
        self.fixes.append(
            Fix(time_ms=self.t, lat=lat, lon=lon, accuracy_m=accuracy, hdop=accuracy / 3,
                mode=FixMode.FIX_3D, satellites=9, speed_mps=doppler)
        )  # fmt: skip
        self.t += 1000

    def stand(self, seconds: int, north: float, accuracy: float = 3.0) -> None:
        for _ in range(seconds):
            self.at(north, accuracy=accuracy)

    def walk(self, a: float, b: float, speed: float, doppler: float) -> None:
        """From a to b metres north at `speed`, reporting `doppler` as its own speed."""
        steps = round(abs(b - a) / speed)
        for k in range(steps):
            self.at(a + (b - a) * k / steps, doppler)

    def pause(self, seconds: int) -> None:
        self.t += seconds * 1000


def events_of(p: Point, fixes: list[Fix]) -> list[Event]:
    engine = CheckinEngine(plan_of(p))
    events: list[Event] = []
    for f in fixes:
        events += engine.feed(f)
    return events + engine.finish()


def checkins(p: Point, fixes: list[Fix]) -> list[CheckinEvent]:
    return [e for e in events_of(p, fixes) if isinstance(e, CheckinEvent)]


def test_a_gap_of_exactly_max_gap_s_keeps_the_visit_visited_one_second_more_does_not() -> None:
    gap = int(MAX_GAP_S)
    for gap_s, verdict in ((gap, Verdict.VISITED), (gap + 1, Verdict.UNCERTAIN)):
        tr = Track()
        tr.stand(5, 36.0)  # outside radius and margin
        tr.stand(2, 2.0)  # two fixes before the silence: no evidence on their own
        tr.pause(gap_s - 1)  # the next fix comes gap_s after the last
        tr.stand(40, 2.0)
        tr.stand(EXIT_FIXES, 36.0)
        (ev,) = checkins(point(), tr.fixes)
        assert (ev.verdict, ev.suspect) == (verdict, False), gap_s


def test_a_large_point_keeps_a_margin_of_a_fifth_of_its_radius() -> None:
    """Radius 100 m: the margin is 20 m, not EXIT_MARGIN_M; fixes 10 m beyond the edge do
    not end the visit, fixes 25 m beyond it do."""
    p = point(radius=100.0)
    assert 0.2 * p.radius_m > EXIT_MARGIN_M + 10
    tr = Track()
    tr.stand(5, 130.0)
    tr.stand(70, 95.0)
    tr.stand(EXIT_FIXES + 5, 110.0)  # in the margin: the visit stays open
    tr.stand(10, 95.0)
    tr.stand(EXIT_FIXES, 125.0)  # beyond it: the visit ends
    (ev,) = checkins(p, tr.fixes)
    assert ev.verdict is Verdict.VISITED
    assert ev.dwell_s == 70 + EXIT_FIXES + 5 + 10 - 1  # first to last fix inside


def test_after_a_restart_the_items_already_settled_are_neither_satisfied_nor_missed() -> None:
    p = point()
    window = (T0, T0 + 600_000)
    a1 = AgendaItem("L1", "A", 0, *window)
    a2 = AgendaItem("L2", "A", 0, *window)
    engine = CheckinEngine(plan_of(p))
    engine.set_agenda([a1, a2], done=[a1])  # a1 checked in before the restart
    tr = Track()
    tr.stand(70, 2.0)
    tr.stand(EXIT_FIXES, 36.0)
    got: list[Event] = []
    for f in tr.fixes:
        got += engine.feed(f)
    (ev,) = [e for e in got if isinstance(e, CheckinEvent)]
    assert ev.item == a2  # the visit satisfies the item still open, not the settled one
    assert engine.tick(window[1] + int(MISSED_GRACE_S * 1000) + 1) == []  # nothing missed
    # positive control: with nothing settled, the same day reports the other item missed
    engine = CheckinEngine(plan_of(p))
    engine.set_agenda([a1, a2], done=[])
    for f in tr.fixes:
        engine.feed(f)
    late = engine.tick(window[1] + int(MISSED_GRACE_S * 1000) + 1)
    assert [(e.line, e.point.id) for e in late if isinstance(e, MissedEvent)] == [("L2", "A")]


def test_suspicions_name_their_figure_in_the_record_s_detail() -> None:
    """The detail is key 17 of the suspicion record the center keeps: it must say how far
    behind a late fix was, and how fast a jump would have been."""
    tr = Track()
    tr.stand(700, 300.0)
    late = Track()
    late.t = T0 + 10_000  # the newest fix is at T0 + 699 s: 689 s behind it
    late.stand(1, 300.0)
    tr.fixes.append(late.fixes[0])
    tr.at(300.0)
    tr.at(300.0 + 1_000.0)  # a kilometre in a second
    found = [e for e in events_of(point(), tr.fixes) if isinstance(e, SuspicionEvent)]
    assert [(e.kind, e.detail) for e in found] == [
        (SuspicionKind.TIME_BACKWARDS, "689 s behind the newest fix"),
        (SuspicionKind.JUMP, "implied speed 1000 m/s"),
    ]


def test_after_a_drag_a_receiver_saying_still_stays_in_quarantine() -> None:
    """Positions that ran at 5 m/s while Doppler said still: whatever the receiver reports as
    standing afterwards may be the spoofer's, so a visit opened long after the suspicion, on
    fixes whose Doppler still says still, is suspect; once Doppler says moving, it is not."""
    for doppler_after, suspect in ((0.0, True), (0.8, False)):
        tr = Track()
        tr.stand(5, 700.0)
        tr.walk(700.0, 300.0, speed=5.0, doppler=0.0)  # dragged: MOTION_MISMATCH
        dragged_until = tr.t
        tr.walk(300.0, 2.0, speed=0.8, doppler=doppler_after)  # ~6 min, too slow to be one
        tr.stand(70, 2.0)
        tr.stand(EXIT_FIXES, 36.0)
        events = events_of(point(), tr.fixes)
        found = [e for e in events if isinstance(e, SuspicionEvent)]
        assert found
        assert {e.kind for e in found} == {SuspicionKind.MOTION_MISMATCH}
        last = max(e.time_ms for e in found)
        assert last < dragged_until + 90_000  # raised by the drag, not by the slow walk
        (ev,) = [e for e in events if isinstance(e, CheckinEvent)]
        assert ev.arrival_ms - last > 2 * QUARANTINE_S * 1000  # long after it
        assert ev.suspect is suspect, doppler_after


def visit_with_dopplers(p: Point, dopplers: list[float]) -> list[CheckinEvent]:
    tr = Track()
    tr.stand(3, 36.0)
    for v in dopplers:
        tr.at(2.0, doppler=v)
    tr.stand(EXIT_FIXES, 36.0)
    return checkins(p, tr.fixes)


def test_the_speed_gate_takes_the_90th_percentile_of_the_visit_s_speeds() -> None:
    """60 fixes: the 90th percentile is the 54th slowest. Five fast fixes do not make a
    drive-by, seven do: a gate on the maximum, or on a rank one off, says otherwise."""
    p = point(dwell=50.0, max_speed_mps=2.0)
    slow, fast = 0.3, 3.0
    assert len(visit_with_dopplers(p, [slow] * 55 + [fast] * 5)) == 1
    assert len(visit_with_dopplers(p, [slow] * 54 + [fast] * 6)) == 1
    assert visit_with_dopplers(p, [slow] * 53 + [fast] * 7) == []


def test_a_short_visit_s_90th_percentile_is_its_fastest_fix() -> None:
    p = point(dwell=3.0, max_speed_mps=2.0)
    assert visit_with_dopplers(p, [0.3] * 4 + [3.0]) == []  # 5 fixes: the fastest decides
    assert len(visit_with_dopplers(p, [0.3] * 5)) == 1  # positive control


def _b() -> Point:
    lat, lon = offset(LAT0, LON0, 1_000.0, 0.0)
    return Point("B", lat, lon, radius_m=25.0, dwell_s=60.0)


def two_point_engine(agenda: list[AgendaItem]) -> CheckinEngine:
    a, b = point(), _b()
    return CheckinEngine(Plan(1, (a, b), (Line("L1", ("A",)), Line("L2", ("B",)))), agenda)


def feed(engine: CheckinEngine, fixes: list[Fix]) -> list[Event]:
    out: list[Event] = []
    for f in fixes:
        out += engine.feed(f)
    return out


def test_arriving_exactly_at_a_window_s_start_or_end_satisfies_it() -> None:
    arrival = T0 + 3_000  # the first fix inside (after three outside)
    for start, end in ((arrival, arrival + 600_000), (arrival - 600_000, arrival)):
        item = AgendaItem("L1", "A", 0, start, end)
        engine = CheckinEngine(plan_of(point()), [item])
        tr = Track()
        tr.stand(3, 36.0)
        tr.stand(70, 2.0)
        tr.stand(EXIT_FIXES, 36.0)
        (ev,) = [e for e in feed(engine, tr.fixes) if isinstance(e, CheckinEvent)]
        assert (ev.arrival_ms, ev.item) == (arrival, item), (start, end)


def test_a_visit_begun_at_the_window_s_end_is_not_missed_and_other_lines_still_are() -> None:
    end = T0 + 3_000  # the visit to A begins on its window's last millisecond
    grace = int(MISSED_GRACE_S * 1000)
    on_a = AgendaItem("L1", "A", 0, T0 - 600_000, end)
    on_b = AgendaItem("L2", "B", 0, T0 - 600_000, end)  # nobody goes to B
    engine = two_point_engine([on_a, on_b])
    tr = Track()
    tr.stand(3, 36.0)
    tr.stand(200, 2.0)  # still at A well past the grace
    got = feed(engine, tr.fixes)
    missed = [e for e in got if isinstance(e, MissedEvent)]
    assert [(e.point.id, e.time_ms) for e in missed] == [("B", end + grace)]  # on time
    tr.stand(EXIT_FIXES, 36.0)
    later = feed(engine, tr.fixes[-EXIT_FIXES:])
    (ev,) = [e for e in later if isinstance(e, CheckinEvent)]
    assert ev.item == on_a  # the visit that was open satisfied its window


def test_finish_without_a_time_reports_a_window_missed_by_a_visit_too_short() -> None:
    """A visit open at shutdown that never reached its dwell: finish() closes it (no
    check-in) and, by the last fix's time, its window closed unmet: missed."""
    grace = int(MISSED_GRACE_S * 1000)
    p = point(dwell=300.0)
    item = AgendaItem("L1", "A", 0, T0 - 600_000, T0 + 10_000)
    engine = CheckinEngine(plan_of(p), [item])
    tr = Track()
    tr.stand(3, 36.0)
    tr.stand(100, 2.0)  # 100 s at A: short of the 300 s dwell, past the window and grace
    assert tr.fixes[-1].time_ms is not None
    assert tr.fixes[-1].time_ms > T0 + 10_000 + grace
    assert feed(engine, tr.fixes) == []  # open at A: not missed while it may still count
    (missed,) = engine.finish()
    assert isinstance(missed, MissedEvent)
    assert (missed.point.id, missed.time_ms) == ("A", tr.fixes[-1].time_ms)


@pytest.mark.parametrize(
    ("xs", "mid"),
    [
        ([3.0], 3.0),
        ([3.0, 1.0, 2.0], 2.0),
        ([5.0, 1.0, 4.0, 2.0, 3.0], 3.0),
        ([4.0, 1.0, 3.0, 2.0], 2.5),
        ([6, 1, 5, 2, 4, 3], 3.5),
    ],
)
def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(
    xs: list[float], mid: float
) -> None:
    assert median(xs) == mid


def test_a_speed_exactly_at_the_gate_is_no_drive_by() -> None:
    p = point(dwell=50.0, max_speed_mps=2.0)
    assert len(visit_with_dopplers(p, [2.0] * 60)) == 1
    assert visit_with_dopplers(p, [2.01] * 60) == []  # positive control


def test_three_good_fixes_spanning_the_dwell_are_a_visit() -> None:
    """The fewest good fixes a `visited` check-in rests on is three, and no fewer than the
    poor ones beside them."""
    for good, poor, verdict in ((3, 0, Verdict.VISITED), (2, 0, Verdict.UNCERTAIN),
                                (4, 4, Verdict.VISITED), (4, 5, Verdict.UNCERTAIN)):  # fmt: skip
        tr = Track()
        tr.stand(3, 36.0)
        for k in range(max(good, poor)):
            if k < good:
                tr.at(2.0)
            if k < poor:
                tr.at(2.0, accuracy=20.0)  # worse than 3/4 of the radius: poor
            tr.pause(60 // max(good, poor))
        tr.stand(EXIT_FIXES, 36.0)
        (ev,) = checkins(point(dwell=30.0), tr.fixes)
        assert ev.verdict is verdict, (good, poor)


def test_poor_fixes_spanning_exactly_the_dwell_are_an_uncertain_check_in() -> None:
    tr = Track()
    tr.stand(3, 36.0)
    tr.stand(61, 2.0, accuracy=20.0)  # 60 s from first to last
    tr.stand(EXIT_FIXES, 36.0, accuracy=3.0)
    (ev,) = checkins(point(), tr.fixes)
    assert (ev.verdict, ev.dwell_s) == (Verdict.UNCERTAIN, 60.0)


def test_a_gap_a_tenth_of_a_second_over_max_gap_s_makes_the_visit_uncertain() -> None:
    tr = Track()
    tr.stand(3, 36.0)
    tr.stand(2, 2.0)  # two fixes before the silence: no evidence on their own
    tr.t += int(MAX_GAP_S * 1000) + 100 - 1000  # the next fix 120.1 s after the last
    tr.stand(40, 2.0)
    tr.stand(EXIT_FIXES, 36.0)
    (ev,) = checkins(point(), tr.fixes)
    assert ev.verdict is Verdict.UNCERTAIN


def test_a_fix_exactly_the_horizon_behind_is_no_suspicion_one_ms_more_is() -> None:
    horizon = int(HORIZON_S * 1000)
    for behind, raised in ((horizon, False), (horizon + 1, True)):
        tr = Track()
        tr.stand(50, 300.0)
        tr.pause(200)  # no fix of its own at the instant the late one claims
        tr.stand(500, 300.0)
        newest = tr.fixes[-1].time_ms
        assert newest is not None
        late = Track()
        late.t = newest - behind
        late.stand(1, 300.0)
        found = [
            e
            for e in events_of(point(), [*tr.fixes, late.fixes[0]])
            if isinstance(e, SuspicionEvent)
        ]
        assert [e.kind for e in found] == ([SuspicionKind.TIME_BACKWARDS] if raised else [])


def no_doppler(t_ms: int, north: float) -> Fix:
    """A fix from a receiver that gives no speed of its own, `north` metres from the point."""
    lat, lon = offset(LAT0, LON0, north, 0.0)
    return Fix(time_ms=t_ms, lat=lat, lon=lon, accuracy_m=3.0, hdop=1.0, mode=FixMode.FIX_3D,
               satellites=9, speed_mps=None)  # fmt: skip


def test_without_doppler_the_speed_is_taken_from_the_fix_a_second_or_more_before() -> None:
    """docs/engine.md: the speed is the receiver's Doppler speed, else the speed implied by
    the fix at least a second before; a check-in's max speed is the visit's fastest."""
    # 4 m in the 2 s between the first two fixes (2 m/s), then standing still 70 s
    fixes = [no_doppler(T0, 0.0), no_doppler(T0 + 2000, 4.0)]
    fixes += [no_doppler(T0 + 2000 + k * 1000, 4.0) for k in range(1, 71)]
    (ev,) = checkins(point(), fixes)
    assert ev.max_speed_mps == pytest.approx(2.0, rel=1e-6)
    # standing still from the first fix on: nothing moved, so no speed at all
    (still,) = checkins(point(), [no_doppler(T0 + k * 1000, 4.0) for k in range(72)])
    assert still.max_speed_mps == 0.0


def test_items_settled_by_a_new_agenda_stay_settled_through_a_late_fix_s_replay() -> None:
    """A task bundle arriving mid-shift with one item already done, then a receiver
    replaying its buffer (a late fix): the replay starts from a checkpoint taken before the
    new agenda, and still neither reports nor satisfies the settled item."""
    p = point()
    window = (T0, T0 + 300_000)
    a1, a2 = AgendaItem("L1", "A", 0, *window), AgendaItem("L2", "A", 0, *window)
    engine = CheckinEngine(plan_of(p))
    far = [no_doppler(T0 + k * 1000, 500.0) for k in range(0, 401, 2)]  # every 2 s, away
    got: list[Event] = []
    for f in far[:100]:  # 200 s of fixes: checkpoints every 30 s
        got += engine.feed(f)
    engine.set_agenda([a1, a2], done=[a1])
    got += engine.feed(no_doppler(T0 + 101_000, 500.0))  # late: between two fixes
    assert engine.stats.late == 1
    for f in far[100:]:
        got += engine.feed(f)
    missed = [(e.line, e.point.id) for e in got if isinstance(e, MissedEvent)]
    assert missed == [("L2", "A")]  # past the window and its grace: only the open item


def test_a_jump_away_from_an_open_visit_leaves_it_uncertain_and_suspect() -> None:
    """docs/engine.md: after any suspicion, visits open within the next 30 s are at most
    uncertain and marked suspect; here the visit is open when the receiver jumps 1 km away
    and stays there until the visit ends."""
    cases = ((36.0, Verdict.VISITED, False), (1_000.0, Verdict.UNCERTAIN, True))
    for away, verdict, suspect in cases:
        tr = Track()
        tr.stand(70, 2.0)
        tr.stand(EXIT_FIXES, away)  # 34 m in a second is a walk; 998 m is a jump
        (ev,) = checkins(point(), tr.fixes)
        assert (ev.verdict, ev.suspect) == (verdict, suspect), away


@pytest.mark.parametrize("north, east", [(20.0, 0.0), (-20.0, 0.0), (0.0, 20.0), (0.0, -20.0)])
def test_a_point_is_found_from_every_side_wherever_it_lies(north: float, east: float) -> None:
    """Standing 20 m from a point (radius 25 m), to its north, south, east or west, is a
    visit, for points placed every 10 m across 400 m of longitude: wherever the point
    falls in the engine's spatial index, a fix on any side of it finds it."""
    for k in range(40):
        lat, lon = offset(LAT0, LON0, 0.0, 10.0 * k)
        p = Point("A", lat, lon, radius_m=25.0, dwell_s=60.0)
        flat, flon = offset(lat, lon, north, east)
        fixes = [
            Fix(time_ms=T0 + s * 1000, lat=flat, lon=flon, accuracy_m=3.0, hdop=1.0,
                mode=FixMode.FIX_3D, satellites=9, speed_mps=0.0)
            for s in range(70)
        ]  # fmt: skip
        (ev,) = checkins(p, fixes)
        assert ev.verdict is Verdict.VISITED, k


def test_a_late_fix_at_the_oldest_checkpoint_leaves_the_history_for_the_next_late_fix() -> None:
    """A fix stamped exactly at the oldest state the engine keeps is too late (that state
    already holds a fix of that time); it must not empty the checkpoints, so a later late
    fix inside the horizon is still replayed."""
    tr = Track()
    tr.stand(691, 200.0)  # checkpoints every 30 s; the oldest kept is T0 + 90 s
    engine = CheckinEngine(plan_of(point()))
    for f in tr.fixes:
        engine.feed(f)
    lat, lon = offset(LAT0, LON0, 200.0, 0.0)

    def fix(s: float) -> Fix:
        return Fix(time_ms=T0 + int(s * 1000), lat=lat, lon=lon, accuracy_m=3.0, hdop=1.0,
                   mode=FixMode.FIX_3D, satellites=9, speed_mps=0.0)  # fmt: skip

    assert engine.feed(fix(90)) == []
    assert (engine.stats.too_late, engine.stats.late) == (1, 0)
    engine.feed(fix(600.5))  # inside the horizon, between two fixes: replayed
    assert (engine.stats.too_late, engine.stats.late, engine.stats.replays) == (1, 1, 1)
