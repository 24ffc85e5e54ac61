"""Ground-truth cases for the check-in engine: walkers of known intent, seen through a receiver.

Each case is one person and one point. The person's true 1 Hz track is built in metres
around the point (walk, stand, cycle, drive), labelled from that track alone (visited or
not, and whether the label is unambiguous given the receiver's sigma), then observed
through an error model (simulators/errors.py) and, for the security cases, tampered with:
a receiver glitch that teleports kilometres away and back (JUMP), or a spoofer that takes
over and teleports or drags the position onto the point while Doppler says 0 (SPOOF).

"Unambiguous" is symmetric around the radius with the same margin both ways: a visit
stands within max(0, r - 2 sigma - 3) m of the centre for at least dwell + 20 s; a pass
through the circle spends at most dwell - 20 s within r + 2 sigma + 3 m of the centre; the
other non-visits keep r + 3 sigma + 10 m away (sigma: the error model's horizontal 1-sigma
without outliers). Everything else is ambiguous (EDGE, some corner cuts). Drive-bys (every
DRIVE_THROUGH, every other CYCLE_THROUGH) are at points that forbid them by speed.
Spoofers come in three kinds: a teleport, a fast drag, and a careful one that drags the
position over and away again at walking pace, the way a mock-location app is used to fake
a check-in.

A case is a pure function of (seed, behaviour, condition, index): each has its own
`random.Random` seeded from that string, so any one case can be rebuilt and replayed
alone, and a subset of a run is a subset of the cases of the whole run. This module only
builds cases and never imports the engine: running and scoring them is simulators/truth.py,
so no label can lean on what the engine under test does.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from agent.checkin.geo import offset
from agent.checkin.plan import Plan, Point
from contract.fix import Fix
from simulators.errors import (
    ONE_HZ,
    Condition,
    ErrorModel,
    Observation,
    Sample,
    draw_outage,
    fix_at,
    observe,
)
from simulators.rates import draw, observe_rated, truth_at

ORIGIN = (29.265, 106.255)
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
RADIUS_M = (20.0, 40.0)
DWELL_S = (30, 120)
DRIVE_MAX_SPEED_MPS = 2.5  # what the points of drive-by cases forbid
WALK_MPS = (1.1, 1.6)
CYCLE_MPS = (5.0, 7.0)
DRIVE_MPS = (8.0, 15.0)
JUMP_M = (1_000.0, 20_000.0)
JUMP_S = (3, 30)
SPOOF_FROM_M = (300.0, 600.0)  # the true walker stays this far from the point
DRAG_FAST_MPS = (5.0, 30.0)
DRAG_SLOW_MPS = (1.0, 2.0)  # a mock-location app walking the position over
DECOY_M = (3_000.0, 6_000.0)
APPROACH_M = (70.0, 130.0)  # where walks begin and end, from the point

XY = tuple[float, float]


class Behaviour(enum.StrEnum):
    VISIT = "visit"
    SKIP = "skip"
    CUT_CORNER = "cut_corner"
    NEXT_STREET = "next_street"
    LINGER_OUTSIDE = "linger_outside"
    CYCLE_THROUGH = "cycle_through"
    DRIVE_THROUGH = "drive_through"
    EDGE = "edge"  # ambiguous on purpose: the edge of the radius or of the dwell
    JUMP = "jump"
    SPOOF = "spoof"


class SpoofKind(enum.StrEnum):
    TELEPORT = "teleport"
    DRAG_FAST = "drag_fast"
    DRAG_SLOW = "drag_slow"


@dataclass(frozen=True, slots=True)
class Case:
    behaviour: Behaviour
    condition: Condition
    index: int
    point: Point
    decoys: tuple[Point, ...]
    model: ErrorModel
    visited: bool  # the label, from the true track
    unambiguous: bool
    truth: tuple[Sample, ...]  # the person, 1 Hz from t0_ms, metres from the point
    fixes: tuple[Fix, ...]  # what the receiver reported, in time order
    t0_ms: int
    stand_m: float | None = None  # where a visit stood (distance from the centre)
    stand_s: int = 0  # how long it stood there
    jumps: tuple[tuple[int, int], ...] = ()  # injected jumps, [first, last] jumped fix ms
    spoof: SpoofKind | None = None
    spoof_ms: tuple[int, int] | None = None  # first and last spoofed second
    switch_ms: int | None = None  # RATE_SWITCH: when the receiver changed its rate

    @property
    def plan(self) -> Plan:
        return Plan(version=1, points=(self.point, *self.decoys))

    @property
    def hidden(self) -> bool:
        """A real visit the sky hid: the seconds of the true stay inside the radius in
        which the receiver reported a fix span less than the point's dwell (a cover). No
        engine can prove such a stay; the benchmark reports these apart from recall."""
        if not self.visited:
            return False
        r = self.point.radius_m
        seen = {(f.time_ms - self.t0_ms) // 1000 for f in self.fixes if f.time_ms is not None}
        inside = sum(
            1
            for s, smp in enumerate(self.truth)
            if s in seen and math.hypot(smp.north, smp.east) <= r
        )
        return inside <= self.point.dwell_s  # n fixes a second apart span n - 1 seconds

    @property
    def drive_by(self) -> bool:
        """A pass the point forbids by speed: never any check-in."""
        return self.point.max_speed_mps is not None


# -- true tracks -------------------------------------------------------------------------


def _polar(d: float, bearing: float) -> XY:
    return d * math.cos(bearing), d * math.sin(bearing)


class _Track:
    """A true 1 Hz track under construction: the person's position every second."""

    def __init__(self, rng: random.Random, start: XY, *, at_start: bool = True) -> None:
        self.rng = rng
        self.pos = start
        self.samples: list[Sample] = [Sample(start[0], start[1], 0.0, 0.0)] if at_start else []

    def __len__(self) -> int:
        return len(self.samples)

    def _step(self, pos: XY, speed: float, course: float) -> None:
        self.pos = pos
        self.samples.append(Sample(pos[0], pos[1], speed, math.degrees(course) % 360.0))

    def carry_on(self, seconds: int) -> None:
        """Keep going the same way at the same speed until the track is `seconds` long."""
        last = self.samples[-1]
        course = math.radians(last.course_deg)
        v = max(s.speed_mps for s in self.samples[-3:])  # the last step may be a short one
        while len(self.samples) < seconds:
            self._step(
                (self.pos[0] + v * math.cos(course), self.pos[1] + v * math.sin(course)), v, course
            )

    def walk_to(self, target: XY, pace: float) -> None:
        while True:
            dn, de = target[0] - self.pos[0], target[1] - self.pos[1]
            remaining = math.hypot(dn, de)
            v = max(0.3, pace * (1 + self.rng.gauss(0, 0.04)))
            course = math.atan2(de, dn)
            if remaining <= v:
                self._step(target, remaining, course)
                return
            self._step(
                (self.pos[0] + dn * v / remaining, self.pos[1] + de * v / remaining), v, course
            )

    def stand(self, seconds: int) -> None:
        spot = self.pos
        course = math.radians(self.samples[-1].course_deg) if self.samples else 0.0
        for _ in range(seconds):
            sway = (self.rng.gauss(0, 0.15), self.rng.gauss(0, 0.15))
            norm = math.hypot(*sway)
            k = min(1.0, 0.4 / norm) if norm else 1.0
            self.samples.append(
                Sample(spot[0] + sway[0] * k, spot[1] + sway[1] * k, 0.0, math.degrees(course))
            )
        self.pos = spot

    def drive(
        self,
        target: XY,
        cruise: float,
        accel: float,
        decel: float,
        stops: Sequence[tuple[float, int]] = (),
    ) -> None:
        """Drive straight to `target`, stopping `s` seconds `d` metres along for each (d, s)."""
        a = self.pos
        length = math.dist(a, target)
        course = math.atan2(target[1] - a[1], target[0] - a[0])
        u = ((target[0] - a[0]) / length, (target[1] - a[1]) / length)
        x = 0.0
        v = self.samples[-1].speed_mps or cruise
        pending = sorted(stops)
        while x < length - 1e-6:
            stop_at = pending[0][0] if pending else None
            limit = cruise if stop_at is None else min(cruise, math.sqrt(2 * decel * (stop_at - x)))
            v_new = max(0.0, min(v + accel, limit))
            if stop_at is not None and (stop_at - x <= max(v_new, 0.5) or v_new < 0.3):
                self._step((a[0] + u[0] * stop_at, a[1] + u[1] * stop_at), stop_at - x, course)
                x, v = stop_at, 0.0
                self.stand(pending.pop(0)[1])
                continue
            step = min(v_new, length - x)
            x += step
            v = v_new
            self._step((a[0] + u[0] * x, a[1] + u[1] * x), step, course)


