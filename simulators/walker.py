"""A patrol member walking a line on a virtual clock, seen through a simulated receiver.

The walker keeps two positions apart on purpose: the true one (ground truth for tests,
kept in a local metric frame anchored at the line's first point) and the reported one,
which adds a first-order Gauss-Markov error per axis the way real GNSS error wanders
slowly rather than jumping every second. The error is clipped to 7 m so a walker standing
at a point's centre is always reported inside its geofence; everything else about
detection is left to the engine under test. Time advances only through `tick`, and all
randomness comes from the caller's `random.Random`, so a seed replays byte for byte.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from agent.checkin.geo import distance_m, offset, to_local
from agent.checkin.plan import Line, Plan, Point
from agent.gnss.nmea import UERE_M
from contract.fix import Fix, FixMode, Quality
from simulators.district import CLEARANCE_M, segment_distance
from simulators.nmea import gga, rmc

NOISE_SIGMA_M = 2.0
NOISE_TAU_S = 30.0
NOISE_CLIP_M = 6.95  # "at most 7 m", with room for NMEA rounding
ARRIVAL_SPOT_M = 2.0  # the walker stops this close (at most) to a point's centre
JITTER_SIGMA_M = 0.15
JITTER_CLIP_M = 0.5
KNOT_MPS = 1852 / 3600  # RMC reports speed in knots, two decimals
MAX_LEG_M = 2000.0  # no line has consecutive points further apart (districts keep to this)


@dataclass(frozen=True, slots=True)
class Visit:
    point_id: str
    arrival_ms: int  # when the walker stopped at the point (began dwelling)
    departure_ms: int  # when it left


def _clip(x: float, y: float, limit: float) -> tuple[float, float]:
    norm = math.hypot(x, y)
    if norm <= limit:
        return x, y
    return x * limit / norm, y * limit / norm


class Walker:
    """One handset's owner walking `line` in a loop from `start_ms` until after `shift_end_ms`."""

    def __init__(  # noqa: PLR0917 - the agreed positional signature
        self,
        device_id: str,
        plan: Plan,
        line: Line,
        rng: random.Random,
        start_ms: int,
        shift_end_ms: int,
    ) -> None:
        self.device_id = device_id
        self._plan = plan
        self._rng = rng
        self._shift_end_ms = shift_end_ms
        self._stops: list[Point] = [plan.point(pid) for pid in line.point_ids]
        self._lat0, self._lon0 = self._stops[0].lat, self._stops[0].lon
        # Only points near the line matter to where the walker starts and when it is clear of
        # geofences; in a district of hundreds of points the rest would cost every tick.
        reach_m = MAX_LEG_M + 500.0
        self._near = [
            p
            for p in plan.points
            if any(distance_m(s.lat, s.lon, p.lat, p.lon) <= reach_m for s in self._stops)
        ]
        self._xy = {p.id: to_local(self._lat0, self._lon0, p.lat, p.lon) for p in self._near}
        self._pace = rng.uniform(1.1, 1.5)
        self._pos = self._start_spot()
        self._leg = 0
        self._target = self._spot_near(self._stops[0])
        self._spot = self._pos
        self._dwell_until: int | None = None
        self._arrival_ms = 0
        self._speed = 0.0
        self._course = (
            math.degrees(math.atan2(self._target[1] - self._pos[1], self._target[0] - self._pos[0]))
            % 360.0
        )
        self._err = _clip(rng.gauss(0, NOISE_SIGMA_M), rng.gauss(0, NOISE_SIGMA_M), NOISE_CLIP_M)
        self._hdop = rng.uniform(0.8, 1.4)
        self._sats = rng.randint(8, 14)
        self._alt = 250.0 + rng.gauss(0, 2.0)
        self._last_ms = start_ms
        self._visits: list[Visit] = []
        self._done = False
        self._true = offset(self._lat0, self._lon0, *self._pos)
        # Faults a scenario applies (simulators/scenario.py): the receiver hears nothing,
        # its error grows (an urban canyon), or a spoofer shifts what it reports.
        self.outage = False
        self.noise_scale = 1.0
        self.spoof_m = (0.0, 0.0)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def visits(self) -> list[Visit]:
        return list(self._visits)

    @property
    def true_position(self) -> tuple[float, float]:
        return self._true

    def _start_spot(self) -> tuple[float, float]:
        """100-200 m from the first point, clear of every geofence, ideally on a clear path."""
        first = self._xy[self._stops[0].id]
        fallback: tuple[float, float] | None = None
        for _ in range(200):
            bearing, dist = self._rng.uniform(0, 2 * math.pi), self._rng.uniform(100, 200)
            spot = (first[0] + dist * math.cos(bearing), first[1] + dist * math.sin(bearing))
            if any(math.dist(spot, self._xy[p.id]) <= p.radius_m + CLEARANCE_M for p in self._near):
                continue
            path_clear = all(
                segment_distance(self._xy[p.id], spot, first) > p.radius_m + CLEARANCE_M
                for p in self._near
                if p.id != self._stops[0].id
            )
            if path_clear:
                return spot
            fallback = fallback or spot
        return fallback or spot

    def _spot_near(self, point: Point) -> tuple[float, float]:
        n, e = self._xy[point.id]
        bearing, dist = self._rng.uniform(0, 2 * math.pi), self._rng.uniform(0, ARRIVAL_SPOT_M)
        return n + dist * math.cos(bearing), e + dist * math.sin(bearing)

    def _move(self, now_ms: int, dt: float) -> None:
        rng = self._rng
        if self._dwell_until is not None:
            if now_ms >= self._dwell_until:  # leave: the dwell is complete
                self._visits.append(Visit(self._stops[self._leg].id, self._arrival_ms, now_ms))
                self._dwell_until = None
                self._leg = (self._leg + 1) % len(self._stops)
                self._target = self._spot_near(self._stops[self._leg])
            else:
                jn, je = _clip(
                    rng.gauss(0, JITTER_SIGMA_M), rng.gauss(0, JITTER_SIGMA_M), JITTER_CLIP_M
                )
                self._pos = (self._spot[0] + jn, self._spot[1] + je)
            self._speed = 0.0
            return
        self._speed = min(1.6, max(1.0, self._pace + rng.uniform(-0.1, 0.1)))
        dn, de = self._target[0] - self._pos[0], self._target[1] - self._pos[1]
        remaining, step = math.hypot(dn, de), self._speed * dt
        if remaining > 0:
            self._course = math.degrees(math.atan2(de, dn)) % 360.0
        if remaining <= step:  # arrived: stand here for the point's dwell plus a margin
            self._pos = self._spot = self._target
            point = self._stops[self._leg]
            self._arrival_ms = now_ms
            self._dwell_until = now_ms + round((point.dwell_s + rng.uniform(20, 60)) * 1000)
        elif remaining > 0:
            self._pos = (self._pos[0] + dn * step / remaining, self._pos[1] + de * step / remaining)

    def _clear_of_points(self) -> bool:
        here = self._pos  # the local frame: no trigonometry on a path walked every second
        return all(math.dist(here, self._xy[p.id]) > 2 * p.radius_m for p in self._near)

    def _update_receiver(self, dt: float) -> None:
        rng = self._rng
        a = math.exp(-dt / NOISE_TAU_S)
        s = NOISE_SIGMA_M * self.noise_scale * math.sqrt(1 - a * a)
        self._err = _clip(
            a * self._err[0] + s * rng.gauss(0, 1),
            a * self._err[1] + s * rng.gauss(0, 1),
            NOISE_CLIP_M * self.noise_scale,
        )
        self._hdop = min(
            1.4, max(0.8, self._hdop + 0.02 * (1.05 - self._hdop) + 0.03 * (rng.random() - 0.5))
        )
        if rng.random() < 1 / 60:
            self._sats = min(14, max(8, self._sats + rng.choice((-1, 1))))
        self._alt += 0.02 * (250.0 - self._alt) + 0.3 * (rng.random() - 0.5)

    def _advance(self, now_ms: int) -> tuple[float, float] | None:
        """Walk to `now_ms`; the position the receiver reports then (None: done, or deaf)."""
        if self._done:
            return None
        dt = max(0, now_ms - self._last_ms) / 1000.0
        self._last_ms = now_ms
        self._move(now_ms, dt)
        self._true = offset(self._lat0, self._lon0, *self._pos)
        walking = self._dwell_until is None
        if now_ms >= self._shift_end_ms and walking and self._clear_of_points():
            self._done = True
            return None
        self._update_receiver(dt)
        if self.outage:
            return None
        return offset(
            self._lat0,
            self._lon0,
            self._pos[0] + self._err[0] + self.spoof_m[0],
            self._pos[1] + self._err[1] + self.spoof_m[1],
        )

    def tick(self, now_ms: int) -> bytes:
        """Advance to `now_ms` and return that second's GGA + RMC bytes (b"" once done)."""
        where = self._advance(now_ms)
        if where is None:
            return b""
        lat, lon = where
        text = gga(
            now_ms, lat, lon, satellites=self._sats, hdop=self._hdop, altitude_m=self._alt
        ) + rmc(now_ms, lat, lon, speed_mps=self._speed, course_deg=self._course)
        return text.encode("ascii")

    def fix(self, now_ms: int) -> Fix | None:
        """`tick` without the text: the fix the agent's NMEA parser makes of that second's
        GGA + RMC (same fields, rounded as NMEA rounds them), for fleets too large to parse
        every sentence of every device (docs/fleet.md)."""
        where = self._advance(now_ms)
        if where is None:
            return None
        hdop = round(self._hdop, 2)
        return Fix(
            time_ms=now_ms,
            lat=round(where[0] * 6_000_000) / 6_000_000,  # simulators/nmea.py: 1e-5 minute
            lon=round(where[1] * 6_000_000) / 6_000_000,
            accuracy_m=hdop * UERE_M,
            hdop=hdop,
            alt_m=round(self._alt, 1),
            mode=FixMode.FIX_3D,
            quality=Quality.GPS,
            satellites=self._sats,
            speed_mps=round(self._speed / KNOT_MPS, 2) * KNOT_MPS,
            course_deg=round(self._course, 1),
        )
