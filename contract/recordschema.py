"""Record bodies checked against the schema: the type-specific half of docs/records.md's CDDL.

A record can be correctly signed and still malformed, so the center checks every body it
opens (`validate_body`) before it stores what the body says. The check is a data table,
`BODY_SCHEMA`, one row per key per type, so that it reads like the CDDL it mirrors and a
new key is one line; the few rules a table cannot say (keys that come in pairs, a
DROPPED record's count against its sequence numbers) follow it in `validate_body`. It is
apart from contract/records.py, which makes and reads records, because only the receiving
end needs it, and it reads records' keys without adding to them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from contract.errors import RecordError
from contract.records import (
    TYPE_NAMES,
    AlertKey,
    CheckinKey,
    DockStateKey,
    DroppedKey,
    HealthKey,
    MissedKey,
    MissionKey,
    ReceiptKey,
    RecordType,
    RollcallKey,
    SuspicionKey,
)

LAT_E7_MAX = 900_000_000
LON_E7_MAX = 1_800_000_000


class Kind(enum.Enum):
    """The value types a body key can have; the value is how an error message names it."""

    UINT = "an unsigned integer"
    INT = "an integer"
    TEXT = "text"
    LAT = "an integer within ±90° × 10⁷"
    LON = "an integer within ±180° × 10⁷"
    PERCENT = "an unsigned integer up to 100"
    CHALLENGE = "a byte string or an unsigned integer"
    TYPES = "an array of unsigned integers"
    IDS = "an array of text"
    KEY = "a byte string of 32 bytes"
    BYTES = "a non-empty byte string"


def _fits(kind: Kind, v: object) -> bool:
    if isinstance(v, bool):  # a CBOR true/false is never a number here (bool is an int subclass)
        return False
    if kind is Kind.TEXT:
        return isinstance(v, str)
    if kind is Kind.CHALLENGE:
        return isinstance(v, bytes) or (isinstance(v, int) and v >= 0)
    if kind is Kind.TYPES:
        return isinstance(v, list | tuple) and all(_fits(Kind.UINT, t) for t in v)
    if kind is Kind.IDS:
        return isinstance(v, list | tuple) and all(isinstance(t, str) for t in v)
    if kind is Kind.KEY:
        return isinstance(v, bytes) and len(v) == 32
    if kind is Kind.BYTES:
        return isinstance(v, bytes) and len(v) > 0
    if not isinstance(v, int):
        return False
    if kind is Kind.LAT:
        return abs(v) <= LAT_E7_MAX
    if kind is Kind.LON:
        return abs(v) <= LON_E7_MAX
    if kind is Kind.PERCENT:
        return 0 <= v <= 100
    return kind is Kind.INT or v >= 0


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    required: bool = False


def _req(name: str, kind: Kind) -> Field:
    return Field(name, kind, required=True)


# Key -> field, per type; docs/records.md has the same in CDDL. Keys a type does not list are
# allowed and ignored (later versions of the contract add keys; they never change these).
BODY_SCHEMA: Mapping[RecordType, Mapping[int, Field]] = {
    RecordType.CHECKIN: {
        CheckinKey.POINT: _req("point", Kind.TEXT),
        CheckinKey.PLAN_VERSION: Field("plan version", Kind.UINT),
        CheckinKey.DWELL_S: Field("dwell", Kind.UINT),
        CheckinKey.LAT_E7: Field("latitude", Kind.LAT),
        CheckinKey.LON_E7: Field("longitude", Kind.LON),
        CheckinKey.ACCURACY_DM: Field("accuracy", Kind.UINT),
        CheckinKey.FIXES: Field("fixes", Kind.UINT),
        CheckinKey.VERDICT: Field("verdict", Kind.UINT),
        CheckinKey.MAX_SPEED_DMPS: Field("max speed", Kind.UINT),
        CheckinKey.DRONE: Field("drone", Kind.TEXT),
    },
    RecordType.MISSED: {
        MissedKey.POINT: _req("point", Kind.TEXT),
        MissedKey.PLAN_VERSION: _req("plan version", Kind.UINT),
        MissedKey.LINE: _req("line", Kind.TEXT),
        MissedKey.WINDOW_START: Field("window start", Kind.UINT),
        MissedKey.WINDOW_END: Field("window end", Kind.UINT),
    },
    RecordType.SUSPICION: {
        SuspicionKey.KIND: _req("kind", Kind.UINT),
        SuspicionKey.LAT_E7: _req("latitude", Kind.LAT),
        SuspicionKey.LON_E7: _req("longitude", Kind.LON),
        SuspicionKey.DETAIL: _req("detail", Kind.TEXT),
    },
    RecordType.HEALTH: {
        HealthKey.DEPTH: _req("outbox depth", Kind.UINT),
        HealthKey.OLDEST_UNSENT_S: Field("oldest unsent", Kind.UINT),
        HealthKey.CLOCK_SOURCE: Field("clock source", Kind.UINT),
        HealthKey.FIX_QUALITY: Field("fix quality", Kind.UINT),
        HealthKey.SATELLITES: Field("satellites", Kind.UINT),
        HealthKey.BATTERY_PCT: Field("battery", Kind.PERCENT),
        HealthKey.BATTERY_MV: Field("battery voltage", Kind.UINT),
        HealthKey.RSSI_DBM: Field("link quality", Kind.INT),
        HealthKey.UPTIME_S: Field("uptime", Kind.UINT),
    },
    RecordType.ROLLCALL: {
        RollcallKey.CHALLENGE: _req("challenge", Kind.CHALLENGE),
        RollcallKey.LAT_E7: Field("latitude", Kind.LAT),
        RollcallKey.LON_E7: Field("longitude", Kind.LON),
        RollcallKey.ACCURACY_DM: Field("accuracy", Kind.UINT),
        RollcallKey.FIX_TIME: Field("fix time", Kind.UINT),
    },
    RecordType.ALERT: {
        AlertKey.KIND: _req("kind", Kind.UINT),
        AlertKey.LAT_E7: Field("latitude", Kind.LAT),
        AlertKey.LON_E7: Field("longitude", Kind.LON),
        AlertKey.ACCURACY_DM: Field("accuracy", Kind.UINT),
        AlertKey.BATTERY_PCT: Field("battery", Kind.PERCENT),
    },
    RecordType.RECEIPT: {
        ReceiptKey.COMMAND: _req("command", Kind.UINT),
        ReceiptKey.COMMAND_TYPE: _req("command type", Kind.UINT),
        ReceiptKey.OUTCOME: _req("outcome", Kind.UINT),
        ReceiptKey.REASON: Field("reason", Kind.TEXT),
        ReceiptKey.NEXT_SIGNING_KEY: Field("next signing key", Kind.KEY),
        ReceiptKey.NEXT_CSR: Field("next certificate request", Kind.BYTES),
    },
    RecordType.DROPPED: {
        DroppedKey.COUNT: _req("count", Kind.UINT),
        DroppedKey.FIRST_SEQ: _req("first sequence", Kind.UINT),
        DroppedKey.LAST_SEQ: _req("last sequence", Kind.UINT),
        DroppedKey.BYTES: _req("bytes", Kind.UINT),
        DroppedKey.TYPES: _req("types", Kind.TYPES),
    },
    RecordType.DOCK_STATE: {
        DockStateKey.STATE: _req("state", Kind.UINT),
        DockStateKey.PREVIOUS: _req("previous state", Kind.UINT),
        DockStateKey.REASON: Field("reason", Kind.TEXT),
        DockStateKey.BATTERY_PCT: Field("battery", Kind.PERCENT),
        DockStateKey.LINE: Field("line", Kind.TEXT),
    },
    RecordType.MISSION: {
        MissionKey.LINE: _req("line", Kind.TEXT),
        MissionKey.COMMAND: _req("command", Kind.UINT),
        MissionKey.OUTCOME: _req("outcome", Kind.UINT),
        MissionKey.REACHED: _req("points reached", Kind.UINT),
        MissionKey.MISSED: _req("points missed", Kind.IDS),
        MissionKey.FLIGHT_S: Field("flight time", Kind.UINT),
        MissionKey.BATTERY_USED_PCT: Field("battery used", Kind.PERCENT),
        MissionKey.PRIORITY: Field("priority", Kind.UINT),
    },
}

# A position is a latitude and a longitude, or neither.
POSITION_KEYS: Mapping[RecordType, tuple[int, int]] = {
    RecordType.CHECKIN: (CheckinKey.LAT_E7, CheckinKey.LON_E7),
    RecordType.ROLLCALL: (RollcallKey.LAT_E7, RollcallKey.LON_E7),
    RecordType.ALERT: (AlertKey.LAT_E7, AlertKey.LON_E7),
}


def validate_body(rtype: RecordType, body: Mapping[int, object]) -> None:
    """Check the type-specific keys (16 and up) of a record; raise RecordError naming the first
    problem. The signature says who wrote a record; this says it states something readable."""
    what = TYPE_NAMES[rtype]
    for key, f in BODY_SCHEMA[rtype].items():
        if key not in body:
            if f.required:
                raise RecordError(f"{what} record lacks key {key} ({f.name})")
        elif not _fits(f.kind, body[key]):
            raise RecordError(f"{what} key {key} ({f.name}) must be {f.kind.value}")
    pair = POSITION_KEYS.get(rtype)
    if pair is not None and (pair[0] in body) != (pair[1] in body):
        raise RecordError(f"{what} keys {pair[0]} and {pair[1]} (position) come together or not")
    if rtype is RecordType.RECEIPT and (
        (ReceiptKey.NEXT_SIGNING_KEY in body) != (ReceiptKey.NEXT_CSR in body)
    ):
        raise RecordError(f"{what} keys 20 and 21 (next key pair) come together or not")
    if rtype is RecordType.DROPPED:
        count, first, last = (body[k] for k in (16, 17, 18))
        assert isinstance(count, int) and isinstance(first, int) and isinstance(last, int)
        if not 1 <= count <= last - first + 1:
            raise RecordError(
                f"dropped record: count {count} does not fit sequence numbers {first}..{last}"
            )
