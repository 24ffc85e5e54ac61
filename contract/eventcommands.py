"""The two commands of field events: the catalogue, and one status change of one event. Pure.

Both are signed commands like every other (contract/commands.py holds the envelope, the
header and the verdict; docs/commands.md, docs/events.md): this module holds their bodies,
their maps and their readers, which contract/commands.py dispatches to by type.

- **CATALOGUE (8)**: `{16: version, 17: [[code, name_zh, name_en, group, team], …]}`, at
  least one and at most MAX_CATEGORIES categories, each code once. The device replaces its
  catalogue only with a higher version (version 0 is the one built in).
- **EVENT_STATUS (9)**: one status change of one event, sent to its reporter and to its
  assignee: `{16: event, 17: status, 18: reporter, 19: report seq, 20: category, ? 21: text,
  ? 22: assignee, ? 23: deadline ms, 24: changed ms, 25: by, ? 26: lat_e7, ? 27: lon_e7,
  ? 28: merged into}`. Latitude and longitude come together; key 28 comes with status
  MERGED, and only with it.

As for every command, keys a type does not define are refused (`Invalid`), never ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contract import bounds as b

__all__ = [
    "MAX_CATEGORIES",
    "Catalogue",
    "Category",
    "EventStatus",
    "EventStatusCode",
    "Invalid",
    "read_catalogue",
    "read_event_status",
]

MAX_CATEGORIES = 256
HEADER_KEYS = range(1, 7)  # keys 1-6 of every command (contract/commands.py CommandKey)
NUMBER = b.Kind(b.Shape.UINT, 1, b.SEQ_MAX, note=f"an integer 1..{b.SEQ_MAX}")  # event numbers
NAME = b.text(b.MAX_ID_TEXT, 1)


class Invalid(Exception):
    """A signed, addressed command whose type or body this device does not understand."""


class EventStatusCode(enum.IntEnum):
    """An event's status at the center (EVENT_STATUS key 17; docs/events.md, the lifecycle)."""

    REPORTED = 0
    ACCEPTED = 1
    REJECTED = 2
    DISPATCHED = 3
    IN_PROGRESS = 4
    RESOLVED = 5
    CLOSED = 6
    REOPENED = 7
    MERGED = 8


@dataclass(frozen=True, slots=True)
class Category:
    """One category of the catalogue: its code, its names, its group, its default team."""

    code: int
    name_zh: str
    name_en: str
    group: str
    team: str

    def as_cbor(self) -> list[object]:
        return [self.code, self.name_zh, self.name_en, self.group, self.team]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The catalogue of categories, versioned (CATALOGUE, type 8)."""

    version: int
    categories: tuple[Category, ...]

    def as_map(self) -> dict[int, object]:
        return {16: self.version, 17: [c.as_cbor() for c in self.categories]}


@dataclass(frozen=True, slots=True)
class EventStatus:
    """One status change of one event (EVENT_STATUS, type 9). `event` is the center's number
    of the event; `reporter` and `report_seq` the record that reported it."""

    event: int
    status: EventStatusCode
    reporter: str
    report_seq: int
    category: int
    text: str | None  # the reason of a rejection, the result of a resolution
    assignee: str | None  # a device or a team, once dispatched
    deadline_ms: int | None
    changed_ms: int
    by: str  # who made the change
    lat_e7: int | None = None
    lon_e7: int | None = None
    merged_into: int | None = None  # status MERGED: the event it was merged into

    def as_map(self) -> dict[int, object]:
        values: dict[int, object] = {
            16: self.event,
            17: int(self.status),
            18: self.reporter,
            19: self.report_seq,
            20: self.category,
            21: self.text,
            22: self.assignee,
            23: self.deadline_ms,
            24: self.changed_ms,
            25: self.by,
            26: self.lat_e7,
            27: self.lon_e7,
            28: self.merged_into,
        }
        return {k: v for k, v in values.items() if v is not None}


def _only(m: Mapping[object, object], keys: Sequence[int]) -> None:
    extra = sorted(k for k in m if isinstance(k, int) and k not in HEADER_KEYS and k not in keys)
    if extra:
        raise Invalid(f"unknown key {b.shown(extra[0])}")


def _get(m: Mapping[object, object], what: str, key: int, name: str, kind: b.Kind) -> object:
    v = m.get(key)
    if not b.fits(kind, v):
        raise Invalid(f"{what}: key {key} ({name}) must be {kind.what}")
    return v


def _opt(m: Mapping[object, object], what: str, key: int, name: str, kind: b.Kind) -> object:
    return None if key not in m else _get(m, what, key, name, kind)


CATEGORY_ITEM = b.tuple_of(
    b.CATEGORY, NAME, NAME, NAME, b.ID_TEXT,
    note=f"[code 1..{b.CATEGORY_MAX}, name_zh, name_en, group, team], names 1..128 UTF-8 bytes",
)  # fmt: skip
CATEGORIES = b.array(CATEGORY_ITEM, MAX_CATEGORIES, 1)


def read_catalogue(m: Mapping[object, object]) -> Catalogue:
    """CATALOGUE's keys 16-17; Invalid naming the key."""
    what = "catalogue"
    _only(m, (16, 17))
    version = _get(m, what, 16, "version", b.COUNT32)
    items = _get(m, what, 17, "categories", CATEGORIES)
    assert isinstance(version, int) and isinstance(items, list | tuple)
    cats = tuple(Category(*item) for item in items)
    codes = [c.code for c in cats]
    if len(set(codes)) != len(codes):
        twice = next(c for c in codes if codes.count(c) > 1)
        raise Invalid(f"{what}: key 17 (categories) lists code {twice} twice")
    return Catalogue(version, cats)


