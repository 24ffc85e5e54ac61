"""Picket records: the CBOR payload schema of docs/records.md, signed as COSE_Sign1.

Pure functions: the outbox hands in the chain position (boot, sequence, previous hash)
inside its write transaction, so a record is numbered and linked exactly once. The
center uses `open_record` to verify and decode with the same code, then `validate_body`
(contract/recordschema.py) to check the type-specific keys against a data table that
mirrors the CDDL in docs/records.md (a record can be correctly signed and still
malformed). This module is what both ends need to make and read a record: its keys and
types, the bodies a device builds, and the bytes.

Body builders are small functions from values to `{key: value}`; the check-in, missed
point and suspicion builders live beside the engine events they read
(agent/checkin/device.py), the dock state and mission builders beside the dock's state
machine (agent/dock/machine.py).

`parse_payload` checks the header against the contract's bounds (contract/bounds.py): a
payload over MAX_RECORD is refused before it is decoded, and a sequence number past 2**53 - 1
or a time past 2200 is a RecordError naming the key, never a value that reaches a store.
`claimed_seq` reads the sequence number alone, so a refusal can still name it.

`build` lays out the COSE_Sign1 bytes itself instead of calling `contract.cose.sign1`:
the protected header, the Sig_structure prefix and the envelope prefix are constants, so
a record costs one Ed25519 signature plus a few microseconds of encoding. The output is
byte for byte what `sign1` gives (a test holds it to that).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract import bounds as b
from contract.cose import COSE_SIGN1_TAG, PROTECTED_EDDSA, decode_sign1, strict_loads, verify1
from contract.errors import RecordError
from contract.fix import Fix, Quality, TimeSource

PREV_LEN = 16


class RecordType(enum.IntEnum):
    CHECKIN = 1
    MISSED = 2
    SUSPICION = 3
    HEALTH = 4
    ROLLCALL = 5
    ALERT = 6
    RECEIPT = 7
    DROPPED = 8
    DOCK_STATE = 9
    MISSION = 10
    EVENT = 11  # a field event a member reports (contract/events.py, docs/events.md)


# How error messages and reports name each type.
TYPE_NAMES: Mapping[RecordType, str] = {
    RecordType.CHECKIN: "check-in",
    RecordType.MISSED: "missed point",
    RecordType.SUSPICION: "suspicion",
    RecordType.HEALTH: "health",
    RecordType.ROLLCALL: "roll-call answer",
    RecordType.ALERT: "alert",
    RecordType.RECEIPT: "command receipt",
    RecordType.DROPPED: "dropped",
    RecordType.DOCK_STATE: "dock state",
    RecordType.MISSION: "mission",
    RecordType.EVENT: "event",
}


class Key(enum.IntEnum):
    """Common keys: every record has all seven."""

    TYPE = 1
    DEVICE = 2
    BOOT = 3
    SEQ = 4
    PREV = 5
    TIME = 6
    TIME_SOURCE = 7


class CheckinKey(enum.IntEnum):
    POINT = 16
    PLAN_VERSION = 17
    DWELL_S = 18
    LAT_E7 = 19
    LON_E7 = 20
    ACCURACY_DM = 21
    FIXES = 22
    VERDICT = 23
    MAX_SPEED_DMPS = 24
    DRONE = 25  # an aerial check-in: the drone that flew it (a dock writes it)


class MissedKey(enum.IntEnum):
    POINT = 16
    PLAN_VERSION = 17
    LINE = 18
    WINDOW_START = 19
    WINDOW_END = 20


class SuspicionKey(enum.IntEnum):
    KIND = 16
    LAT_E7 = 17
    LON_E7 = 18
    DETAIL = 19


class HealthKey(enum.IntEnum):
    DEPTH = 16
    OLDEST_UNSENT_S = 17
    CLOCK_SOURCE = 18
    FIX_QUALITY = 19
    SATELLITES = 20
    BATTERY_PCT = 21
    BATTERY_MV = 22
    RSSI_DBM = 23
    UPTIME_S = 24


class RollcallKey(enum.IntEnum):
    CHALLENGE = 16
    LAT_E7 = 17
    LON_E7 = 18
    ACCURACY_DM = 19
    FIX_TIME = 20


class AlertKey(enum.IntEnum):
    KIND = 16
    LAT_E7 = 17
    LON_E7 = 18
    ACCURACY_DM = 19
    BATTERY_PCT = 20


class ReceiptKey(enum.IntEnum):
    COMMAND = 16
    COMMAND_TYPE = 17
    OUTCOME = 18
    REASON = 19
    NEXT_SIGNING_KEY = 20  # a key rotation's receipt: the new pre-committed next record key
    NEXT_CSR = 21  # … and a CSR (DER) for the new next TLS key


class DroppedKey(enum.IntEnum):
    COUNT = 16
    FIRST_SEQ = 17
    LAST_SEQ = 18
    BYTES = 19
    TYPES = 20
    SALVAGED = 21  # a damaged outbox: the records read back from it and sent again


class DockStateKey(enum.IntEnum):
    STATE = 16
    PREVIOUS = 17
    REASON = 18
    BATTERY_PCT = 19
    LINE = 20


class MissionKey(enum.IntEnum):
    LINE = 16
    COMMAND = 17
    OUTCOME = 18
    REACHED = 19
    MISSED = 20
    FLIGHT_S = 21
    BATTERY_USED_PCT = 22
    PRIORITY = 23


class Verdict(enum.IntEnum):
    VISITED = 0
    UNCERTAIN = 1


class AlertKind(enum.IntEnum):
    SOS = 1


class Outcome(enum.IntEnum):
    """What a device did with a command (receipt key 18)."""

    DONE = 0
    REFUSED = 1
    FAILED = 2


@dataclass(frozen=True, slots=True)
class Eviction:
    """What the outbox removed to stay under its size cap; becomes a DROPPED record."""

    count: int
    first_seq: int
    last_seq: int
    bytes: int
    types: tuple[RecordType, ...]


class ChainPosition(NamedTuple):
    """Where the next record sits in its device's chain; owned by the outbox.

    A NamedTuple rather than a dataclass: one is made per record on the outbox's batched
    write path, where constructing a frozen dataclass costs a measurable share.
    """

    boot: int
    seq: int
    prev: bytes


@dataclass(frozen=True, slots=True)
class Header:
    type: RecordType
    device: str
    boot: int
    seq: int
    prev: bytes
    time_ms: int
    time_source: TimeSource


@dataclass(frozen=True, slots=True)
class Record:
    header: Header
    body: Mapping[int, object]
    raw: bytes


# --- body builders for the types that are not engine events ---------------------------------


def _e7(degrees: float) -> int:
    return round(degrees * 1e7)


def _dm(metres: float) -> int:
    return round(metres * 10)


def health_body(
    *,
    depth: int,
    oldest_unsent_s: int | None = None,
    clock_source: TimeSource | None = None,
    fix_quality: Quality | None = None,
    satellites: int | None = None,
    battery_pct: int | None = None,
    battery_mv: int | None = None,
    rssi_dbm: int | None = None,
    uptime_s: int | None = None,
) -> dict[int, object]:
    """Type 4: the outbox depth always; every other reading only when the device has it."""
    optional = {
        HealthKey.OLDEST_UNSENT_S: oldest_unsent_s,
        HealthKey.CLOCK_SOURCE: None if clock_source is None else int(clock_source),
        HealthKey.FIX_QUALITY: None if fix_quality is None else int(fix_quality),
        HealthKey.SATELLITES: satellites,
        HealthKey.BATTERY_PCT: battery_pct,
        HealthKey.BATTERY_MV: battery_mv,
        HealthKey.RSSI_DBM: rssi_dbm,
        HealthKey.UPTIME_S: uptime_s,
    }
    body: dict[int, object] = {HealthKey.DEPTH: depth}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _position(lat: int, lon: int, accuracy: int, fix: Fix | None) -> dict[int, object]:
    """Latitude, longitude and accuracy of `fix` under the given keys; {} without a fix."""
    if fix is None:
        return {}
    body: dict[int, object] = {lat: _e7(fix.lat), lon: _e7(fix.lon)}
    if fix.accuracy_m is not None:
        body[accuracy] = _dm(fix.accuracy_m)
    return body


def rollcall_body(challenge: bytes | int, fix: Fix | None) -> dict[int, object]:
    """Type 5: the answer to a roll call (its challenge bytes or command id) with the
    device's current fix, if it has one."""
    body: dict[int, object] = {RollcallKey.CHALLENGE: challenge}
    body.update(_position(RollcallKey.LAT_E7, RollcallKey.LON_E7, RollcallKey.ACCURACY_DM, fix))
    if fix is not None and fix.time_ms is not None:
        body[RollcallKey.FIX_TIME] = fix.time_ms
    return body


