"""The full-scale district (`picket sim district`), checked as its users would: through its files.

One district is generated once, through the command's own parser and handler, and then
read back the way the agent, `picket plan check`, a GIS tool and the fleet runner read it:
the plan with agent/checkin/planfile.py, the members with `members()`, the streets as plain
GeoJSON, the map with Pillow's PNG decoder and an XML parser. Geometry claims (points on
streets, routes along streets, laps that fit a shift) are re-derived from the files in a
local metric frame, not taken from the generator's own numbers. A few more seeds are
generated in memory only, for counts and validity; two runs of one seed must give the
same bytes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import heapq
import io
import itertools
import json
import math
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.checkin.geo import to_local
from agent.checkin.plan import Plan, Tier
from agent.checkin.planfile import check_plan, load_plan, plan_to_geojson
from picket import simcmd
from picket.cli import main as picket_main
from simulators.bigdistrict import generate
from simulators.districtfiles import line_routes
from simulators.roster import RosterError, assignments, members
from simulators.streetnet import Spot

SEED = 11
CENTER = (29.265, 106.255)
XY = tuple[float, float]
STREET_FOCUS = {
    "commercial",
    "square",
    "transport_hub",
    "school",
    "hospital",
    "market",
    "government",
}
COMMUNITY_FOCUS = {"back_streets", "residential_compound", "park"}
GRID_FOCUS = {"residential_compound", "workplace"}
TIER_COUNTS = {"street": 364, "community": 735, "grid": 1648}


def run_sim(*argv: str) -> tuple[int, str]:
    """`picket sim …` through simcmd's own parser and handler table, as picket/cli.py will."""
    parser = argparse.ArgumentParser(prog="picket")
    sub = parser.add_subparsers(dest="command", required=True)
    simcmd.add_parsers(sub)
    args = parser.parse_args(["sim", *argv])
    handler = simcmd.HANDLERS[(args.command, args.sim_command)]
    assert handler is simcmd.district
    out = io.StringIO()
    code = simcmd.district(args, out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("district")
    code, text = run_sim("district", "--seed", str(SEED), "--out", str(out), "--json")
    assert code == 0
    return out, json.loads(text)


@pytest.fixture(scope="module")
def out(generated: tuple[Path, dict[str, Any]]) -> Path:
    return generated[0]


@pytest.fixture(scope="module")
def plan(out: Path) -> Plan:
    return load_plan(out / "plan.geojson")


@pytest.fixture(scope="module")
def doc(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "plan.geojson").read_text(encoding="utf-8"))
    return loaded


def local(lat: float, lon: float) -> XY:
    north, east = to_local(CENTER[0], CENTER[1], lat, lon)
    return east, north


def seg_dist(p: XY, a: XY, b: XY) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2
    t = max(0.0, min(1.0, t))
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy)


class Streets:
    """streets.geojson's street segments in metres, bucketed for nearby look-ups."""

    CELL = 200.0

    def __init__(self, path: Path) -> None:
        features = json.loads(path.read_text(encoding="utf-8"))["features"]
        self.segments: list[tuple[XY, XY]] = []
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for f in features:
            if "road" not in f["properties"]:
                continue
            (lon1, lat1), (lon2, lat2) = f["geometry"]["coordinates"]
            a, b = local(lat1, lon1), local(lat2, lon2)
            k = len(self.segments)
            self.segments.append((a, b))
            for key in self._keys(a, b):
                self.buckets.setdefault(key, []).append(k)

    def _keys(self, a: XY, b: XY) -> Iterator[tuple[int, int]]:
        x0, x1 = sorted((a[0], b[0]))
        y0, y1 = sorted((a[1], b[1]))
        for i in range(math.floor(x0 / self.CELL), math.floor(x1 / self.CELL) + 1):
            for j in range(math.floor(y0 / self.CELL), math.floor(y1 / self.CELL) + 1):
                yield i, j

    def near(self, p: XY) -> list[tuple[XY, XY]]:
        i, j = math.floor(p[0] / self.CELL), math.floor(p[1] / self.CELL)
        ks = {
            k
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            for k in self.buckets.get((i + di, j + dj), [])
        }
        return [self.segments[k] for k in sorted(ks)]

    def on_street(self, p: XY, tol: float = 0.5) -> bool:
        return any(seg_dist(p, a, b) <= tol for a, b in self.near(p))

    def along_one_street(self, p: XY, q: XY, tol: float = 0.5) -> bool:
        """True if p-q lies on one street segment (both ends within tol of it)."""
        return any(seg_dist(p, a, b) <= tol and seg_dist(q, a, b) <= tol for a, b in self.near(p))


