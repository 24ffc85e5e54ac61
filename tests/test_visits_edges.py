"""The visit rules' statistics against plain oracles: a weighted median or percentile is the
same statistic over a list in which each value is repeated for its weight, and the bias
allowance is the median of what each fix's claimed accuracy may hide (docs/engine.md,
"Visits and verdicts"). Written to kill the mutants bench/mutation.py found alive in
agent/checkin/visits.py."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checkin.engine import CheckinEngine, CheckinEvent
from agent.checkin.geo import M_PER_DEG_LAT, distance_m
from agent.checkin.plan import Line, Plan, Point
from agent.checkin.visits import (
    BIAS_PER_GST_M,
    BIAS_PER_HDOP_M,
    EXIT_S,
    MAX_GAP_S,
    bias_allowance,
    weighted_median,
    weighted_p90,
)
from contract.fix import Fix, FixMode
from contract.records import Verdict

VALUES = st.lists(
    st.tuples(st.integers(-1000, 1000).map(lambda n: n / 4), st.integers(1, 6)),
    min_size=1,
    max_size=12,
)


def expanded(pairs: list[tuple[float, int]]) -> list[float]:
    """Each value repeated for its weight."""
    return [x for x, w in pairs for _ in range(w)]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(VALUES)
def test_the_weighted_median_is_the_median_of_the_repeated_values(
    pairs: list[tuple[float, int]],
) -> None:
    xs, ws = [x for x, _ in pairs], [w for _, w in pairs]
    assert weighted_median(xs, ws) == statistics.median(expanded(pairs))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(VALUES)
def test_the_weighted_p90_is_the_ceil_nine_tenths_smallest_of_the_repeated_values(
    pairs: list[tuple[float, int]],
) -> None:
    xs, ws = [x for x, _ in pairs], [w for _, w in pairs]
    flat = sorted(expanded(pairs))
    assert weighted_p90(xs, ws) == flat[math.ceil(0.9 * len(flat)) - 1]


def test_weighted_statistics_by_hand() -> None:
    # a value standing for most of the time outweighs several brief ones
    assert weighted_median([1.0, 2.0, 3.0, 50.0], [1, 1, 1, 10]) == 50.0
    assert weighted_median([50.0, 1.0], [1, 1]) == 25.5  # even total: halfway
    assert weighted_median([3.0, 1.0, 2.0], [2, 1, 1]) == 2.5
    assert weighted_median([7.0], [1000]) == 7.0
    assert math.isnan(weighted_median([], []))
    assert weighted_p90([5.0, 1.0], [1, 9]) == 1.0  # 90 % of the weight at or below 1
    assert weighted_p90([5.0, 1.0], [2, 8]) == 5.0
    assert weighted_p90([4.0, 3.0, 2.0, 1.0], [1, 1, 1, 1]) == 4.0  # ceil(3.6) = 4th
    assert weighted_p90([], []) == 0.0


def fix(accuracy: float | None, gst: bool = False) -> Fix:
    return Fix(1_000, 29.5, 106.5, accuracy_m=accuracy, accuracy_from_gst=gst)


def test_the_bias_allowance_is_the_median_of_what_each_claim_may_hide() -> None:
    assert BIAS_PER_HDOP_M > BIAS_PER_GST_M  # HDOP cannot see a facade's reflection; GST can
    assert bias_allowance([fix(6.0)]) == 6.0 * BIAS_PER_HDOP_M
    assert bias_allowance([fix(6.0, gst=True)]) == 6.0 * BIAS_PER_GST_M
    hdop = [fix(a) for a in (2.0, 10.0, 4.0)]
    assert bias_allowance(hdop) == 4.0 * BIAS_PER_HDOP_M  # the median, not the mean or max
    mixed = [fix(8.0), fix(8.0, gst=True)]
    assert bias_allowance(mixed) == (8.0 * BIAS_PER_HDOP_M + 8.0 * BIAS_PER_GST_M) / 2
    assert bias_allowance([fix(None), fix(None), fix(4.0)]) == 0.0  # no claim hides nothing


# -- the visit rules through the engine, at their exact limits -------------------------------
#
# Each track below is laid by hand along the meridian through a point at (0, 0), where a
# distance of exactly 12.0 or 15.0 m can be laid out (`exactly`), so that a limit of the
# documented rule is met exactly, not nearly, and one step beyond it is the next latitude.
# Fixes carry no Doppler speed (no drag check applies) and claim 3 m (half of it, 1.5 m, is
# the error budget's allowance) or 6 m (allowance 3 m) from HDOP; 20 m is poor for a 15 m
# point (worse than 3/4 of its radius).

T0 = 1_767_225_600_000
RADIUS = 15.0


def exactly(metres: float, base: float = 0.0) -> float:
    """The latitude north of `base` (on the meridian of longitude 0) that distance_m puts
    exactly `metres` from it, to the last bit."""
    up = down = base + metres / M_PER_DEG_LAT
    for _ in range(10_000):
        for lat in (up, down):
            if distance_m(base, 0.0, lat, 0.0) == metres:
                return lat
        up, down = math.nextafter(up, 90.0), math.nextafter(down, -90.0)
    raise AssertionError(f"no latitude lies exactly {metres} m from {base}")


def beyond(lat: float, base: float = 0.0) -> float:
    """The nearest latitude north of `lat` that distance_m puts farther from `base`."""
    d = distance_m(base, 0.0, lat, 0.0)
    while distance_m(base, 0.0, lat, 0.0) == d:
        lat = math.nextafter(lat, 90.0)
    return lat


AWAY = exactly(60.0)  # beyond any 15 m point's radius and margin


def at(s: float, lat: float, accuracy: float = 3.0, alt: float | None = None) -> Fix:
    return Fix(time_ms=T0 + round(s * 1000), lat=lat, lon=0.0, accuracy_m=accuracy,
               hdop=accuracy / 3, alt_m=alt, mode=FixMode.FIX_3D, satellites=9)  # fmt: skip


def span(first: float, last: float, lat: float, hz: int = 1, accuracy: float = 3.0) -> list[Fix]:
    """Fixes at `lat` from `first` to `last` seconds (both included) at `hz`."""
    n = round((last - first) * hz)
    return [at(first + k / hz, lat, accuracy) for k in range(n + 1)]


def approach(hz: int = 1) -> list[Fix]:
    """Three seconds away from the point first: the visit's first fix then stands for the
    time since the one before (1/hz s), as any fix in a walk does."""
    return span(0.0, 3.0 - 1 / hz, AWAY, hz)


def point_at_origin(dwell: float = 60.0, **kw: object) -> Point:
    return Point("E", 0.0, 0.0, radius_m=RADIUS, dwell_s=dwell, **kw)  # type: ignore[arg-type]


def run(p: Point, fixes: list[Fix]) -> list[CheckinEvent]:
    engine = CheckinEngine(Plan(1, (p,), (Line("L1", (p.id,)),)))
    events = [e for f in fixes for e in engine.feed(f)] + engine.finish()
    return [e for e in events if isinstance(e, CheckinEvent)]


def outcome(p: Point, fixes: list[Fix]) -> list[tuple[Verdict, float, float]]:
    """Each check-in's verdict, arrival and departure, in seconds after T0."""
    return [
        (e.verdict, (e.arrival_ms - T0) / 1000, (e.departure_ms - T0) / 1000) for e in run(p, fixes)
    ]