def alert_body(
    kind: AlertKind = AlertKind.SOS, fix: Fix | None = None, battery_pct: int | None = None
) -> dict[int, object]:
    """Type 6: an alert raised on the device (SOS), where it was, if known."""
    body: dict[int, object] = {AlertKey.KIND: int(kind)}
    body.update(_position(AlertKey.LAT_E7, AlertKey.LON_E7, AlertKey.ACCURACY_DM, fix))
    if battery_pct is not None:
        body[AlertKey.BATTERY_PCT] = battery_pct
    return body


def receipt_body(
    command: int,
    command_type: int,
    outcome: Outcome,
    reason: str | None = None,
    *,
    next_signing_key: bytes | None = None,
    next_csr: bytes | None = None,
) -> dict[int, object]:
    """Type 7: what the device did with a command from the center. A key rotation's
    receipt also carries the public halves of the device's new next key pair."""
    body: dict[int, object] = {
        ReceiptKey.COMMAND: command,
        ReceiptKey.COMMAND_TYPE: command_type,
        ReceiptKey.OUTCOME: int(outcome),
    }
    if reason is not None:
        body[ReceiptKey.REASON] = reason
    if next_signing_key is not None:
        body[ReceiptKey.NEXT_SIGNING_KEY] = next_signing_key
    if next_csr is not None:
        body[ReceiptKey.NEXT_CSR] = next_csr
    return body


