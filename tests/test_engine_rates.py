"""The same walk at any receiver rate, and a verdict that knows its own error.

Each walk here is a path in continuous time (metres from a point, as a function of the
second), sampled at the rate a receiver would report it: 1, 5 or 10 Hz, or switching from
one to another half-way. A receiver's rate is not the walker's business, so the check-ins
must be the same at every rate: the same point, the same verdict, one each, with arrival and
departure within the slowest rate's period (a faster receiver sees the radius crossed
earlier by a fraction of a second). The error-budget walks add what an urban receiver adds
and HDOP cannot see: a bias of metres that holds its direction (docs/engine.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from agent.checkin.engine import CheckinEngine, CheckinEvent
from agent.checkin.geo import offset
from agent.checkin.plan import Line, Plan, Point
from contract.fix import Fix, FixMode
from contract.records import Verdict

T0 = 1_767_223_800_000
LAT0, LON0 = 29.265, 106.255
WALK_MPS = 1.3

Path = Callable[[float], tuple[float, float, float]]  # t (s) -> (north, east, speed)
Bias = Callable[[float], tuple[float, float]]  # t (s) -> (north, east) error


def point(radius: float = 25.0, dwell: float = 60.0, max_speed_mps: float | None = None) -> Point:
    return Point("A", LAT0, LON0, radius_m=radius, dwell_s=dwell, max_speed_mps=max_speed_mps)


def legs(*stops: tuple[float, float, float]) -> tuple[Path, float]:
    """A path through (north, east, seconds standing there) in turn at walking pace, and its
    length in seconds."""
    plan: list[tuple[float, float, float, float, float, float]] = []  # t0, t1, from, to
    t = 0.0
    here = stops[0][:2]
    for north, east, stand in stops:
        walk = math.dist(here, (north, east)) / WALK_MPS
        plan.append((t, t + walk, *here, north, east))
        t += walk
        plan.append((t, t + stand, north, east, north, east))
        t += stand
        here = (north, east)

    def at(s: float) -> tuple[float, float, float]:
        for t0, t1, n0, e0, n1, e1 in plan:
            if s <= t1:
                f = 0.0 if t1 == t0 else (s - t0) / (t1 - t0)
                moving = (n0, e0) != (n1, e1)
                return n0 + (n1 - n0) * f, e0 + (e1 - e0) * f, WALK_MPS if moving else 0.0
        return plan[-1][4], plan[-1][5], 0.0

    return at, t


def epochs(seconds: float, rates: Sequence[tuple[float, int]]) -> list[int]:
    """Fix times in ms from the start: `rates` are (from second, Hz) in order."""
    out: list[int] = []
    for k, (start, hz) in enumerate(rates):
        end = rates[k + 1][0] if k + 1 < len(rates) else seconds
        step = 1000 // hz
        ms = int(start * 1000)
        while ms < end * 1000:
            out.append(ms)
            ms += step
    return out


def fixes(
    path: Path,
    seconds: float,
    rates: Sequence[tuple[float, int]],
    *,
    accuracy: float = 3.0,
    gst: bool = False,
    doppler: bool = True,
    bias: Bias = lambda s: (0.0, 0.0),
    excursion: tuple[float, float, float] | None = None,
    wobble_m: float = 0.0,
) -> list[Fix]:
    """The receiver's fixes of `path`: shifted by `bias(t)`, by `excursion` (start s,
    length s, metres east) while it lasts, and by a deterministic wobble of `wobble_m`."""
    out = []
    for ms in epochs(seconds, rates):
        s = ms / 1000
        north, east, speed = path(s)
        bn, be = bias(s)
        north, east = north + bn, east + be
        if excursion is not None and excursion[0] <= s < excursion[0] + excursion[1]:
            east += excursion[2]
        north += wobble_m * math.sin(7.3 * s + 1.1 * math.sin(3.7 * s))
        east += wobble_m * math.cos(5.9 * s + 0.7 * math.sin(2.3 * s))
        lat, lon = offset(LAT0, LON0, north, east)
        out.append(
            Fix(time_ms=T0 + ms, lat=lat, lon=lon, accuracy_m=accuracy, hdop=accuracy / 3,
                mode=FixMode.FIX_3D, satellites=9, speed_mps=speed if doppler else None,
                accuracy_from_gst=gst)
        )  # fmt: skip
    return out


def checkins(p: Point, track: Sequence[Fix]) -> list[CheckinEvent]:
    engine = CheckinEngine(Plan(1, (p,), (Line("L1", (p.id,)),)))
    events = [e for f in track for e in engine.feed(f)] + engine.finish()
    return [e for e in events if isinstance(e, CheckinEvent)]


RATES: dict[str, list[tuple[float, int]]] = {
    "1hz": [(0, 1)],
    "5hz": [(0, 5)],
    "10hz": [(0, 10)],
    "1hz-then-10hz": [(0, 1), (95, 10)],  # switches in the middle of the stay
    "10hz-then-1hz": [(0, 10), (95, 1)],
    "5hz-then-1hz-then-10hz": [(0, 5), (70, 1), (120, 10)],
}


def same_checkins(got: list[CheckinEvent], want: list[CheckinEvent]) -> None:
    """The same check-ins: one for one, point and verdict, times within a second."""
    assert [(e.point.id, e.verdict) for e in got] == [(e.point.id, e.verdict) for e in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g.arrival_ms - w.arrival_ms) < 1000
        assert abs(g.departure_ms - w.departure_ms) < 1000


# ------------------------------------------------------------------------------- rates


def through_the_point() -> tuple[Path, float]:
    """From 80 m north, stand 90 s 3 m from the centre, walk on to 80 m south."""
    return legs((80.0, 0.0, 0.0), (3.0, 0.0, 90.0), (-80.0, 0.0, 0.0))


@pytest.mark.parametrize("rate", list(RATES))
def test_a_walk_through_a_point_is_one_checkin_at_any_rate(rate: str) -> None:
    """The stay has a 2 s multipath excursion 60 m away in its middle (good accuracy, the
    receiver does not know): at 5 Hz that is ten fixes beyond the margin, which a rule
    counting ten fixes took for an exit, and the return for a second visit."""
    p = point()
    path, seconds = through_the_point()
    excursion = (100.0, 2.0, 60.0)
    want = checkins(p, fixes(path, seconds, RATES["1hz"], excursion=excursion))
    assert len(want) == 1
    assert want[0].verdict is Verdict.VISITED
    assert 85 <= want[0].dwell_s <= 170  # the stay, with the walk in and out of the circle
    got = checkins(p, fixes(path, seconds, RATES[rate], excursion=excursion))
    same_checkins(got, want)


def test_a_faster_stretch_of_a_stay_weighs_no_more_than_its_seconds() -> None:
    """70 s standing 10 m from the centre, then 50 s in the margin band (28 m of a 25 m
    point) before leaving. At 1 Hz the stay's median is 10 m: `visited`. A receiver that
    switches to 10 Hz for the margin band sends ten times the fixes from there; counted
    fix by fix they would carry the median out to 28 m and lose the visit."""
    p = point()
    path, seconds = legs((80.0, 0.0, 0.0), (10.0, 0.0, 70.0), (28.0, 0.0, 50.0), (80.0, 0.0, 0.0))
    want = checkins(p, fixes(path, seconds, RATES["1hz"]))
    assert [e.verdict for e in want] == [Verdict.VISITED]
    switch_s = (80 - 10) / WALK_MPS + 70 + 5
    same_checkins(checkins(p, fixes(path, seconds, [(0, 1), (switch_s, 10)])), want)


@pytest.mark.parametrize("rate", ["5hz", "10hz"])
def test_an_excursion_of_ten_seconds_ends_a_visit_at_any_rate(rate: str) -> None:
    """The other side of the same rule: 12 s beyond the margin is an exit at 1 Hz, so at
    5 and 10 Hz too, and the return is a visit of its own (two check-ins everywhere)."""
    p = point(dwell=30.0)
    path, seconds = through_the_point()
    excursion = (90.0, 12.0, 60.0)
    want = checkins(p, fixes(path, seconds, RATES["1hz"], excursion=excursion))
    assert len(want) == 2
    got = checkins(p, fixes(path, seconds, RATES[rate], excursion=excursion))
    same_checkins(got, want)


@pytest.mark.parametrize("rate", ["5hz", "10hz", "1hz-then-10hz"])
def test_a_speed_gate_without_doppler_judges_the_walk_not_the_rate(rate: str) -> None:
    """A receiver without Doppler: the engine implies speed from positions. Half a metre of
    wobble between two fixes a tenth of a second apart is 5 m/s; over a second it is what
    the walker does, so a point forbidding more than 2.5 m/s still sees a walker."""
    p = point(max_speed_mps=2.5)
    path, seconds = through_the_point()

    def no_doppler(rates: list[tuple[float, int]]) -> list[Fix]:
        return fixes(path, seconds, rates, doppler=False, wobble_m=0.25)

    want = checkins(p, no_doppler(RATES["1hz"]))
    assert len(want) == 1
    same_checkins(checkins(p, no_doppler(RATES[rate])), want)
    # positive control: the gate is live: a point forbidding more than 0.5 m/s turns it away
    fast = point(max_speed_mps=0.5)
    assert checkins(fast, no_doppler(RATES[rate])) == []


# ------------------------------------------------------------------------ error budget


def steady_bias(size_m: float, bearing_deg: float, turn_dpm: float = 4.0) -> Bias:
    """A facade's reflection: `size_m` towards `bearing_deg`, turning slowly."""

    def at(s: float) -> tuple[float, float]:
        b = math.radians(bearing_deg + turn_dpm * s / 60)
        return size_m * math.cos(b), size_m * math.sin(b)

    return at