@pytest.mark.parametrize("hz", [1, 10])
def test_a_stay_inside_by_exactly_the_error_budget_is_visited(hz: int) -> None:
    """At 12 m with 6 m claimed (allowance 3 m), a 15 m point holds the stay even were the
    receiver off towards it: `visited`. One step farther, it is inside only were the
    receiver off the other way: `uncertain`."""
    for lat, verdict in (
        (exactly(12.0), Verdict.VISITED),
        (beyond(exactly(12.0)), Verdict.UNCERTAIN),
    ):
        fixes = approach(hz) + span(3.0, 63.0, lat, hz, accuracy=6.0)
        assert outcome(point_at_origin(), fixes) == [(verdict, 3.0, 63.0)]


@pytest.mark.parametrize("hz", [1, 10])
def test_a_stay_outside_by_exactly_the_allowance_is_uncertain_one_step_more_is_nothing(
    hz: int,
) -> None:
    """A fix at the centre opens the visit; then 60 s at about 18 m, claiming twice what
    lies beyond the radius (so that the allowance, half the claim, reaches exactly to it):
    inside were the receiver off by its allowance away from the point, so `uncertain`. One step
    farther, not even that: no check-in."""
    lat = 18.0 / M_PER_DEG_LAT  # about 18 m north: no latitude is exactly 18.0 m
    claimed = 2 * (distance_m(0.0, 0.0, lat, 0.0) - RADIUS)  # the allowance: to the radius
    for north, expected in ((lat, [(Verdict.UNCERTAIN, 3.0, 63.0)]), (beyond(lat), [])):
        fixes = [
            *approach(hz),
            at(3.0, 0.0, claimed),
            *span(3.0 + 1 / hz, 63.0, north, hz, claimed),
        ]
        assert outcome(point_at_origin(), fixes) == expected