# -- behaviours --------------------------------------------------------------------------


@dataclass(slots=True)
class _Plot:
    """What a behaviour built: the true track and its label (before the receiver)."""

    track: _Track
    visited: bool
    unambiguous: bool
    cover_at: int | None = None  # UNDER_COVER: where the cover starts to shade
    cover_s: int = 0  # how long the person stays there (0: passes by)
    stand_m: float | None = None
    stand_s: int = 0
    shown: list[Sample] | None = None  # what the receiver is made to see, when not the truth
    spoof: SpoofKind | None = None
    spoof_span: tuple[int, int] | None = None  # first, last spoofed index


def _closest_index(track: _Track) -> int:
    return min(
        range(len(track)), key=lambda i: math.hypot(track.samples[i].north, track.samples[i].east)
    )


def _seconds_within(track: _Track, reach: float) -> int:
    return sum(math.hypot(s.north, s.east) <= reach for s in track.samples)


def _outward(rng: random.Random, at: XY, distance: float, spread_deg: float = 60.0) -> XY:
    """A place `distance` m from `at`, heading away from the point (within +-spread)."""
    radial = math.atan2(at[1], at[0])
    b = radial + math.radians(rng.uniform(-spread_deg, spread_deg))
    return at[0] + distance * math.cos(b), at[1] + distance * math.sin(b)


