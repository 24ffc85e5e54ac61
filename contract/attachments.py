"""The chunk protocol of attachments: device and center messages, and chunking. Pure.

An event's photos and note follow its record by IP, in chunks over MQTT (docs/events.md,
"The chunk protocol"; topics in contract/protocol.py). The device publishes a `Chunk` (a
piece of the attachment at an offset, with its CRC-32) or a `Question` (what do you hold
of this attachment?) on picket/v1/{device}/up/att; the center answers with the attachment's
`Status` on picket/v1/{device}/down/att: how many bytes it holds from the start (the offset
to continue from) and whether the attachment is partial, complete (digest checked: the
device may delete it), refused (with a reason) or unknown to it (no stored event lists it).

Each message is a CBOR map with integer keys, bounded before it is decoded like every
payload (MAX_MESSAGE, MAX_STATUS), decoded strictly (contract/cose.py `strict_loads`) and
checked against the bounds of contract/bounds.py; anything wrong is a `RemoteError` naming
the key. Keys this version does not define are ignored, as in batches and acknowledgements.
A chunk whose data does not match its CRC-32 is a `CrcMismatch` (a RemoteError) that still
names the attachment and the offset, so the center can answer REFUSED and the device re-send
from `held`.

`chunks` cuts an attachment into the chunks the device sends, from an offset on (the `held`
of the center's last answer): resume, never from zero.
"""

from __future__ import annotations

import enum
import hashlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import cbor2

from contract import bounds as b
from contract.errors import RemoteError
from contract.protocol import decode_map

__all__ = [
    "CHUNK_DEFAULT",
    "MAX_CHUNK",
    "MAX_MESSAGE",
    "MAX_STATUS",
    "AttachmentState",
    "Chunk",
    "CrcMismatch",
    "Question",
    "Status",
    "chunks",
    "decode_status",
    "decode_upload",
]

CHUNK_DEFAULT = 32 * 1024  # bytes of data the device sends in one chunk
MAX_CHUNK = b.MAX_CHUNK  # 64 KiB: the most one chunk may carry
MAX_MESSAGE = b.MAX_CHUNK_MESSAGE  # a chunk or a question, before it is decoded
MAX_STATUS = 1024  # a status: a digest, two integers and a reason of at most 512 bytes
MAX_SIZE = b.MAX_ATTACHMENT_BYTES
DIGEST_LEN = 32
SIZE = b.Kind(b.Shape.UINT, 1, MAX_SIZE, note=f"a size 1..{MAX_SIZE}")
OFFSET = b.uint(MAX_SIZE)
CRC = b.uint(b.UINT32_MAX)
DATA = b.byte_string(MAX_CHUNK, 1)


class AttachmentState(enum.IntEnum):
    """What the center holds of one attachment (key 3 of a status)."""

    PARTIAL = 0  # `held` bytes from the start: continue from there
    COMPLETE = 1  # every byte held and the digest checked: the device may delete it
    REFUSED = 2  # see the reason: a bad CRC, a digest that does not match, a wrong size
    UNKNOWN = 3  # no stored event of this device lists the digest (yet)


def digest_prefix(digest: bytes) -> str:
    """How messages name an attachment: the first 6 bytes of its digest, in hex."""
    return digest[:6].hex()


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Chunk:
    """`data` of the attachment `digest` (of `size` bytes) from `offset` on."""

    digest: bytes
    offset: int
    size: int
    data: bytes
    crc: int

    @classmethod
    def of(cls, digest: bytes, offset: int, size: int, data: bytes) -> Chunk:
        return cls(digest, offset, size, data, crc32(data))

    def encode(self) -> bytes:
        return cbor2.dumps({1: self.digest, 2: self.offset, 3: self.size, 4: self.data,
                            5: self.crc})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Question:
    """What does the center hold of the attachment `digest` of `size` bytes? `offset`, when
    given, is where the device thinks it stands."""

    digest: bytes
    offset: int | None
    size: int

    def encode(self) -> bytes:
        m: dict[int, object] = {1: self.digest}
        if self.offset is not None:
            m[2] = self.offset
        m[3] = self.size
        return cbor2.dumps(m)


@dataclass(frozen=True, slots=True)
class Status:
    """The center's answer for one attachment: `held` bytes from the start, its state, and
    why it was refused (state REFUSED)."""

    digest: bytes
    held: int
    state: AttachmentState
    reason: str | None = None

    def encode(self) -> bytes:
        m: dict[int, object] = {1: self.digest, 2: self.held, 3: int(self.state)}
        if self.reason is not None:
            m[4] = self.reason
        return cbor2.dumps(m)


