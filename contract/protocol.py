"""Topics and the two MQTT payloads of docs/protocol.md, shared by agent and center.

A device publishes only under picket/v1/{device}/up/... and receives only under
picket/v1/{device}/down/..., so broker access rules can confine each device to its own
subtree. Both payloads are small CBOR maps with integer keys; decoding is strict and
raises `RemoteError` naming what was wrong.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeGuard

import cbor2

from contract.cose import strict_loads
from contract.errors import RecordError, RemoteError

PREFIX = "picket/v1"
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_BATCH = 256


def records_topic(device: str) -> str:
    return f"{PREFIX}/{device}/up/records"


def relayed_topic(device: str) -> str:
    """Records of `device` relayed by someone else (a LoRa gateway): stored, never answered,
    so a forged relay cannot make the device drop a record it still holds."""
    return f"{PREFIX}/{device}/up/relayed"


def ack_topic(device: str) -> str:
    return f"{PREFIX}/{device}/down/ack"


def command_topic(device: str) -> str:
    """Signed commands from the center to one device (docs/protocol.md)."""
    return f"{PREFIX}/{device}/down/cmd"


def state_topic(device: str) -> str:
    """Retained `online` / `offline` (the last will) of one device."""
    return f"{PREFIX}/{device}/up/state"


ALL_RECORDS = f"{PREFIX}/+/up/records"
ALL_RELAYED = f"{PREFIX}/+/up/relayed"


def device_of_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX or not DEVICE_ID.fullmatch(parts[2]):
        raise RemoteError(f"topic {topic!r} is not picket/v1/{{device}}/...")
    return parts[2]


class Refusal(enum.IntEnum):
    """Why the center refused one record (key 3 of an acknowledgement)."""

    MALFORMED = 1
    BAD_SIGNATURE = 2
    UNKNOWN_DEVICE = 3
    WRONG_DEVICE = 4
    REVOKED = 5  # signed by a key at or after its revocation (docs/provisioning.md)


@dataclass(frozen=True, slots=True)
class Batch:
    id: int
    records: tuple[bytes, ...]

    def encode(self) -> bytes:
        return cbor2.dumps({1: self.id, 2: list(self.records)})


@dataclass(frozen=True, slots=True)
class Ack:
    batch: int
    stored: tuple[int, ...]  # sequence numbers now durable at the center (new or duplicate)
    refused: tuple[tuple[int, Refusal], ...]  # sequence numbers refused, with the reason

    def encode(self) -> bytes:
        return cbor2.dumps(
            {1: self.batch, 2: list(self.stored), 3: [[s, int(r)] for s, r in self.refused]}
        )


def _map(data: bytes, what: str) -> Mapping[object, object]:
    try:
        m = strict_loads(data)
    except RecordError as exc:
        raise RemoteError(f"{what}: {exc}") from exc
    if not isinstance(m, Mapping):
        raise RemoteError(f"{what}: not a CBOR map")
    return m


def _uint(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _array(v: object) -> TypeGuard[Sequence[object]]:
    return isinstance(v, Sequence) and not isinstance(v, bytes | str)


def decode_batch(data: bytes) -> Batch:
    m = _map(data, "batch")
    bid, recs = m.get(1), m.get(2)
    if not _uint(bid):
        raise RemoteError("batch: key 1 (batch id) must be an unsigned integer")
    if not _array(recs):
        raise RemoteError("batch: key 2 must be an array of byte strings (records)")
    records = tuple(r for r in recs if isinstance(r, bytes))
    if len(records) != len(recs):
        raise RemoteError("batch: key 2 must be an array of byte strings (records)")
    if len(records) > MAX_BATCH:
        raise RemoteError(f"batch: more than {MAX_BATCH} records")
    return Batch(bid, records)


def decode_ack(data: bytes) -> Ack:
    m = _map(data, "ack")
    bid, stored, refused = m.get(1), m.get(2, []), m.get(3, [])
    if not _uint(bid):
        raise RemoteError("ack: key 1 (batch id) must be an unsigned integer")
    if not _array(stored):
        raise RemoteError("ack: key 2 must be an array of sequence numbers")
    seqs = tuple(s for s in stored if _uint(s))
    if len(seqs) != len(stored):
        raise RemoteError("ack: key 2 must be an array of sequence numbers")
    out: list[tuple[int, Refusal]] = []
    if not _array(refused):
        raise RemoteError("ack: key 3 must be an array of [seq, reason] pairs")
    for item in refused:
        if not _array(item) or len(item) != 2:
            raise RemoteError("ack: key 3 must be an array of [seq, reason] pairs")
        seq, why = item
        if not _uint(seq) or not _uint(why):
            raise RemoteError("ack: key 3 must be an array of [seq, reason] pairs")
        try:
            out.append((seq, Refusal(why)))
        except ValueError as exc:
            raise RemoteError(f"ack: unknown refusal reason {why!r}") from exc
    return Ack(bid, seqs, tuple(out))