def test_poor_fixes_exactly_at_the_radius_are_an_uncertain_visit() -> None:
    """A fix exactly at the radius is inside: poor fixes there for the dwell are a visit
    for a person to review. One step beyond, no fix is inside and there is no visit."""
    for lat, expected in (
        (exactly(RADIUS), [(Verdict.UNCERTAIN, 3.0, 63.0)]),
        (beyond(exactly(RADIUS)), []),
    ):
        fixes = approach() + span(3.0, 63.0, lat, accuracy=20.0)
        assert outcome(point_at_origin(), fixes) == expected


def test_good_fixes_short_of_the_dwell_beside_poor_ones_far_away_are_no_check_in() -> None:
    """Good fixes at 12 m (inside by exactly the allowance) for 9 s, then poor ones at 40 m
    for 10 s: the good ones do not span the 10 s dwell, and the median of all is outside,
    so no check-in. Good fixes spanning the 10 s are `visited`."""
    p = point_at_origin(dwell=10.0)
    inside = exactly(12.0)
    for good_last, expected in ((12.0, []), (13.0, [(Verdict.VISITED, 3.0, 13.0)])):
        fixes = (
            approach()
            + span(3.0, good_last, inside, accuracy=6.0)
            + span(good_last + 1, good_last + 10, exactly(40.0), accuracy=20.0)
        )
        assert outcome(p, fixes) == expected


@pytest.mark.parametrize("hz", [1, 5, 10])
def test_a_stay_at_the_edge_for_exactly_the_dwell_is_uncertain(hz: int) -> None:
    """A fix at the centre, then good fixes 16 m out, 3 m claimed: inside only were the
    receiver off by its allowance (1.5 m) away from the point. For exactly the 60 s dwell
    from first to last fix, `uncertain`; 1/hz s short, nothing."""
    edge = exactly(16.0)
    for last, expected in (
        (63.0, [(Verdict.UNCERTAIN, 3.0, 63.0)]),
        (63.0 - 1 / hz, []),
    ):
        fixes = [*approach(hz), at(3.0, 0.0), *span(3.0 + 1 / hz, last, edge, hz)]
        assert outcome(point_at_origin(), fixes) == expected


def test_fixes_exactly_at_radius_plus_margin_do_not_end_a_visit() -> None:
    """A 15 m point's margin is 5 m: 12 s of good fixes at exactly 20 m are not beyond it,
    so the person who comes back to the centre is still on the same visit; 12 s one step
    farther end it, and what follows is too short to be a check-in."""
    for lat, departure in ((exactly(20.0), 102.0), (beyond(exactly(20.0)), 63.0)):
        fixes = (
            approach()
            + span(3.0, 63.0, 0.0)
            + span(64.0, 75.0, lat)  # 12 fixes: 12 s
            + span(76.0, 102.0, 0.0)
            + span(103.0, 114.0, AWAY)
        )
        assert outcome(point_at_origin(), fixes) == [(Verdict.VISITED, 3.0, departure)]


@pytest.mark.parametrize("hz", [1, 5, 10])
def test_a_visit_ends_when_the_fixes_beyond_the_margin_stand_for_twelve_seconds_not_sooner(
    hz: int,
) -> None:
    """After a stay, fixes far away, the first of them 1 ms short of a step after the last
    fix inside: the check-in comes with the first fix at which the fixes away stand for
    EXIT_S (each for the time since the one before, at most a second), not one before."""
    step_ms = 1000 // hz
    stay = approach(hz) + span(3.0, 63.0, 0.0, hz)
    last_in = stay[-1].time_ms
    assert last_in is not None
    away = [at((last_in - T0 + step_ms - 1 + k * step_ms) / 1000, AWAY) for k in range(15 * hz)]
    stood, expected_at, before = 0, None, last_in
    for k, f in enumerate(away):
        assert f.time_ms is not None
        stood += min(f.time_ms - before, 1000)
        before = f.time_ms
        if stood >= EXIT_S * 1000:
            expected_at = k
            break
    assert expected_at is not None and stood == EXIT_S * 1000 - 1 + step_ms
    engine = CheckinEngine(Plan(1, (point_at_origin(),), (Line("L1", ("E",)),)))
    for f in stay:
        assert engine.feed(f) == []
    emitted = [
        k for k, f in enumerate(away) if any(isinstance(e, CheckinEvent) for e in engine.feed(f))
    ]
    assert emitted == [expected_at]


