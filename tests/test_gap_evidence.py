"""A visit across a long silence: the evidence on each side decides, not the gap alone.

Under an arcade a receiver may report nothing for minutes while the person stands at the
point. Someone reviewing such a visit accepts it when the fixes before the silence and the
fixes after it each show the person at the point for a few seconds (GOOD_MIN_S of good
fixes inside, inside by the error budget) and show them at the same place; a fix or two on
either side of a long silence proves nothing, and such a visit stays `uncertain`
(docs/engine.md). Each track here is a person standing or walking, seen by a receiver in
some windows of time only, at 1, 5 or 10 Hz: the check-ins must not depend on the rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from agent.checkin.engine import CheckinEngine, CheckinEvent
from agent.checkin.geo import offset
from agent.checkin.plan import Line, Plan, Point
from agent.checkin.visits import GOOD_MIN_S, MAX_GAP_S
from contract.fix import Fix, FixMode
from contract.records import Verdict

T0 = 1_767_225_600_000
LAT0, LON0 = 29.265, 106.255
RADIUS, DWELL = 25.0, 60.0
WALK_MPS = 1.3
SILENCE_S = MAX_GAP_S + 30  # longer than a gap the old rule let through
RATES = (1, 5, 10)

Where = Callable[[float], tuple[float, float, float]]  # second -> (north, east, speed)


def point() -> Point:
    return Point("A", LAT0, LON0, radius_m=RADIUS, dwell_s=DWELL)


def standing(north: float, east: float = 0.0) -> Where:
    return lambda s: (north, east, 0.0)


def seen(
    where: Where, windows: Sequence[tuple[float, float]], hz: int | Sequence[int]
) -> list[Fix]:
    """The fixes of a receiver that reports in each [first, last] window (seconds, both
    ends included) at `hz` (one rate, or one per window) and is silent in between."""
    rates = [hz] * len(windows) if isinstance(hz, int) else list(hz)
    out = []
    for (first, last), rate in zip(windows, rates, strict=True):
        for k in range(round((last - first) * rate) + 1):
            s = first + k / rate
            north, east, speed = where(s)
            lat, lon = offset(LAT0, LON0, north, east)
            out.append(
                Fix(time_ms=T0 + round(s * 1000), lat=lat, lon=lon, accuracy_m=3.0, hdop=1.0,
                    mode=FixMode.FIX_3D, satellites=9, speed_mps=speed)
            )  # fmt: skip
    return out


def checkins(fixes: Sequence[Fix]) -> list[CheckinEvent]:
    p = point()
    engine = CheckinEngine(Plan(1, (p,), (Line("L1", (p.id,)),)))
    events = [e for f in fixes for e in engine.feed(f)] + engine.finish()
    return [e for e in events if isinstance(e, CheckinEvent)]


def verdict(fixes: Sequence[Fix]) -> tuple[Verdict, float]:
    """The one check-in's verdict and dwell (seconds)."""
    (ev,) = checkins(fixes)
    assert not ev.suspect
    return ev.verdict, ev.dwell_s


def walk_in_stand_walk_out(stand_s: float) -> tuple[Where, float, float]:
    """From 80 m north to 3 m north of the point, `stand_s` there, out to 80 m south:
    where the person is, and the seconds at which they cross the radius going in and out."""
    t_in = 77 / WALK_MPS
    t_out = t_in + stand_s

    def at(s: float) -> tuple[float, float, float]:
        if s < t_in:
            return 80 - WALK_MPS * s, 0.0, WALK_MPS
        if s <= t_out:
            return 3.0, 0.0, 0.0
        north = 3 - WALK_MPS * (s - t_out)
        return north, 0.0, WALK_MPS

    return at, (80 - RADIUS) / WALK_MPS, t_out + (RADIUS + 3) / WALK_MPS


