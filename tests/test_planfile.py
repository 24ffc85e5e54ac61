"""GeoJSON plans: what a technician draws is what the agent walks, and every mistake is named.

A realistic plan (Shuangfu, UTC+08:00) is read, checked value by value and through
`agenda`, and written back unchanged. Then a table of single mistakes, each applied to
that plan, must give exactly one message naming the feature and the field; all of them
at once must give all of those messages. Property tests hold two invariants: any valid
plan survives plan_to_geojson → JSON → parse_plan unchanged, and any document (including
a valid one with one value replaced by junk) gives a report, never an exception.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checkin import planchecks
from agent.checkin.plan import Assignment, Line, Plan, Point, Tier, Window, Zone
from agent.checkin.planfile import (
    PlanError,
    check_file,
    check_plan,
    load_plan,
    parse_plan,
    plan_to_geojson,
    window_json,
)
from picket import plancmd
from simulators.district import generate_district

Doc = dict[str, Any]  # JSON as the tests build it
MARCH_1 = dt.date(2026, 3, 1)
Z01_RING = [
    [106.25, 29.26], [106.26, 29.26], [106.26, 29.27], [106.25, 29.27], [106.25, 29.26]
]  # fmt: skip


def point(pid: object, lon: float, lat: float, **props: object) -> Doc:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": ({} if pid is None else {"id": pid}) | props,
    }


def feature(kind: str, fid: str, geometry: Doc | None = None, **props: object) -> Doc:
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {"kind": kind, "id": fid} | props,
    }


def shuangfu() -> Doc:
    """A small but complete plan, as a technician would draw it (a fresh copy each time)."""
    return copy.deepcopy(_SHUANGFU)


_SHUANGFU: Doc = {
    "type": "FeatureCollection",
    "picket": {"version": 3, "utc_offset": "+08:00", "name": "Shuangfu"},
    "features": [
        point("P001", 106.2551, 29.2651),
        point("P002", 106.2562, 29.2663, radius_m=25, dwell_s=90, tier="street", zone="Z01"),
        point("P003", 106.2575, 29.2670, radius_m=40.5, dwell_s=0, max_speed_mps=2.5),
        point("P004", 106.2590, 29.2681, tier="community", zone="Z02"),
        point("P005", 106.2601, 29.2692, radius_m=None, dwell_s=None),  # QGIS: empty cells
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [106.2612, 29.2703, 120.0]},
            "properties": {"id": "P006", "tier": "aerial", "alt_min_m": 80, "alt_max_m": 150},
        },
        point(None, 106.2555, 29.2655, name="Sanjie market gate"),  # a landmark
        feature(
            "line",
            "L01",
            {"type": "LineString", "coordinates": [[106.2551, 29.2651], [106.2575, 29.2670]]},
            points=["P001", "P002", "P003"],
            windows=[["08:00", "08:30"], None, ["23:30", "00:30"]],  # the last across midnight
            zone="Z01",
            tier="street",
        ),
        feature(
            "line",
            "L02",
            points=["P004", "P005", "P004"],
            window=["22:00", "24:00"],
            tier="community",
        ),
        feature("line", "L03", points=["P006"]),
        feature("zone", "Z01", {"type": "Polygon", "coordinates": [Z01_RING]}, name="Sanjie"),
        feature("zone", "Z02"),
    ],
    "assignments": [
        {"device": "h0001", "lines": ["L01"], "date": "2026-03-01"},
        {"team": "T1", "lines": ["L02", "L03"], "date": "2026-03-01"},
    ],
}


def features(doc: Doc) -> list[Any]:
    fs = doc["features"]
    assert isinstance(fs, list)
    return fs


def props(doc: Doc, fid: str) -> Doc:
    for f in features(doc):
        p: Doc = f["properties"]
        if p.get("id") == fid:
            return p
    raise KeyError(fid)


def geometry(doc: Doc, fid: str) -> Doc:
    for f in features(doc):
        if f["properties"].get("id") == fid:
            g: Doc = f["geometry"]
            return g
    raise KeyError(fid)


def assignments(doc: Doc) -> list[Any]:
    a = doc["assignments"]
    assert isinstance(a, list)
    return a


def utc_ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


# --- a realistic plan ---------------------------------------------------------------------


def test_a_realistic_plan_reads_as_drawn() -> None:
    report = check_plan(shuangfu())
    assert report.problems == []
    assert len(report.warnings) == 1 and "feature 6" in report.warnings[0]  # the landmark
    plan = report.plan
    assert plan is not None
    assert (plan.version, plan.utc_offset_min) == (3, 480)
    assert [p.id for p in plan.points] == ["P001", "P002", "P003", "P004", "P005", "P006"]
    assert plan.point("P001") == Point("P001", 29.2651, 106.2551, 30.0, 60.0)
    assert plan.point("P002") == Point(
        "P002", 29.2663, 106.2562, 25.0, 90.0, tier=Tier.STREET, zone="Z01"
    )
    assert plan.point("P003").max_speed_mps == 2.5 and plan.point("P003").dwell_s == 0
    assert plan.point("P005").radius_m == 30.0 and plan.point("P005").dwell_s == 60.0
    p6 = plan.point("P006")
    assert (p6.tier, p6.alt_min_m, p6.alt_max_m) == (Tier.AERIAL, 80.0, 150.0)
    assert plan.line("L01") == Line(
        "L01",
        ("P001", "P002", "P003"),
        (Window(480, 510), None, Window(1410, 1470)),
        zone="Z01",
        tier=Tier.STREET,
    )
    assert plan.line("L02").windows == (Window(1320, 1440),) * 3
    assert plan.line("L03").windows == ()
    assert plan.zones == (
        Zone("Z01", "Sanjie", tuple((lon, lat) for lon, lat in Z01_RING)),
        Zone("Z02"),
    )
    assert plan.assignments == (
        Assignment(("L01",), MARCH_1, device="h0001"),
        Assignment(("L02", "L03"), MARCH_1, team="T1"),
    )


def test_a_realistic_plan_round_trips_through_a_file(tmp_path: Path) -> None:
    plan = parse_plan(shuangfu())
    path = tmp_path / "shuangfu.geojson"
    path.write_text(json.dumps(plan_to_geojson(plan), indent=1), encoding="utf-8")
    assert load_plan(path) == plan
    written = json.loads(path.read_text())
    assert written["picket"] == {"version": 3, "utc_offset": "+08:00"}
    assert written["version"] == 3  # for agents that predate the picket member
    assert props(written, "L01")["windows"] == [["08:00", "08:30"], None, ["23:30", "00:30"]]
    assert geometry(written, "L01")["type"] == "LineString"  # drawn through its points
    assert props(written, "P001") == {"id": "P001", "radius_m": 30.0, "dwell_s": 60.0}


def test_agenda_gives_absolute_utc_windows_from_local_times() -> None:
    plan = parse_plan(shuangfu())
    mine = plan.agenda(MARCH_1, "h0001")
    assert [(a.point, a.start_ms, a.end_ms) for a in mine] == [
        ("P001", utc_ms("2026-03-01T00:00Z"), utc_ms("2026-03-01T00:30Z")),  # 08:00 +08:00
        ("P002", None, None),
        ("P003", utc_ms("2026-03-01T15:30Z"), utc_ms("2026-03-01T16:30Z")),  # 23:30 to 00:30
    ]
    team = plan.agenda(MARCH_1, "h0002", team="T1")
    assert [(a.line, a.point, a.start_ms, a.end_ms) for a in team] == [
        ("L02", "P004", utc_ms("2026-03-01T14:00Z"), utc_ms("2026-03-01T16:00Z")),
        ("L02", "P005", utc_ms("2026-03-01T14:00Z"), utc_ms("2026-03-01T16:00Z")),
        ("L02", "P004", utc_ms("2026-03-01T14:00Z"), utc_ms("2026-03-01T16:00Z")),
        ("L03", "P006", None, None),
    ]
    assert plan.agenda(MARCH_1 + dt.timedelta(days=1), "h0001") == []


def test_a_points_only_plan_in_the_spines_format_still_reads() -> None:
    doc = {"type": "FeatureCollection", "version": 2, "features": [point("P1", 106.0, 29.0)]}
    assert parse_plan(doc) == Plan(2, (Point("P1", 29.0, 106.0),))
    assert parse_plan({"type": "FeatureCollection", "features": []}) == Plan(1, ())


def test_picket_version_wins_over_top_level_version_with_a_warning() -> None:
    doc = shuangfu() | {"version": 2}
    report = check_plan(doc)
    assert report.plan is not None and report.plan.version == 3
    assert any("version 2 differs from picket.version 3" in w for w in report.warnings)


def test_generated_district_round_trips() -> None:
    plan = generate_district(7)
    assert parse_plan(plan_to_geojson(plan)) == plan
    assert parse_plan(json.loads(json.dumps(plan_to_geojson(plan)))) == plan


# --- every problem, named ------------------------------------------------------------------


def _set(fid: str, **values: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        props(doc, fid).update(values)

    return mutate


def _coords(fid: str, coords: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        geometry(doc, fid)["coordinates"] = coords

    return mutate


def _append(feature: Doc) -> Callable[[Doc], None]:
    return lambda doc: features(doc).append(copy.deepcopy(feature))


def _assignment(index: int, **values: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        a = assignments(doc)[index]
        a.update(values)
        for k in [k for k, v in a.items() if v is None]:
            del a[k]

    return mutate


def _picket(**values: object) -> Callable[[Doc], None]:
    return lambda doc: doc["picket"].update(values)


def _landmark(**values: object) -> Callable[[Doc], None]:
    return lambda doc: features(doc)[6]["properties"].update(values)


def _both(*mutations: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for m in mutations:
            m(doc)

    return mutate


def _del_coordinates(doc: Doc) -> None:
    del geometry(doc, "P001")["coordinates"]


P001 = "point 'P001' (feature 0)"
L01 = "line 'L01' (feature 7)"
Z01 = "zone 'Z01' (feature 10)"
OPEN_RING = [[106.25, 29.26], [106.26, 29.26], [106.26, 29.27], [106.25, 29.27]]

# (mistake, how to make it, what the one message must say)
MISTAKES: list[tuple[str, Callable[[Doc], None], list[str]]] = [
    ("duplicate point id", _append(point("P003", 106.0, 29.0)),
     ["point 'P003' (feature 12)", "duplicate point id", "feature 2"]),
    ("duplicate line id", _append(feature("line", "L03", points=["P001"])),
     ["line 'L03' (feature 12)", "duplicate line id"]),
    ("duplicate zone id", _append(feature("zone", "Z02")),
     ["zone 'Z02' (feature 12)", "duplicate zone id", "feature 11"]),
    ("missing coordinates", _del_coordinates, [P001, "coordinates are missing"]),
    ("one coordinate", _coords("P001", [106.0]), [P001, "coordinates must be [longitude, lat"]),
    ("text coordinate", _coords("P001", ["106.2", 29.2]), [P001, "coordinates must be finite"]),
    ("bool coordinate", _coords("P001", [True, 29.2]), [P001, "coordinates must be finite"]),
    ("NaN coordinate", _coords("P001", [float("nan"), 29.2]), [P001, "must be finite"]),
    ("inf coordinate", _coords("P001", [106.2, float("inf")]), [P001, "must be finite"]),
    ("huge coordinate", _coords("P001", [10**400, 29.2]), [P001, "must be finite"]),
    ("latitude out of range", _coords("P001", [106.2, 95.0]),
     [P001, "coordinates [106.2, 95.0]: latitude is outside -90..90"]),
    ("longitude out of range", _coords("P001", [-181.0, 29.2]),
     [P001, "longitude is outside -180..180"]),
    ("swapped coordinates", _coords("P001", [29.2651, 106.2551]), [P001, "swapped?"]),
    ("radius 0", _set("P001", radius_m=0), [P001, "radius_m must be a number above 0"]),
    ("radius negative", _set("P001", radius_m=-5), [P001, "radius_m", "got -5"]),
    ("radius text", _set("P001", radius_m="30"), [P001, "radius_m", 'got "30"']),
    ("radius bool", _set("P001", radius_m=True), [P001, "radius_m", "got true"]),
    ("dwell negative", _set("P001", dwell_s=-1), [P001, "dwell_s must be a number >= 0"]),
    ("dwell text", _set("P001", dwell_s="1m"), [P001, "dwell_s", 'got "1m"']),
    ("dwell NaN", _set("P001", dwell_s=float("nan")), [P001, "dwell_s", "got NaN"]),
    ("speed 0", _set("P001", max_speed_mps=0), [P001, "max_speed_mps must be a number above 0"]),
    ("unknown tier", _set("P001", tier="foot"),
     [P001, "tier must be one of street, community, grid, aerial", '"foot"']),
    ("alt band upside down", _set("P006", alt_min_m=150, alt_max_m=80),
     ["point 'P006'", "alt_min_m 150 must be below alt_max_m 80"]),
    ("alt band empty", _set("P006", alt_max_m=80), ["point 'P006'", "alt_min_m 80 must be below"]),
    ("alt band one side", _set("P006", alt_max_m=None),
     ["point 'P006'", "needs alt_min_m and alt_max_m; only alt_min_m is set"]),
    ("point in unknown zone", _set("P001", zone="Z99"), [P001, "zone names unknown zone 'Z99'"]),
    ("line with unknown point", _set("L01", points=["P001", "P999", "P003"]),
     [L01, "points[1] names unknown point 'P999'"]),
    ("line with no points", _set("L03", points=[]), ["line 'L03'", "points must be a non-empty"]),
    ("line with a number", _set("L03", points=[6]), ["line 'L03'", "points[0] must be a point id"]),
    ("point twice in a row", _set("L01", points=["P001", "P001", "P003"]),
     [L01, "points[1] repeats 'P001'"]),
    ("windows length", _set("L01", windows=[["08:00", "09:00"]]),
     [L01, "windows has 1 entries for 3 points"]),
    ("malformed time", _set("L01", windows=[["8am", "09:00"], None, None]),
     [L01, 'windows[0] start "8am" is not a time HH:MM']),
    ("start 24:00", _set("L02", window=["24:00", "01:00"]), ["line 'L02'", "window start"]),
    ("end 25:00", _set("L02", window=["22:00", "25:00"]), ["line 'L02'", 'end "25:00"']),
    ("minutes 60", _set("L02", window=["22:60", "23:00"]), ["line 'L02'", "start"]),
    ("window one time", _set("L02", window=["22:00"]), ["line 'L02'", 'window must be ["HH:MM"']),
    ("start equals end", _set("L02", window=["22:00", "22:00"]), ["line 'L02'", "is empty"]),
    ("windows and window", _set("L02", windows=[None] * 3),
     ["line 'L02'", "windows (one per point) or window (for every point), not both"]),
    ("line in unknown zone", _set("L01", zone="Z9"), [L01, "zone names unknown zone 'Z9'"]),
    ("line drawn as polygon", lambda d: geometry(d, "L01").update(type="Polygon"),
     [L01, "geometry must be a LineString or null"]),
    ("line without id", _both(_set("L03", id=None), _assignment(1, lines=["L02"])),
     ["line (feature 9)", "id must be text, got null"]),
    ("assignment unknown line", _assignment(0, lines=["L01", "L09"]),
     ["assignment 0 (device 'h0001')", "lines[1] names unknown line 'L09'"]),
    ("assignment with no lines", _assignment(0, lines=[]), ["assignment 0", "lines must be"]),
    ("assignment nobody", _assignment(1, team=None), ["assignment 1", "needs a device or a team"]),
    ("assignment empty device", _assignment(0, device=""), ["assignment 0", "device must be"]),
    ("assignment bad date", _assignment(0, date="2026-02-30"),
     ["assignment 0 (device 'h0001')", 'date must be a date YYYY-MM-DD, got "2026-02-30"']),
    ("assignment other date", _assignment(1, date="01/03/2026"), ["assignment 1 (team 'T1')"]),
    ("assignment compact date", _assignment(1, date="20260301"), ["date must be a date"]),
    ("assignment not object", lambda d: assignments(d).append("h0001"),
     ["assignment 2", 'must be an object, got "h0001"']),
    ("assignments not array", lambda d: d.update(assignments={}), ["assignments must be"]),
    ("offset without minutes", _picket(utc_offset="+8"), ["picket", "utc_offset must be ±HH:MM"]),
    ("offset named", _picket(utc_offset="UTC+8"), ["utc_offset", '"UTC+8"']),
    ("offset too far", _picket(utc_offset="+15:00"), ["utc_offset", '"+15:00"']),
    ("version text", _picket(version="3"), ["picket: version must be a whole number"]),
    ("version negative", _picket(version=-1), ["picket: version must be a whole number"]),
    ("top-level version", lambda d: d.update(version=1.5), ["version must be a whole number"]),
    ("name not text", _picket(name=7), ["picket: name must be"]),
    ("picket not object", lambda d: d.update(picket=[3]), ["picket: must be an object"]),
    ("zone ring open", _coords("Z01", [[*OPEN_RING, [106.25, 29.265]]]),
     [Z01, "coordinates[0] is not closed"]),
    ("zone ring short", _coords("Z01", [[*OPEN_RING[:3], OPEN_RING[0]][1:]]),
     [Z01, "coordinates[0] must be a closed ring of at least 4 positions, got 3 positions"]),
    ("zone ring bad position", _coords("Z01", [[*Z01_RING[:2], [200, 29.0], *Z01_RING[2:]]]),
     [Z01, "coordinates[0][2] [200, 29.0]: longitude is outside"]),
    ("zone no rings", _coords("Z01", []), [Z01, "coordinates must be an array of closed rings"]),
    ("zone multipolygon", lambda d: geometry(d, "Z01").update(type="MultiPolygon"),
     [Z01, 'geometry must be a Polygon or null, got "MultiPolygon"']),
    ("unknown kind", _landmark(kind="route"), ["feature 6", "kind must be point, line or zone"]),
    ("explicit point without id", _landmark(kind="point"),
     ["point (feature 6)", "id must be text, got null"]),
    ("point kind on a polygon", _append(feature("point", "P100", {"type": "Polygon"})),
     ["point 'P100' (feature 12)", 'geometry must be a Point, got "Polygon"']),
    ("feature not an object", lambda d: features(d).append([1, 2]), ["feature 12", "must be a"]),
    ("feature of another type", _append({"type": "Point", "coordinates": [1, 2]}),
     ["feature 12", 'type must be "Feature"']),
    ("properties not an object", _append({"type": "Feature", "geometry": None, "properties": 1}),
     ["feature 12", "properties must be an object or null"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "expected"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_each_mistake_is_named_once(mutate: Callable[[Doc], None], expected: list[str]) -> None:
    doc = shuangfu()
    mutate(doc)
    report = check_plan(doc)
    assert report.plan is None
    assert len(report.problems) == 1, report.problems
    for text in expected:
        assert text in report.problems[0], report.problems[0]
    with pytest.raises(PlanError) as caught:
        parse_plan(doc, "shuangfu.geojson")
    assert caught.value.problems == report.problems
    assert str(caught.value) == f"shuangfu.geojson: {report.problems[0]}"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ([], "not a GeoJSON FeatureCollection"),
        ({"type": "Feature", "geometry": None, "properties": {}}, "not a GeoJSON Feature"),
        ({"type": "FeatureCollection"}, "features must be an array, got null"),
        ({"type": "FeatureCollection", "features": {}}, "features must be an array, got {}"),
    ],
)
def test_a_document_that_is_not_a_plan_is_one_problem(doc: object, expected: str) -> None:
    report = check_plan(doc)
    assert report.plan is None and len(report.problems) == 1
    assert expected in report.problems[0]


def test_all_problems_in_a_file_are_reported_together() -> None:
    doc = shuangfu()
    names = {
        "duplicate point id", "missing coordinates", "radius 0", "dwell negative", "speed 0",
        "unknown tier", "alt band upside down", "line with unknown point", "malformed time",
        "line in unknown zone", "start equals end", "assignment bad date", "assignment nobody",
        "offset too far", "version text", "zone ring open", "feature of another type",
        "unknown kind",
    }  # mistakes in different fields  # fmt: skip
    chosen = [m for m in MISTAKES if m[0] in names]
    assert len(chosen) == len(names)
    for _, mutate, _ in chosen:
        mutate(doc)
    report = check_plan(doc)
    assert len(report.problems) == len(chosen), "\n".join(report.problems)
    for name, _, expected in chosen:
        assert any(expected[-1] in p for p in report.problems), name


def test_an_invalid_point_still_counts_as_defined() -> None:
    """One typo, one message: lines naming a broken point do not add 'unknown point'."""
    doc = shuangfu()
    _set("P001", radius_m=-1)(doc)
    _append(point("P001", 106.0, 29.0))(doc)
    report = check_plan(doc)
    assert len(report.problems) == 2
    assert not any("unknown point" in p for p in report.problems)


def test_warnings_do_not_refuse_a_plan() -> None:
    doc = shuangfu()
    features(doc).append(point(None, 106.0, 29.0))
    features(doc).append(point("", 106.0, 29.0))
    features(doc).append(point(None, 106.0, 29.0) | {"id": "X"})  # the Feature's own id
    features(doc).append(point(17, 106.0, 29.0))
    features(doc).append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []},
                          "properties": {"name": "a building"}})  # fmt: skip
    holed = [Z01_RING, Z01_RING]
    features(doc).append(
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": holed},
         "properties": {"kind": "zone", "id": "Z03"}}
    )  # fmt: skip
    _picket(utc_ofset="+08:00")(doc)
    _assignment(0, shift="day")(doc)
    report = check_plan(doc)
    assert report.problems == [] and report.plan is not None
    joined = "\n".join(report.warnings)
    assert len(report.warnings) == 9, joined
    for text in [
        "feature 6: ignored: a Point with no 'id' is not a patrol point",
        "feature 13: ignored: a Point with an id that is not text",
        "feature 14: ignored: a Point with no 'id' is not a patrol point; the Feature's own",
        "feature 15: ignored: a Point with an id that is not text (17)",
        "feature 16: ignored: a Polygon with no 'kind' is not a point, line or zone",
        "zone 'Z03' (feature 17): 1 hole(s) ignored",
        "picket: unknown member 'utc_ofset' ignored",
        "assignment 0 (device 'h0001'): unknown member 'shift' ignored",
    ]:
        assert text in joined


# --- files and `picket plan check` ---------------------------------------------------------


def write(tmp_path: Path, doc: object, name: str = "plan.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def run_check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="picket")
    plancmd.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert (args.command, args.plan_command) == ("plan", "check")
    code = plancmd.check(args)
    return code, capsys.readouterr().out


def test_invalid_json_is_one_problem_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "plan.geojson"
    path.write_text('{"type": "FeatureCollection",\n "features": [,]}\n')
    report = check_file(path)
    assert report.problems == ["not valid JSON at line 2, column 15: Expecting value"]
    with pytest.raises(PlanError, match="line 2, column 15"):
        load_plan(path)


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "plan.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(shuangfu()).encode())
    assert load_plan(path) == parse_plan(shuangfu())


def test_plan_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, shuangfu())
    code, out = run_check(["plan", "check", str(path)], capsys)
    assert code == 0
    assert out.splitlines() == [
        f"{path}: warning: feature 6: ignored: a Point with no 'id' is not a patrol point",
        "OK: 6 points, 3 lines, 2 zones, 2 assignments; plan version 3 (1 warning)",
    ]


def test_plan_check_names_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = shuangfu()
    _set("P001", radius_m=0)(doc)
    _assignment(0, date="tomorrow")(doc)
    path = write(tmp_path, doc)
    code, out = run_check(["plan", "check", str(path)], capsys)
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == f"{path}: {P001}: radius_m must be a number above 0 (metres), got 0"
    assert lines[1].startswith(f"{path}: assignment 0 (device 'h0001'): date must be")
    assert lines[2].startswith(f"{path}: warning: feature 6")
    assert lines[3] == "2 problems (1 warning)"


def test_plan_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_check(["plan", "check", str(write(tmp_path, shuangfu())), "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {
        "ok": True, "problems": [], "warnings": [check_plan(shuangfu()).warnings[0]],
        "points": 6, "lines": 3, "zones": 2, "assignments": 2, "version": 3,
    }  # fmt: skip
    doc = shuangfu()
    _set("L01", points=[])(doc)
    code, out = run_check(["plan", "check", str(write(tmp_path, doc)), "--json"], capsys)
    result = json.loads(out)
    assert code == 2 and result["ok"] is False and len(result["problems"]) == 1
    assert result["points"] is None and result["version"] is None


def test_plan_check_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.geojson"
    code, out = run_check(["plan", "check", str(missing)], capsys)
    assert code == 2
    assert out.splitlines() == [f"{missing}: cannot read: No such file or directory", "1 problem"]
    bad = tmp_path / "bad.geojson"
    bad.write_bytes(b'{"type": "\xff"}')
    code, out = run_check(["plan", "check", str(bad), "--json"], capsys)
    assert code == 2 and json.loads(out)["problems"] == ["not UTF-8 text: bad byte at offset 10"]


# --- properties ----------------------------------------------------------------------------

# text as a plan may hold it: no lone surrogates, no control characters (see the hostile
# strings below for the rest)
letters = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cf"))
ids = st.text(letters, min_size=1, max_size=6)
reals = st.floats(-1000, 20_000)
positives = st.floats(min_value=0, max_value=1000, exclude_min=True)
positions = st.tuples(st.floats(-180, 180), st.floats(-90, 90))
windows = st.just(Window(0, 1440)) | st.builds(
    lambda start, length: Window(start, start + length),
    st.integers(0, 1439),
    st.integers(1, 1439),
)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    zone_ids = draw(st.lists(ids, unique=True, max_size=3))
    zones = tuple(
        Zone(
            z,
            draw(st.text(letters, max_size=6)),
            draw(st.just(()) | st.lists(positions, min_size=3, max_size=5).map(
                lambda r: (*r, r[0]))),
        )
        for z in zone_ids
    )  # fmt: skip
    zone_refs = st.none() | (st.sampled_from(zone_ids) if zone_ids else st.none())
    tiers = st.none() | st.sampled_from(Tier)
    points = []
    for pid in draw(st.lists(ids, unique=True, min_size=1, max_size=6)):
        lon, lat = draw(positions)
        band = draw(st.none() | st.tuples(reals, reals).filter(lambda b: b[0] < b[1]))
        points.append(
            Point(
                pid, lat, lon, draw(positives), draw(st.floats(0, 86_400)),
                draw(st.none() | positives), draw(tiers), draw(zone_refs),
                None if band is None else band[0], None if band is None else band[1],
            )
        )  # fmt: skip
    lines = []
    for lid in draw(st.lists(ids, unique=True, max_size=4)):
        walk = draw(st.lists(st.sampled_from([p.id for p in points]), min_size=1, max_size=5))
        walk = [pid for k, pid in enumerate(walk) if k == 0 or pid != walk[k - 1]]
        wins = draw(st.just(()) | st.tuples(*[st.none() | windows for _ in walk]))
        lines.append(Line(lid, tuple(walk), wins, draw(zone_refs), draw(tiers)))
    assigned = []
    if lines:
        for _ in range(draw(st.integers(0, 3))):
            names = draw(st.lists(st.sampled_from([ln.id for ln in lines]), min_size=1))
            device, team = draw(
                st.sampled_from([(True, False), (False, True), (True, True)]).map(
                    lambda who: (draw(ids) if who[0] else None, draw(ids) if who[1] else None)
                )
            )
            assigned.append(Assignment(tuple(names), draw(st.dates()), device, team))
    return Plan(
        version=draw(st.integers(0, 2**32 - 1)),
        points=tuple(points),
        lines=tuple(lines),
        zones=zones,
        assignments=tuple(assigned),
        utc_offset_min=draw(st.integers(-720, 840)),
    )


@given(plans())
@settings(max_examples=300)
def test_any_valid_plan_round_trips(plan: Plan) -> None:
    doc = plan_to_geojson(plan)
    assert check_plan(doc).problems == []
    assert parse_plan(doc) == plan
    assert parse_plan(json.loads(json.dumps(doc))) == plan


@given(st.integers(0, 1439), st.integers(1, 1439))
def test_windows_write_as_they_read(start: int, length: int) -> None:
    w = Window(start, start + length)
    text = window_json(w)
    doc = {"type": "FeatureCollection", "features": [
        point("P", 0.0, 0.0),
        {"type": "Feature", "geometry": None,
         "properties": {"kind": "line", "id": "L", "points": ["P"], "window": text}},
    ]}  # fmt: skip
    assert parse_plan(doc).lines[0].windows == (w,)
    with pytest.raises(ValueError, match="not a window"):
        window_json(Window(start, start))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def _slots(value: object, out: list[tuple[Any, object]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((value, k))
            _slots(v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((value, i))
            _slots(v, out)


@given(json_values)
def test_any_document_gives_a_report_never_an_exception(doc: object) -> None:
    report = check_plan({"type": "FeatureCollection", "features": [doc]})
    assert (report.plan is None) == bool(report.problems)
    check_plan(doc)


@given(st.data(), json_values)
@settings(max_examples=500)
def test_a_plan_with_any_one_value_replaced_gives_a_report(
    data: st.DataObject, junk: object
) -> None:
    doc = shuangfu()
    slots: list[tuple[Any, object]] = []
    _slots(doc, slots)
    container, key = data.draw(st.sampled_from(slots))
    container[key] = junk
    report = check_plan(doc)
    assert (report.plan is None) == bool(report.problems)
    assert all(isinstance(p, str) for p in report.problems + report.warnings)


def test_a_zone_drawn_wrong_everywhere_is_named_once_and_counted() -> None:
    doc = shuangfu()
    _coords("Z01", [[[29.26, 106.25]] * 6])(doc)  # every position swapped
    report = check_plan(doc)
    assert report.problems == [
        f"{Z01}: coordinates[0][0] [29.26, 106.25]: latitude is outside -90..90"
        " (swapped? GeoJSON is [longitude, latitude])",
        f"{Z01}: coordinates[0]: 5 more bad positions",
    ]


def test_the_example_in_the_docs_is_a_valid_plan() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "plans.md").read_text()
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    report = check_plan(example)
    assert report.problems == [] and report.plan is not None
    assert len(report.warnings) == 1 and "feature 3" in report.warnings[0]
    assert [p.id for p in report.plan.points] == ["P001", "P002", "P003"]
    (first,) = report.plan.agenda(MARCH_1, "h0003", team="T1")
    assert (first.start_ms, first.end_ms) == (
        utc_ms("2026-03-01T14:00Z"),
        utc_ms("2026-03-01T16:00Z"),
    )


# --- hostile strings and numbers (issue 15) ------------------------------------------------

P001 = "point 'P001' (feature 0)"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _set("P001", id="P\ud800"),
            "point (feature 0): id is not text: a lone surrogate U+D800"
            ' at character 1, got "P\\ud800"',
        ),
        (_set("P001", id="P\x00"), "point (feature 0): id holds a control character U+0000"),
        (_set("P001", id="P\u202e1"), "point (feature 0): id holds a control character U+202E"),
        (_set("P001", id="P" * 33), "point (feature 0): id is 33 bytes long in UTF-8; at most 32"),
        (_set("P001", id="点" * 11), "id is 33 bytes long in UTF-8; at most 32"),
        (
            _set("P001", radius_m=10**5000),
            f"{P001}: radius_m must be at most 10000 (metres), "
            "got a whole number of about 5000 digits",
        ),
        (_set("P001", radius_m=1e300), f"{P001}: radius_m must be at most 10000 (metres)"),
        (_set("P001", dwell_s=86_401), f"{P001}: dwell_s must be at most 86400 (seconds)"),
        (_set("P001", max_speed_mps=10**20), f"{P001}: max_speed_mps must be at most 1000"),
        (
            _set("P001", alt_min_m=-1e9, alt_max_m=10),
            f"{P001}: alt_min_m must be a number >= -1000 (metres)",
        ),
        (_set("P001", zone="Z\ud800"), f"{P001}: zone is not text: a lone surrogate"),
        (_set("L01", points=["P001", "P\ud800"]), "points[1] is not text: a lone surrogate"),
        (_set("Z01", name="x" * 257), "name is 257 bytes long in UTF-8; at most 256"),
        (_set("Z01", name="a\nb"), "name holds a control character U+000A"),
        (_assignment(0, device="h" * 65), "device is 65 bytes long in UTF-8; at most 64"),
        (_assignment(0, lines=["L\udfff"]), "lines[0] is not text: a lone surrogate U+DFFF"),
        (_picket(name="\ud800"), "picket: name is not text: a lone surrogate"),
        (
            _picket(version=10**5000),
            "picket: version must be a whole number 0..4294967295, got"
            " a whole number of about 5000 digits",
        ),
    ],
)
def test_hostile_text_and_numbers_are_named(mutate: Callable[[Doc], None], expected: str) -> None:
    doc = shuangfu()
    mutate(doc)
    report = check_plan(doc)
    assert report.plan is None
    assert any(expected in problem for problem in report.problems), report.problems
    "\n".join(report.problems + report.warnings).encode("utf-8")  # printable as it stands


def test_a_number_of_more_than_4300_digits_in_a_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "plan.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [], "version": ' + "7" * 5000 + "}")
    report = check_file(path)
    assert report.problems == [
        "a number has more than 4300 digits; no value in a plan is that long"
    ]
    with pytest.raises(PlanError, match="more than 4300 digits"):
        load_plan(path)


def test_a_file_too_large_to_be_a_plan_is_not_read_to_its_end(tmp_path: Path) -> None:
    report = check_file(Path("/dev/zero"))
    assert report.problems == ["larger than 32 MiB: not a plan (is the path right?)"]


# Tokens spliced into a plan's JSON text in place of one value: what a hostile or broken
# file may hold that json.dumps would never write.
HOSTILE_TOKENS = [
    "9" * 5000, "-" + "9" * 4301, "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
    "1e-400", "18446744073709551616", "-0.0", '"\\ud800"', '"P\\udfff1"', '"\\u0000"',
    '"\\u202eP001"', '"\\u2028"', '"' + "P" * 33 + '"', '"' + "x" * 10_000 + '"', '""',
    '"\\ud83d\\ude00"', "[[[[[[[[[[1]]]]]]]]]]", "{}", "[]", "true", "null",
]  # fmt: skip
hostile_text = st.text(st.characters(), max_size=40) | st.sampled_from(
    ["\ud800", "P\x00", "\u202eP", "\U0001f600" * 9, "P" * 33, "\n", " ", "\ufeff"]
)
hostile_numbers = (
    st.integers() | st.floats() | st.sampled_from([10**400, -(10**5000), 2**64, 2**32, -1])
)


@given(st.data(), st.sampled_from(HOSTILE_TOKENS) | hostile_text.map(json.dumps))
@settings(max_examples=300)
def test_a_plan_file_with_any_hostile_token_loads_or_raises_plan_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, token: str
) -> None:
    doc = shuangfu()
    slots: list[tuple[Any, object]] = []
    _slots(doc, slots)
    container, key = data.draw(st.sampled_from(slots))
    container[key] = "@@SLOT@@"
    path = tmp_path_factory.mktemp("hostile") / "plan.geojson"
    path.write_text(json.dumps(doc).replace('"@@SLOT@@"', token), encoding="utf-8")
    try:
        plan = load_plan(path)
    except PlanError as exc:
        assert exc.problems and all(p.encode("utf-8") for p in exc.problems)
        assert str(exc).encode("utf-8")
        return
    _assert_sane(plan)


@given(st.data(), hostile_text | hostile_numbers)
@settings(max_examples=500)
def test_any_hostile_string_or_number_in_a_plan_gives_a_report(
    data: st.DataObject, junk: object
) -> None:
    doc = shuangfu()
    slots: list[tuple[Any, object]] = []
    _slots(doc, slots)
    container, key = data.draw(st.sampled_from(slots))
    container[key] = junk
    report = check_plan(doc)
    assert (report.plan is None) == bool(report.problems)
    "\n".join(report.problems + report.warnings).encode("utf-8")
    if report.plan is not None:
        _assert_sane(report.plan)


def _assert_sane(plan: Plan) -> None:
    """What the loader promises of a plan it returns: ids fit a record, numbers in bounds."""
    ids = [p.id for p in plan.points] + [ln.id for ln in plan.lines] + [z.id for z in plan.zones]
    ids += [pid for ln in plan.lines for pid in ln.point_ids]
    ids += [a.team for a in plan.assignments if a.team is not None]
    for text in ids:
        assert planchecks.text_problem(text, planchecks.MAX_ID_BYTES) is None, text
    for p in plan.points:
        assert 0 < p.radius_m <= planchecks.MAX_RADIUS_M
        assert 0 <= p.dwell_s <= planchecks.MAX_DWELL_S
        assert p.max_speed_mps is None or 0 < p.max_speed_mps <= planchecks.MAX_SPEED_MPS
        for alt in (p.alt_min_m, p.alt_max_m):
            low, high = planchecks.ALT_LIMITS_M
            assert alt is None or low <= alt <= high
    for z in plan.zones:
        z.name.encode("utf-8")