def test_an_aerial_point_with_a_floor_and_no_ceiling_counts_any_height_above_it() -> None:
    p = point_at_origin(alt_min_m=100.0)
    for alt, expected in ((150.0, [(Verdict.VISITED, 3.0, 63.0)]), (50.0, [])):
        fixes = approach() + [at(3.0 + k, 0.0, alt=alt) for k in range(61)]
        assert outcome(p, fixes) == expected


# -- a long silence: each side's evidence at its limits --------------------------------------

SILENCE_S = MAX_GAP_S + 30


@pytest.mark.parametrize("hz", [1, 5, 10])
@pytest.mark.parametrize(("poor_steps", "proves"), [(0, True), (1, False)])
def test_a_side_proves_the_stay_when_its_good_fixes_stand_for_as_long_as_its_poor_ones(
    hz: int, poor_steps: int, proves: bool
) -> None:
    """Before the silence, 5 s of good fixes at the centre and then poor ones there for as
    long (or one fix longer); after it, 40 s of good fixes. The side before proves the
    stay only when its good fixes stand for at least as long as its poor ones; without it
    the 40 s after the silence do not reach the 60 s dwell."""
    poor_s = 5.0 + poor_steps / hz
    before = span(3.0, 8.0 - 1 / hz, 0.0, hz) + span(8.0, 8.0 + poor_s - 1 / hz, 0.0, hz, 20.0)
    after_0 = 8.0 + poor_s + SILENCE_S
    fixes = approach(hz) + before + span(after_0, after_0 + 40, 0.0, hz)
    fixes += span(after_0 + 41, after_0 + 53, AWAY, hz)
    if proves:
        expected = [(Verdict.VISITED, 3.0, after_0 + 40)]
    else:
        expected = [(Verdict.UNCERTAIN, 3.0, after_0 + 40)]
    assert outcome(point_at_origin(), fixes) == expected


@pytest.mark.parametrize("hz", [1, 5, 10])
def test_sides_spanning_exactly_the_dwell_across_a_silence_are_visited(hz: int) -> None:
    """5 s at the centre, 122 s of silence, then fixes until exactly 150 s after the
    first: with a 150 s dwell, `visited`; 1/hz s short, no check-in at all."""
    p = point_at_origin(dwell=150.0)
    for last, expected in ((153.0, [(Verdict.VISITED, 3.0, 153.0)]), (153.0 - 1 / hz, [])):
        fixes = approach(hz) + span(3.0, 8.0, 0.0, hz) + span(130.0, last, 0.0, hz)
        assert outcome(p, fixes) == expected


@pytest.mark.parametrize("hz", [1, 5, 10])
def test_an_uncertain_visit_across_a_silence_keeps_its_first_and_last_fix(hz: int) -> None:
    """16 s of good fixes, 150 s of silence, 30 s of poor ones, all at the centre (10 s
    dwell): poor fixes outweigh the good, so the visit is `uncertain`, and an uncertain
    visit runs from its first fix to its last, whatever a side proves alone."""
    after_0 = 19.0 + SILENCE_S
    fixes = approach(hz) + span(3.0, 19.0, 0.0, hz) + span(after_0, after_0 + 30, 0.0, hz, 20.0)
    assert outcome(point_at_origin(dwell=10.0), fixes) == [(Verdict.UNCERTAIN, 3.0, after_0 + 30)]