def _visit(rng: random.Random, r: float, dwell: float, sigma: float, edge: bool) -> _Plot:
    inner = max(0.0, r - 2 * sigma - 3)
    if edge:  # near the radius, or leaving near the end of the dwell
        stand_m = rng.uniform(inner, r + 2 * sigma)
        stand_s = round(dwell + rng.uniform(-15, 20))
    else:
        stand_m = rng.uniform(0, inner)
        stand_s = round(dwell + rng.uniform(20, 60))
    spot = _polar(stand_m, rng.uniform(0, 2 * math.pi))
    pace = rng.uniform(*WALK_MPS)
    t = _Track(rng, _polar(rng.uniform(*APPROACH_M), rng.uniform(0, 2 * math.pi)))
    t.walk_to(spot, pace)
    cover_at = len(t)
    t.stand(stand_s)
    t.walk_to(_polar(rng.uniform(*APPROACH_M), rng.uniform(0, 2 * math.pi)), pace)
    visited = stand_m <= r and stand_s >= dwell
    return _Plot(t, visited, not edge, cover_at, stand_s, stand_m, stand_s)


def _skip(rng: random.Random, r: float, sigma: float) -> _Plot:
    """Turns at a corner at least r + 3 sigma + 10 m from the point, never nearer."""
    corner = _polar(r + 3 * sigma + 10.5 + rng.uniform(0, 100), rng.uniform(0, 2 * math.pi))
    t = _Track(rng, _outward(rng, corner, rng.uniform(*APPROACH_M), 80))
    pace = rng.uniform(*WALK_MPS)
    t.walk_to(corner, pace)
    cover_at = len(t)
    t.walk_to(_outward(rng, corner, rng.uniform(*APPROACH_M), 80), pace)
    return _Plot(t, False, True, cover_at)


