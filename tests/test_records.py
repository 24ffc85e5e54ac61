"""Picket records: build, open, size on the radio link, strict payload and body validation."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.checkin.device import checkin_body
from agent.checkin.engine import CheckinEvent
from agent.checkin.plan import Point
from contract.cose import sign1
from contract.errors import RecordError
from contract.events import PlaceSource, event_body
from contract.fix import Fix, Quality, TimeSource
from contract.records import (
    TYPE_NAMES,
    AlertKey,
    AlertKind,
    ChainPosition,
    CheckinKey,
    DroppedKey,
    Eviction,
    HealthKey,
    Outcome,
    ReceiptKey,
    RecordType,
    RollcallKey,
    Verdict,
    alert_body,
    build,
    chain_hash,
    dropped_body,
    health_body,
    open_record,
    parse_payload,
    peek_device,
    receipt_body,
    rollcall_body,
)
from contract.recordschema import BODY_SCHEMA, validate_body

KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("5a" * 32))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("a5" * 32))
PREV = bytes(range(16))
MARCH_1_2026_MS = int(datetime(2026, 3, 1, 8, 30, tzinfo=UTC).timestamp() * 1000)
LORA_BUDGET = 160  # bytes per record on the LoRa link (design budget)


def _checkin(device: str = "h0001") -> bytes:
    point = Point(id="P017", lat=29.26500, lon=106.25500, radius_m=30.0, dwell_s=60.0)
    fix = Fix(
        time_ms=MARCH_1_2026_MS + 40_000,
        lat=29.2650213,
        lon=106.2550472,
        accuracy_m=3.5,
        hdop=0.9,
        satellites=14,
        speed_mps=0.2,
    )
    event = CheckinEvent(
        point=point,
        arrival_ms=MARCH_1_2026_MS,
        departure_ms=MARCH_1_2026_MS + 95_000,
        best_fix=fix,
        fixes_inside=95,
        verdict=Verdict.VISITED,
    )
    return build(
        KEY,
        device=device,
        chain=ChainPosition(boot=3, seq=123456, prev=PREV),
        rtype=RecordType.CHECKIN,
        time_ms=MARCH_1_2026_MS,
        time_source=TimeSource.GNSS,
        body=checkin_body(event, plan_version=12),
    )


# --- build and open -------------------------------------------------------------------------


def test_build_open_round_trip() -> None:
    raw = _checkin()
    record = open_record(raw, KEY.public_key())
    h = record.header
    assert h.type is RecordType.CHECKIN
    assert h.device == "h0001"
    assert h.boot == 3
    assert h.seq == 123456
    assert h.prev == PREV
    assert h.time_ms == MARCH_1_2026_MS
    assert h.time_source is TimeSource.GNSS
    assert record.raw == raw
    assert record.body == {
        CheckinKey.POINT: "P017",
        CheckinKey.PLAN_VERSION: 12,
        CheckinKey.DWELL_S: 95,
        CheckinKey.LAT_E7: 292650213,
        CheckinKey.LON_E7: 1062550472,
        CheckinKey.ACCURACY_DM: 35,
        CheckinKey.FIXES: 95,
        CheckinKey.VERDICT: int(Verdict.VISITED),
        CheckinKey.MAX_SPEED_DMPS: 0,
    }


def test_first_record_of_a_chain_has_empty_prev() -> None:
    raw = build(
        KEY,
        device="h0001",
        chain=ChainPosition(boot=0, seq=0, prev=b""),
        rtype=RecordType.HEALTH,
        time_ms=0,
        time_source=TimeSource.NONE,
        body={},
    )
    h = open_record(raw, KEY.public_key()).header
    assert (h.type, h.boot, h.seq, h.prev, h.time_ms, h.time_source) == (
        RecordType.HEALTH,
        0,
        0,
        b"",
        0,
        TimeSource.NONE,
    )


def test_open_record_refuses_another_devices_key() -> None:
    with pytest.raises(RecordError, match="signature"):
        open_record(_checkin(), OTHER_KEY.public_key())


def test_chain_hash_is_first_16_bytes_of_sha256() -> None:
    raw = _checkin()
    link = chain_hash(raw)
    assert len(link) == 16
    assert link == hashlib.sha256(raw).digest()[:16]
    assert chain_hash(raw + b"\x00") != link


@pytest.mark.parametrize("device", ["h0001", "h0001-ab"])
def test_signed_checkin_fits_the_lora_budget(device: str) -> None:
    raw = _checkin(device)
    assert open_record(raw, KEY.public_key()).header.device == device
    assert len(raw) <= LORA_BUDGET, f"{len(raw)} bytes for device {device!r}"


def test_build_refuses_body_keys_below_16() -> None:
    for key in (0, 1, 7, 15):
        with pytest.raises(ValueError, match="16"):
            build(
                KEY,
                device="h0001",
                chain=ChainPosition(boot=1, seq=1, prev=PREV),
                rtype=RecordType.CHECKIN,
                time_ms=MARCH_1_2026_MS,
                time_source=TimeSource.GNSS,
                body={key: 1},
            )


def test_peek_device_does_not_check_the_signature() -> None:
    raw = _checkin("h0042")
    assert peek_device(raw) == "h0042"
    # A record signed by someone else still names its claimed device; only open_record
    # tells the two apart.
    forged = sign1(cbor2.loads(raw).value[2], OTHER_KEY)
    assert peek_device(forged) == "h0042"
    with pytest.raises(RecordError):
        open_record(forged, KEY.public_key())


def test_peek_device_refuses_a_malformed_record() -> None:
    with pytest.raises(RecordError):
        peek_device(b"\xd2\x84")


# --- parse_payload refusals -----------------------------------------------------------------

GOOD: dict[object, object] = {
    1: int(RecordType.CHECKIN),
    2: "h0001",
    3: 3,
    4: 123456,
    5: PREV,
    6: MARCH_1_2026_MS,
    7: int(TimeSource.GNSS),
    16: "P017",
}


def _with(**changes: object) -> bytes:
    """GOOD with some keys replaced: _with(k4=-1) sets key 4 to -1."""
    m = dict(GOOD)
    for name, value in changes.items():
        m[int(name.removeprefix("k"))] = value
    return cbor2.dumps(m)


def _without(key: int) -> bytes:
    return cbor2.dumps({k: v for k, v in GOOD.items() if k != key})


def test_good_payload_parses() -> None:
    record = parse_payload(cbor2.dumps(GOOD), b"raw")
    assert record.header.device == "h0001"
    assert record.body == {16: "P017"}
    assert record.raw == b"raw"


# Hand-encoded: {1: 1, 2: "h0001", 2: "h0002", ...} — cbor2 cannot emit a repeated key.
DUPLICATE_DEVICE = (
    b"\xa3"  # map of 3 pairs
    + b"\x01\x01"  # 1: 1
    + b"\x02\x65h0001"  # 2: "h0001"
    + b"\x02\x65h0002"  # 2: "h0002"
)

REFUSALS = {
    # name: (payload bytes, a word the message must contain)
    "array, not a map": (cbor2.dumps([1, "h0001"]), "map"),
    "text, not a map": (cbor2.dumps("h0001"), "map"),
    "missing type": (_without(1), "type"),
    "missing device": (_without(2), "device"),
    "device is bytes": (_with(k2=b"h0001"), "device"),
    "device is int": (_with(k2=1), "device"),
    "device is empty": (_with(k2=""), "device"),
    "missing boot": (_without(3), "boot"),
    "negative seq": (_with(k4=-1), "sequence"),
    "seq is float": (_with(k4=1.0), "sequence"),
    "missing seq": (_without(4), "sequence"),
    "prev of 5 bytes": (_with(k5=b"\x00" * 5), "prev"),
    "prev of 17 bytes": (_with(k5=b"\x00" * 17), "prev"),
    "prev is text": (_with(k5="0" * 16), "prev"),
    "missing time": (_without(6), "time"),
    "unknown record type 99": (_with(k1=99), "record type 99"),
    "unknown time source 9": (_with(k7=9), "time source 9"),
    "bool as type": (_with(k1=True), "type"),
    "bool as boot": (_with(k3=False), "boot"),
    "bool as seq": (_with(k4=True), "sequence"),
    "bool as time": (_with(k6=True), "time"),
    "bool as time source": (_with(k7=True), "time source"),
    "duplicate map key": (DUPLICATE_DEVICE, "Duplicate map key: 2"),
    "text key": (cbor2.dumps({**GOOD, "note": 1}), "keys must be integers"),
    "bytes key": (cbor2.dumps({**GOOD, b"\x10": 1}), "keys must be integers"),
    "not CBOR": (b"\xff", "CBOR"),
    "trailing bytes": (cbor2.dumps(GOOD) + b"\x00", "trailing"),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_parse_payload_refuses(name: str) -> None:
    payload, word = REFUSALS[name]
    with pytest.raises(RecordError, match=word):
        parse_payload(payload, b"raw")


def test_signed_record_with_a_bad_payload_is_refused() -> None:
    # A valid signature does not make a bad payload acceptable.
    with pytest.raises(RecordError, match="prev"):
        open_record(sign1(_with(k5=b"\x00" * 5), KEY), KEY.public_key())


def test_worst_case_district_checkin_fits_the_lora_budget() -> None:
    """The district's identifiers with every field at its largest still fit one frame."""
    point = Point(id="P631", lat=-89.9999999, lon=-179.9999999, radius_m=30.0, dwell_s=60.0)
    fix = Fix(time_ms=MARCH_1_2026_MS, lat=point.lat, lon=point.lon, accuracy_m=25.5)
    event = CheckinEvent(
        point=point,
        arrival_ms=MARCH_1_2026_MS,
        departure_ms=MARCH_1_2026_MS + 3_600_000,
        best_fix=fix,
        fixes_inside=3600,
        verdict=Verdict.UNCERTAIN,
        max_speed_mps=25.5,
    )
    raw = build(
        KEY,
        device="h2747",
        chain=ChainPosition(boot=255, seq=65_535, prev=PREV),
        rtype=RecordType.CHECKIN,
        time_ms=MARCH_1_2026_MS,
        time_source=TimeSource.PERSISTED,
        body=checkin_body(event, plan_version=255),
    )
    assert len(raw) <= LORA_BUDGET, f"{len(raw)} bytes"