def dropped_body(e: Eviction) -> dict[int, object]:
    """Type 8: what an eviction removed. Types are listed once each, ascending."""
    return {
        DroppedKey.COUNT: e.count,
        DroppedKey.FIRST_SEQ: e.first_seq,
        DroppedKey.LAST_SEQ: e.last_seq,
        DroppedKey.BYTES: e.bytes,
        DroppedKey.TYPES: sorted({int(t) for t in e.types}),
    }


# --- signing ------------------------------------------------------------------------------------


def chain_hash(raw: bytes) -> bytes:
    """Key 5 of the next record: the first 16 bytes of SHA-256 over this record's COSE bytes."""
    return hashlib.sha256(raw).digest()[:PREV_LEN]


def _bstr_head(n: int) -> bytes:
    """The CBOR head of a byte string of length n (RFC 8949 section 3.1)."""
    if n < 24:
        return bytes((0x40 + n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


# Sig_structure ["Signature1", protected, h'', payload] up to the payload's head, and the
# COSE_Sign1 18([protected, {}, payload, signature]) up to the payload's head: constants.
_TBS_PREFIX = cbor2.dumps(["Signature1", PROTECTED_EDDSA, b"", b""])[:-1]
_SIGN1_PREFIX = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [PROTECTED_EDDSA, {}, b"", b""]))[:-2]
_SIGNATURE_HEAD = _bstr_head(64)


def _encode_payload(
    *,
    device: str,
    chain: ChainPosition,
    rtype: RecordType,
    time_ms: int,
    time_source: TimeSource,
    body: Mapping[int, object],
) -> bytes:
    """The payload map in canonical (deterministic) encoding: keys in ascending order."""
    payload: dict[int, object] = {
        1: int(rtype),
        2: device,
        3: chain.boot,
        4: chain.seq,
        5: chain.prev,
        6: time_ms,
        7: int(time_source),
    }
    for k in sorted(body):
        if k < 16:
            raise ValueError("type-specific keys start at 16")
        payload[int(k)] = body[k]
    # With unsigned integer keys in ascending order, and no floats or maps among the values,
    # cbor2's plain encoding is its canonical one, at a third of the cost (tests compare them).
    return cbor2.dumps(payload)