def _line(rng: random.Random, offset_m: float, half_m: float) -> tuple[XY, XY]:
    """A straight street `offset_m` from the point, `half_m` either side of the nearest spot."""
    b = rng.uniform(0, 2 * math.pi)
    foot = _polar(offset_m, b)
    along = (-math.sin(b), math.cos(b))
    return (
        (foot[0] - half_m * along[0], foot[1] - half_m * along[1]),
        (foot[0] + half_m * along[0], foot[1] + half_m * along[1]),
    )


def _pass(rng: random.Random, offset_m: float, half_m: float, pace: float) -> _Track:
    a, b = _line(rng, offset_m, half_m)
    t = _Track(rng, a)
    t.walk_to(b, pace)
    return t


def _cut_corner(rng: random.Random, r: float, dwell: float, sigma: float) -> _Plot:
    pace = rng.uniform(*WALK_MPS)
    reach = r + 2 * sigma + 3
    # the nearest the street may pass so that the time within `reach` stays dwell - 20 s
    chord = pace * (dwell - 20)
    h_min = math.sqrt(max(0.0, reach**2 - (chord / 2) ** 2))
    h = rng.uniform(h_min, 0.95 * r) if h_min < 0.95 * r else rng.uniform(0.4 * r, 0.95 * r)
    t = _pass(rng, h, rng.uniform(*APPROACH_M), pace)
    unambiguous = _seconds_within(t, reach) <= dwell - 20
    return _Plot(t, False, unambiguous, _closest_index(t))


def _next_street(rng: random.Random, r: float, sigma: float) -> _Plot:
    t = _pass(
        rng,
        r + 3 * sigma + 10.5 + rng.uniform(0, 5),
        rng.uniform(*APPROACH_M),
        rng.uniform(0.9, 1.5),
    )
    return _Plot(t, False, True, _closest_index(t))


def _linger(rng: random.Random, r: float, dwell: float, sigma: float) -> _Plot:
    spot = _polar(r + 3 * sigma + 10.5 + rng.uniform(0, 5), rng.uniform(0, 2 * math.pi))
    pace = rng.uniform(*WALK_MPS)
    t = _Track(rng, _outward(rng, spot, rng.uniform(*APPROACH_M)))
    t.walk_to(spot, pace)
    cover_at = len(t)
    t.stand(round(2 * dwell))
    t.walk_to(_outward(rng, spot, rng.uniform(*APPROACH_M)), pace)
    return _Plot(t, False, True, cover_at, round(2 * dwell))


def _cycle(rng: random.Random, r: float, dwell: float, sigma: float, gated: bool) -> _Plot:
    t = _pass(rng, rng.uniform(0, 0.8 * r), rng.uniform(120, 200), rng.uniform(*CYCLE_MPS))
    unambiguous = gated or _seconds_within(t, r + 2 * sigma + 3) <= dwell - 20
    return _Plot(t, False, unambiguous, _closest_index(t))


def _drive(rng: random.Random, r: float) -> _Plot:
    """Through the point at 8-15 m/s; half the time stop-and-go with short stops inside."""
    h = rng.uniform(0, 0.8 * r)
    half = rng.uniform(150, 250)
    a, b = _line(rng, h, half)
    chord = math.sqrt(r * r - h * h)
    stops: list[tuple[float, int]] = []
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 2)):
            stops.append((half + rng.uniform(-0.9, 0.9) * chord, rng.randint(3, 15)))
        stops.sort()
        if len(stops) == 2 and stops[1][0] - stops[0][0] < 5:
            stops.pop()
    t = _Track(rng, a)
    t.drive(b, rng.uniform(*DRIVE_MPS), rng.uniform(1.0, 2.5), rng.uniform(1.5, 3.0), stops)
    return _Plot(t, False, True, _closest_index(t))


