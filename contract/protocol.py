"""Topics and the two MQTT payloads of docs/protocol.md, shared by agent and center.

A device publishes only under picket/v1/{device}/up/... and receives only under
picket/v1/{device}/down/..., so broker access rules can confine each device to its own
subtree. Both payloads are small CBOR maps with integer keys; decoding is strict and
raises `RemoteError` naming what was wrong. Every number and size is bounded
(contract/bounds.py): a message over its size is refused before it is decoded, and a batch
id or sequence number beyond 2**53 - 1 never reaches a store.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeGuard

import cbor2

from contract import bounds as b
from contract.cose import strict_loads
from contract.errors import RecordError, RemoteError

PREFIX = "picket/v1"
DEVICE_ID = b.DEVICE_ID
MAX_BATCH = b.MAX_BATCH  # records in a batch
MAX_BATCH_BYTES = b.MAX_BATCH_BYTES  # a batch, before it is decoded
MAX_ACK_BYTES = b.MAX_ACK_BYTES


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


def attachment_topic(device: str) -> str:
    """Chunks of attachments and questions about them, from one device (docs/events.md)."""
    return f"{PREFIX}/{device}/up/att"


def attachment_state_topic(device: str) -> str:
    """The center's answers about one device's attachments (contract/attachments.py)."""
    return f"{PREFIX}/{device}/down/att"


ALL_RECORDS = f"{PREFIX}/+/up/records"
ALL_RELAYED = f"{PREFIX}/+/up/relayed"
ALL_ATTACHMENTS = f"{PREFIX}/+/up/att"


def device_of_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX or not DEVICE_ID.fullmatch(parts[2]):
        raise RemoteError(f"topic {b.shown(topic)} is not picket/v1/{{device}}/...")
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


def decode_map(data: bytes, what: str, limit: int) -> Mapping[object, object]:
    """A payload that must be one CBOR map: at most `limit` bytes (refused before it is
    decoded), decoded strictly; a RemoteError naming `what` otherwise."""
    if len(data) > limit:
        raise RemoteError(f"{what} of {len(data)} bytes: at most {limit}")
    try:
        m = strict_loads(data)
    except RecordError as exc:
        raise RemoteError(f"{what}: {exc}") from exc
    if not isinstance(m, Mapping):
        raise RemoteError(f"{what}: not a CBOR map")
    return m


def _array(v: object) -> TypeGuard[Sequence[object]]:
    return isinstance(v, Sequence) and not isinstance(v, bytes | str)


def _seq(v: object) -> TypeGuard[int]:
    return b.fits(b.SEQ, v)


_BATCH_ID = f"key 1 (batch id) must be {b.SEQ.what}"
_RECORDS = f"key 2 must be an array of at most {MAX_BATCH} byte strings (records)"


def decode_batch(data: bytes) -> Batch:
    """A batch, at most MAX_BATCH_BYTES (refused before decoding), of at most MAX_BATCH
    records. A record over MAX_RECORD is the ingest's to refuse, alone: the rest of the
    batch is good for all that."""
    m = decode_map(data, "batch", MAX_BATCH_BYTES)
    bid, recs = m.get(1), m.get(2)
    if not _seq(bid):
        raise RemoteError(f"batch: {_BATCH_ID}")
    if not _array(recs) or not all(isinstance(r, bytes) for r in recs):
        raise RemoteError(f"batch: {_RECORDS}")
    if len(recs) > MAX_BATCH:
        raise RemoteError(f"batch: more than {MAX_BATCH} records")
    return Batch(bid, tuple(r for r in recs if isinstance(r, bytes)))


def decode_ack(data: bytes) -> Ack:
    """An acknowledgement: at most MAX_ACK_BYTES, a batch id and sequence numbers each
    within 2**53 - 1, at most MAX_BATCH of each list, known refusal reasons."""
    m = decode_map(data, "ack", MAX_ACK_BYTES)
    bid, stored, refused = m.get(1), m.get(2, []), m.get(3, [])
    if not _seq(bid):
        raise RemoteError(f"ack: {_BATCH_ID}")
    if not _array(stored) or len(stored) > MAX_BATCH or not all(_seq(s) for s in stored):
        raise RemoteError(
            f"ack: key 2 must be an array of at most {MAX_BATCH} sequence numbers, "
            f"each {b.SEQ.what}"
        )
    seqs = tuple(s for s in stored if _seq(s))
    pairs = f"ack: key 3 must be an array of at most {MAX_BATCH} [seq, reason] pairs"
    if not _array(refused) or len(refused) > MAX_BATCH:
        raise RemoteError(pairs)
    out: list[tuple[int, Refusal]] = []
    for item in refused:
        if not _array(item) or len(item) != 2:
            raise RemoteError(pairs)
        seq, why = item
        if not _seq(seq):
            raise RemoteError(f"ack: key 3: a refused sequence number must be {b.SEQ.what}")
        if type(why) is not int:
            raise RemoteError(pairs)
        if why not in _REASONS:
            raise RemoteError(f"ack: unknown refusal reason {b.shown(why)}")
        out.append((seq, Refusal(why)))
    return Ack(bid, seqs, tuple(out))


_REASONS = frozenset(int(r) for r in Refusal)
