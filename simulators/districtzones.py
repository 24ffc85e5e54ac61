"""Where things are in the district: its frame, terrain and zones.

The district is NX x NY blocks of the street lattice (simulators/streetnet.py) around
CENTER; positions are metres `(east, north)` from it, turned into latitude/longitude only
for files (`to_latlon`, rounded to 1e-7 degrees, about a centimetre, so files are stable).

The terrain is a handful of named places drawn from the seed: a downtown, an old town near
it, an industrial corner away from it, and three Gaussian hills away from both (the two
highest carry the drone docks). Zones come from the arterial superblocks, split in two again
and again (more often near downtown, never below two blocks, which is what leaves every zone
streets enough for its points) until there are N_ZONES; being unions of lattice blocks, they
tile the district exactly and their borders are streets. A zone's kind follows from where
it lies: parks on the highest ground, commerce, squares and offices nearest downtown, hubs
on a ring around it, workplaces in the industrial corner, back streets in the old town,
hospitals and schools spread out, residential compounds everywhere else. Ids follow a
Hilbert curve, so neighbouring ids are neighbouring zones.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from agent.checkin.geo import offset
from simulators.streetnet import ARTERIAL_EVERY, CELL_M, XY, StreetNet

CENTER = (29.265, 106.255)  # Shuangfu street, Chongqing (as simulators/district.py)
NX, NY = 48, 36  # blocks: 7.2 km x 5.4 km
N_ZONES = 180
MIN_ZONE_BLOCKS = 2  # a zone of one block has too little street for its points
GROUND_M = 210.0  # the valley floor above sea level; hills rise from it

Rect = tuple[int, int, int, int]  # blocks i0, j0 (inclusive) to i1, j1 (exclusive)


class ZoneKind(enum.StrEnum):
    COMMERCIAL = "commercial"
    SQUARE = "square"
    TRANSPORT_HUB = "transport_hub"
    SCHOOL = "school"
    HOSPITAL = "hospital"
    MARKET = "market"
    GOVERNMENT = "government"
    PARK = "park"
    BACK_STREETS = "back_streets"
    RESIDENTIAL = "residential_compound"
    WORKPLACE = "workplace"


class Placement(enum.StrEnum):
    """Where a point stands in its zone."""

    ENTRANCE = "entrance"  # on a street along the zone's border
    INSIDE = "inside"  # on a street within the zone


ZONE_COUNTS: dict[ZoneKind, int] = {
    ZoneKind.PARK: 8,
    ZoneKind.COMMERCIAL: 18,
    ZoneKind.SQUARE: 6,
    ZoneKind.GOVERNMENT: 4,
    ZoneKind.TRANSPORT_HUB: 5,
    ZoneKind.MARKET: 8,
    ZoneKind.WORKPLACE: 30,
    ZoneKind.BACK_STREETS: 22,
    ZoneKind.HOSPITAL: 5,
    ZoneKind.SCHOOL: 14,
    ZoneKind.RESIDENTIAL: 60,
}
LABELS = {
    ZoneKind.COMMERCIAL: "Commercial area",
    ZoneKind.SQUARE: "Square",
    ZoneKind.TRANSPORT_HUB: "Transport hub",
    ZoneKind.SCHOOL: "School",
    ZoneKind.HOSPITAL: "Hospital",
    ZoneKind.MARKET: "Market",
    ZoneKind.GOVERNMENT: "Government offices",
    ZoneKind.PARK: "Hill park",
    ZoneKind.BACK_STREETS: "Back streets",
    ZoneKind.RESIDENTIAL: "Residential compound",
    ZoneKind.WORKPLACE: "Workplace",
}


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    id: str
    kind: ZoneKind
    name: str
    cells: Rect
    ring: tuple[XY, ...]  # counter-clockwise, closed

    @property
    def centre(self) -> XY:
        corners = self.ring[:-1]
        return (
            sum(x for x, _ in corners) / len(corners),
            sum(y for _, y in corners) / len(corners),
        )

    @property
    def blocks(self) -> int:
        return (self.cells[2] - self.cells[0]) * (self.cells[3] - self.cells[1])


@dataclass(frozen=True, slots=True)
class Hill:
    xy: XY
    height_m: float
    sigma_m: float


def to_latlon(xy: XY) -> tuple[float, float]:
    lat, lon = offset(CENTER[0], CENTER[1], xy[1], xy[0])
    return round(lat, 7), round(lon, 7)


def lonlat(xy: XY) -> list[float]:
    """GeoJSON's [longitude, latitude] of a local position."""
    lat, lon = to_latlon(xy)
    return [lon, lat]