@pytest.fixture(scope="module")
def streets(out: Path) -> Streets:
    return Streets(out / "streets.geojson")


# --------------------------------------------------------------------------- counts


def test_counts_are_the_districts(generated: tuple[Path, dict[str, Any]], plan: Plan) -> None:
    out, report = generated
    assert report["zones"] == 180 and report["points"] == 631 and report["lines"] == 197
    assert report["members"] == {**TIER_COUNTS, "total": 2747}
    assert report["docks"] == 2
    assert report["generate_seconds"] < 10  # the brief's bound; typically well under a second
    assert (len(plan.points), len(plan.lines), len(plan.zones)) == (631, 197, 180)
    summary = json.loads((out / "district.json").read_text(encoding="utf-8"))
    assert summary["counts"]["members"] == report["members"]
    assert [d["id"] for d in summary["docks"]] == ["d01", "d02"]
    assert sum(summary["zone_kinds"].values()) == 180


def test_the_human_report_names_the_counts(tmp_path: Path) -> None:
    code, text = run_sim("district", "--seed", "3", "--out", str(tmp_path), "--no-map")
    assert code == 0
    assert "631" in text and "197" in text and "2747" in text
    assert not (tmp_path / "map.png").exists()


def test_out_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    code, _ = run_sim("district", "--seed", "1", "--out", str(target))
    assert code == 2


