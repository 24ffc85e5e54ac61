"""A synthetic patrol district: points and the lines that order them.

Everything is generated in a local metric frame around the centre and only converted to
latitude/longitude at the end, so the geometric guarantees (point spacing, segments that
keep clear of other geofences, including the closing segment walkers take when they loop)
are checked in metres where they are meant. A private `random.Random(seed)` makes a
district a pure function of its seed, which is what lets tests and benches replay it.
"""

from __future__ import annotations

import math
import random

from agent.checkin.geo import offset, to_local
from agent.checkin.plan import Line, Plan, Point

HALF_SIDE_M = 1250.0  # the district is a 2.5 km x 2.5 km square around the centre
MIN_SPACING_M = 150.5  # 150 m plus a margin for local-frame vs. great-circle distance
MAX_HOP_M = 700.0
CLEARANCE_M = 25.5  # segments keep radius + 25 m (+ margin) from points they do not end at
ATTEMPTS = 500

XY = tuple[float, float]


def segment_distance(p: XY, a: XY, b: XY) -> float:
    """Distance in metres from p to the segment a-b (all in one local frame)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = (
        0.0
        if length2 == 0
        else max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2))
    )
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy)


def _place_points(rng: random.Random, n: int, center: tuple[float, float]) -> list[Point]:
    spots: list[XY] = []
    for _ in range(1000 * n):
        spot = (rng.uniform(-HALF_SIDE_M, HALF_SIDE_M), rng.uniform(-HALF_SIDE_M, HALF_SIDE_M))
        if all(math.dist(spot, s) >= MIN_SPACING_M for s in spots):
            spots.append(spot)
            if len(spots) == n:
                break
    if len(spots) < n:
        raise ValueError(f"cannot place {n} points {MIN_SPACING_M} m apart")
    points = []
    for i, (north, east) in enumerate(spots, start=1):
        lat, lon = offset(center[0], center[1], north, east)
        points.append(
            Point(
                id=f"P{i:03d}",
                lat=round(lat, 7),
                lon=round(lon, 7),
                radius_m=round(rng.uniform(20.0, 30.0), 1),
                dwell_s=float(rng.randint(60, 120)),
            )
        )
    return points


def _clear(tour: list[int], xy: list[XY], points: list[Point]) -> bool:
    """True if every segment of the closed tour keeps clear of every other point."""
    for k, i in enumerate(tour):
        j = tour[(k + 1) % len(tour)]
        for m, p in enumerate(points):
            if (
                m not in (i, j)
                and segment_distance(xy[m], xy[i], xy[j]) <= p.radius_m + CLEARANCE_M
            ):
                return False
    return True


def _make_line(
    rng: random.Random, xy: list[XY], points: list[Point], used: set[int]
) -> list[int] | None:
    unused = [i for i in range(len(points)) if i not in used]
    tour = [rng.choice(unused or list(range(len(points))))]
    length = rng.randint(4, 6)
    while len(tour) < length:
        here = xy[tour[-1]]
        near = sorted(
            (math.dist(here, xy[i]), i)
            for i in range(len(points))
            if i not in tour and math.dist(here, xy[i]) <= MAX_HOP_M
        )[:3]
        if not near:
            return None
        tour.append(rng.choice(near)[1])
    return tour if _clear(tour, xy, points) else None


def generate_district(
    seed: int,
    n_points: int = 24,
    n_lines: int = 6,
    center: tuple[float, float] = (29.265, 106.255),
) -> Plan:
    """A deterministic district around `center` (default: Shuangfu street, Chongqing)."""
    rng = random.Random(seed)
    while True:
        points = _place_points(rng, n_points, center)
        xy = [to_local(center[0], center[1], p.lat, p.lon) for p in points]
        tours: list[list[int]] = []
        used: set[int] = set()
        for _ in range(ATTEMPTS):
            if len(tours) == n_lines:
                break
            tour = _make_line(rng, xy, points, used)
            if tour is not None and all(set(tour) != set(t) for t in tours):
                tours.append(tour)
                used.update(tour)
        if len(tours) == n_lines:
            break
    lines = tuple(
        Line(id=f"L{k:02d}", point_ids=tuple(points[i].id for i in tour))
        for k, tour in enumerate(tours, start=1)
    )
    return Plan(version=1, points=tuple(points), lines=lines)
