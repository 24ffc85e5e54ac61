"""The rules for one part of a GeoJSON plan at a time: a feature, a point, a line, a zone,
an assignment, a time window, the `picket` member.

Split from agent/checkin/planfile.py so that the file-level flow there (what the collection holds,
which ids refer to which) reads on one screen, and each rule here sits next to its message.
Every checker takes a JSON value of unknown shape and a `Findings` to append to, and
returns what it could build, or None: nothing here raises on bad input, so one pass names
every problem in a file. A message starts with where the problem is (the feature's index
and id, as a GIS tool's attribute table shows them), then names the field; values are shown
in JSON spelling, as the technician wrote them. A JSON `null` counts as absent everywhere,
because GIS tools export empty attribute cells as null.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field

from agent.checkin.plan import (
    DEFAULT_DWELL_S,
    DEFAULT_RADIUS_M,
    Assignment,
    Line,
    Point,
    Tier,
    Window,
    Zone,
)

Json = dict[str, object]

MINUTES_PER_DAY = 1440
UTC_OFFSET_LIMITS_MIN = (-12 * 60, 14 * 60)  # the offsets civil time uses: -12:00 .. +14:00
MAX_VERSION = 2**32 - 1  # carried in every check-in; the center stores it as an integer
MAX_RING_MESSAGES = 1  # a ring drawn wrong is usually wrong everywhere: name one, count the rest
# Ids travel in records (a check-in's point, a missed point's line: docs/records.md), and a
# signed record must fit one LoRa frame: a check-in is 160 bytes at worst with a 4-byte point
# id, so 32 bytes leaves it well inside the 255-byte packet. Names are only for people.
MAX_ID_BYTES = 32
MAX_DEVICE_ID_BYTES = 64  # contract.protocol.DEVICE_ID: at most 64 characters
MAX_NAME_BYTES = 256
# Sane bounds for a point's numbers: past them a value is a typo (or hostile), never a plan.
MAX_RADIUS_M = 10_000.0  # 10 km: a geofence wider than a district
MAX_DWELL_S = 86_400.0  # a day
MAX_SPEED_MPS = 1_000.0  # faster than anything that patrols
ALT_LIMITS_M = (-1_000.0, 20_000.0)  # below the Dead Sea's shore to above any drone
# Unicode that is not text (lone surrogates), or that changes how a line prints: control
# characters, line and paragraph separators, bidirectional overrides.
_NOT_TEXT = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_OFFSET = re.compile(r"([+-])([0-9]{2}):([0-9]{2})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIERS = ", ".join(t.value for t in Tier)
_TIER_VALUES = frozenset(t.value for t in Tier)
PICKET_MEMBERS = frozenset({"version", "utc_offset", "name"})
ASSIGNMENT_MEMBERS = frozenset({"device", "team", "lines", "date"})


class Kind(enum.StrEnum):
    POINT = "point"
    LINE = "line"
    ZONE = "zone"


_KIND_VALUES = frozenset(k.value for k in Kind)


@dataclass(slots=True)
class Findings:
    """Problems (the plan is refused) and warnings (it is not), in the order found."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(_printable(f"{where}: {message}" if where else message))

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(_printable(f"{where}: {message}" if where else message))


