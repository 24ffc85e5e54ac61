"""Stage 3 of the district (simulators/bigdistrict.py): where the patrol points stand.

Each zone kind says which tier patrols it and whether its points stand at the zone's
entrances (a street on its border) or inside (a street within it), after the seed article:
street-level forces at commercial areas, squares, hubs, schools, hospitals, markets and
offices; community-level in back streets, at compound gates and hill parks; grid-level
inside and around compounds and workplaces. Each tier's total is shared over its zones by
kind and size (`apportion`), within what the zone's streets can hold, and every point is
on a street, off intersections, off the river, and at least MIN_SPACING_M from every
other point, so no two geofences touch.

Placement is a module of its own because it is the one stage that searches: it draws
spots until they fit, and when a zone is too crowded for its share it starts again from a
fresh random stream (`place_points`). `GenerationError` is defined here, at the bottom of
the generator, because placing is where it is first raised; the later stages raise it too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.checkin.plan import Point, Tier
from simulators.districtzones import (
    NX,
    NY,
    Placement,
    ZoneInfo,
    ZoneKind,
    to_latlon,
    zone_streets,
)
from simulators.simerror import SimulatorError
from simulators.streetnet import XY, Spot, StreetNet, polyline_distance

__all__ = [
    "MIN_SPACING_M",
    "PATROL_TIERS",
    "GenerationError",
    "PointInfo",
    "apportion",
    "place_points",
]

FOOT_MAX_SPEED_MPS = 2.5  # a foot patrol: driving past is not a visit
MIN_SPACING_M = 100.0  # between any two points: geofences (<= 35 m) never touch
RIVER_CLEAR_M = 45.0  # points keep off the river and its bridges
MAX_TRIES = 400
POINT_ATTEMPTS = 20


class GenerationError(SimulatorError):
    """The generator could not satisfy its own constraints for this seed (a bug to report)."""


S, C, G = Tier.STREET, Tier.COMMUNITY, Tier.GRID
ENT, INS = Placement.ENTRANCE, Placement.INSIDE
# Who patrols a zone of each kind, where its points stand, and how many (relative weight).
ZONE_POINTS: dict[ZoneKind, tuple[tuple[Tier, Placement, float], ...]] = {
    ZoneKind.COMMERCIAL: ((S, ENT, 2.0), (S, INS, 2.0)),
    ZoneKind.SQUARE: ((S, ENT, 2.5),),
    ZoneKind.TRANSPORT_HUB: ((S, ENT, 3.5),),
    ZoneKind.SCHOOL: ((S, ENT, 2.0),),
    ZoneKind.HOSPITAL: ((S, ENT, 2.5),),
    ZoneKind.MARKET: ((S, ENT, 1.5), (S, INS, 1.0)),
    ZoneKind.GOVERNMENT: ((S, ENT, 2.0),),
    ZoneKind.PARK: ((C, ENT, 2.5),),
    ZoneKind.BACK_STREETS: ((C, INS, 3.0), (C, ENT, 0.5)),
    ZoneKind.RESIDENTIAL: ((C, ENT, 1.5), (G, INS, 2.0), (G, ENT, 0.5)),
    ZoneKind.WORKPLACE: ((G, INS, 1.5), (G, ENT, 1.5)),
}
RADIUS_M: dict[ZoneKind, float] = {
    ZoneKind.TRANSPORT_HUB: 35.0,
    ZoneKind.SQUARE: 35.0,
    ZoneKind.COMMERCIAL: 30.0,
    ZoneKind.MARKET: 30.0,
    ZoneKind.PARK: 30.0,
}
DEFAULT_RADIUS_M = {S: 25.0, C: 25.0, G: 20.0}
TIER_POINTS = {S: 175, C: 196, G: 260}
PATROL_TIERS = (S, C, G)
MIN_POINTS = {S: 1, C: 1, G: 2}  # per zone that has the tier; a grid line needs two


@dataclass(frozen=True, slots=True)
class PointInfo:
    point: Point
    xy: XY
    spot: Spot
    placement: Placement


def apportion(
    total: int, weights: Sequence[float], minimum: Sequence[int], cap: Sequence[int]
) -> list[int]:
    """Share `total` out by weight (D'Hondt), each share within its [minimum, cap]."""
    shares = list(minimum)
    left = total - sum(shares)
    if left < 0 or sum(cap) < total:
        raise GenerationError(f"cannot share {total} within minimums and caps")
    for _ in range(left):
        k = max(
            (k for k in range(len(shares)) if shares[k] < cap[k] and weights[k] > 0),
            key=lambda k: (weights[k] / (shares[k] + 1), -k),
            default=None,
        )
        if k is None:
            raise GenerationError(f"cannot share {total}: every share is at its cap")
        shares[k] += 1
    return shares


class _Spacing:
    """Placed points in a hash of MIN_SPACING_M cells: a spacing check looks at nine cells."""

    def __init__(self) -> None:
        self._cells: dict[tuple[int, int], list[XY]] = {}

    @staticmethod
    def _key(xy: XY) -> tuple[int, int]:
        return math.floor(xy[0] / MIN_SPACING_M), math.floor(xy[1] / MIN_SPACING_M)

    def clear(self, xy: XY) -> bool:
        cx, cy = self._key(xy)
        return all(
            math.dist(xy, other) >= MIN_SPACING_M
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            for other in self._cells.get((cx + dx, cy + dy), ())
        )

    def add(self, xy: XY) -> None:
        self._cells.setdefault(self._key(xy), []).append(xy)


def _usable(net: StreetNet, zone: ZoneInfo) -> dict[Placement, list[int]]:
    """The zone's streets a point may stand on: some of their middle part is off the river."""
    out: dict[Placement, list[int]] = {}
    for where, streets in zone_streets(net, zone.cells).items():
        out[where] = [
            s
            for s in streets
            if not net.river
            or any(
                polyline_distance(net.spot_xy(Spot(s, t)), net.river) >= RIVER_CLEAR_M
                for t in (0.2, 0.35, 0.5, 0.65, 0.8)
            )
        ]
    return out


def _capacity(usable: dict[Placement, list[int]]) -> int:
    """Points a zone can hold: one per street (their middle parts are < MIN_SPACING_M long),
    a border street being shared with the zone across it, and corners costing some more."""
    return int(0.5 * len(usable[ENT]) + 0.75 * len(usable[INS]))


def _point_counts(
    zones: Sequence[ZoneInfo], usable: Sequence[dict[Placement, list[int]]]
) -> dict[tuple[int, Tier], int]:
    """How many points of each tier every zone gets, by kind and size, within its room."""
    mean_cells = NX * NY / len(zones)
    weight: dict[tuple[int, Tier], float] = {}
    cap: dict[tuple[int, Tier], int] = {}
    for k, z in enumerate(zones):
        size = min(1.6, max(0.7, math.sqrt(z.blocks / mean_cells)))
        tiers: dict[Tier, float] = {}
        for tier, _, w in ZONE_POINTS[z.kind]:
            tiers[tier] = tiers.get(tier, 0.0) + w
        room, total = _capacity(usable[k]), sum(tiers.values())
        for n, (tier, w) in enumerate(tiers.items()):
            last = n == len(tiers) - 1  # the last tier takes what the others leave
            share = (
                room - sum(cap[k, t] for t in tiers if (k, t) in cap)
                if last
                else int(room * w / total)
            )
            cap[k, tier] = share if share >= MIN_POINTS[tier] else 0
            weight[k, tier] = w * size
    out: dict[tuple[int, Tier], int] = {}
    for tier in PATROL_TIERS:
        keys = [key for key in weight if key[1] is tier]
        shares = apportion(
            TIER_POINTS[tier],
            [weight[key] for key in keys],
            [MIN_POINTS[tier] if cap[key] else 0 for key in keys],
            [cap[key] for key in keys],
        )
        out.update((key, n) for key, n in zip(keys, shares, strict=True) if n)
    return out


def _dwell(rng: random.Random, radius_m: float) -> float:
    """At least the time a walker at 1 m/s takes to cross the geofence, plus 20 s."""
    base = math.ceil((2 * radius_m + 20) / 10) * 10
    return float(base + 10 * rng.randint(0, 4))


def _points(rng: random.Random, net: StreetNet, zones: Sequence[ZoneInfo]) -> list[PointInfo]:
    """Points on the zones' streets, the zones with the least room per point first."""
    usable = [_usable(net, z) for z in zones]
    counts = _point_counts(zones, usable)
    wanted: dict[int, list[tuple[Tier, int]]] = {}
    for (k, tier), n in counts.items():
        wanted.setdefault(k, []).append((tier, n))
    spacing = _Spacing()
    placed: list[tuple[int, Tier, Placement, Spot, XY]] = []

    def room(k: int) -> float:
        return (_capacity(usable[k]) + 0.5) / sum(n for _, n in wanted[k])

    for k in sorted(wanted, key=lambda k: (room(k), k)):
        streets, inside = usable[k], set(usable[k][INS])
        for tier, n in sorted(wanted[k], key=lambda tn: PATROL_TIERS.index(tn[0])):
            slots = [(where, w) for t, where, w in ZONE_POINTS[zones[k].kind] if t is tier]
            for _ in range(n):
                where = rng.choices([s for s, _ in slots], [w for _, w in slots])[0]
                for attempt in range(MAX_TRIES):
                    own = streets[where] if attempt < MAX_TRIES // 4 else []
                    street = rng.choice(own or streets[ENT] + streets[INS])
                    spot = Spot(street, round(rng.uniform(0.2, 0.8), 3))
                    xy = net.spot_xy(spot)
                    if spacing.clear(xy) and polyline_distance(xy, net.river) >= RIVER_CLEAR_M:
                        spacing.add(xy)
                        actual = INS if spot.street in inside else ENT
                        placed.append((k, tier, actual, spot, xy))
                        break
                else:
                    raise GenerationError(f"no room for a {tier} point in zone {zones[k].id}")
    placed.sort(key=lambda p: (p[0], PATROL_TIERS.index(p[1])))  # ids by zone, then tier
    out = []
    for n, (k, tier, where, spot, xy) in enumerate(placed, start=1):
        zone = zones[k]
        radius = RADIUS_M.get(zone.kind, DEFAULT_RADIUS_M[tier])
        lat, lon = to_latlon(xy)
        point = Point(
            id=f"P{n:03d}",
            lat=lat,
            lon=lon,
            radius_m=radius,
            dwell_s=_dwell(rng, radius),
            max_speed_mps=FOOT_MAX_SPEED_MPS,
            tier=tier,
            zone=zone.id,
        )
        out.append(PointInfo(point, xy, spot, where))
    return out


def place_points(
    rng: Callable[[int], random.Random], net: StreetNet, zones: Sequence[ZoneInfo]
) -> list[PointInfo]:
    """The district's points, drawn again from a fresh stream `rng(attempt)` when a zone is
    too crowded for its share (rare)."""
    for attempt in range(POINT_ATTEMPTS):
        try:
            return _points(rng(attempt), net, zones)
        except GenerationError:
            if attempt == POINT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
