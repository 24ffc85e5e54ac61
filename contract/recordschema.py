"""Record bodies checked against the schema: the type-specific half of docs/records.md's CDDL.

A record can be correctly signed and still malformed, so the center checks every body it
opens (`validate_body`) before it stores what the body says. The check is a data table,
`BODY_SCHEMA`, one row per key per type, so that it reads like the CDDL it mirrors and a
new key is one line; the few rules a table cannot say (keys that come in pairs, a
DROPPED record's count against its sequence numbers, an event's place and attachments:
`contract.events.parse_event`) follow it in `validate_body`. It is
apart from contract/records.py, which makes and reads records, because only the receiving
end needs it, and it reads records' keys without adding to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contract import bounds as b
from contract import events
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

# The kinds of body values (contract/bounds.py has the shared ones and says why each bound).
LAT, LON = b.LAT_E7, b.LON_E7
LAT_E7_MAX, LON_E7_MAX = LAT.high, LON.high
# 16 random bytes, or a command number
CHALLENGE = b.Kind(
    b.Shape.BYTES_OR_UINT,
    0,
    64,
    b.SEQ,
    f"a byte string or an unsigned integer (at most 64 bytes, up to {b.SEQ_MAX})",
)
TYPES = b.Kind(  # record types, each once
    b.Shape.ARRAY, 0, b.CODE_MAX, b.CODE, "an array of unsigned integers (at most 255, each ≤ 255)"
)
IDS = b.array(b.ID_TEXT, 100)  # a line's points missed (a drone flies a few)
KEY = b.byte_string(32, 32)
CSR = b.byte_string(800, 1)  # DER; a P-256 one is about 250 bytes


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: b.Kind
    required: bool = False


# Runs at import only, building BODY_SCHEMA (docs/testing.md, "Mutation benchmark").
def _req(name: str, kind: b.Kind) -> Field:  # pragma: no mutate block
    return Field(name, kind, required=True)


# Key -> field, per type; docs/records.md has the same in CDDL. Keys a type does not list are
# allowed and ignored (later versions of the contract add keys; they never change these).
BODY_SCHEMA: Mapping[RecordType, Mapping[int, Field]] = {
    RecordType.CHECKIN: {
        CheckinKey.POINT: _req("point", b.ID_TEXT),
        CheckinKey.PLAN_VERSION: Field("plan version", b.COUNT32),
        CheckinKey.DWELL_S: Field("dwell", b.COUNT32),
        CheckinKey.LAT_E7: Field("latitude", LAT),
        CheckinKey.LON_E7: Field("longitude", LON),
        CheckinKey.ACCURACY_DM: Field("accuracy", b.COUNT32),
        CheckinKey.FIXES: Field("fixes", b.COUNT32),
        CheckinKey.VERDICT: Field("verdict", b.CODE),
        CheckinKey.MAX_SPEED_DMPS: Field("max speed", b.COUNT32),
        CheckinKey.DRONE: Field("drone", b.ID_TEXT),
    },
    RecordType.MISSED: {
        MissedKey.POINT: _req("point", b.ID_TEXT),
        MissedKey.PLAN_VERSION: _req("plan version", b.COUNT32),
        MissedKey.LINE: _req("line", b.ID_TEXT),
        MissedKey.WINDOW_START: Field("window start", b.TIME),
        MissedKey.WINDOW_END: Field("window end", b.TIME),
    },
    RecordType.SUSPICION: {
        SuspicionKey.KIND: _req("kind", b.CODE),
        SuspicionKey.LAT_E7: _req("latitude", LAT),
        SuspicionKey.LON_E7: _req("longitude", LON),
        SuspicionKey.DETAIL: _req("detail", b.FREE_TEXT),
    },
    RecordType.HEALTH: {
        HealthKey.DEPTH: _req("outbox depth", b.COUNT32),
        HealthKey.OLDEST_UNSENT_S: Field("oldest unsent", b.COUNT32),
        HealthKey.CLOCK_SOURCE: Field("clock source", b.CODE),
        HealthKey.FIX_QUALITY: Field("fix quality", b.CODE),
        HealthKey.SATELLITES: Field("satellites", b.CODE),
        HealthKey.BATTERY_PCT: Field("battery", b.PERCENT),
        HealthKey.BATTERY_MV: Field("battery voltage", b.COUNT32),
        HealthKey.RSSI_DBM: Field("link quality", b.INT32),
        HealthKey.UPTIME_S: Field("uptime", b.COUNT32),
    },
    RecordType.ROLLCALL: {
        RollcallKey.CHALLENGE: _req("challenge", CHALLENGE),
        RollcallKey.LAT_E7: Field("latitude", LAT),
        RollcallKey.LON_E7: Field("longitude", LON),
        RollcallKey.ACCURACY_DM: Field("accuracy", b.COUNT32),
        RollcallKey.FIX_TIME: Field("fix time", b.TIME),
    },
    RecordType.ALERT: {
        AlertKey.KIND: _req("kind", b.CODE),
        AlertKey.LAT_E7: Field("latitude", LAT),
        AlertKey.LON_E7: Field("longitude", LON),
        AlertKey.ACCURACY_DM: Field("accuracy", b.COUNT32),
        AlertKey.BATTERY_PCT: Field("battery", b.PERCENT),
    },
    RecordType.RECEIPT: {
        ReceiptKey.COMMAND: _req("command", b.SEQ),
        ReceiptKey.COMMAND_TYPE: _req("command type", b.CODE),
        ReceiptKey.OUTCOME: _req("outcome", b.CODE),
        ReceiptKey.REASON: Field("reason", b.FREE_TEXT),
        ReceiptKey.NEXT_SIGNING_KEY: Field("next signing key", KEY),
        ReceiptKey.NEXT_CSR: Field("next certificate request", CSR),
    },
    RecordType.DROPPED: {
        DroppedKey.COUNT: _req("count", b.SEQ),
        DroppedKey.FIRST_SEQ: _req("first sequence", b.SEQ),
        DroppedKey.LAST_SEQ: _req("last sequence", b.SEQ),
        DroppedKey.BYTES: _req("bytes", b.BYTES_COUNT),
        DroppedKey.TYPES: _req("types", TYPES),
        DroppedKey.SALVAGED: Field("salvaged", b.SEQ),
    },
    RecordType.DOCK_STATE: {
        DockStateKey.STATE: _req("state", b.CODE),
        DockStateKey.PREVIOUS: _req("previous state", b.CODE),
        DockStateKey.REASON: Field("reason", b.FREE_TEXT),
        DockStateKey.BATTERY_PCT: Field("battery", b.PERCENT),
        DockStateKey.LINE: Field("line", b.ID_TEXT),
    },
    RecordType.MISSION: {
        MissionKey.LINE: _req("line", b.ID_TEXT),
        MissionKey.COMMAND: _req("command", b.SEQ),
        MissionKey.OUTCOME: _req("outcome", b.CODE),
        MissionKey.REACHED: _req("points reached", b.COUNT32),
        MissionKey.MISSED: _req("points missed", IDS),
        MissionKey.FLIGHT_S: Field("flight time", b.COUNT32),
        MissionKey.BATTERY_USED_PCT: Field("battery used", b.PERCENT),
        MissionKey.PRIORITY: Field("priority", b.CODE),
    },
    RecordType.EVENT: {k: Field(n, kind, req) for k, (n, kind, req) in events.FIELDS.items()},
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
        elif not b.fits(f.kind, body[key]):
            raise RecordError(f"{what} key {key} ({f.name}) must be {f.kind.what}")
    pair = POSITION_KEYS.get(rtype)
    if pair is not None and (pair[0] in body) != (pair[1] in body):
        raise RecordError(f"{what} keys {pair[0]} and {pair[1]} (position) come together or not")
    if rtype is RecordType.RECEIPT and (
        (ReceiptKey.NEXT_SIGNING_KEY in body) != (ReceiptKey.NEXT_CSR in body)
    ):
        raise RecordError(f"{what} keys 20 and 21 (next key pair) come together or not")
    if rtype is RecordType.EVENT:  # its place and attachments (contract/events.py)
        events.parse_event(body)
    if rtype is RecordType.DROPPED:
        count, first, last = (body[k] for k in (16, 17, 18))
        assert isinstance(count, int) and isinstance(first, int) and isinstance(last, int)
        if not 1 <= count <= last - first + 1:
            raise RecordError(
                f"dropped record: count {count} does not fit sequence numbers {first}..{last}"
            )