def _printable(message: str) -> str:
    """A message that can be printed: what is not text (a lone surrogate from the file)
    is written as its escape, so printing a message never fails."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class Part:
    """A feature recognised as a point, line or zone; `id` is None when it has no usable one."""

    kind: Kind
    index: int
    id: str | None
    where: str
    geometry: Json | None
    props: Json


def show(value: object, limit: int = 60) -> str:
    """A value in JSON spelling, shortened: how the technician wrote it.

    Never raises: what cannot be spelt (a lone surrogate, an integer of thousands of digits,
    nesting too deep) is escaped or described instead, since messages are printed."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"a whole number of about {int(value.bit_length() * 0.30103)} digits"
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)  # \\u escapes for what is not text
    except (TypeError, ValueError, RecursionError):
        text = f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(value: str, limit: int = 40) -> str:
    """A text as Python quotes it (control characters and surrogates escaped), shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_problem(value: str, max_bytes: int) -> str | None:
    """Why `value` cannot be an id or a name (None: it can): empty, not text, a character
    that changes how it prints, or longer than `max_bytes` in UTF-8."""
    if not value:
        return "must be non-empty text"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        bad = f"U+{ord(value[exc.start]):04X}"
        return f"is not text: a lone surrogate {bad} at character {exc.start}"
    for i, char in enumerate(value):
        if unicodedata.category(char) in _NOT_TEXT or char in _BIDI_CONTROLS:
            return f"holds a control character U+{ord(char):04X} at character {i}"
    if size > max_bytes:
        return f"is {size} bytes long in UTF-8; at most {max_bytes} are allowed"
    return None


def number(value: object) -> float | None:
    """A finite float, or None: bools, text, NaN, infinities and overflowing ints are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def measure(
    props: Json,
    key: str,
    unit: str,
    where: str,
    out: Findings,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
) -> float | None:
    """props[key] as a number in bounds; None when absent or (reported) bad."""
    value = props.get(key)
    if value is None:
        return None
    f = _magnitude(value)
    low_ok = (above is None or f > above) and (at_least is None or f >= at_least)
    if not low_ok or math.isnan(f) or (at_most is None and math.isinf(f)):
        bound = ""
        if above is not None:
            bound = f" above {above:g}"
        elif at_least is not None:
            bound = f" >= {at_least:g}"
        out.problem(where, f"{key} must be a number{bound} ({unit}), got {show(value)}")
        return None
    if at_most is not None and f > at_most:
        out.problem(where, f"{key} must be at most {at_most:g} ({unit}), got {show(value)}")
        return None
    return f