def urban(path: Path, seconds: float, rates: list[tuple[float, int]], bias: Bias) -> list[Fix]:
    """A receiver claiming HDOP 2 x UERE 3 m = 6 m, blind to the bias, with 1 m of wobble."""
    return fixes(path, seconds, rates, accuracy=6.0, gst=False, bias=bias, wobble_m=1.0)


@pytest.mark.parametrize("rate", ["1hz", "10hz"])
@pytest.mark.parametrize("stand", [6.0, 9.0])
def test_a_stop_inside_under_a_steady_bias_is_not_lost(rate: str, stand: float) -> None:
    """Walking north through a 15 m point and standing 6 or 9 m north of its centre, the
    reflection pushing 8 m further north: the positions sit at 14 m (a metre inside) or at
    17 m (two metres outside). It is a real stop: it goes to the center as `uncertain`, as
    the receiver's own 6 m claim can neither prove it nor rule it out."""
    p = point(radius=15.0)
    path, seconds = legs((-70.0, 0.0, 0.0), (stand, 0.0, 100.0), (70.0, 0.0, 0.0))
    track = urban(path, seconds, RATES[rate], steady_bias(8.0, 0.0))
    (ev,) = checkins(p, track)
    assert ev.verdict is Verdict.UNCERTAIN
    assert ev.dwell_s >= 100