def hilbert_index(xy: XY, order: int = 10) -> int:
    """Position along a Hilbert curve over the district: near on the curve, near on the map."""
    n = 1 << order
    half_w, half_h = NX * CELL_M / 2, NY * CELL_M / 2
    side = max(half_w, half_h) * 2
    x = min(n - 1, max(0, int((xy[0] + half_w) / side * n)))
    y = min(n - 1, max(0, int((xy[1] + half_h) / side * n)))
    d, s = 0, n // 2
    while s > 0:
        rx, ry = int(x & s > 0), int(y & s > 0)
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x, y = n - 1 - x, n - 1 - y
            x, y = y, x
        s //= 2
    return d


@dataclass(frozen=True, slots=True)
class Terrain:
    downtown: XY
    old_town: XY
    industry: XY
    hills: tuple[Hill, ...]

    def elevation(self, xy: XY) -> float:
        return GROUND_M + sum(
            h.height_m * math.exp(-(math.dist(xy, h.xy) ** 2) / (2 * h.sigma_m**2))
            for h in self.hills
        )


def terrain(rng: random.Random) -> Terrain:
    half_w, half_h = NX * CELL_M / 2, NY * CELL_M / 2
    downtown = (rng.uniform(-0.2, 0.2) * half_w * 2, rng.uniform(-0.15, 0.25) * half_h * 2)
    angle = rng.uniform(0, 2 * math.pi)
    old_town = (downtown[0] + 800 * math.cos(angle), downtown[1] + 800 * math.sin(angle))
    corners = [(sx * half_w * 0.7, sy * half_h * 0.7) for sx in (-1, 1) for sy in (-1, 1)]
    industry = max(corners, key=lambda c: math.dist(c, downtown))
    hills: list[Hill] = []
    while len(hills) < 3:
        xy = (rng.uniform(-half_w + 300, half_w - 300), rng.uniform(-half_h + 300, half_h - 300))
        far = math.dist(xy, downtown) > 2500 and math.dist(xy, industry) > 1500
        if far and all(math.dist(xy, h.xy) > 2500 for h in hills):
            height = rng.uniform(90, 180) if len(hills) < 2 else rng.uniform(40, 80)
            hills.append(Hill((round(xy[0], 1), round(xy[1], 1)), round(height), 600.0))
    return Terrain(downtown, old_town, industry, tuple(hills))


# ------------------------------------------------------------------------------ zones


def _split_blocks(rng: random.Random, downtown: XY) -> list[Rect]:
    """Superblocks split in two, again and again, more often near downtown, until 180."""
    rects = [
        (i, j, i + ARTERIAL_EVERY, j + ARTERIAL_EVERY)
        for j in range(0, NY, ARTERIAL_EVERY)
        for i in range(0, NX, ARTERIAL_EVERY)
    ]

    def centre(r: Rect) -> XY:
        return (
            (r[0] + r[2]) / 2 * CELL_M - NX * CELL_M / 2,
            (r[1] + r[3]) / 2 * CELL_M - NY * CELL_M / 2,
        )

    while len(rects) < N_ZONES:
        weights = []
        for r in rects:
            area = (r[2] - r[0]) * (r[3] - r[1])
            near = math.exp(-(math.dist(centre(r), downtown) ** 2) / (2 * 1600.0**2))
            weights.append(area * (1 + 2 * near) if area >= 2 * MIN_ZONE_BLOCKS else 0.0)
        k = rng.choices(range(len(rects)), weights)[0]
        i0, j0, i1, j1 = rects[k]
        w, h = i1 - i0, j1 - j0
        across_x = w > h or (w == h and rng.random() < 0.5)
        side, other = (w, h) if across_x else (h, w)
        first = math.ceil(MIN_ZONE_BLOCKS / other)  # both halves keep MIN_ZONE_BLOCKS blocks
        cut = rng.randint(first, side - first)
        if across_x:
            rects[k], extra = (i0, j0, i0 + cut, j1), (i0 + cut, j0, i1, j1)
        else:
            rects[k], extra = (i0, j0, i1, j0 + cut), (i0, j0 + cut, i1, j1)
        rects.append(extra)
    return rects


def _ring(net: StreetNet, r: Rect) -> tuple[XY, ...]:
    i0, j0, i1, j1 = r
    idx = [(i, j0) for i in range(i0, i1)] + [(i1, j) for j in range(j0, j1)]
    idx += [(i, j1) for i in range(i1, i0, -1)] + [(i0, j) for j in range(j1, j0, -1)]
    ring = [net.nodes[net.node(i, j)] for i, j in idx]
    return (*ring, ring[0])