@pytest.mark.parametrize("hz", [*RATES, (1, 10), (10, 1)], ids=str)
def test_a_stay_seen_before_and_after_a_long_silence_is_visited(hz: int | tuple[int, int]) -> None:
    """The walk in and 20 s of standing are seen, then nothing for 150 s, then the last
    40 s of the stay and the walk out: the sides agree, and the visit spans its arrival
    to its departure as a person would read them."""
    where, enter, leave = walk_in_stand_walk_out(20 + SILENCE_S + 40)
    stand_at = 77 / WALK_MPS
    windows = [(0.0, stand_at + 20), (stand_at + 20 + SILENCE_S, leave + 20)]
    (ev,) = checkins(seen(where, windows, hz))
    assert (ev.verdict, ev.suspect) == (Verdict.VISITED, False)
    assert abs(ev.arrival_ms - (T0 + 1000 * enter)) <= 1000
    assert abs(ev.departure_ms - (T0 + 1000 * leave)) <= 1000


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(
    ("side_s", "expected"),
    [
        pytest.param(0, Verdict.UNCERTAIN, id="one-fix-each-side"),
        pytest.param(GOOD_MIN_S - 2, Verdict.UNCERTAIN, id="two-seconds-each-side"),
        pytest.param(GOOD_MIN_S - 1, Verdict.VISITED, id="good-min-s-each-side"),
    ],
)
def test_each_side_of_the_silence_must_prove_the_stay_alone(
    hz: int, side_s: float, expected: Verdict
) -> None:
    """Fixes at the point spanning `side_s` on each side (so standing for side_s + 1 s:
    the first fix after a silence stands for a second), 150 s of silence between: below
    GOOD_MIN_S a side is a stray fix, not evidence, and the visit is for a person to
    review."""
    second = side_s + SILENCE_S
    fixes = seen(standing(3.0), [(0.0, side_s), (second, second + side_s)], hz)
    assert fixes[-1].time_ms is not None and fixes[0].time_ms is not None
    assert fixes[-1].time_ms - fixes[0].time_ms >= DWELL * 1000  # the span is no excuse
    assert verdict(fixes) == (expected, second + side_s)


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(
    ("after_s", "expected"),
    [
        pytest.param(DWELL + 10, (Verdict.VISITED, DWELL + 10), id="after-alone-spans-dwell"),
        pytest.param(DWELL - 20, (Verdict.UNCERTAIN, SILENCE_S + DWELL - 20), id="it-does-not"),
    ],
)
def test_a_stray_fix_before_a_silence_counts_for_nothing(
    hz: int, after_s: float, expected: tuple[Verdict, float]
) -> None:
    """One fix at the point, 150 s of silence, then `after_s` of fixes there: the visit
    is what the fixes after the silence prove, from the first of them."""
    fixes = seen(standing(3.0), [(0.0, 0.0), (SILENCE_S, SILENCE_S + after_s)], hz)
    assert verdict(fixes) == expected


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(
    ("after", "expected"),
    [
        pytest.param((-15.0, 0.0), Verdict.UNCERTAIN, id="opposite-sides-30m-apart"),
        pytest.param((0.0, 15.0), Verdict.VISITED, id="same-quarter-21m-apart"),
    ],
)
def test_the_sides_must_agree_on_where_the_person_stood(
    hz: int, after: tuple[float, float], expected: Verdict
) -> None:
    """20 s at 15 m north of the centre, 150 s of silence, 20 s at `after`: both sides are
    inside, but a person at one edge before and at the far edge after may have crossed
    the point twice; sides farther apart than the radius are for a person to review."""

    def where(s: float) -> tuple[float, float, float]:
        return (15.0, 0.0, 0.0) if s <= 20 else (*after, 0.0)

    apart = math.hypot(15.0 - after[0], after[1])
    assert (apart > RADIUS) == (expected is Verdict.UNCERTAIN)
    (ev,) = checkins(seen(where, [(0.0, 20.0), (20 + SILENCE_S, 40 + SILENCE_S)], hz))
    assert (ev.verdict, ev.suspect) == (expected, False)


@pytest.mark.parametrize("hz", RATES)
def test_a_silence_of_max_gap_s_splits_nothing(hz: int) -> None:
    """A fix or two before a silence of exactly MAX_GAP_S still belong to one visit with
    what follows: it is one stretch of evidence, as it always was."""
    fixes = seen(standing(3.0), [(0.0, 1.0), (1 + MAX_GAP_S, 31 + MAX_GAP_S)], hz)
    assert verdict(fixes) == (Verdict.VISITED, 31 + MAX_GAP_S)


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(
    ("after_m", "expected"),
    [
        pytest.param(RADIUS - 1, Verdict.UNCERTAIN, id="edge-inside-only-if-erring-inwards"),
        pytest.param(RADIUS - 3, Verdict.VISITED, id="inside-by-the-budget"),
    ],
)
def test_a_side_proves_the_stay_only_inside_the_error_budget(
    hz: int, after_m: float, expected: Verdict
) -> None:
    """20 s at 15 m north, 150 s of silence, 20 s at `after_m` north (3 m claimed: half of
    it, 1.5 m, is what the receiver may be off towards the point without saying so). At
    24 m the fixes after the silence are inside only if the receiver erred inwards: they
    prove nothing, and 20 s before the silence is not the dwell."""

    def where(s: float) -> tuple[float, float, float]:
        return (15.0, 0.0, 0.0) if s <= 20 else (after_m, 0.0, 0.0)

    (ev,) = checkins(seen(where, [(0.0, 20.0), (20 + SILENCE_S, 40 + SILENCE_S)], hz))
    assert (ev.verdict, ev.suspect) == (expected, False)