class CrcMismatch(RemoteError):
    """A chunk whose data does not match its CRC-32: damaged on the way. It names the
    attachment and the offset, for the center's REFUSED answer."""

    def __init__(self, digest: bytes, offset: int, size: int) -> None:
        super().__init__(
            f"chunk at offset {offset} of {digest_prefix(digest)}: CRC-32 does not match"
        )
        self.digest, self.offset, self.size = digest, offset, size


def _map(data: bytes, what: str, limit: int) -> Mapping[object, object]:
    m = decode_map(data, what, limit)
    if not all(type(k) is int for k in m):
        raise RemoteError(f"{what}: keys must be integers")
    return m


def _get(m: Mapping[object, object], what: str, key: int, name: str, kind: b.Kind) -> object:
    v = m.get(key)
    if not b.fits(kind, v):
        raise RemoteError(f"{what}: key {key} ({name}) must be {kind.what}")
    return v


def _digest(m: Mapping[object, object], what: str) -> bytes:
    v = _get(m, what, 1, "digest", b.DIGEST)
    assert isinstance(v, bytes)
    return v


def _int(m: Mapping[object, object], what: str, key: int, name: str, kind: b.Kind) -> int:
    v = _get(m, what, key, name, kind)
    assert isinstance(v, int)
    return v


def decode_upload(data: bytes) -> Chunk | Question:
    """A device's message on …/up/att: a chunk (with key 4) or a question (without).

    RemoteError naming the key for anything out of bounds: a chunk of more than 64 KiB, one
    ending past the attachment's size, a size over 4 MiB; CrcMismatch when the data does
    not match key 5."""
    m = _map(data, "attachment message", MAX_MESSAGE)
    what = "chunk" if 4 in m else "question"
    digest = _digest(m, what)
    size = _int(m, what, 3, "size", SIZE)
    if what == "question":
        if 5 in m:
            raise RemoteError("question: key 5 (crc) comes only with key 4 (data)")
        offset = None if 2 not in m else _int(m, what, 2, "offset", OFFSET)
        if offset is not None and offset > size:
            raise RemoteError(f"question: key 2 (offset) {offset} is past the size {size}")
        return Question(digest, offset, size)
    offset = _int(m, what, 2, "offset", OFFSET)
    chunk = _get(m, what, 4, "data", DATA)
    assert isinstance(chunk, bytes)
    crc = _int(m, what, 5, "crc", CRC)
    if offset + len(chunk) > size:
        raise RemoteError(
            f"chunk: {len(chunk)} bytes at offset {offset} end past the size {size} "
            f"of {digest_prefix(digest)}"
        )
    if crc32(chunk) != crc:
        raise CrcMismatch(digest, offset, size)
    return Chunk(digest, offset, size, chunk, crc)


def decode_status(data: bytes) -> Status:
    """The center's answer on …/down/att; RemoteError naming the key (an unknown state, a
    REFUSED without its reason, `held` over 4 MiB)."""
    what = "attachment status"
    m = _map(data, what, MAX_STATUS)
    digest = _digest(m, what)
    held = _int(m, what, 2, "held", OFFSET)
    code = _int(m, what, 3, "state", b.CODE)
    if code not in _STATES:
        raise RemoteError(f"{what}: key 3 (state) {code} is not a known state (0..3)")
    state = AttachmentState(code)
    reason: str | None = None
    if 4 in m:
        v = _get(m, what, 4, "reason", b.FREE_TEXT)
        assert isinstance(v, str)
        reason = v
    elif state is AttachmentState.REFUSED:
        raise RemoteError(f"{what}: key 4 (reason) is required with state 2 (refused)")
    if state is AttachmentState.COMPLETE and held == 0:
        raise RemoteError(f"{what}: state 1 (complete) with key 2 (held) 0")
    return Status(digest, held, state, reason)


_STATES = frozenset(int(s) for s in AttachmentState)


def chunks(
    data: bytes, start: int = 0, chunk_size: int = CHUNK_DEFAULT, digest: bytes | None = None
) -> Iterator[Chunk]:
    """The chunks of the attachment `data` from `start` (the center's `held`) to its end,
    `chunk_size` bytes each but the last. `digest` saves hashing `data` again when the
    caller knows it. ValueError for an attachment over 4 MiB or empty, a start past its
    end, a chunk size outside 1..MAX_CHUNK."""
    if not 1 <= len(data) <= MAX_SIZE:
        raise ValueError(f"an attachment is 1..{MAX_SIZE} bytes, not {len(data)}")
    if not 0 <= start <= len(data):
        raise ValueError(f"start {start} is outside the attachment's 0..{len(data)}")
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"a chunk is 1..{MAX_CHUNK} bytes, not {chunk_size}")
    d = hashlib.sha256(data).digest() if digest is None else digest
    view = memoryview(data)
    for offset in range(start, len(data), chunk_size):
        yield Chunk.of(d, offset, len(data), bytes(view[offset : offset + chunk_size]))