def _spoof(rng: random.Random, r: float, dwell: float, sigma: float, kind: SpoofKind) -> _Plot:
    """The person walks a street 300-600 m away; the receiver is made to show the point."""
    distance = rng.uniform(*SPOOF_FROM_M)
    a, b = _line(rng, distance, rng.uniform(150, 250))
    t = _Track(rng, a)
    t.walk_to(b, rng.uniform(*WALK_MPS))
    start = min(rng.randint(30, 120), len(t) - 2)
    spot = _polar(rng.uniform(0, max(0.0, r - 2 * sigma - 3)), rng.uniform(0, 2 * math.pi))
    here = (t.samples[start].north, t.samples[start].east)
    fake = _Track(rng, spot if kind is SpoofKind.TELEPORT else here, at_start=False)
    if kind is not SpoofKind.TELEPORT:
        lo, hi = DRAG_FAST_MPS if kind is SpoofKind.DRAG_FAST else DRAG_SLOW_MPS
        fake.walk_to(spot, rng.uniform(lo, hi))
    fake.stand(round(dwell + rng.uniform(20, 60)))
    if kind is SpoofKind.DRAG_SLOW:  # the careful spoofer also drags the position away
        fake.walk_to(_outward(rng, spot, r + 3 * sigma + 60), rng.uniform(*DRAG_SLOW_MPS))
    end = start + len(fake.samples)
    while len(t) < end + 30:  # the person keeps walking (or waits) after the spoof
        t.stand(1)
    shown = t.samples[:start] + [replace(s, speed_mps=0.0) for s in fake.samples] + t.samples[end:]
    return _Plot(t, False, True, None, shown=shown, spoof=kind, spoof_span=(start, end - 1))


# -- a case ------------------------------------------------------------------------------


def _decoys(rng: random.Random) -> tuple[Point, ...]:
    out = []
    for k in range(3):
        lat, lon = offset(*ORIGIN, *_polar(rng.uniform(*DECOY_M), rng.uniform(0, 2 * math.pi)))
        out.append(Point(f"D{k}", round(lat, 7), round(lon, 7), 30.0, 60.0))
    return tuple(out)