# --- the other record types: builders, validation, encoding ------------------------------------

FIX = Fix(time_ms=MARCH_1_2026_MS - 1500, lat=29.2650213, lon=106.2550472, accuracy_m=3.5)
EVICTION = Eviction(
    count=3,
    first_seq=10,
    last_seq=14,
    bytes=455,
    types=(RecordType.CHECKIN, RecordType.HEALTH, RecordType.CHECKIN),
)

# One body of every type, as the agent makes them.
BODIES: dict[RecordType, dict[int, object]] = {
    RecordType.CHECKIN: {
        **dict.fromkeys(range(17, 25), 1),
        CheckinKey.POINT: "P017",
        CheckinKey.LAT_E7: 292650213,
        CheckinKey.LON_E7: 1062550472,
    },
    RecordType.MISSED: {16: "P017", 17: 12, 18: "L03", 19: MARCH_1_2026_MS, 20: MARCH_1_2026_MS},
    RecordType.SUSPICION: {16: 1, 17: 292650213, 18: 1062550472, 19: "implied speed 90 m/s"},
    RecordType.HEALTH: health_body(
        depth=3,
        oldest_unsent_s=42,
        clock_source=TimeSource.GNSS,
        fix_quality=Quality.DGPS,
        satellites=14,
        battery_pct=87,
        battery_mv=3987,
        rssi_dbm=-97,
        uptime_s=10_800,
    ),
    RecordType.ROLLCALL: rollcall_body(bytes.fromhex("9f3c21d07a4be815"), FIX),
    RecordType.ALERT: alert_body(AlertKind.SOS, FIX, battery_pct=64),
    RecordType.RECEIPT: receipt_body(1207, 2, Outcome.REFUSED, "plan version 11 < 12"),
    RecordType.DROPPED: dropped_body(EVICTION),
    RecordType.DOCK_STATE: {16: 5, 17: 4, 18: "command 1207: fire", 19: 87, 20: "AL01"},
    RecordType.MISSION: {
        16: "AL01",
        17: 1207,
        18: 1,
        19: 2,
        20: ["A03", "A04"],
        21: 725,
        22: 37,
        23: 2,
    },
    # an event without attachments: each adds 41 bytes (tests/test_events_contract.py)
    RecordType.EVENT: event_body(
        1203, catalogue=3, place=PlaceSource.FIX, lat=29.2650213, lon=106.2550472, accuracy_m=3.5
    ),
}


