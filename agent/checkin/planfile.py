"""Reading and writing a patrol plan as GeoJSON, so a technician can draw it in any GIS tool.

The file is an RFC 7946 FeatureCollection: `Point` features with a text `id` are patrol
points, features with `"kind": "line"` order them with time windows, `"kind": "zone"`
polygons name areas, and the foreign members `picket` (version, UTC offset) and
`assignments` (who walks which lines on which day) complete it. docs/plans.md is the
format's reference; agent/checkin/planchecks.py holds the rule for each part.

Checking is one pass that collects every problem instead of stopping at the first, so a
technician fixes a file in one round: `check_plan` never raises for what a file contains
and returns the plan only when nothing is wrong. Warnings (a Point without an id is a
landmark, not a patrol point) do not refuse a plan. Ids are registered before anything is
checked, so a line may name a point defined after it, and a feature with a bad field still
counts as defined: one typo gives one message, not one per reference. `plan_to_geojson`
is the exact inverse on valid plans (`parse_plan(plan_to_geojson(p)) == p`), which the
simulators rely on to write plans the agent reads.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.checkin import planchecks as checks
from agent.checkin.plan import DEFAULT_DWELL_S, DEFAULT_RADIUS_M, Line, Plan, Point, Window, Zone
from agent.checkin.planchecks import Findings, Kind, Part
from agent.errors import AgentError

__all__ = [
    "DEFAULT_DWELL_S",
    "DEFAULT_RADIUS_M",
    "PlanError",
    "PlanReport",
    "check_file",
    "check_plan",
    "load_plan",
    "parse_plan",
    "plan_to_geojson",
    "read_document",
]

log = logging.getLogger(__name__)

# The largest plan file read. A district's plan is well under 1 MiB; this only stops a wrong
# path (/dev/zero, a disk image) from being read into memory without end.
MAX_PLAN_BYTES = 32 * 1024 * 1024


class PlanError(AgentError):
    """A plan file that cannot be used; `problems` names every reason, one message each."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class PlanReport:
    """The outcome of checking a plan: the plan, or None when there is any problem."""

    plan: Plan | None
    problems: list[str]
    warnings: list[str]
    source: str = "<plan>"

    @property
    def ok(self) -> bool:
        return not self.problems


def check_plan(doc: object, source: Path | str = "<plan>") -> PlanReport:
    """Every problem and warning in a decoded GeoJSON document, and the plan if it has none."""
    out = Findings()
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        out.problem("", 'not a GeoJSON FeatureCollection (type must be "FeatureCollection")')
        return _report(None, out, source)
    features = doc.get("features")
    if not isinstance(features, list):
        out.problem("", f"features must be an array, got {checks.show(features)}")
        return _report(None, out, source)
    version, utc_offset_min = checks.check_header(doc, out)
    parts = [p for i, f in enumerate(features) if (p := checks.classify(i, f, out)) is not None]
    known = _register(parts, out)
    points: list[Point | None] = []
    lines: list[Line | None] = []
    zones: list[Zone | None] = []
    for part in parts:
        if part.kind is Kind.POINT:
            points.append(checks.check_point(part, known[Kind.ZONE], out))
        elif part.kind is Kind.LINE:
            lines.append(checks.check_line(part, known[Kind.POINT], known[Kind.ZONE], out))
        else:
            zones.append(checks.check_zone(part, out))
    raw = doc.get("assignments")
    if raw is not None and not isinstance(raw, list):
        out.problem("", f"assignments must be an array, got {checks.show(raw)}")
    items = raw if isinstance(raw, list) else []
    assignments = [
        checks.check_assignment(i, a, known[Kind.LINE], out) for i, a in enumerate(items)
    ]
    if out.problems:
        return _report(None, out, source)
    plan = Plan(
        version=version,
        points=tuple(p for p in points if p is not None),
        lines=tuple(ln for ln in lines if ln is not None),
        zones=tuple(z for z in zones if z is not None),
        assignments=tuple(a for a in assignments if a is not None),
        utc_offset_min=utc_offset_min,
    )
    return _report(plan, out, source)


def _register(parts: list[Part], out: Findings) -> dict[Kind, dict[str, int]]:
    """The ids defined per kind (first definition wins); a repeated id is a problem."""
    known: dict[Kind, dict[str, int]] = {kind: {} for kind in Kind}
    for part in parts:
        if part.id is None:
            continue
        first = known[part.kind].setdefault(part.id, part.index)
        if first != part.index:
            out.problem(part.where, f"duplicate {part.kind} id; first defined at feature {first}")
    return known


def _report(plan: Plan | None, out: Findings, source: Path | str) -> PlanReport:
    return PlanReport(plan, out.problems, out.warnings, str(source))


def parse_plan(doc: object, source: Path | str = "<plan>") -> Plan:
    """The plan in a decoded GeoJSON document; PlanError names every problem in it."""
    report = check_plan(doc, source)
    if report.plan is None:
        raise PlanError(source, report.problems)
    if report.warnings:
        log.warning(
            "%s: %d warning(s), first: %s", source, len(report.warnings), report.warnings[0]
        )
    return report.plan