def _assign_kinds(rng: random.Random, centres: list[XY], terrain: Terrain) -> list[ZoneKind]:
    """Kinds by place: parks on hills, commerce downtown, workplaces in the industrial corner."""
    n = len(centres)
    free = list(range(n))
    kinds: dict[int, ZoneKind] = {}
    elev = [terrain.elevation(c) for c in centres]

    def dist(z: int, to: XY) -> float:
        return math.dist(centres[z], to)

    def take(kind: ZoneKind, key: Callable[[int], float], noise_m: float) -> None:
        noise = {z: rng.gauss(0, noise_m) for z in free}
        for z in sorted(free, key=lambda z: (key(z) + noise[z], z))[: ZONE_COUNTS[kind]]:
            kinds[z] = kind
            free.remove(z)

    def spread(kind: ZoneKind, within_m: float) -> None:
        chosen: list[int] = []
        for _ in range(ZONE_COUNTS[kind]):
            pool = [z for z in free if dist(z, terrain.downtown) <= within_m] or free
            if not chosen:
                z = rng.choice(pool)
            else:
                z = max(pool, key=lambda z: (min(dist(z, centres[c]) for c in chosen), -z))
            chosen.append(z)
            kinds[z] = kind
            free.remove(z)

    down = terrain.downtown
    take(ZoneKind.PARK, lambda z: -elev[z], 5.0)
    take(ZoneKind.COMMERCIAL, lambda z: dist(z, down), 150.0)
    take(ZoneKind.SQUARE, lambda z: dist(z, down), 400.0)
    take(ZoneKind.GOVERNMENT, lambda z: dist(z, down), 500.0)
    take(ZoneKind.TRANSPORT_HUB, lambda z: abs(dist(z, down) - 1800.0), 300.0)
    take(ZoneKind.MARKET, lambda z: dist(z, down) / 2, 700.0)
    take(ZoneKind.WORKPLACE, lambda z: dist(z, terrain.industry), 250.0)
    take(ZoneKind.BACK_STREETS, lambda z: dist(z, terrain.old_town), 200.0)
    spread(ZoneKind.HOSPITAL, 2500.0)
    spread(ZoneKind.SCHOOL, 1e9)
    for z in free:
        kinds[z] = ZoneKind.RESIDENTIAL
    return [kinds[z] for z in range(n)]


def zones(rng: random.Random, net: StreetNet, terrain: Terrain) -> list[ZoneInfo]:
    """N_ZONES zones tiling the district, with kinds and names; ids along a Hilbert curve."""
    rects = _split_blocks(rng, terrain.downtown)
    draft = [ZoneInfo("", ZoneKind.RESIDENTIAL, "", r, _ring(net, r)) for r in rects]
    draft.sort(key=lambda z: (hilbert_index(z.centre), z.cells))
    kinds = _assign_kinds(rng, [z.centre for z in draft], terrain)
    numbers: dict[ZoneKind, int] = {}
    out = []
    for k, (z, kind) in enumerate(zip(draft, kinds, strict=True)):
        numbers[kind] = numbers.get(kind, 0) + 1
        name = f"{LABELS[kind]} {numbers[kind]}"
        out.append(dataclasses.replace(z, id=f"Z{k + 1:03d}", kind=kind, name=name))
    return out


def zone_streets(net: StreetNet, r: Rect) -> dict[Placement, list[int]]:
    """The streets along a zone's border (entrances) and within it (inside)."""
    i0, j0, i1, j1 = r
    out: dict[Placement, list[int]] = {Placement.ENTRANCE: [], Placement.INSIDE: []}

    def add(a: int, b: int, where: Placement) -> None:
        s = net.street_between(a, b)
        if s is not None:
            out[where].append(s)

    for j in range(j0, j1 + 1):
        for i in range(i0, i1):
            add(
                net.node(i, j),
                net.node(i + 1, j),
                Placement.INSIDE if j0 < j < j1 else Placement.ENTRANCE,
            )
    for i in range(i0, i1 + 1):
        for j in range(j0, j1):
            add(
                net.node(i, j),
                net.node(i, j + 1),
                Placement.INSIDE if i0 < i < i1 else Placement.ENTRANCE,
            )
    for j in range(j0, j1):
        for i in range(i0, i1):
            add(net.node(i, j), net.node(i + 1, j + 1), Placement.INSIDE)
            add(net.node(i + 1, j), net.node(i, j + 1), Placement.INSIDE)
    return out
