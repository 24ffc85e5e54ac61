"""The street network of a synthetic district, and walking routes along it.

The network is a lattice of intersections, bent and jittered so it reads as a town rather
than graph paper: every fourth row and column is an arterial (the district's outer ring is
one), the rest are local streets, a few of which are missing; two diagonal avenues run
through intersections; an optional river removes every local street that would cross it,
so only arterials and avenues bridge it. Keeping the lattice (a node is `(i, j)`, a cell
between four nodes is `(i, j)` too) is what lets the district tile itself into zones whose
borders follow streets exactly, and lets a point on a street know which zones it borders.

Everything is in metres in a local frame, `(east, north)` from the district's centre, and
only converted to latitude/longitude when files are written. Routes are A* searches from
one spot on a street (a street and a fraction along it) to another, with the straight-line
distance as the heuristic: streets are straight segments, so it is exact and admissible,
and a search between neighbouring patrol points touches a few dozen intersections rather
than the whole town, which keeps a full district under a second.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulators.district import segment_distance

XY = tuple[float, float]  # (east, north) metres from the district's centre

CELL_M = 150.0  # one block
ARTERIAL_EVERY = 4  # every fourth lattice line is an arterial: superblocks of 4 x 4 blocks
LOCAL_OFFSET_M = 25.0  # local streets sit up to this far off their even spacing
NODE_JITTER_M = 8.0  # and their intersections wobble by this much
WARP_M = 60.0  # a gentle large-scale bend of the whole lattice
MISSING_LOCAL = 0.12  # the share of local streets that do not exist (blocks merged)
RIVER_STEP_M = 100.0


class RoadClass(enum.StrEnum):
    ARTERIAL = "arterial"
    AVENUE = "avenue"  # a diagonal arterial
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Street:
    """One street segment between two intersections (node indices into `StreetNet.nodes`)."""

    a: int
    b: int
    road: RoadClass
    length_m: float


@dataclass(frozen=True, slots=True)
class Spot:
    """A place on a street: `t` of the way from its node `a` to its node `b`."""

    street: int
    t: float


@dataclass(frozen=True, slots=True)
class Route:
    length_m: float
    path: tuple[XY, ...]  # from the first spot to the second, through intersections


@dataclass(frozen=True)
class StreetNet:
    """A connected street graph on a (nx + 1) x (ny + 1) lattice of intersections."""

    nx: int
    ny: int
    nodes: tuple[XY, ...]  # every lattice node, index j * (nx + 1) + i, connected or not
    streets: tuple[Street, ...]
    river: tuple[XY, ...]  # the river's centre line; empty: no river
    _adj: list[list[tuple[int, float]]] = field(init=False, repr=False, compare=False)
    _by_nodes: dict[tuple[int, int], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        adj: list[list[tuple[int, float]]] = [[] for _ in self.nodes]
        by_nodes: dict[tuple[int, int], int] = {}
        for k, s in enumerate(self.streets):
            adj[s.a].append((s.b, s.length_m))
            adj[s.b].append((s.a, s.length_m))
            by_nodes[(min(s.a, s.b), max(s.a, s.b))] = k
        object.__setattr__(self, "_adj", adj)
        object.__setattr__(self, "_by_nodes", by_nodes)

    def node(self, i: int, j: int) -> int:
        return j * (self.nx + 1) + i

    def street_between(self, a: int, b: int) -> int | None:
        """The index of the street joining two nodes, or None when there is none."""
        return self._by_nodes.get((min(a, b), max(a, b)))

    def spot_xy(self, spot: Spot) -> XY:
        s = self.streets[spot.street]
        (ax, ay), (bx, by) = self.nodes[s.a], self.nodes[s.b]
        return ax + spot.t * (bx - ax), ay + spot.t * (by - ay)

    def route(self, start: Spot, end: Spot) -> Route:
        """The shortest walk along streets from one spot to another (A*)."""
        p, q = self.spot_xy(start), self.spot_xy(end)
        if start.street == end.street:
            return Route(math.dist(p, q), (p, q))
        s, e = self.streets[start.street], self.streets[end.street]
        exits = {e.a: end.t * e.length_m, e.b: (1 - end.t) * e.length_m}
        best, best_node = math.inf, -1
        dist: dict[int, float] = {}
        came: dict[int, int] = {}
        heap: list[tuple[float, float, int]] = []
        for n, g in ((s.a, start.t * s.length_m), (s.b, (1 - start.t) * s.length_m)):
            if g < dist.get(n, math.inf):
                dist[n] = g
                came[n] = -1
                heapq.heappush(heap, (g + math.dist(self.nodes[n], q), g, n))
        while heap:
            f, g, n = heapq.heappop(heap)
            if f >= best:
                break
            if g > dist[n]:
                continue
            if n in exits and g + exits[n] < best:
                best, best_node = g + exits[n], n
            for m, w in self._adj[n]:
                gm = g + w
                if gm < dist.get(m, math.inf):
                    dist[m] = gm
                    came[m] = n
                    heapq.heappush(heap, (gm + math.dist(self.nodes[m], q), gm, m))
        if best_node < 0:
            raise ValueError(f"no street route from {start} to {end}")
        nodes = [best_node]
        while came[nodes[-1]] >= 0:
            nodes.append(came[nodes[-1]])
        return Route(best, (p, *(self.nodes[n] for n in reversed(nodes)), q))


def _lattice(rng: random.Random, nx: int, ny: int) -> list[XY]:
    """Node positions: offset local lines, a smooth warp, jittered local intersections."""

    def lines(n: int) -> list[float]:
        return [
            k * CELL_M
            + (0.0 if k % ARTERIAL_EVERY == 0 else rng.uniform(-LOCAL_OFFSET_M, LOCAL_OFFSET_M))
            for k in range(n + 1)
        ]

    xs, ys = lines(nx), lines(ny)
    phase_x, phase_y = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    period_x, period_y = rng.uniform(4000, 6000), rng.uniform(4000, 6000)
    half_w, half_h = nx * CELL_M / 2, ny * CELL_M / 2
    nodes: list[XY] = []
    for j in range(ny + 1):
        for i in range(nx + 1):
            x, y = xs[i], ys[j]
            x += WARP_M * math.sin(2 * math.pi * y / period_x + phase_x)
            y += WARP_M * math.sin(2 * math.pi * x / period_y + phase_y)
            if i % ARTERIAL_EVERY and j % ARTERIAL_EVERY:
                x += rng.uniform(-NODE_JITTER_M, NODE_JITTER_M)
                y += rng.uniform(-NODE_JITTER_M, NODE_JITTER_M)
            nodes.append((round(x - half_w, 2), round(y - half_h, 2)))
    return nodes


def _river(rng: random.Random, nx: int, ny: int) -> list[XY]:
    """A meandering centre line from the west edge to the east edge, in the southern third."""
    half_w, half_h = nx * CELL_M / 2, ny * CELL_M / 2
    base = -half_h + rng.uniform(0.2, 0.33) * 2 * half_h
    waves = [(rng.uniform(180, 260), rng.uniform(2500, 4000), rng.uniform(0, 2 * math.pi))]
    waves.append((rng.uniform(60, 120), rng.uniform(900, 1400), rng.uniform(0, 2 * math.pi)))
    steps = math.ceil((2 * half_w + 400) / RIVER_STEP_M)
    out: list[XY] = []
    for k in range(steps + 1):
        x = -half_w - 200 + k * RIVER_STEP_M
        y = base + sum(a * math.sin(2 * math.pi * x / p + ph) for a, p, ph in waves)
        out.append((round(x, 2), round(y, 2)))
    return out


def _crosses(p: XY, q: XY, a: XY, b: XY) -> bool:
    """True if segments p-q and a-b intersect (proper crossing)."""

    def side(o: XY, u: XY, v: XY) -> float:
        return (u[0] - o[0]) * (v[1] - o[1]) - (u[1] - o[1]) * (v[0] - o[0])

    return side(p, q, a) * side(p, q, b) < 0 and side(a, b, p) * side(a, b, q) < 0


def polyline_distance(p: XY, line: Sequence[XY]) -> float:
    """Distance in metres from p to a polyline (infinite for an empty one)."""
    return min((segment_distance(p, a, b) for a, b in itertools.pairwise(line)), default=math.inf)


def crosses_polyline(p: XY, q: XY, line: tuple[XY, ...] | list[XY]) -> bool:
    lo_x, hi_x = min(p[0], q[0]), max(p[0], q[0])
    return any(
        _crosses(p, q, a, b)
        for a, b in itertools.pairwise(line)
        if max(a[0], b[0]) >= lo_x and min(a[0], b[0]) <= hi_x
    )


def _candidate_streets(rng: random.Random, nx: int, ny: int) -> list[tuple[int, int, RoadClass]]:
    """The lattice's streets before pruning: rows, columns and two diagonal avenues."""

    def node(i: int, j: int) -> int:
        return j * (nx + 1) + i

    out: list[tuple[int, int, RoadClass]] = []
    for j in range(ny + 1):
        for i in range(nx):
            road = RoadClass.ARTERIAL if j % ARTERIAL_EVERY == 0 else RoadClass.LOCAL
            out.append((node(i, j), node(i + 1, j), road))
    for i in range(nx + 1):
        for j in range(ny):
            road = RoadClass.ARTERIAL if i % ARTERIAL_EVERY == 0 else RoadClass.LOCAL
            out.append((node(i, j), node(i, j + 1), road))
    # Two avenues: one rising (i - j constant), one falling (i + j constant). Same parity of
    # the two constants makes them meet at an intersection, not mid-block.
    rise = rng.randint(nx // 4, nx // 2) - ny // 2
    fall = rng.randint(nx // 2, 3 * nx // 4) + ny // 2
    fall += (fall - rise) % 2
    for j in range(ny):
        i = rise + j
        if 0 <= i < nx:
            out.append((node(i, j), node(i + 1, j + 1), RoadClass.AVENUE))
        i = fall - j
        if 0 < i <= nx:
            out.append((node(i, j), node(i - 1, j + 1), RoadClass.AVENUE))
    return out


def _largest_component(n_nodes: int, streets: list[Street]) -> set[int]:
    adj: list[list[int]] = [[] for _ in range(n_nodes)]
    for s in streets:
        adj[s.a].append(s.b)
        adj[s.b].append(s.a)
    seen = [False] * n_nodes
    best: list[int] = []
    for start in range(n_nodes):
        if seen[start] or not adj[start]:
            continue
        comp, stack = [start], [start]
        seen[start] = True
        while stack:
            for m in adj[stack.pop()]:
                if not seen[m]:
                    seen[m] = True
                    comp.append(m)
                    stack.append(m)
        if len(comp) > len(best):
            best = comp
    return set(best)


def build_streets(rng: random.Random, nx: int, ny: int, *, river: bool = True) -> StreetNet:
    """A connected street network on an nx x ny block lattice, drawn from `rng`."""
    nodes = _lattice(rng, nx, ny)
    river_line = _river(rng, nx, ny) if river else []
    degree = [0] * len(nodes)
    candidates = _candidate_streets(rng, nx, ny)
    for a, b, _ in candidates:
        degree[a] += 1
        degree[b] += 1
    kept: list[Street] = []
    for a, b, road in candidates:
        if road is RoadClass.LOCAL:
            bridge = river_line and crosses_polyline(nodes[a], nodes[b], river_line)
            pruned = rng.random() < MISSING_LOCAL and degree[a] >= 3 and degree[b] >= 3
            if bridge or pruned:
                degree[a] -= 1
                degree[b] -= 1
                continue
        kept.append(Street(a, b, road, round(math.dist(nodes[a], nodes[b]), 3)))
    main = _largest_component(len(nodes), kept)
    streets = tuple(s for s in kept if s.a in main and s.b in main)
    return StreetNet(nx, ny, tuple(nodes), streets, tuple(river_line))