# key -> (name, kind, required) of EVENT_STATUS
STATUS_FIELDS: Mapping[int, tuple[str, b.Kind, bool]] = {
    16: ("event", NUMBER, True),
    17: ("status", b.Kind(b.Shape.UINT, 0, 8, note="a status 0..8"), True),
    18: ("reporter", b.DEVICE_ID_KIND, True),
    19: ("report seq", b.SEQ, True),
    20: ("category", b.CATEGORY, True),
    21: ("text", b.FREE_TEXT, False),
    22: ("assignee", b.ID_TEXT, False),
    23: ("deadline", b.TIME, False),
    24: ("changed", b.TIME, True),
    25: ("by", NAME, True),
    26: ("latitude", b.LAT_E7, False),
    27: ("longitude", b.LON_E7, False),
    28: ("merged into", NUMBER, False),
}


def read_event_status(m: Mapping[object, object]) -> EventStatus:
    """EVENT_STATUS's keys 16-28; Invalid naming the key."""
    what = "event status"
    _only(m, tuple(STATUS_FIELDS))
    v = {
        k: (_get if required else _opt)(m, what, k, name, kind)
        for k, (name, kind, required) in STATUS_FIELDS.items()
    }
    if (v[26] is None) != (v[27] is None):
        raise Invalid(f"{what}: keys 26 and 27 (latitude, longitude) come together or not")
    status = EventStatusCode(_int(v[17]))
    if (status is EventStatusCode.MERGED) != (v[28] is not None):
        raise Invalid(f"{what}: key 28 (merged into) comes with status 8 (merged), and only then")
    return EventStatus(
        event=_int(v[16]),
        status=status,
        reporter=_str(v[18]),
        report_seq=_int(v[19]),
        category=_int(v[20]),
        text=None if v[21] is None else _str(v[21]),
        assignee=None if v[22] is None else _str(v[22]),
        deadline_ms=None if v[23] is None else _int(v[23]),
        changed_ms=_int(v[24]),
        by=_str(v[25]),
        lat_e7=None if v[26] is None else _int(v[26]),
        lon_e7=None if v[27] is None else _int(v[27]),
        merged_into=None if v[28] is None else _int(v[28]),
    )


def _int(v: object) -> int:
    assert isinstance(v, int)
    return v


def _str(v: object) -> str:
    assert isinstance(v, str)
    return v