def test_picket_plan_check_accepts_the_plan(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, points, lines in (("plan.geojson", 631, 197), ("aerial.geojson", 8, 2)):
        code = picket_main(["plan", "check", str(out / name), "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0, report["problems"][:5]
        assert report["problems"] == [] and report["warnings"] == []
        assert (report["points"], report["lines"]) == (points, lines)


@pytest.mark.parametrize("seed", [0, 1, 2, 99, -4])
def test_other_seeds_give_valid_plans_of_the_same_size(seed: int) -> None:
    d = generate(seed)
    report = check_plan(json.loads(json.dumps(plan_to_geojson(d.plan))))
    assert report.ok, report.problems[:5]
    assert (len(d.points), len(d.lines), len(d.zones), len(d.members)) == (631, 197, 180, 2747)
    assert check_plan(plan_to_geojson(d.aerial)).ok


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_plan(out: Path, tmp_path: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    assert run_sim("district", "--seed", str(SEED), "--out", str(again), "--no-map")[0] == 0
    for name in (
        "plan.geojson",
        "aerial.geojson",
        "streets.geojson",
        "members.csv",
        "district.json",
    ):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert run_sim("district", "--seed", str(SEED + 1), "--out", str(other), "--no-map")[0] == 0
    assert (other / "plan.geojson").read_bytes() != (out / "plan.geojson").read_bytes()


# --------------------------------------------------------------------------- geometry


def test_points_stand_on_streets_with_geofences_apart(plan: Plan, streets: Streets) -> None:
    xy = {p.id: local(p.lat, p.lon) for p in plan.points}
    for p in plan.points:
        assert streets.on_street(xy[p.id]), p.id
        assert 20 <= p.radius_m <= 35 and p.dwell_s >= 2 * p.radius_m  # crossing < dwell
        assert p.max_speed_mps == 2.5 and p.tier in (Tier.STREET, Tier.COMMUNITY, Tier.GRID)
    for a, b in itertools.combinations(plan.points, 2):
        assert math.dist(xy[a.id], xy[b.id]) > a.radius_m + b.radius_m + 20, (a.id, b.id)


def test_zones_tile_the_district(plan: Plan) -> None:
    def area(ring: tuple[tuple[float, float], ...]) -> float:  # shoelace, counter-clockwise > 0
        pts = [local(lat, lon) for lon, lat in ring]
        return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(pts)) / 2

    areas = [area(z.ring) for z in plan.zones]
    assert all(a > 0 for a in areas)  # RFC 7946: exterior rings counter-clockwise
    assert sum(areas) == pytest.approx(7200 * 5400, rel=0.03)  # no gaps, no overlaps


def test_every_line_is_a_street_route_walkable_in_its_shift(
    out: Path, plan: Plan, doc: dict[str, Any], streets: Streets
) -> None:
    routes = line_routes(out)
    shifts = {
        f["properties"]["id"]: f["properties"]["shift"]
        for f in doc["features"]
        if f["properties"].get("kind") == "line"
    }
    spans = {"day": (480, 960), "evening": (960, 1440), "night": (0, 480)}
    for line in plan.lines:
        route = [local(lat, lon) for lat, lon in routes[line.id]]
        stops = [local(plan.point(p).lat, plan.point(p).lon) for p in line.point_ids]
        assert route[0] == pytest.approx(route[-1], abs=0.05)  # a closed lap
        k = 0  # the route passes through the points in the line's order
        for stop in stops:
            while k < len(route) and math.dist(route[k], stop) > 0.05:
                k += 1
            assert k < len(route), f"{line.id} does not pass its points in order"
        for p, q in itertools.pairwise(route):
            assert streets.along_one_street(p, q), f"{line.id}: {p} -> {q} is off the streets"
        length = sum(math.dist(p, q) for p, q in itertools.pairwise(route))
        dwell = sum(plan.point(p).dwell_s for p in line.point_ids)
        start, end = spans[shifts[line.id]]
        assert length / 1.2 + dwell <= (end - start) * 60, line.id  # the brief's walkability
        slow_lap_min = (length / 1.0 + dwell + 60 * len(stops)) / 60
        for w in line.windows:
            assert w is not None and start <= w.start_min < w.end_min <= end
            assert w.end_min - w.start_min >= slow_lap_min  # a looping walker meets every window


def test_street_routes_are_shortest_paths() -> None:
    """A* against a plain Dijkstra over the same network, between random street spots."""
    net = generate(5).net
    rng = random.Random(5)
    adj: dict[int, list[tuple[int, float]]] = {}
    for s in net.streets:
        adj.setdefault(s.a, []).append((s.b, s.length_m))
        adj.setdefault(s.b, []).append((s.a, s.length_m))

    def dijkstra(a: Spot, b: Spot) -> float:
        sa, sb = net.streets[a.street], net.streets[b.street]
        dist = {sa.a: a.t * sa.length_m, sa.b: (1 - a.t) * sa.length_m}
        heap = [(g, n) for n, g in dist.items()]
        heapq.heapify(heap)
        while heap:
            g, n = heapq.heappop(heap)
            if g > dist[n]:
                continue
            for m, w in adj[n]:
                if g + w < dist.get(m, math.inf):
                    dist[m] = g + w
                    heapq.heappush(heap, (g + w, m))
        return min(dist[sb.a] + b.t * sb.length_m, dist[sb.b] + (1 - b.t) * sb.length_m)

    for _ in range(25):
        a = Spot(rng.randrange(len(net.streets)), rng.uniform(0.2, 0.8))
        b = Spot(rng.randrange(len(net.streets)), rng.uniform(0.2, 0.8))
        if a.street == b.street:
            continue
        route = net.route(a, b)
        assert route.length_m == pytest.approx(dijkstra(a, b), abs=0.01)
        walked = sum(math.dist(p, q) for p, q in itertools.pairwise(route.path))
        assert walked == pytest.approx(route.length_m, abs=0.05)
        assert route.path[0] == net.spot_xy(a) and route.path[-1] == net.spot_xy(b)


# --------------------------------------------------------------------------- tiers


def test_each_tier_patrols_its_focus(plan: Plan, doc: dict[str, Any]) -> None:
    kind = {
        f["properties"]["id"]: f["properties"]["category"]
        for f in doc["features"]
        if f["properties"].get("kind") == "zone"
    }
    focus = {Tier.STREET: STREET_FOCUS, Tier.COMMUNITY: COMMUNITY_FOCUS, Tier.GRID: GRID_FOCUS}
    per_tier = {t: sum(1 for ln in plan.lines if ln.tier is t) for t in focus}
    assert per_tier == {Tier.STREET: 40, Tier.COMMUNITY: 62, Tier.GRID: 95}
    for line in plan.lines:
        assert line.tier is not None
        zones = [plan.point(p).zone for p in line.point_ids]
        in_focus = sum(1 for z in zones if z is not None and kind[z] in focus[line.tier])
        assert in_focus / len(zones) >= 0.9, (line.id, [kind[z] for z in zones if z])
        assert all(plan.point(p).tier is line.tier for p in line.point_ids)
        if line.tier is Tier.GRID:  # inside and around one compound or workplace
            assert len(set(zones)) == 1 and line.zone == zones[0]
    street_zones = {kind[p.zone] for p in plan.points if p.tier is Tier.STREET and p.zone}
    assert {"commercial", "school", "hospital", "market", "transport_hub", "square"} <= street_zones


# --------------------------------------------------------------------------- members


def test_members_say_who_walks_what(out: Path, plan: Plan, doc: dict[str, Any]) -> None:
    crew = members(out)
    assert len(crew) == 2747
    by_tier = {t: [m for m in crew if m.tier.value == t] for t in TIER_COUNTS}
    for tier, count in TIER_COUNTS.items():
        prefix = tier[0]
        assert [m.device for m in by_tier[tier]] == [
            f"{prefix}{n:04d}" for n in range(1, count + 1)
        ]
    line_props = {
        f["properties"]["id"]: f["properties"]
        for f in doc["features"]
        if f["properties"].get("kind") == "line"
    }
    per_line: dict[str, int] = {}
    for m in crew:
        line = plan.line(m.line)
        assert line.tier is m.tier
        assert line_props[m.line]["shift"] == m.shift.name and line_props[m.line]["team"] == m.team
        assert m.shift.minutes == 480
        per_line[m.line] = per_line.get(m.line, 0) + 1
    assert set(per_line) == {ln.id for ln in plan.lines} and min(per_line.values()) >= 2
    assert len({m.team for m in crew}) == 197


def test_one_days_assignments_make_a_valid_plan_and_agenda(out: Path, plan: Plan) -> None:
    crew = members(out)
    day = dt.date(2026, 3, 1)
    dated = dataclasses.replace(plan, assignments=assignments(crew, day))
    report = check_plan(plan_to_geojson(dated))
    assert report.ok and report.plan is not None and len(report.plan.assignments) == 2747
    member = next(m for m in crew if m.shift.name == "evening")
    agenda = dated.agenda(day, member.device)
    assert [a.point for a in agenda] == list(plan.line(member.line).point_ids)
    local_midnight_ms = int(dt.datetime(2026, 2, 28, 16, tzinfo=dt.UTC).timestamp() * 1000)
    for item in agenda:
        assert item.start_ms is not None and item.end_ms is not None
        assert local_midnight_ms + 16 * 3_600_000 <= item.start_ms < item.end_ms
        assert item.end_ms <= local_midnight_ms + 24 * 3_600_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("device,tier\n", "first line must be"),
        (
            "device,tier,team,line,shift,start,end\ns0001,police,ST01,L001,day,08:00,16:00\n",
            "line 2: unknown tier",
        ),
        (
            "device,tier,team,line,shift,start,end\ns0001,street,ST01,L001,day,8am,16:00\n",
            "line 2: '8am'",
        ),
        (
            "device,tier,team,line,shift,start,end\ns0001,street,ST01,L001,day,16:00,08:00\n",
            "line 2: shift",
        ),
        ("device,tier,team,line,shift,start,end\ns0001,street,ST01,L001\n", "line 2: 4 fields"),
        (
            "device,tier,team,line,shift,start,end\n"
            "s0001,street,ST01,L001,day,08:00,16:00\ns0001,street,ST01,L001,day,08:00,16:00\n",
            "line 3: device s0001 is already on line 2",
        ),
    ],
)
def test_a_bad_members_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "members.csv").write_text(text, encoding="utf-8")
    with pytest.raises(RosterError, match=message):
        members(tmp_path)


