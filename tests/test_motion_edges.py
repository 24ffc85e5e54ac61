"""The motion checks at their edges (agent/checkin/motion.py; docs/engine.md, "Suspicion"),
found by the mutation benchmark (bench/mutation.py; docs/testing.md).

Each track is built by hand, positions in metres north of a fixed place, so that the answer
can be worked out from the documented rule alone: a jump is more than 100 m + 3 × (both
accuracies) at above 70 m/s; a fast drag is 4 m/s or more over 15 s of still Doppler, held
for 6 s; a slow drag compares the medians of the first and last 11 seconds of a 60–90 s
still stretch; the quarantine is 30 s. Every drag is fed at 1, 5 and 10 Hz where the rate
could matter, since the windows are in seconds, not fixes. Where a rule meets its limit
exactly, the track runs along the equator, where a distance of exactly 60.0 or 100.0 m can
be laid out (see `exactly`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from agent.checkin.geo import M_PER_DEG_LAT, distance_m, offset
from agent.checkin.motion import (
    DRAG_MIN_S,
    DRAG_WINDOW_S,
    MISMATCH_HOLD_S,
    MISMATCH_WINDOW_S,
    QUARANTINE_S,
    Motion,
    SuspicionEvent,
    SuspicionKind,
)
from contract.fix import Fix

T0 = 1_767_223_800_000
LAT0, LON0 = 29.265, 106.255
RATES = (1, 5, 10)
QUARANTINE_MS = int(QUARANTINE_S * 1000)
JUMP = SuspicionKind.JUMP
MISMATCH = SuspicionKind.MOTION_MISMATCH


def fix(t_ms: int, north: float, doppler: float = 0.0, accuracy: float = 3.0) -> Fix:
    lat, lon = offset(LAT0, LON0, north, 0.0)
    return Fix(t_ms, lat, lon, accuracy_m=accuracy, speed_mps=doppler)


def on_equator(t_ms: int, lat: float, doppler: float = 0.0, accuracy: float = 3.0) -> Fix:
    return Fix(t_ms, lat, 0.0, accuracy_m=accuracy, speed_mps=doppler)


def exactly(metres: float) -> float:
    """The latitude whose distance from (0, 0) along the meridian is `metres` to the last
    bit, as distance_m measures it: a boundary can then be met exactly, not nearly."""
    up = down = metres / M_PER_DEG_LAT
    for _ in range(100):
        for lat in (up, down):
            if distance_m(0.0, 0.0, lat, 0.0) == metres:
                return lat
        up, down = math.nextafter(up, 90.0), math.nextafter(down, -90.0)
    raise AssertionError(f"no latitude lies exactly {metres} m from the origin")


def just_beyond(lat: float) -> float:
    """The nearest latitude north of `lat` that distance_m puts farther from (0, 0)."""
    d = distance_m(0.0, 0.0, lat, 0.0)
    while distance_m(0.0, 0.0, lat, 0.0) == d:
        lat = math.nextafter(lat, 90.0)
    return lat


def feed(motion: Motion, fixes: list[Fix]) -> list[SuspicionEvent]:
    """Fixes in time order, each with the one before it, as the engine gives them."""
    out: list[SuspicionEvent] = []
    last: Fix | None = None
    for f in fixes:
        out += motion.check(last, f)
        last = f
    return out


def track(
    seconds: float,
    hz: int,
    north: Callable[[float], float],
    *,
    doppler: float = 0.0,
    accuracy: float = 3.0,
    start_ms: int = T0,
) -> list[Fix]:
    """Fixes at `hz` for `seconds` (both ends included), at `north(s)` metres s seconds in."""
    out = []
    for k in range(round(seconds * hz) + 1):
        t = start_ms + k * 1000 // hz
        out.append(fix(t, north((t - start_ms) / 1000), doppler, accuracy))
    return out


def seconds_in(events: list[SuspicionEvent], start_ms: int = T0) -> list[tuple[str, float]]:
    return [(e.kind.value, (e.time_ms - start_ms) / 1000) for e in events]


# -- jumps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hz", RATES)
def test_a_jump_is_more_than_100_m_plus_three_of_each_accuracy(hz: int) -> None:
    """Accuracies 2 and 8 m: the slack is 100 + 3 × 10 = 130 m, whichever fix claims which."""
    dt = 1000 // hz
    for a, b in ((2.0, 8.0), (8.0, 2.0)):
        for d, jumped in ((129.0, False), (131.0, True)):
            events = feed(Motion(), [fix(T0, 0.0, accuracy=a), fix(T0 + dt, d, accuracy=b)])
            assert [e.kind for e in events] == ([JUMP] if jumped else []), (hz, a, b, d)


def test_exactly_100_m_with_no_claimed_error_is_no_jump_and_a_hair_more_is() -> None:
    """'More than 100 m': a fix exactly 100 m away (on the equator, to the last bit) with
    accuracies of 0 is not a jump, the next representable latitude beyond it is."""
    at_100 = exactly(100.0)
    beyond = just_beyond(at_100)
    for lat, jumped in ((at_100, False), (beyond, True)):
        first, second = on_equator(T0, 0.0, accuracy=0.0), on_equator(T0 + 1000, lat, accuracy=0.0)
        events = feed(Motion(), [first, second])
        assert [e.kind for e in events] == ([JUMP] if jumped else []), lat


def test_a_jump_is_an_implied_speed_above_70_m_s_not_at_it() -> None:
    """700 m in 10 s is 70 m/s: not above it. 710 m in 10 s is; 690 m is not."""
    at_700 = on_equator(T0 + 10_000, exactly(700.0))
    assert feed(Motion(), [on_equator(T0, 0.0), at_700]) == []
    for d, jumped in ((690.0, False), (710.0, True)):
        events = feed(Motion(), [fix(T0, 0.0), fix(T0 + 10_000, d)])
        assert [e.kind for e in events] == ([JUMP] if jumped else []), d


@pytest.mark.parametrize("hz", RATES)
def test_a_jump_reports_its_implied_speed_at_any_rate(hz: int) -> None:
    """500 m between consecutive fixes: 500 m/s at 1 Hz, 2,500 at 5 Hz, 5,000 at 10 Hz."""
    dt = 1000 // hz
    (ev,) = feed(Motion(), [fix(T0, 0.0), fix(T0 + dt, 500.0)])
    assert (ev.kind, ev.time_ms) == (JUMP, T0 + dt)
    assert ev.detail == f"implied speed {500 * hz} m/s"


def test_a_jump_quarantines_exactly_30_s_from_the_jumping_fix() -> None:
    motion = Motion()
    (ev,) = feed(motion, [fix(T0, 0.0), fix(T0 + 1_000, 5_000.0, doppler=1.0)])
    assert ev.kind is JUMP
    assert motion.quarantine_until == T0 + 1_000 + QUARANTINE_MS


# -- fast drags: positions run while Doppler says still --------------------------------------


@pytest.mark.parametrize("hz", RATES)
def test_a_drag_from_the_first_fix_is_flagged_after_twelve_seconds_and_the_hold(hz: int) -> None:
    """10 m/s from the first fix: the window is judged once it spans four fifths of its 15 s
    (12 s), and the mismatch must then hold 6 s: one suspicion, 18 s in, at every rate."""
    events = feed(Motion(), track(25, hz, lambda s: 10.0 * s))
    assert seconds_in(events) == [("motion_mismatch", MISMATCH_WINDOW_S * 0.8 + MISMATCH_HOLD_S)]
    assert events[0].detail == "positions move 10.0 m/s, Doppler says still"


def honest_then_dragged(offset_ms: int) -> list[Fix]:
    """One fix whose Doppler says moving at T0, then still-Doppler fixes every second (each
    `offset_ms` after the whole second) whose positions run at 10 m/s throughout."""
    fixes = [fix(T0, 0.0, doppler=2.0)]
    for k in range(1, 30):
        t = T0 + k * 1000 + offset_ms
        fixes.append(fix(t, 10.0 * (t - T0) / 1000))
    return fixes


def test_a_drag_is_judged_only_once_the_moving_fix_is_out_of_the_15_s_window() -> None:
    """The window is the last 15 s, both ends included: with the moving fix at 0 s, the 15 s
    fix's window still holds it; the first all-still window is the 16 s fix's, and the
    suspicion comes 6 s later. With every still fix 10 ms after its second, the moving fix
    is 15.010 s old at the 15 s fix: out, and the suspicion comes at 21.010 s."""
    assert seconds_in(feed(Motion(), honest_then_dragged(0))) == [("motion_mismatch", 22.0)]
    assert seconds_in(feed(Motion(), honest_then_dragged(10))) == [("motion_mismatch", 21.01)]


def test_a_drag_that_goes_on_is_flagged_again_after_the_quarantine_and_the_hold() -> None:
    """5 m/s from the first fix, at 1 Hz: flagged at 18 s; the check then sleeps through the
    30 s quarantine, its last millisecond (48 s) included, judges again from 49 s and needs
    the 6 s hold again: 55 s. (The track stops short of a minute, the slow drag's reach.)"""
    motion = Motion()
    events = feed(motion, track(58, 1, lambda s: 5.0 * s))
    assert seconds_in(events) == [("motion_mismatch", 18.0), ("motion_mismatch", 55.0)]


def test_a_mismatch_quarantines_exactly_30_s_from_its_fix() -> None:
    motion = Motion()
    fixes = track(25, 10, lambda s: 10.0 * s)
    events: list[SuspicionEvent] = []
    last: Fix | None = None
    for f in fixes:
        events = motion.check(last, f)
        last = f
        if events:
            break
    (ev,) = events
    assert ev.kind is MISMATCH
    assert motion.quarantine_until == ev.time_ms + QUARANTINE_MS


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(("per_15_s", "flagged"), [(100.5, True), (99.5, False)])
def test_the_drag_distance_floor_is_40_m_plus_three_of_each_accuracy(
    hz: int, per_15_s: float, flagged: bool
) -> None:
    """Accuracies of 10 m: the floor is 40 + 3 × 20 = 100 m over the window, and 100 m in
    15 s is well above 4 m/s, so the floor decides. Positions running 100.5 m per 15 s are
    flagged (at 21 s: 15 s of window and 6 s of hold), 99.5 m per 15 s never are."""
    fixes = track(40, hz, lambda s: per_15_s / 15 * s, accuracy=10.0)
    got = seconds_in(feed(Motion(), fixes))
    assert got == ([("motion_mismatch", 21.0)] if flagged else [])


def equator_drag(at_15_s: float, accuracy: float) -> list[Fix]:
    """From the origin at 4 m/s for 14 s (56 m), then at 15 s exactly `at_15_s` metres from
    the origin, then on at 10 m/s: the 15 s window first reaches the limits at 15 s."""

    def north(metres: float) -> float:
        return metres / M_PER_DEG_LAT

    fixes = [on_equator(T0 + k * 1000, north(4.0 * k), accuracy=accuracy) for k in range(15)]
    fixes.append(on_equator(T0 + 15_000, exactly(at_15_s), accuracy=accuracy))
    for k in range(16, 30):
        fixes.append(on_equator(T0 + k * 1000, north(at_15_s + 10.0 * (k - 15)), accuracy=accuracy))
    return fixes


def test_exactly_4_m_s_over_the_window_is_a_drag() -> None:
    """'4 m/s or more': 60.0 m in 15 s, to the last bit, starts the hold at 15 s (the 58 m
    floor of 3 m accuracies is below it), so the suspicion comes at 21 s."""
    events = feed(Motion(), equator_drag(60.0, accuracy=3.0))
    assert seconds_in(events) == [("motion_mismatch", 21.0)]


def test_exactly_the_distance_floor_over_the_window_is_a_drag() -> None:
    """Accuracies of 5 m: a floor of 40 + 3 × 10 = 70 m. 70.0 m in 15 s (4.7 m/s), to the last
    bit, starts the hold at 15 s: the suspicion comes at 21 s. (docs/engine.md says 'more
    than 40 m plus three accuracies'; the code counts the floor itself, as here.)"""
    events = feed(Motion(), equator_drag(70.0, accuracy=5.0))
    assert seconds_in(events) == [("motion_mismatch", 21.0)]


@pytest.mark.parametrize(("doppler", "flagged"), [(0.5, True), (0.51, False)])
def test_a_fast_drag_counts_doppler_of_0_5_m_s_as_still(doppler: float, flagged: bool) -> None:
    events = feed(Motion(), track(40, 1, lambda s: 10.0 * s, doppler=doppler))
    assert seconds_in(events) == ([("motion_mismatch", 18.0)] if flagged else [])


# -- slow drags: medians of the first and last 11 seconds of a still stretch -----------------


@pytest.mark.parametrize("hz", RATES)
def test_a_creep_of_1_25_m_s_is_flagged_when_the_stretch_reaches_a_minute(hz: int) -> None:
    """At 1.25 m/s the medians of the first and last 11 seconds stand 5 s in from each end:
    after 60 s they are 50 s × 1.25 = 62.5 m apart, 1.04 m/s over the minute (and more than
    10 + 5 × 3 m). Too slow for the 15 s check (19 m per window). Flagged at 60 s exactly."""
    events = feed(Motion(), track(100, hz, lambda s: 1.25 * s))
    assert seconds_in(events) == [("motion_mismatch", DRAG_MIN_S)]
    assert events[0].detail == "positions move 1.0 m/s, Doppler says still"


@pytest.mark.parametrize(("doppler", "flagged"), [(0.5, True), (0.51, False)])
def test_a_slow_drag_counts_doppler_of_0_5_m_s_as_still(doppler: float, flagged: bool) -> None:
    events = feed(Motion(), track(100, 1, lambda s: 1.25 * s, doppler=doppler))
    assert seconds_in(events) == ([("motion_mismatch", DRAG_MIN_S)] if flagged else [])


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(("speed", "flagged"), [(1.126, True), (1.124, False)])
def test_the_slow_drag_window_is_90_s_both_ends_included(
    hz: int, speed: float, flagged: bool
) -> None:
    """Once the window is full (90 s, its oldest fix exactly 90 s old still in it), the medians
    stand 80 s apart: at 1.126 m/s that is 90.08 m in 90 s, just over 1 m/s, flagged at 90 s;
    at 1.124 m/s, 89.92 m, never (the window only slides after that)."""
    events = feed(Motion(), track(150, hz, lambda s: speed * s))
    assert seconds_in(events) == ([("motion_mismatch", DRAG_WINDOW_S)] if flagged else [])


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(("excursion_s", "flagged"), [(4.0, False), (7.0, True)])
def test_the_slow_drag_medians_stand_for_11_seconds_at_any_rate(
    hz: int, excursion_s: float, flagged: bool
) -> None:
    """A receiver standing still (accuracy 5 m) whose first seconds are a multipath excursion
    65 m off. Four seconds of 11 do not move the median: no suspicion. Seven of 11 do: the
    medians are 65 m apart, over 1 m/s across the minute and more than 10 + 5 × 5 m, so the
    stretch is flagged at 60 s. 65 m stays under the fast check's 40 + 3 × 10 m and the jump
    slack. A window of 11 fixes instead of 11 seconds would be fooled at 5 and 10 Hz."""
    fixes = track(80, hz, lambda s: 65.0 if s < excursion_s else 0.0, accuracy=5.0)
    got = seconds_in(feed(Motion(), fixes))
    assert got == ([("motion_mismatch", DRAG_MIN_S)] if flagged else [])


@pytest.mark.parametrize("hz", RATES)
@pytest.mark.parametrize(("speed", "at_s"), [(1.42, 60.0), (1.38, 61.0)])
def test_the_slow_drag_floor_is_10_m_plus_five_median_accuracies(
    hz: int, speed: float, at_s: float
) -> None:
    """Accuracies of 12 m: the floor is 10 + 5 × 12 = 70 m, above the 60 m a minute at 1 m/s
    needs, so it decides. At 60 s the medians stand 50 s apart: 71 m at 1.42 m/s, flagged
    then; 69 m at 1.38 m/s, not until 61 s, when they are 51 s (70.4 m) apart."""
    events = feed(Motion(), track(100, hz, lambda s: speed * s, accuracy=12.0))
    assert seconds_in(events) == [("motion_mismatch", at_s)]


def equator_creep(speed: float, at_55_s: float, accuracy: float) -> list[Fix]:
    """A creep at `speed` along the meridian, centred so that the 5 s fix (the median of the
    first 11) is at the origin, with the 55 s fix (the median of the last 11 at 60 s)
    exactly `at_55_s` metres from it."""
    fixes = []
    for k in range(100):
        lat = exactly(at_55_s) if k == 55 else (k - 5) * speed / M_PER_DEG_LAT
        fixes.append(on_equator(T0 + k * 1000, lat, accuracy=accuracy))
    return fixes


def test_medians_exactly_at_the_slow_drag_floor_are_not_a_drag() -> None:
    """'More than 10 m + 5 accuracies': with 12 m accuracies, medians exactly 70.0 m apart at
    60 s (1.17 m/s) are not flagged; a second later, 71.4 m apart, they are."""
    events = feed(Motion(), equator_creep(1.4, 70.0, accuracy=12.0))
    assert seconds_in(events) == [("motion_mismatch", 61.0)]


def test_medians_exactly_1_m_s_apart_over_the_minute_are_a_drag() -> None:
    """'At 1 m/s or more': medians exactly 60.0 m apart after exactly 60 s are flagged then."""
    events = feed(Motion(), equator_creep(1.2, 60.0, accuracy=3.0))
    assert seconds_in(events) == [("motion_mismatch", 60.0)]


def test_a_slow_drag_needs_11_fixes_at_each_end_however_sparse() -> None:
    """A receiver with a fix every 3 s, creeping at 2 m/s: at 60 s it has 21 fixes, too few
    for two medians of 11. The 22nd, at 63 s, gives medians at 15 s and 48 s: 66 m in 63 s,
    flagged."""
    fixes = [fix(T0 + k * 3000, 2.0 * 3 * k) for k in range(40)]
    assert seconds_in(feed(Motion(), fixes)) == [("motion_mismatch", 63.0)]


def test_a_fix_older_than_90_s_by_50_ms_is_out_of_the_slow_drag_window() -> None:
    """The 1.126 m/s creep of the test above, on a receiver whose fixes come 50 ms later from
    46 s on: at 90.05 s the first fix is 90.05 s old and out, and a window of 89.05 s holds
    medians 79.05 s apart, under 1 m/s. Only when the window again spans 90 s, at 136.05 s
    (its first fix the 46.05 s one), is the creep flagged."""
    times = [k * 1000 + (50 if k >= 46 else 0) for k in range(150)]
    fixes = [fix(T0 + t, 1.126 * t / 1000) for t in times]
    assert seconds_in(feed(Motion(), fixes)) == [("motion_mismatch", 136.05)]


@pytest.mark.parametrize("start_ms", [0, T0])
@pytest.mark.parametrize(("speed", "at_s"), [(1.25, DRAG_MIN_S), (1.126, DRAG_WINDOW_S)])
def test_the_motion_checks_read_no_clock_from_the_epoch_on(
    start_ms: int, speed: float, at_s: float
) -> None:
    """Only time differences count: the same creeps stamped from the Unix epoch itself or
    from 2026 are flagged at the same second."""
    fixes = track(100, 1, lambda s: speed * s, start_ms=start_ms)
    assert seconds_in(feed(Motion(), fixes), start_ms) == [("motion_mismatch", at_s)]


def test_after_a_drag_the_quarantine_runs_30_s_past_the_last_still_fix() -> None:
    """Dragged at 6 m/s (flagged at 18 s), then standing with Doppler still until 40 s: each
    still fix keeps the quarantine 30 s ahead of it. At 41 s Doppler says moving: the
    quarantine ends 30 s after the last still fix, at 70 s."""
    motion = Motion()
    fixes = track(25, 1, lambda s: 6.0 * s)
    fixes += [fix(T0 + k * 1000, 150.0) for k in range(26, 41)]
    events = feed(motion, fixes)
    assert seconds_in(events) == [("motion_mismatch", 18.0)]
    assert motion.quarantine_until == T0 + 40_000 + QUARANTINE_MS
    assert motion.check(fixes[-1], fix(T0 + 41_000, 151.0, doppler=1.0)) == []
    assert motion.quarantine_until == T0 + 40_000 + QUARANTINE_MS


# -- clones ----------------------------------------------------------------------------------


def eventful_track() -> list[Fix]:
    """An honest walk, a fast drag right after it, a still stand, a walk, a slow creep."""
    fixes = track(10, 1, lambda s: 1.2 * s, doppler=1.2)  # 0-10 s walking
    fixes += track(30, 1, lambda s: 12.0 + 6.0 * s, start_ms=T0 + 11_000)[:-1]  # dragged
    fixes += [fix(T0 + k * 1000, 200.0) for k in range(41, 80)]  # standing, Doppler still
    fixes += [fix(T0 + k * 1000, 200.0 + (k - 79), doppler=1.0) for k in range(80, 90)]
    fixes += track(70, 1, lambda s: 210.0 + 1.3 * s, start_ms=T0 + 90_000)  # a creep
    return fixes


def test_a_clone_judges_the_rest_of_a_track_as_the_original_does() -> None:
    """The engine replays late fixes from cloned motion state: a clone taken after any fix,
    in the middle of a hold, in a quarantine, just after moving, must raise the same
    suspicions and keep the same quarantine as the original over the rest of the track."""
    fixes = eventful_track()
    whole = Motion()
    assert {e.kind for e in feed(whole, fixes)} == {MISMATCH}  # the track does raise some
    for cut in range(1, len(fixes) - 1):
        original = Motion()
        feed(original, fixes[:cut])
        copy = original.clone()
        for last, f in zip(fixes[cut - 1 :], fixes[cut:], strict=False):
            assert copy.check(last, f) == original.check(last, f), (cut, f.time_ms)
            assert copy.quarantine_until == original.quarantine_until, (cut, f.time_ms)