def read_document(path: Path) -> object:
    """A plan file's JSON; PlanError when it cannot be read or is not JSON (one problem)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    except ValueError as exc:  # a path with a NUL byte in it
        raise PlanError(path, [f"cannot read: {exc}"]) from exc
    if len(data) > MAX_PLAN_BYTES:
        limit = MAX_PLAN_BYTES // (1024 * 1024)
        raise PlanError(path, [f"larger than {limit} MiB: not a plan (is the path right?)"])
    try:
        return json.loads(data.decode("utf-8-sig"))  # -sig: GIS tools on Windows write a BOM
    except UnicodeDecodeError as exc:
        raise PlanError(path, [f"not UTF-8 text: bad byte at offset {exc.start}"]) from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise PlanError(path, [f"not valid JSON at {where}: {exc.msg}"]) from exc
    except RecursionError as exc:
        raise PlanError(path, ["not valid JSON: nested too deeply"]) from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        digits = sys.get_int_max_str_digits()
        why = f"a number has more than {digits} digits; no value in a plan is that long"
        raise PlanError(path, [why]) from exc


def check_file(path: Path) -> PlanReport:
    """`check_plan` on a file; a file that cannot be read or decoded is one problem."""
    try:
        doc = read_document(path)
    except PlanError as exc:
        return PlanReport(None, exc.problems, [], str(path))
    return check_plan(doc, path)


def load_plan(path: Path) -> Plan:
    return parse_plan(read_document(path), path)


def plan_to_geojson(plan: Plan) -> dict[str, object]:
    """The GeoJSON document of a plan, the inverse of `parse_plan` on valid plans.

    Optional properties are written only when set. Lines get a LineString through their
    points for display (the `points` list is what is read). The version is also written
    as a top-level member for agents that predate the `picket` member.
    """
    features = [_point_feature(p) for p in plan.points]
    features += [_line_feature(plan, ln) for ln in plan.lines]
    features += [_zone_feature(z) for z in plan.zones]
    doc: dict[str, object] = {
        "type": "FeatureCollection",
        "version": plan.version,
        "picket": {"version": plan.version, "utc_offset": offset_text(plan.utc_offset_min)},
        "features": features,
    }
    if plan.assignments:
        doc["assignments"] = [
            {
                **({"device": a.device} if a.device is not None else {}),
                **({"team": a.team} if a.team is not None else {}),
                "lines": list(a.lines),
                "date": a.date.isoformat(),
            }
            for a in plan.assignments
        ]
    return doc


def _feature(geometry: dict[str, object] | None, props: dict[str, object]) -> dict[str, object]:
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _point_feature(p: Point) -> dict[str, object]:
    props: dict[str, object] = {"id": p.id, "radius_m": p.radius_m, "dwell_s": p.dwell_s}
    optional = {
        "max_speed_mps": p.max_speed_mps,
        "tier": None if p.tier is None else p.tier.value,
        "zone": p.zone,
        "alt_min_m": p.alt_min_m,
        "alt_max_m": p.alt_max_m,
    }
    props.update((k, v) for k, v in optional.items() if v is not None)
    return _feature({"type": "Point", "coordinates": [p.lon, p.lat]}, props)


def _line_feature(plan: Plan, ln: Line) -> dict[str, object]:
    props: dict[str, object] = {"kind": "line", "id": ln.id, "points": list(ln.point_ids)}
    if ln.windows:
        props["windows"] = [None if w is None else window_json(w) for w in ln.windows]
    if ln.zone is not None:
        props["zone"] = ln.zone
    if ln.tier is not None:
        props["tier"] = ln.tier.value
    route: dict[str, object] | None = None
    if len(ln.point_ids) >= 2 and all(plan.has_point(pid) for pid in ln.point_ids):
        coords = [[plan.point(pid).lon, plan.point(pid).lat] for pid in ln.point_ids]
        route = {"type": "LineString", "coordinates": coords}
    return _feature(route, props)


def _zone_feature(z: Zone) -> dict[str, object]:
    props: dict[str, object] = {"kind": "zone", "id": z.id}
    if z.name:
        props["name"] = z.name
    ring = [[lon, lat] for lon, lat in z.ring]
    polygon: dict[str, object] = {"type": "Polygon", "coordinates": [ring]}
    return _feature(polygon if ring else None, props)


def window_json(w: Window) -> list[str]:
    """["HH:MM", "HH:MM"] for a window; an end past midnight is written as next-day time."""
    day = checks.MINUTES_PER_DAY
    valid = 0 <= w.start_min < day and w.start_min < w.end_min < w.start_min + day
    if not (valid or (w.start_min == 0 and w.end_min == day)):
        raise ValueError(f"{w} is not a window GeoJSON plans can hold (see docs/plans.md)")
    end = w.end_min if w.end_min <= day else w.end_min - day
    return [f"{w.start_min // 60:02d}:{w.start_min % 60:02d}", f"{end // 60:02d}:{end % 60:02d}"]


def offset_text(minutes: int) -> str:
    """ "+08:00" for 480 minutes east of UTC."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