def test_a_side_with_a_fix_exactly_at_the_radius_stands_for_three_seconds_inside() -> None:
    """Two fixes at the centre and one exactly at the radius before the silence: three
    seconds inside, so that side proves the stay and the visit runs from its first fix;
    with the third fix one step beyond the radius, two seconds prove nothing, and the 40 s
    after the silence are short of the dwell."""
    for third, verdict in (
        (exactly(RADIUS), Verdict.VISITED),
        (beyond(exactly(RADIUS)), Verdict.UNCERTAIN),
    ):
        before = [at(3.0, 0.0), at(4.0, 0.0), at(5.0, third)]
        fixes = approach() + before + span(156.0, 196.0, 0.0) + span(197.0, 208.0, AWAY)
        assert outcome(point_at_origin(), fixes) == [(verdict, 3.0, 196.0)]


def test_a_side_inside_by_exactly_the_error_budget_proves_the_stay() -> None:
    """5 s at 12 m with 6 m claimed (allowance 3 m) before the silence: inside by exactly
    the budget, so it proves the stay; one step farther it does not, and the 40 s after
    are short of the dwell."""
    for lat, verdict in (
        (exactly(12.0), Verdict.VISITED),
        (beyond(exactly(12.0)), Verdict.UNCERTAIN),
    ):
        fixes = (
            approach()
            + span(3.0, 7.0, lat, accuracy=6.0)
            + span(158.0, 198.0, 0.0, accuracy=6.0)
            + span(199.0, 210.0, AWAY)
        )
        assert outcome(point_at_origin(), fixes) == [(verdict, 3.0, 198.0)]


def test_sides_exactly_one_radius_apart_agree() -> None:
    """20 s at 7.5 m south of the centre, then after the silence 40 s exactly 15 m (the
    radius) north of there: the sides agree on where the person stood; one step farther
    apart, they may be two passes, and the visit is for a person to review."""
    south = -exactly(7.5)
    north = exactly(RADIUS, base=south)
    for lat, verdict in ((north, Verdict.VISITED), (beyond(north, base=south), Verdict.UNCERTAIN)):
        fixes = approach() + span(3.0, 22.0, south) + span(173.0, 213.0, lat)
        fixes += span(214.0, 225.0, AWAY)
        assert outcome(point_at_origin(), fixes) == [(verdict, 3.0, 213.0)]


# -- a late fix: a replay from a checkpoint taken during the visit gives the same check-in ---


def late(fixes: list[Fix], s: float, held_s: float) -> list[Fix]:
    """The same fixes, the one at `s` seconds delivered after the one at `held_s`."""
    stamp = T0 + round(s * 1000)
    (moved,) = [f for f in fixes if f.time_ms == stamp]
    rest = [f for f in fixes if f is not moved]
    k = next(i for i, f in enumerate(rest) if f.time_ms == T0 + round(held_s * 1000))
    return [*rest[: k + 1], moved, *rest[k + 1 :]]


@pytest.mark.parametrize(
    ("fixes", "expected"),
    [
        pytest.param(  # good fixes span the dwell; only poor ones come after the checkpoint
            approach()
            + span(3.0, 70.0, 0.0)
            + span(71.0, 100.0, 0.0, accuracy=20.0)
            + span(101.0, 112.0, AWAY),
            (Verdict.VISITED, 3.0, 70.0),
            id="good-then-poor",
        ),
        pytest.param(  # good fixes short of the dwell, poor ones after: first to last fix
            approach()
            + span(3.0, 42.0, 0.0)
            + span(43.0, 100.0, 0.0, accuracy=20.0)
            + span(101.0, 112.0, AWAY),
            (Verdict.UNCERTAIN, 3.0, 100.0),
            id="uncertain",
        ),
        pytest.param(  # a stray fix, a long silence, 90 s: the stay after the silence
            [*approach(), at(3.0, 0.0), *span(160.0, 250.0, 0.0), *span(251.0, 262.0, AWAY)],
            (Verdict.VISITED, 160.0, 250.0),
            id="stray-fix-and-silence",
        ),
    ],
)
def test_a_fix_delivered_late_during_a_visit_changes_nothing(
    fixes: list[Fix], expected: tuple[Verdict, float, float]
) -> None:
    """The fix 5 s before the visit's last fix arrives 4 s late: the engine rewinds to its
    checkpoint taken during the visit and replays; the check-in is the one the fixes in
    order give."""
    last_in = max(f.time_ms for f in fixes if f.lat != AWAY and f.time_ms is not None)
    s = (last_in - T0) / 1000 - 5
    assert outcome(point_at_origin(), fixes) == [expected]
    assert outcome(point_at_origin(), late(fixes, s, s + 4)) == [expected]
