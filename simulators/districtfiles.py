"""The files of a generated district: what `picket sim district` writes (docs/district.md).

plan.geojson is agent/checkin/planfile.py's `plan_to_geojson` of the plan, so the agent and
`picket plan check` read it as any other plan; to it are added only properties the plan
reader ignores but GIS tools show (a zone's `category`, a point's `placement`, a line's
`shift`, `team`, `length_m` and its street route as the LineString). The drone flights are
a plan of their own (aerial.geojson) so that plan.geojson holds exactly the district's
counts; the streets are a plain GeoJSON base map (streets.geojson), since the plan format
treats unknown features as noise. Every file is text written from sorted, rounded values,
so one seed gives the same bytes on every run; feature collections hold one feature per
line, which keeps them diffable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from agent.checkin.planfile import offset_text, plan_to_geojson
from simulators.bigdistrict import (
    NAME,
    PATROL_TIERS,
    UTC_OFFSET_MIN,
    District,
    LineInfo,
)
from simulators.districtzones import CENTER, NX, NY, ZoneKind, lonlat, to_latlon
from simulators.roster import MEMBER_COLUMNS, MEMBERS_FILE, SHIFTS, members_text
from simulators.streetnet import CELL_M, RoadClass, crosses_polyline

__all__ = ["FILES", "counts", "line_routes", "summary", "write_district"]

PLAN_FILE, AERIAL_FILE, STREETS_FILE = "plan.geojson", "aerial.geojson", "streets.geojson"
SUMMARY_FILE = "district.json"
FILES = (PLAN_FILE, AERIAL_FILE, STREETS_FILE, MEMBERS_FILE, SUMMARY_FILE)


def _collection(header: dict[str, object], features: Iterable[dict[str, object]]) -> str:
    """GeoJSON text with one feature per line: diffable, and still one JSON document."""
    head = json.dumps({**header, "type": "FeatureCollection"}, ensure_ascii=False)[:-1]
    body = ",\n".join(json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in features)
    return f'{head}, "features": [\n{body}\n]}}\n'


def _split(doc: dict[str, object]) -> tuple[dict[str, object], list[dict[str, object]]]:
    features = doc.pop("features")
    assert isinstance(features, list)
    return doc, features


def plan_text(d: District) -> str:
    """plan.geojson: `plan_to_geojson` plus display properties the plan reader ignores."""
    header, features = _split(plan_to_geojson(d.plan))
    header["picket"] = {**_as_dict(header["picket"]), "name": f"{NAME}, seed {d.seed}"}
    n_points, n_lines = len(d.points), len(d.lines)
    for p, f in zip(d.points, features[:n_points], strict=True):
        _as_dict(f["properties"])["placement"] = p.placement.value
    for ln, f in zip(d.lines, features[n_points : n_points + n_lines], strict=True):
        props = _as_dict(f["properties"])
        props.update(shift=ln.shift.name, team=ln.team, length_m=ln.length_m)
        f["geometry"] = {"type": "LineString", "coordinates": [lonlat(xy) for xy in ln.route]}
    for z, f in zip(d.zones, features[n_points + n_lines :], strict=True):
        _as_dict(f["properties"])["category"] = z.kind.value
    return _collection(header, features)


def aerial_text(d: District) -> str:
    header, features = _split(plan_to_geojson(d.aerial))
    header["picket"] = {**_as_dict(header["picket"]), "name": f"{NAME} drones, seed {d.seed}"}
    lines = features[len(d.aerial.points) :]
    for dock, route, f in zip(d.docks, d.aerial_routes, lines, strict=True):
        _as_dict(f["properties"])["dock"] = dock.id
        f["geometry"] = {"type": "LineString", "coordinates": [lonlat(xy) for xy in route]}
    return _collection(header, features)


def streets_text(d: District) -> str:
    """streets.geojson: the base map (streets, river, hills, docks); not a plan."""
    net = d.net
    features: list[dict[str, object]] = [
        _feature("LineString", [lonlat(net.nodes[s.a]), lonlat(net.nodes[s.b])], road=s.road.value)
        for s in net.streets
    ]
    if net.river:
        features.append(_feature("LineString", [lonlat(xy) for xy in net.river], waterway="river"))
    for h in d.hills:
        features.append(_feature("Point", lonlat(h.xy), natural="peak", height_m=h.height_m))
    for dock in d.docks:
        features.append(_feature("Point", [dock.lon, dock.lat], dock=dock.id, alt_m=dock.alt_m))
    return _collection({"name": f"{NAME} streets, seed {d.seed}"}, features)


def _feature(kind: str, coordinates: object, **props: object) -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": kind, "coordinates": coordinates},
        "properties": props,
    }


def _as_dict(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return value


def counts(d: District) -> dict[str, object]:
    per_tier = {t.value: sum(1 for m in d.members if m.tier is t) for t in PATROL_TIERS}
    return {
        "zones": len(d.zones),
        "points": len(d.points),
        "lines": len(d.lines),
        "members": {**per_tier, "total": len(d.members)},
        "teams": len({m.team for m in d.members}),
        "docks": len(d.docks),
        "aerial_points": len(d.aerial.points),
        "aerial_lines": len(d.aerial.lines),
    }


def summary(d: District) -> dict[str, object]:
    """district.json: what was generated, for people and for the fleet runner."""
    half_w, half_h = NX * CELL_M / 2, NY * CELL_M / 2
    south, west = to_latlon((-half_w - 100, -half_h - 100))
    north, east = to_latlon((half_w + 100, half_h + 100))
    road_km = {
        r.value: round(sum(s.length_m for s in d.net.streets if s.road is r) / 1000, 1)
        for r in RoadClass
    }
    bridges = sum(
        1
        for s in d.net.streets
        if d.net.river and crosses_polyline(d.net.nodes[s.a], d.net.nodes[s.b], d.net.river)
    )
    crews: dict[str, int] = {}
    for m in d.members:
        crews[m.line] = crews.get(m.line, 0) + 1
    return {
        "name": NAME,
        "seed": d.seed,
        "generator": "simulators.bigdistrict",
        "center": list(CENTER),
        "utc_offset": offset_text(UTC_OFFSET_MIN),
        "bbox": [west, south, east, north],
        "size_m": [NX * CELL_M, NY * CELL_M],
        "counts": counts(d),
        "zone_kinds": {k.value: sum(1 for z in d.zones if z.kind is k) for k in ZoneKind},
        "points_per_tier": {
            t.value: sum(1 for p in d.points if p.point.tier is t) for t in PATROL_TIERS
        },
        "lines_per_tier": {
            t.value: sum(1 for ln in d.lines if ln.line.tier is t) for t in PATROL_TIERS
        },
        "shifts": {name: list(s.text()) for name, s in SHIFTS.items()},
        "streets": {
            "intersections": len({n for s in d.net.streets for n in (s.a, s.b)}),
            "segments": len(d.net.streets),
            "length_km": road_km,
            "river": bool(d.net.river),
            "bridges": bridges,
        },
        "docks": [{"id": k.id, "lat": k.lat, "lon": k.lon, "alt_m": k.alt_m} for k in d.docks],
        "lines": [
            {
                "id": ln.line.id,
                "tier": ln.line.tier.value if ln.line.tier else None,
                "shift": ln.shift.name,
                "team": ln.team,
                "zone": ln.line.zone,
                "points": len(ln.line.point_ids),
                "members": crews.get(ln.line.id, 0),
                "length_m": ln.length_m,
                "lap_min": round(ln.lap_s(d.plan) / 60, 1),
                "window_min": _window_minutes(ln),
            }
            for ln in d.lines
        ],
        "files": {
            PLAN_FILE: "the plan (docs/plans.md), display properties added",
            AERIAL_FILE: "the drone flights, a plan of their own",
            STREETS_FILE: "streets, river, hills and docks (base map)",
            MEMBERS_FILE: "one row per member: " + ",".join(MEMBER_COLUMNS),
            SUMMARY_FILE: "this summary",
        },
    }


def _window_minutes(ln: LineInfo) -> int | None:
    w = ln.line.window(0)
    return None if w is None else w.end_min - w.start_min


def write_district(d: District, out: Path) -> list[Path]:
    """Write every data file of the district into `out` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        PLAN_FILE: plan_text(d),
        AERIAL_FILE: aerial_text(d),
        STREETS_FILE: streets_text(d),
        MEMBERS_FILE: members_text(d.members),
        SUMMARY_FILE: json.dumps(summary(d), indent=1, ensure_ascii=False) + "\n",
    }
    paths = []
    for name, text in texts.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def line_routes(plan_dir: Path) -> dict[str, tuple[tuple[float, float], ...]]:
    """Each line's street route in a generated plan.geojson: (lat, lon) from the first point
    round the lap back to it, for walkers that follow streets. Lines drawn without a
    LineString (a plan from elsewhere) are left out."""
    path = plan_dir / PLAN_FILE
    doc = json.loads(path.read_text(encoding="utf-8"))
    routes: dict[str, tuple[tuple[float, float], ...]] = {}
    for f in doc.get("features", []):
        props, geometry = f.get("properties") or {}, f.get("geometry") or {}
        if props.get("kind") == "line" and geometry.get("type") == "LineString":
            routes[props["id"]] = tuple((lat, lon) for lon, lat in geometry["coordinates"])
    return routes
