"""The district at its real scale: 180 zones, 631 points, 197 lines, 2,747 members, 2 docks.

`generate(seed)` builds it in stages, each with its own random stream derived from the seed
(`Random(f"…:{seed}:zones")`), so changing how one stage draws never shifts the others,
and the whole district is a pure function of the seed (no set or hash order anywhere):

1. streets (simulators/streetnet.py): a bent lattice of arterials and local streets, two
   diagonal avenues, a river bridged only by the big roads;
2. terrain and zones (simulators/districtzones.py): downtown, old town, an industrial
   corner and hills; 180 zones tiling the district along streets, each of a kind;
3. points (simulators/districtpoints.py): each zone kind says which tier patrols it and
   whether its points stand at the zone's entrances or inside; every point is on a street,
   off the river, and at least MIN_SPACING_M from every other, so no two geofences touch;
4. lines: a tier's points are ordered along a Hilbert curve and cut where the curve jumps
   (dynamic programming on the squared laps, so laps are short and even); grid-level lines
   stay inside their compound or workplace. Each group is put in its shortest cyclic order
   by street distance, and the route along the streets is kept for the map and the file.
   A line is one duty, walked in one shift; its crew is one team;
5. members: each tier's members are shared over its lines by their point counts;
6. the two highest hills carry the drone docks (the article's 2 高空点位机巢), and a small
   separate plan flies from each over the nearest parks, squares and hubs.

Time windows follow from the route, not from a timetable: a walker loops its line all shift,
so every window is at least one slow lap (1.0 m/s, each dwell plus a minute) plus the
longest visit plus half an hour, and the windows are staggered through the shift in line
order. Any such window holds a complete visit by a walker looping the line from the start
of its shift, whatever its pace.

The files are written by simulators/districtfiles.py, the map by simulators/districtmap.py;
who walks what is simulators/roster.py (`members(dir)` is re-exported here).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.checkin.plan import Line, Plan, Point, Tier, Window, Zone
from simulators import districtzones
from simulators.districtpoints import (
    PATROL_TIERS,
    GenerationError,
    PointInfo,
    apportion,
    place_points,
)
from simulators.districtzones import (
    NX,
    NY,
    Hill,
    Terrain,
    ZoneInfo,
    ZoneKind,
    hilbert_index,
    lonlat,
    to_latlon,
)
from simulators.roster import SHIFTS, Member, Shift, assignments, members
from simulators.streetnet import XY, StreetNet, build_streets

__all__ = [
    "PATROL_TIERS",
    "District",
    "GenerationError",
    "LineInfo",
    "Member",
    "PointInfo",
    "Shift",
    "assignments",
    "generate",
    "members",
]

UTC_OFFSET_MIN = 8 * 60
NAME = "Shuangfu (synthetic)"
WALK_MPS = 1.2  # the pace the brief plans with
SLOW_MPS = 1.0  # the slowest walker windows allow for
DWELL_MARGIN_S = 60.0  # a walker lingers up to a minute past a point's dwell
WINDOW_SLACK_MIN = 30


S, C, G = Tier.STREET, Tier.COMMUNITY, Tier.GRID
TIER_LINES = {S: 40, C: 62, G: 95}
TIER_MEMBERS = {S: 364, C: 735, G: 1648}
TIER_PREFIX = {S: "s", C: "c", G: "g"}
GROUP_SIZES = {S: (3, 7), C: (2, 6)}  # points per line; grid lines follow their zone
TIER_SHIFTS = {S: ("day", "evening", "night"), C: ("day", "evening"), G: ("day", "evening")}


@dataclass(frozen=True, slots=True)
class LineInfo:
    line: Line
    shift: Shift
    team: str
    route: tuple[XY, ...]  # one closed lap along the streets, from the first point
    length_m: float

    def lap_s(self, plan: Plan, pace_mps: float = WALK_MPS) -> float:
        """One lap at `pace_mps`, dwelling the minimum at every point."""
        return self.length_m / pace_mps + sum(plan.point(p).dwell_s for p in self.line.point_ids)


@dataclass(frozen=True, slots=True)
class Dock:
    id: str
    xy: XY
    lat: float
    lon: float
    alt_m: float  # ground elevation above sea level at the dock


@dataclass(frozen=True)
class District:
    seed: int
    net: StreetNet
    hills: tuple[Hill, ...]
    zones: tuple[ZoneInfo, ...]
    points: tuple[PointInfo, ...]
    lines: tuple[LineInfo, ...]
    members: tuple[Member, ...]
    docks: tuple[Dock, ...]
    aerial: Plan  # the drone flights: a plan of their own (aerial.geojson)
    aerial_routes: tuple[tuple[XY, ...], ...]  # per flight: dock, its points, dock
    plan: Plan = field(init=False)  # the patrol plan (plan.geojson)

    def __post_init__(self) -> None:
        plan = Plan(
            version=1,
            points=tuple(p.point for p in self.points),
            lines=tuple(ln.line for ln in self.lines),
            zones=tuple(
                Zone(z.id, z.name, tuple((lon, lat) for lon, lat in map(lonlat, z.ring)))
                for z in self.zones
            ),
            utc_offset_min=UTC_OFFSET_MIN,
        )
        object.__setattr__(self, "plan", plan)


# ------------------------------------------------------------------------------ lines


def _cycle_cost(order: Sequence[int], dist: list[list[float]]) -> float:
    return sum(dist[a][b] for a, b in zip(order, [*order[1:], order[0]], strict=True))


def _best_cycle(dist: list[list[float]]) -> list[int]:
    """The shortest closed order through every point, starting at the first (exact up to 7)."""
    n = len(dist)
    if n <= 3:
        return list(range(n))
    if n <= 7:
        best = min(itertools.permutations(range(1, n)), key=lambda p: _cycle_cost((0, *p), dist))
        return [0, *best]
    order = [0]  # nearest neighbour, then 2-opt until no move helps
    while len(order) < n:
        order.append(min((k for k in range(n) if k not in order), key=lambda k: dist[order[-1]][k]))
    improved = True
    while improved:
        improved = False
        for a, b in itertools.combinations(range(1, n), 2):
            candidate = order[:a] + order[a : b + 1][::-1] + order[b + 1 :]
            if _cycle_cost(candidate, dist) < _cycle_cost(order, dist) - 1e-9:
                order, improved = candidate, True
    return order


def _lap(net: StreetNet, stops: Sequence[PointInfo]) -> tuple[list[int], tuple[XY, ...], float]:
    """The best visiting order of `stops`, and its closed route along the streets."""
    n = len(stops)
    if n == 1:
        return [0], (stops[0].xy,), 0.0
    legs = {
        (a, b): net.route(stops[a].spot, stops[b].spot)
        for a, b in itertools.combinations(range(n), 2)
    }
    dist = [
        [0.0 if a == b else legs[min(a, b), max(a, b)].length_m for b in range(n)] for a in range(n)
    ]
    order = _best_cycle(dist)
    path: list[XY] = []
    length = 0.0
    for a, b in zip(order, [*order[1:], order[0]], strict=True):
        leg = legs[min(a, b), max(a, b)]
        coords = leg.path if a < b else leg.path[::-1]
        path.extend(coords if not path else coords[1:])
        length += leg.length_m
    return order, tuple(path), length


def _windows(stops: Sequence[Point], length_m: float, shift: Shift) -> tuple[Window, ...]:
    """Windows one slow lap (plus slack) long, staggered through the shift in line order."""
    lap_s = length_m / SLOW_MPS + sum(p.dwell_s + DWELL_MARGIN_S for p in stops)
    longest_visit_s = max(p.dwell_s for p in stops) + DWELL_MARGIN_S
    width = math.ceil((lap_s + longest_visit_s) / 60 / 15) * 15 + WINDOW_SLACK_MIN
    if width > shift.minutes:
        raise GenerationError(f"a lap of {length_m:.0f} m does not fit a {shift.name} shift")
    room, n = shift.minutes - width, len(stops)
    starts = [shift.start_min + (room * k // max(1, n - 1)) // 5 * 5 for k in range(n)]
    return tuple(Window(s, s + width) for s in starts)


def _groups(tier: Tier, points: Sequence[PointInfo]) -> list[list[int]]:
    """A tier's points cut into its lines' groups (indices into `points`)."""
    mine = [k for k, p in enumerate(points) if p.point.tier is tier]
    count = TIER_LINES[tier]
    if tier is Tier.GRID:  # a grid line stays in its compound or workplace
        by_zone: dict[str, list[int]] = {}
        for k in mine:
            by_zone.setdefault(points[k].point.zone or "", []).append(k)
        groups = list(by_zone.values())
        extra = count - len(groups)
        biggest = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), g))[:extra]
        if extra < 0 or any(len(groups[g]) < 4 for g in biggest):
            raise GenerationError(f"cannot make {count} grid lines of two points or more")
        for g in sorted(biggest, reverse=True):
            ordered = sorted(groups[g], key=lambda k: hilbert_index(points[k].xy))
            half = len(ordered) // 2
            groups[g : g + 1] = [ordered[:half], ordered[half:]]
        return groups
    ordered = sorted(mine, key=lambda k: (hilbert_index(points[k].xy), k))
    sizes = _cut([points[k].xy for k in ordered], count, *GROUP_SIZES[tier])
    cuts = list(itertools.accumulate(sizes, initial=0))
    return [ordered[a:b] for a, b in itertools.pairwise(cuts)]


def _cut(xys: Sequence[XY], count: int, lo: int, hi: int) -> list[int]:
    """Sizes that cut a sequence into `count` groups of lo..hi, keeping laps short and even.

    A group's cost is the square of its closed straight-line tour in sequence order, so a cut
    falls where the Hilbert curve jumps, and no line is much longer than the others
    (dynamic programming over where each group ends).
    """
    n = len(xys)
    walk = [0.0, *itertools.accumulate(math.dist(a, b) for a, b in itertools.pairwise(xys))]

    def cost(a: int, b: int) -> float:  # points a .. b-1
        return (walk[b - 1] - walk[a] + math.dist(xys[b - 1], xys[a])) ** 2

    best = [[math.inf] * (n + 1) for _ in range(count + 1)]
    back = [[0] * (n + 1) for _ in range(count + 1)]
    best[0][0] = 0.0
    for c in range(1, count + 1):
        for end in range(c * lo, n + 1):
            for size in range(lo, min(hi, end) + 1):
                total = best[c - 1][end - size] + cost(end - size, end)
                if total < best[c][end]:
                    best[c][end], back[c][end] = total, size
    if math.isinf(best[count][n]):
        raise GenerationError(f"cannot cut {n} points into {count} lines of {lo} to {hi}")
    sizes, end = [], n
    for c in range(count, 0, -1):
        sizes.append(back[c][end])
        end -= back[c][end]
    return sizes[::-1]


def _lines(net: StreetNet, points: Sequence[PointInfo]) -> list[LineInfo]:
    out: list[LineInfo] = []
    for tier in PATROL_TIERS:
        for k, group in enumerate(_groups(tier, points)):
            stops = [points[i] for i in group]
            order, route, length = _lap(net, stops)
            stops = [stops[i] for i in order]
            shift = SHIFTS[TIER_SHIFTS[tier][k % len(TIER_SHIFTS[tier])]]
            zones = {p.point.zone for p in stops}
            line = Line(
                id=f"L{len(out) + 1:03d}",
                point_ids=tuple(p.point.id for p in stops),
                windows=_windows([p.point for p in stops], length, shift),
                zone=stops[0].point.zone if len(zones) == 1 else None,
                tier=tier,
            )
            team = f"{TIER_PREFIX[tier].upper()}T{k + 1:02d}"
            out.append(LineInfo(line, shift, team, route, round(length, 1)))
    return out


def _members(lines: Sequence[LineInfo]) -> list[Member]:
    """Each tier's members shared over its lines by the lines' point counts, two at least."""
    out: list[Member] = []
    for tier in PATROL_TIERS:
        mine = [ln for ln in lines if ln.line.tier is tier]
        crews = apportion(
            TIER_MEMBERS[tier],
            [float(len(ln.line.point_ids)) for ln in mine],
            [2] * len(mine),
            [TIER_MEMBERS[tier]] * len(mine),
        )
        n = 0
        for ln, crew in zip(mine, crews, strict=True):
            for _ in range(crew):
                n += 1
                out.append(
                    Member(f"{TIER_PREFIX[tier]}{n:04d}", tier, ln.team, ln.line.id, ln.shift)
                )
    return out


# ------------------------------------------------------------------------------ docks


def _docks(terrain: Terrain) -> list[Dock]:
    """A dock on top of each of the two highest hills."""
    tops = sorted(terrain.hills, key=lambda h: (-h.height_m, h.xy))[:2]
    docks = []
    for k, hill in enumerate(sorted(tops, key=lambda h: h.xy), start=1):
        lat, lon = to_latlon(hill.xy)
        docks.append(Dock(f"d{k:02d}", hill.xy, lat, lon, round(terrain.elevation(hill.xy), 1)))
    return docks


AERIAL_TARGETS = (ZoneKind.PARK, ZoneKind.SQUARE, ZoneKind.TRANSPORT_HUB)
AERIAL_STOPS = 4
AERIAL_WINDOWS = (Window(10 * 60, 11 * 60), Window(15 * 60, 16 * 60))


def _aerial(
    docks: Sequence[Dock], zones: Sequence[ZoneInfo], terrain: Terrain
) -> tuple[Plan, tuple[tuple[XY, ...], ...]]:
    """One flight per dock over its nearest hill parks, squares and hubs (fire, crowds).

    Each stop is over a zone's centre; its altitude band is 60-150 m above the ground there,
    as heights above sea level (what a receiver reports)."""
    targets = [z for z in zones if z.kind in AERIAL_TARGETS]
    used: set[str] = set()
    points: list[Point] = []
    lines: list[Line] = []
    routes: list[tuple[XY, ...]] = []
    for k, dock in enumerate(docks):
        free = [z for z in targets if z.id not in used]
        todo = sorted(free, key=lambda z: (math.dist(z.centre, dock.xy), z.id))[:AERIAL_STOPS]
        here, chosen = dock.xy, []
        while todo:  # nearest first, from the dock
            nxt = min(todo, key=lambda z: (math.dist(z.centre, here), z.id))
            chosen.append(nxt)
            todo.remove(nxt)
            here = nxt.centre
        used.update(z.id for z in chosen)
        ids = []
        for z in chosen:
            ground = round(terrain.elevation(z.centre))
            lat, lon = to_latlon(z.centre)
            ids.append(f"A{len(points) + 1:02d}")
            points.append(
                Point(
                    ids[-1],
                    lat,
                    lon,
                    radius_m=40.0,
                    dwell_s=10.0,
                    tier=Tier.AERIAL,
                    alt_min_m=ground + 60.0,
                    alt_max_m=ground + 150.0,
                )
            )
        window = AERIAL_WINDOWS[k % len(AERIAL_WINDOWS)]
        lines.append(Line(f"AL{k + 1:02d}", tuple(ids), (window,) * len(ids), tier=Tier.AERIAL))
        routes.append((dock.xy, *(z.centre for z in chosen), dock.xy))
    plan = Plan(1, tuple(points), tuple(lines), utc_offset_min=UTC_OFFSET_MIN)
    return plan, tuple(routes)


# ------------------------------------------------------------------------------ the district


def generate(seed: int, *, river: bool = True) -> District:
    """The district of `seed`: the same seed gives the same district, down to the byte."""

    def rng(stage: str) -> random.Random:
        return random.Random(f"picket-bigdistrict:{seed}:{stage}")

    net = build_streets(rng("streets"), NX, NY, river=river)
    terrain = districtzones.terrain(rng("terrain"))
    zones = districtzones.zones(rng("zones"), net, terrain)
    points = place_points(lambda attempt: rng(f"points:{attempt}"), net, zones)
    lines = _lines(net, points)
    docks = _docks(terrain)
    aerial, routes = _aerial(docks, zones, terrain)
    return District(
        seed,
        net,
        terrain.hills,
        tuple(zones),
        tuple(points),
        tuple(lines),
        tuple(_members(lines)),
        tuple(docks),
        aerial,
        routes,
    )