def test_a_missing_members_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match=re.escape("members.csv: cannot read")):
        members(tmp_path)


def test_members_csv_is_plain_csv(out: Path) -> None:
    rows = list(csv.DictReader((out / "members.csv").open(encoding="utf-8")))
    assert rows[0] == {
        "device": "s0001",
        "tier": "street",
        "team": "ST01",
        "line": "L001",
        "shift": "day",
        "start": "08:00",
        "end": "16:00",
    }


# --------------------------------------------------------------------------- docks, map


def test_docks_stand_on_the_highest_ground_and_drones_fly_from_them(out: Path) -> None:
    summary = json.loads((out / "district.json").read_text(encoding="utf-8"))
    aerial = load_plan(out / "aerial.geojson")
    assert all(p.tier is Tier.AERIAL and p.alt_min_m is not None for p in aerial.points)
    base = json.loads((out / "streets.geojson").read_text(encoding="utf-8"))["features"]
    peaks = sorted(
        (f["properties"]["height_m"] for f in base if f["properties"].get("natural") == "peak"),
        reverse=True,
    )
    docks = [f for f in base if "dock" in f["properties"]]
    assert len(docks) == 2 and len(peaks) >= 2
    assert all(d["alt_m"] > 210 + peaks[1] - 1 for d in summary["docks"])


def test_map_files_decode(out: Path) -> None:
    svg = ET.parse(out / "map.svg").getroot()  # noqa: S314 - our own file, just written
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    width, height = int(svg.attrib["width"]), int(svg.attrib["height"])
    assert len(svg.findall("{http://www.w3.org/2000/svg}polygon")) >= 180
    with Image.open(out / "map.png") as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(out / "map.png") as im:
        im.load()
        assert im.size == (width, height)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    seen = {rgb for _, rgb in colours}
    for hex_colour in ("#d62728", "#1f5fbf", "#2a9d3a"):  # the three tiers' lines are drawn
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in seen, hex_colour