def _build(rtype: RecordType, body: Mapping[int, object], device: str = "h2747") -> bytes:
    return build(
        KEY,
        device=device,
        chain=ChainPosition(boot=255, seq=65_535, prev=PREV),
        rtype=rtype,
        time_ms=MARCH_1_2026_MS,
        time_source=TimeSource.GNSS,
        body=body,
    )


def test_every_type_has_a_schema_and_a_name() -> None:
    assert set(BODY_SCHEMA) == set(RecordType) == set(TYPE_NAMES) == set(BODIES)


@pytest.mark.parametrize("rtype", list(RecordType), ids=lambda t: t.name)
def test_every_type_builds_opens_validates_and_fits_a_frame(rtype: RecordType) -> None:
    raw = _build(rtype, BODIES[rtype])
    record = open_record(raw, KEY.public_key())
    assert record.header.type is rtype
    assert record.body == BODIES[rtype]
    validate_body(rtype, record.body)
    assert len(raw) <= LORA_BUDGET, f"{rtype.name}: {len(raw)} bytes"


def test_health_body_keeps_only_the_readings_it_has() -> None:
    assert health_body(depth=0) == {HealthKey.DEPTH: 0}
    body = health_body(depth=5, rssi_dbm=-120, clock_source=TimeSource.PERSISTED)
    assert body == {16: 5, 18: int(TimeSource.PERSISTED), 23: -120}
    validate_body(RecordType.HEALTH, body)