def _inject_jump(
    rng: random.Random, obs: Observation, model: ErrorModel, t0_ms: int, shown: Sequence[Sample]
) -> tuple[int, int]:
    """A receiver glitch: the position teleports 1-20 km for 3-30 s and comes back.

    It happens while the receiver is tracking (fixes the second before, during and after);
    a jump out of an outage is invisible to any speed check. If the track has no such
    window (a long outage), the glitch makes the receiver report through it. Returns the
    times of the first and the last jumped fix.
    """
    length = rng.randint(*JUMP_S)
    lo, hi = 10, max(10, len(shown) - length - 12)
    silent = [False] * len(shown)  # a second with an epoch that reported nothing
    for off, f in zip(obs.offsets_ms, obs.fixes, strict=True):
        silent[off // 1000] |= f is None
    tracked = [k for k in range(lo, hi + 1) if not any(silent[k - 1 : k + length + 1])]
    k = rng.choice(tracked) if tracked else rng.randint(lo, hi)
    far = _polar(rng.uniform(*JUMP_M), rng.uniform(0, 2 * math.pi))
    jumped_ms: list[int] = []
    for e, off in enumerate(obs.offsets_ms):
        if not 1000 * (k - 1) <= off <= 1000 * min(len(shown) - 1, k + length):
            continue
        jumped = 1000 * k <= off < 1000 * (k + length)
        if obs.fixes[e] is not None and not jumped:
            continue
        smp, (en, ee) = truth_at(shown, off / 1000), obs.errors[e]
        base = (far[0], far[1]) if jumped else (smp.north, smp.east)
        if jumped:
            jumped_ms.append(t0_ms + off)
        obs.fixes[e] = fix_at(
            model,
            t0_ms + off,
            ORIGIN,
            (base[0] + en, base[1] + ee),
            model.accuracy_m,
            smp.speed_mps,
            smp.course_deg,
        )
    return jumped_ms[0], jumped_ms[-1]


def _switch_at(rng: random.Random, plot: _Plot) -> int:
    """RATE_SWITCH: the second the receiver changes rate, about when the person arrives."""
    n = len(plot.track)
    at = plot.cover_at if plot.cover_at is not None else n // 2
    return min(n - 10, max(10, at + rng.randint(-20, 40)))


def make_case(seed: int, behaviour: Behaviour, condition: Condition, index: int) -> Case:
    """Case `index` of `behaviour` in `condition`, a pure function of its arguments."""
    rng = random.Random(f"picket-truth/{seed}/{behaviour}/{condition}/{index}")
    model = draw(condition, rng)
    sigma = model.effective_sigma_m
    r = round(rng.uniform(*RADIUS_M), 1)
    dwell = float(rng.randint(*DWELL_S))
    gated = behaviour is Behaviour.DRIVE_THROUGH or (
        behaviour is Behaviour.CYCLE_THROUGH and index % 2 == 0
    )
    point = Point(
        "T",
        *ORIGIN,
        radius_m=r,
        dwell_s=dwell,
        max_speed_mps=DRIVE_MAX_SPEED_MPS if gated else None,
    )
    t0_ms = T0_MS + 1000 * rng.randrange(86_400)
    builders: dict[Behaviour, Callable[[], _Plot]] = {
        Behaviour.VISIT: lambda: _visit(rng, r, dwell, sigma, edge=False),
        Behaviour.EDGE: lambda: _visit(rng, r, dwell, sigma, edge=True),
        Behaviour.SKIP: lambda: _skip(rng, r, sigma),
        Behaviour.CUT_CORNER: lambda: _cut_corner(rng, r, dwell, sigma),
        Behaviour.NEXT_STREET: lambda: _next_street(rng, r, sigma),
        Behaviour.LINGER_OUTSIDE: lambda: _linger(rng, r, dwell, sigma),
        Behaviour.CYCLE_THROUGH: lambda: _cycle(rng, r, dwell, sigma, gated),
        Behaviour.DRIVE_THROUGH: lambda: _drive(rng, r),
        Behaviour.JUMP: lambda: (
            _visit(rng, r, dwell, sigma, edge=False) if index % 2 == 0 else _skip(rng, r, sigma)
        ),
        Behaviour.SPOOF: lambda: _spoof(rng, r, dwell, sigma, list(SpoofKind)[index % 3]),
    }
    plot = builders[behaviour]()
    outage = None if plot.cover_at is None else draw_outage(model, rng, plot.cover_at, plot.cover_s)
    if outage is not None:  # the person comes out from under the cover, fixes come back
        plot.track.carry_on(outage[1] + 30)
    shown = plot.shown if plot.shown is not None else plot.track.samples
    switch_s = None if model.switch_hz is None else _switch_at(rng, plot)
    if condition in ONE_HZ:
        obs = observe(model, shown, rng, ORIGIN, t0_ms, outage)
    else:
        obs = observe_rated(model, shown, rng, ORIGIN, t0_ms, outage, switch_s)
    jumps: tuple[tuple[int, int], ...] = ()
    if behaviour is Behaviour.JUMP:
        jumps = (_inject_jump(rng, obs, model, t0_ms, shown),)
    fixes = [f for f in obs.fixes if f is not None]
    spoof_ms = None
    if plot.spoof_span is not None:
        first, last = plot.spoof_span
        spoof_ms = (t0_ms + 1000 * first, t0_ms + 1000 * last)
        fixes = [
            replace(f, speed_mps=0.0)
            if f.time_ms is not None and spoof_ms[0] <= f.time_ms <= spoof_ms[1]
            else f
            for f in fixes
        ]
    return Case(
        behaviour,
        condition,
        index,
        point,
        _decoys(rng),
        model,
        plot.visited,
        plot.unambiguous,
        tuple(plot.track.samples),
        tuple(fixes),
        t0_ms,
        plot.stand_m,
        plot.stand_s,
        jumps,
        plot.spoof,
        spoof_ms,
        None if switch_s is None else t0_ms + 1000 * switch_s,
    )
