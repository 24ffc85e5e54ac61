"""Reading a patrol plan from GeoJSON, so a technician can draw points in any GIS tool.

A `Point` feature whose properties have `id` is a patrol point; `radius_m` (default 30)
and `dwell_s` (default 60) are optional. The collection's `version` member (default 1)
is the plan version carried in check-ins. Problems are collected, not raised one by one:
the error names every bad feature at once, so one pass fixes the file. (Lines, zones and
assignments are read by the check-in engine's plan issue; see docs/plans.md.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from agent.errors import LocalError
from agent.plan import Plan, Point

DEFAULT_RADIUS_M = 30.0
DEFAULT_DWELL_S = 60.0


class PlanError(LocalError):
    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


def _number(
    props: dict[str, object], key: str, default: float, where: str, out: list[str]
) -> float:
    v = props.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        out.append(f"{where}: {key} must be a number above 0, got {v!r}")
        return default
    return float(v)


def parse_plan(doc: object, source: Path | str = "<plan>") -> Plan:
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise PlanError(source, ["not a GeoJSON FeatureCollection"])
    features = doc.get("features")
    if not isinstance(features, list):
        raise PlanError(source, ["'features' must be an array"])
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        problems.append(f"'version' must be a whole number >= 0, got {version!r}")
        version = 1
    points: list[Point] = []
    seen: set[str] = set()
    for i, feat in enumerate(features):
        where = f"feature {i}"
        if not isinstance(feat, dict):
            problems.append(f"{where}: not an object")
            continue
        geom, props = feat.get("geometry"), feat.get("properties") or {}
        if not isinstance(geom, dict) or geom.get("type") != "Point" or not isinstance(props, dict):
            continue  # not a patrol point
        pid = props.get("id")
        if not isinstance(pid, str) or not pid:
            problems.append(f"{where}: a Point needs a text 'id'")
            continue
        where = f"point {pid!r}"
        if pid in seen:
            problems.append(f"{where}: duplicate id")
            continue
        seen.add(pid)
        coords = geom.get("coordinates")
        if (
            not isinstance(coords, list)
            or len(coords) < 2
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords[:2])
        ):
            problems.append(f"{where}: coordinates must be [longitude, latitude]")
            continue
        lon, lat = float(coords[0]), float(coords[1])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            problems.append(f"{where}: coordinates [{lon}, {lat}] are out of range")
            continue
        radius = _number(props, "radius_m", DEFAULT_RADIUS_M, where, problems)
        dwell = _number(props, "dwell_s", DEFAULT_DWELL_S, where, problems)
        points.append(Point(pid, lat, lon, radius, dwell))
    if problems:
        raise PlanError(source, problems)
    return Plan(version=version, points=tuple(points), lines=())


def load_plan(path: Path) -> Plan:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(path, [f"cannot read: {exc.strerror}"]) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlanError(path, [f"not valid JSON: {exc}"]) from exc
    return parse_plan(doc, path)


def plan_to_geojson(plan: Plan) -> dict[str, object]:
    """The inverse of `parse_plan` for points (used by the simulators to write plans)."""
    return {
        "type": "FeatureCollection",
        "version": plan.version,
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [p.lon, p.lat]},
                "properties": {"id": p.id, "radius_m": p.radius_m, "dwell_s": p.dwell_s},
            }
            for p in plan.points
        ],
    }