def test_rollcall_body_without_a_fix_is_the_challenge_alone() -> None:
    assert rollcall_body(77, None) == {RollcallKey.CHALLENGE: 77}
    no_time = Fix(time_ms=None, lat=-33.8688, lon=151.2093, accuracy_m=None)
    assert rollcall_body(b"\x01", no_time) == {16: b"\x01", 17: -338688000, 18: 1512093000}
    assert rollcall_body(b"\x01", FIX) == {
        16: b"\x01",
        17: 292650213,
        18: 1062550472,
        19: 35,
        20: MARCH_1_2026_MS - 1500,
    }


def test_alert_receipt_and_dropped_bodies() -> None:
    assert alert_body() == {AlertKey.KIND: 1}
    assert alert_body(fix=FIX)[AlertKey.ACCURACY_DM] == 35
    assert receipt_body(9, 3, Outcome.DONE) == {16: 9, 17: 3, 18: 0}
    assert receipt_body(9, 3, Outcome.FAILED, "disk full")[ReceiptKey.REASON] == "disk full"
    # types: each once, ascending, whatever order and repetition the outbox reported
    assert dropped_body(EVICTION) == {16: 3, 17: 10, 18: 14, 19: 455, DroppedKey.TYPES: [1, 4]}


# type: (body changes, word the message must contain); None as a value removes the key
BODY_REFUSALS: list[tuple[RecordType, dict[int, object], str]] = [
    (RecordType.CHECKIN, {16: None}, "lacks key 16 (point)"),
    (RecordType.CHECKIN, {16: 17}, "key 16 (point) must be text"),
    (RecordType.CHECKIN, {17: -1}, "key 17 (plan version) must be an unsigned integer"),
    (RecordType.CHECKIN, {18: 9.5}, "dwell"),
    (RecordType.CHECKIN, {19: 900_000_001}, "latitude"),
    (RecordType.CHECKIN, {20: -1_800_000_001}, "longitude"),
    (RecordType.CHECKIN, {20: None}, "come together"),
    (RecordType.CHECKIN, {23: True}, "verdict"),
    (RecordType.MISSED, {18: None}, "lacks key 18 (line)"),
    (RecordType.MISSED, {19: "soon"}, "window start"),
    (RecordType.SUSPICION, {19: None}, "detail"),
    (RecordType.SUSPICION, {16: False}, "kind"),
    (RecordType.HEALTH, {16: None}, "lacks key 16 (outbox depth)"),
    (RecordType.HEALTH, {21: 101}, "battery"),
    (RecordType.HEALTH, {23: "-97"}, "link quality"),
    (RecordType.HEALTH, {23: 1.0}, "link quality"),
    (RecordType.ROLLCALL, {16: "challenge"}, "byte string or an unsigned integer"),
    (RecordType.ROLLCALL, {16: -1}, "challenge"),
    (RecordType.ROLLCALL, {17: None}, "come together"),
    (RecordType.ALERT, {16: None}, "kind"),
    (RecordType.ALERT, {20: -1}, "battery"),
    (RecordType.RECEIPT, {18: None}, "outcome"),
    (RecordType.RECEIPT, {19: b"bytes"}, "reason"),
    (RecordType.DROPPED, {20: [1, "checkin"]}, "array of unsigned integers"),
    (RecordType.DROPPED, {20: 1}, "types"),
    (RecordType.DROPPED, {16: 0}, "count 0"),
    (RecordType.DROPPED, {16: 6}, "count 6 does not fit sequence numbers 10..14"),
    (RecordType.DROPPED, {17: 15}, "does not fit"),
]