@pytest.mark.parametrize("rate", ["1hz", "10hz"])
def test_lingering_at_1_6_radii_under_a_bias_towards_the_point_is_never_visited(
    rate: str,
) -> None:
    """24 m from the centre of a 15 m point for four minutes, the reflection pulling 10 m
    towards it: the positions sit 14 m from the centre. Then the person leaves, comes back
    to the centre and stands there (positive control: the same receiver, the same bias)."""
    p = point(radius=15.0)
    path, seconds = legs(
        (70.0, 0.0, 0.0), (24.0, 0.0, 240.0), (70.0, 0.0, 20.0), (0.0, 0.0, 90.0), (70.0, 0.0, 0.0)
    )
    track = urban(path, seconds, RATES[rate], steady_bias(10.0, 180.0))
    left_ms = T0 + 1000 * round((70 - 24) / WALK_MPS + 240)
    found = checkins(p, track)
    lingering = [e for e in found if e.arrival_ms < left_ms]
    assert all(e.verdict is not Verdict.VISITED for e in lingering)
    assert [e.verdict for e in found if e.arrival_ms > left_ms] == [Verdict.VISITED]


@pytest.mark.parametrize("gst", [False, True])
def test_a_clean_open_sky_visit_stays_visited(gst: bool) -> None:
    """Open sky (3 m claimed, no bias), standing two thirds of the way to the edge of a
    25 m point: the evidence is not thin and the verdict is `visited`, with or without GST."""
    p = point()
    path, seconds = legs((80.0, 0.0, 0.0), (16.0, 0.0, 90.0), (80.0, 0.0, 0.0))
    (ev,) = checkins(p, fixes(path, seconds, RATES["1hz"], gst=gst, wobble_m=1.0))
    assert ev.verdict is Verdict.VISITED
