"""Picket records: the CBOR payload schema of docs/records.md, signed as COSE_Sign1.

Pure functions: the outbox hands in the chain position (boot, sequence, previous hash)
inside its write transaction, so a record is numbered and linked exactly once. The
center uses `open_record` to verify and decode with the same code.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.cose import decode_sign1, sign1, strict_loads, verify1
from agent.errors import RecordError
from agent.fix import TimeSource

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


class Verdict(enum.IntEnum):
    VISITED = 0
    UNCERTAIN = 1


@dataclass(frozen=True, slots=True)
class ChainPosition:
    """Where the next record sits in its device's chain; owned by the outbox."""

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


def chain_hash(raw: bytes) -> bytes:
    """Key 5 of the next record: the first 16 bytes of SHA-256 over this record's COSE bytes."""
    return hashlib.sha256(raw).digest()[:PREV_LEN]


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
    if any(k < 16 for k in body):
        raise ValueError("type-specific keys start at 16")
    payload: dict[int, object] = {
        Key.TYPE: int(rtype),
        Key.DEVICE: device,
        Key.BOOT: chain.boot,
        Key.SEQ: chain.seq,
        Key.PREV: chain.prev,
        Key.TIME: time_ms,
        Key.TIME_SOURCE: int(time_source),
    }
    payload.update(body)
    return sign1(cbor2.dumps({int(k): v for k, v in payload.items()}, canonical=True), key)


def _uint(m: Mapping[object, object], k: int, name: str) -> int:
    v = m.get(k)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise RecordError(f"key {k} ({name}) must be an unsigned integer")
    return v


def parse_payload(payload: bytes, raw: bytes) -> Record:
    m = strict_loads(payload)
    if not isinstance(m, Mapping):
        raise RecordError("payload is not a CBOR map")
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in m):
        raise RecordError("payload keys must be integers")
    try:
        rtype = RecordType(_uint(m, Key.TYPE, "type"))
    except ValueError as exc:
        raise RecordError(f"unknown record type {m.get(Key.TYPE)!r}") from exc
    device = m.get(Key.DEVICE)
    if not isinstance(device, str) or not device:
        raise RecordError("key 2 (device) must be non-empty text")
    prev = m.get(Key.PREV)
    if not isinstance(prev, bytes) or len(prev) not in (0, PREV_LEN):
        raise RecordError("key 5 (prev) must be 0 or 16 bytes")
    try:
        source = TimeSource(_uint(m, Key.TIME_SOURCE, "time source"))
    except ValueError as exc:
        raise RecordError(f"unknown time source {m.get(Key.TIME_SOURCE)!r}") from exc
    header = Header(
        type=rtype,
        device=device,
        boot=_uint(m, Key.BOOT, "boot"),
        seq=_uint(m, Key.SEQ, "sequence"),
        prev=prev,
        time_ms=_uint(m, Key.TIME, "time"),
        time_source=source,
    )
    body = {k: v for k, v in m.items() if isinstance(k, int) and k >= 16}
    return Record(header, body, raw)


def peek_device(raw: bytes) -> str:
    """The device a record claims to come from, before its signature is checked."""
    return parse_payload(decode_sign1(raw).payload, raw).header.device


def open_record(raw: bytes, key: Ed25519PublicKey) -> Record:
    """Verify the signature, then decode and validate the payload."""
    return parse_payload(verify1(raw, key), raw)
