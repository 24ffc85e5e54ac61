"""Picket records: build, open, size on the radio link, and strict payload validation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cose import sign1
from agent.device import checkin_body
from agent.engine import CheckinEvent
from agent.errors import RecordError
from agent.fix import Fix, TimeSource
from agent.plan import Point
from agent.records import (
    ChainPosition,
    CheckinKey,
    RecordType,
    Verdict,
    build,
    chain_hash,
    open_record,
    parse_payload,
    peek_device,
)

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