@pytest.mark.parametrize(
    ("rtype", "changes", "word"),
    BODY_REFUSALS,
    ids=[f"{t.name}-{'-'.join(map(str, c))}-{w}" for t, c, w in BODY_REFUSALS],
)
def test_validate_body_refuses(rtype: RecordType, changes: dict[int, object], word: str) -> None:
    body = dict(BODIES[rtype])
    for k, v in changes.items():
        if v is None:
            del body[k]
        else:
            body[k] = v
    with pytest.raises(RecordError, match=re.escape(word)):
        validate_body(rtype, body)


def test_validate_body_ignores_keys_a_later_version_adds() -> None:
    for rtype, body in BODIES.items():
        validate_body(rtype, {**body, 40: "later", 41: [1, 2]})


def test_minimal_checkin_is_valid() -> None:
    # v1 agents write every check-in key, but only the point is required (docs/records.md)
    validate_body(RecordType.CHECKIN, {16: "P001"})


def _canonical_sign1(rtype: RecordType, body: Mapping[int, object], device: str) -> bytes:
    payload = {
        1: int(rtype),
        2: device,
        3: 255,
        4: 65_535,
        5: PREV,
        6: MARCH_1_2026_MS,
        7: int(TimeSource.GNSS),
        **{int(k): v for k, v in body.items()},
    }
    return sign1(cbor2.dumps(payload, canonical=True), KEY)


@pytest.mark.parametrize("rtype", list(RecordType), ids=lambda t: t.name)
def test_build_is_byte_identical_to_canonical_sign1(rtype: RecordType) -> None:
    # build lays out the COSE bytes itself (for speed); it must match the reference path
    body = BODIES[rtype]
    assert _build(rtype, body) == _canonical_sign1(rtype, body, "h2747")


@pytest.mark.parametrize("text_len", [0, 100, 300, 70_000])
def test_build_matches_sign1_for_every_payload_length_head(text_len: int) -> None:
    # payloads under 24, under 256, under 65,536 and over: every byte-string head form
    body = {16: "x" * text_len}
    device = "d" if text_len == 0 else "h0001"
    got = build(
        KEY,
        device=device,
        chain=ChainPosition(boot=255, seq=65_535, prev=PREV),
        rtype=RecordType.CHECKIN,
        time_ms=MARCH_1_2026_MS,
        time_source=TimeSource.GNSS,
        body=body,
    )
    assert got == _canonical_sign1(RecordType.CHECKIN, body, device)


values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.integers(min_value=0, max_value=2**32), max_size=5),
)


@given(st.dictionaries(st.integers(min_value=16, max_value=2**32), values, max_size=12))
def test_build_matches_canonical_encoding_for_any_body(body: dict[int, object]) -> None:
    assert _build(RecordType.HEALTH, body) == _canonical_sign1(RecordType.HEALTH, body, "h2747")