def _magnitude(value: object) -> float:
    """A JSON number as a float for comparing with bounds: an int too large for a float is
    an infinity of its sign; anything that is not a number (bools, text) is NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def text(
    props: Json, key: str, where: str, out: Findings, max_bytes: int = MAX_ID_BYTES
) -> str | None:
    """props[key] as text that can be an id (or, with a larger `max_bytes`, a name)."""
    value = props.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        out.problem(where, f"{key} must be non-empty text, got {show(value)}")
        return None
    why = text_problem(value, max_bytes)
    if why is not None:
        out.problem(where, f"{key} {why}, got {show(value)}")
        return None
    return value


def reference(value: object, label: str, noun: str, where: str, out: Findings) -> str | None:
    """An entry of a list of ids (a line's points, an assignment's lines) that can be an id;
    None, reported, when it cannot."""
    if not isinstance(value, str) or not value:
        out.problem(where, f"{label} must be a {noun} id (text), got {show(value)}")
        return None
    why = text_problem(value, MAX_ID_BYTES)
    if why is not None:
        out.problem(where, f"{label} {why}, got {show(value)}")
        return None
    return value


def zone_ref(props: Json, zones: Collection[str], where: str, out: Findings) -> str | None:
    name = text(props, "zone", where, out)
    if name is not None and name not in zones:
        out.problem(where, f"zone names unknown zone {name!r}")
    return name


def tier(props: Json, where: str, out: Findings) -> Tier | None:
    value = props.get("tier")
    if value is None:
        return None
    if isinstance(value, str) and value in _TIER_VALUES:
        return Tier(value)
    out.problem(where, f"tier must be one of {_TIERS}, got {show(value)}")
    return None


def position(value: object, label: str, where: str, out: Findings) -> tuple[float, float] | None:
    """(lon, lat) from a GeoJSON position: [lon, lat] or [lon, lat, altitude]."""
    shape = "[longitude, latitude] or [longitude, latitude, altitude]"
    if not isinstance(value, list) or len(value) not in (2, 3):
        out.problem(where, f"{label} must be {shape}, got {show(value)}")
        return None
    nums = [number(v) for v in value]
    lon, lat = nums[0], nums[1]
    if lon is None or lat is None or None in nums:
        out.problem(where, f"{label} must be finite numbers, got {show(value)}")
        return None
    bad = []
    if not -180 <= lon <= 180:
        bad.append("longitude is outside -180..180")
    if not -90 <= lat <= 90:
        bad.append("latitude is outside -90..90")
    if bad:
        swapped = -90 <= lon <= 90 and -180 <= lat <= 180
        hint = " (swapped? GeoJSON is [longitude, latitude])" if swapped else ""
        out.problem(where, f"{label} {show(value)}: {' and '.join(bad)}{hint}")
        return None
    return lon, lat


def classify(index: int, feature: object, out: Findings) -> Part | None:
    """What a feature is; None for a feature that is refused or is not part of the plan."""
    at = f"feature {index}"
    if not isinstance(feature, dict):
        out.problem(at, f"must be a GeoJSON Feature object, got {show(feature)}")
        return None
    if feature.get("type") != "Feature":
        out.problem(at, f'type must be "Feature", got {show(feature.get("type"))}')
        return None
    geometry, props = feature.get("geometry"), feature.get("properties")
    if geometry is not None and not isinstance(geometry, dict):
        out.problem(at, f"geometry must be an object or null, got {show(geometry)}")
        return None
    if props is not None and not isinstance(props, dict):
        out.problem(at, f"properties must be an object or null, got {show(props)}")
        return None
    props = props or {}
    gtype = geometry.get("type") if geometry else None
    raw_kind, raw_id = props.get("kind"), props.get("id")
    if raw_kind is None and gtype != "Point":
        drawn = f"a {show(gtype)}" if gtype is not None else "a feature without geometry"
        if isinstance(gtype, str) and gtype.isidentifier():
            drawn = f"a {gtype}"
        out.warn(at, f"ignored: {drawn} with no 'kind' is not a point, line or zone")
        return None
    if raw_kind is not None and not (isinstance(raw_kind, str) and raw_kind in _KIND_VALUES):
        out.problem(at, f"kind must be point, line or zone, got {show(raw_kind)}")
        return None
    kind = Kind(raw_kind or Kind.POINT)
    if isinstance(raw_id, str) and raw_id:
        why = text_problem(raw_id, MAX_ID_BYTES)
        if why is None:
            return Part(kind, index, raw_id, f"{kind} {raw_id!r} ({at})", geometry, props)
        where = f"{kind} ({at})"
        out.problem(where, f"id {why}, got {show(raw_id)}")
        return Part(kind, index, None, where, geometry, props)
    if raw_kind is None:  # a Point drawn without an id: a landmark, not a patrol point
        why = "no 'id'" if raw_id is None else f"an id that is not text ({show(raw_id)})"
        hint = "; the Feature's own 'id' is not used" if "id" in feature else ""
        out.warn(at, f"ignored: a Point with {why} is not a patrol point{hint}")
        return None
    where = f"{kind} ({at})"
    out.problem(where, f"id must be text, got {show(raw_id)}")
    return Part(kind, index, None, where, geometry, props)


def check_point(part: Part, zones: Collection[str], out: Findings) -> Point | None:
    where, props, geometry = part.where, part.props, part.geometry
    before = len(out.problems)
    pos = None
    if geometry is None or geometry.get("type") != "Point":
        gtype = None if geometry is None else geometry.get("type")
        out.problem(where, f"geometry must be a Point, got {show(gtype)}")
    elif geometry.get("coordinates") is None:
        out.problem(where, "coordinates are missing")
    else:
        pos = position(geometry["coordinates"], "coordinates", where, out)
    radius = measure(props, "radius_m", "metres", where, out, above=0, at_most=MAX_RADIUS_M)
    dwell = measure(props, "dwell_s", "seconds", where, out, at_least=0, at_most=MAX_DWELL_S)
    speed = measure(
        props, "max_speed_mps", "metres per second", where, out, above=0, at_most=MAX_SPEED_MPS
    )
    point_tier = tier(props, where, out)
    zone = zone_ref(props, zones, where, out)
    low, high = ALT_LIMITS_M
    alt_min = measure(props, "alt_min_m", "metres", where, out, at_least=low, at_most=high)
    alt_max = measure(props, "alt_max_m", "metres", where, out, at_least=low, at_most=high)
    given = [k for k in ("alt_min_m", "alt_max_m") if props.get(k) is not None]
    if len(given) == 1:
        out.problem(
            where, f"an altitude band needs alt_min_m and alt_max_m; only {given[0]} is set"
        )
    elif alt_min is not None and alt_max is not None and alt_min >= alt_max:
        out.problem(where, f"alt_min_m {alt_min:g} must be below alt_max_m {alt_max:g}")
    if len(out.problems) > before or pos is None or part.id is None:
        return None
    return Point(
        part.id,
        lat=pos[1],
        lon=pos[0],
        radius_m=DEFAULT_RADIUS_M if radius is None else radius,
        dwell_s=DEFAULT_DWELL_S if dwell is None else dwell,
        max_speed_mps=speed,
        tier=point_tier,
        zone=zone,
        alt_min_m=alt_min,
        alt_max_m=alt_max,
    )


def clock(value: object, *, end: bool) -> int | None:
    """Minutes after midnight from "HH:MM" (00:00-23:59; "24:00" too for an end)."""
    m = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        return None
    hours, minutes = int(m[1]), int(m[2])
    if minutes >= 60 or hours > 24 or (hours == 24 and (minutes or not end)):
        return None
    return hours * 60 + minutes


def window(value: object, label: str, where: str, out: Findings) -> Window | None:
    """["HH:MM", "HH:MM"] as a Window; an end before its start is on the next day."""
    if not isinstance(value, list) or len(value) != 2:
        out.problem(where, f'{label} must be ["HH:MM", "HH:MM"], got {show(value)}')
        return None
    start, end = clock(value[0], end=False), clock(value[1], end=True)
    if start is None:
        out.problem(where, f"{label} start {show(value[0])} is not a time HH:MM (00:00-23:59)")
    if end is None:
        out.problem(where, f"{label} end {show(value[1])} is not a time HH:MM (00:00-24:00)")
    if start is None or end is None:
        return None
    if start == end:
        out.problem(where, f'{label} {show(value)} is empty; a whole day is ["00:00", "24:00"]')
        return None
    return Window(start, end if end > start else end + MINUTES_PER_DAY)


def _line_points(props: Json, points: Collection[str], where: str, out: Findings) -> list[str]:
    ids = props.get("points")
    if not isinstance(ids, list) or not ids:
        out.problem(where, f"points must be a non-empty array of point ids, got {show(ids)}")
        return []
    for k, pid in enumerate(ids):
        if reference(pid, f"points[{k}]", "point", where, out) is None:
            pass
        elif pid not in points:
            out.problem(where, f"points[{k}] names unknown point {pid!r}")
        elif k and pid == ids[k - 1]:
            out.problem(where, f"points[{k}] repeats {pid!r}: the same point twice in a row")
    return [pid for pid in ids if isinstance(pid, str)]


def _line_windows(props: Json, n: int, where: str, out: Findings) -> tuple[Window | None, ...]:
    many, one = props.get("windows"), props.get("window")
    if many is not None and one is not None:
        out.problem(where, "give windows (one per point) or window (for every point), not both")
        return ()
    if one is not None:
        return (window(one, "window", where, out),) * n
    if many is None:
        return ()
    if not isinstance(many, list):
        out.problem(
            where, f"windows must be an array (one window or null per point), got {show(many)}"
        )
        return ()
    if n and len(many) != n:
        out.problem(where, f"windows has {len(many)} entries for {n} points")
    return tuple(
        None if w is None else window(w, f"windows[{k}]", where, out) for k, w in enumerate(many)
    )


def check_line(
    part: Part, points: Collection[str], zones: Collection[str], out: Findings
) -> Line | None:
    where, props, geometry = part.where, part.props, part.geometry
    before = len(out.problems)
    if geometry is not None and geometry.get("type") != "LineString":
        out.problem(
            where, f"geometry must be a LineString or null, got {show(geometry.get('type'))}"
        )
    ids = _line_points(props, points, where, out)
    windows = _line_windows(props, len(ids), where, out)
    zone = zone_ref(props, zones, where, out)
    line_tier = tier(props, where, out)
    if len(out.problems) > before or part.id is None:
        return None
    return Line(part.id, tuple(ids), windows, zone, line_tier)


def _ring(value: object, label: str, where: str, out: Findings) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or len(value) < 4:
        got = f"{len(value)} positions" if isinstance(value, list) else show(value)
        out.problem(where, f"{label} must be a closed ring of at least 4 positions, got {got}")
        return ()
    ring, bad = [], 0
    for k, pos in enumerate(value):
        sink = out if bad < MAX_RING_MESSAGES else Findings()
        p = position(pos, f"{label}[{k}]", where, sink)
        if p is None:
            bad += 1
        ring.append(p)
    if bad > MAX_RING_MESSAGES:
        out.problem(where, f"{label}: {bad - MAX_RING_MESSAGES} more bad positions")
    if bad:
        return ()
    if ring[0] != ring[-1]:
        out.problem(where, f"{label} is not closed: its first and last positions differ")
        return ()
    return tuple(p for p in ring if p is not None)


def check_zone(part: Part, out: Findings) -> Zone | None:
    where, geometry = part.where, part.geometry
    before = len(out.problems)
    name = text(part.props, "name", where, out, MAX_NAME_BYTES) or ""
    ring: tuple[tuple[float, float], ...] = ()
    if geometry is not None:
        rings = geometry.get("coordinates")
        if geometry.get("type") != "Polygon":
            out.problem(
                where, f"geometry must be a Polygon or null, got {show(geometry.get('type'))}"
            )
        elif not isinstance(rings, list) or not rings:
            out.problem(where, f"coordinates must be an array of closed rings, got {show(rings)}")
        else:
            ring = _ring(rings[0], "coordinates[0]", where, out)
            for r in range(1, len(rings)):
                _ring(rings[r], f"coordinates[{r}]", where, out)
            if len(rings) > 1:
                out.warn(where, f"{len(rings) - 1} hole(s) ignored: only the outer ring is kept")
    if len(out.problems) > before or part.id is None:
        return None
    return Zone(part.id, name, ring)


def check_assignment(
    index: int, value: object, lines: Collection[str], out: Findings
) -> Assignment | None:
    where = f"assignment {index}"
    if not isinstance(value, dict):
        out.problem(where, f"must be an object, got {show(value)}")
        return None
    before = len(out.problems)
    for key in ("device", "team"):
        if isinstance(value.get(key), str):
            where += f" ({key} {quoted(value[key])})"
            break
    device = text(value, "device", where, out, MAX_DEVICE_ID_BYTES)
    team = text(value, "team", where, out)
    if value.get("device") is None and value.get("team") is None:
        out.problem(where, "needs a device or a team")
    names = value.get("lines")
    if not isinstance(names, list) or not names:
        out.problem(where, f"lines must be a non-empty array of line ids, got {show(names)}")
        names = []
    for k, lid in enumerate(names):
        if reference(lid, f"lines[{k}]", "line", where, out) is None:
            pass
        elif lid not in lines:
            out.problem(where, f"lines[{k}] names unknown line {lid!r}")
    date = _date(value.get("date"))
    if date is None:
        out.problem(where, f"date must be a date YYYY-MM-DD, got {show(value.get('date'))}")
    for key in sorted(value.keys() - ASSIGNMENT_MEMBERS):
        out.warn(where, f"unknown member {quoted(key)} ignored")
    if len(out.problems) > before or date is None:
        return None
    return Assignment(tuple(names), date, device, team)


def _date(value: object) -> dt.date | None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _version(value: object, label: str, where: str, out: Findings) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        out.problem(where, f"{label} must be a whole number 0..{MAX_VERSION}, got {show(value)}")
        return None
    return value


def utc_offset(value: object) -> int | None:
    """Minutes east of UTC from "±HH:MM" within -12:00..+14:00."""
    m = _OFFSET.fullmatch(value) if isinstance(value, str) else None
    if m is None or int(m[3]) >= 60:
        return None
    minutes = (int(m[2]) * 60 + int(m[3])) * (-1 if m[1] == "-" else 1)
    low, high = UTC_OFFSET_LIMITS_MIN
    return minutes if low <= minutes <= high else None


def check_header(doc: Json, out: Findings) -> tuple[int, int]:
    """The plan version and UTC offset (minutes) from the `picket` member (and `version`)."""
    meta = doc.get("picket")
    if meta is not None and not isinstance(meta, dict):
        out.problem("picket", f"must be an object, got {show(meta)}")
    meta = meta if isinstance(meta, dict) else {}
    inner, outer = meta.get("version"), doc.get("version")
    inner_v = None if inner is None else _version(inner, "version", "picket", out)
    outer_v = None if outer is None else _version(outer, "version", "", out)
    if inner_v is not None and outer_v is not None and inner_v != outer_v:
        out.warn("", f"version {outer_v} differs from picket.version {inner_v}; using {inner_v}")
    offset = 0
    if meta.get("utc_offset") is not None:
        parsed = utc_offset(meta["utc_offset"])
        if parsed is None:
            out.problem(
                "picket",
                'utc_offset must be ±HH:MM between -12:00 and +14:00 (e.g. "+08:00"), '
                f"got {show(meta['utc_offset'])}",
            )
        offset = parsed or 0
    text(meta, "name", "picket", out, MAX_NAME_BYTES)
    for key in sorted(meta.keys() - PICKET_MEMBERS):
        out.warn("picket", f"unknown member {quoted(key)} ignored")
    version = inner_v if inner_v is not None else outer_v if outer_v is not None else 1
    return version, offset