def build(
    key: Ed25519PrivateKey,
    *,
    device: str,
    chain: ChainPosition,
    rtype: RecordType,
    time_ms: int,
    time_source: TimeSource,
    body: Mapping[int, object],
) -> bytes:
    payload = _encode_payload(
        device=device, chain=chain, rtype=rtype, time_ms=time_ms, time_source=time_source, body=body
    )
    head = _bstr_head(len(payload))
    signature = key.sign(_TBS_PREFIX + head + payload)
    return b"".join((_SIGN1_PREFIX, head, payload, _SIGNATURE_HEAD, signature))


# --- decoding -----------------------------------------------------------------------------------


def _bounded(m: Mapping[object, object], k: int, name: str, kind: b.Kind) -> object:
    v = m.get(k)
    b.check(kind, v, f"key {k} ({name})")
    return v


def _code(m: Mapping[object, object], k: int, name: str) -> int:
    v = _bounded(m, k, name, b.CODE)
    assert isinstance(v, int)
    return v


def _uint(m: Mapping[object, object], k: int, name: str, kind: b.Kind) -> int:
    v = _bounded(m, k, name, kind)
    assert isinstance(v, int)
    return v


def _payload_map(payload: bytes) -> Mapping[object, object]:
    if len(payload) > b.MAX_RECORD:
        raise RecordError(f"payload of {len(payload)} bytes: a record is at most {b.MAX_RECORD}")
    m = strict_loads(payload)
    if not isinstance(m, Mapping):
        raise RecordError("payload is not a CBOR map")
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in m):
        raise RecordError("payload keys must be integers")
    return m


def parse_payload(payload: bytes, raw: bytes) -> Record:
    """The record in `payload`, its header checked against the bounds of contract/bounds.py
    (RecordError naming the first key out of them); the body is checked by `validate_body`."""
    m = _payload_map(payload)
    try:
        rtype = RecordType(_code(m, Key.TYPE, "type"))
    except ValueError as exc:
        raise RecordError(f"unknown record type {b.shown(m.get(Key.TYPE))}") from exc
    device = _bounded(m, Key.DEVICE, "device", b.DEVICE_ID_KIND)
    assert isinstance(device, str)
    prev = m.get(Key.PREV)
    if not isinstance(prev, bytes) or len(prev) not in (0, PREV_LEN):
        raise RecordError("key 5 (prev) must be 0 or 16 bytes")
    try:
        source = TimeSource(_code(m, Key.TIME_SOURCE, "time source"))
    except ValueError as exc:
        raise RecordError(f"unknown time source {b.shown(m.get(Key.TIME_SOURCE))}") from exc
    header = Header(
        type=rtype,
        device=device,
        boot=_uint(m, Key.BOOT, "boot", b.BOOT),
        seq=_uint(m, Key.SEQ, "sequence", b.SEQ),
        prev=prev,
        time_ms=_uint(m, Key.TIME, "time", b.TIME),
        time_source=source,
    )
    body = {k: v for k, v in m.items() if isinstance(k, int) and k >= 16}
    return Record(header, body, raw)


def claimed_seq(payload: bytes) -> int | None:
    """The sequence number a payload claims, if it has one within bounds, however wrong
    the rest is: so a refusal can name it and the device stops sending the record."""
    try:
        seq = _payload_map(payload).get(Key.SEQ)
    except RecordError:
        return None
    return seq if isinstance(seq, int) and b.fits(b.SEQ, seq) else None


def peek_device(raw: bytes) -> str:
    """The device a record claims to come from, before its signature is checked."""
    return parse_payload(decode_sign1(raw).payload, raw).header.device


def open_record(raw: bytes, key: Ed25519PublicKey) -> Record:
    """Verify the signature, then decode and validate the payload."""
    return parse_payload(verify1(raw, key), raw)
