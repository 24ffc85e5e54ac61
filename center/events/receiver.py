"""The center's end of the chunk protocol: a device's chunks in, the attachment's state out.

`receive` is the core: one message of a device (a chunk or a question, contract/attachments.py)
judged against the events tables inside the caller's write transaction, and the `Status` to
answer once that transaction has committed (docs/events.md, "The chunk protocol"):

- a question is answered with what the center holds;
- a chunk at `offset == held` is appended and answered PARTIAL with the new `held`; a chunk
  at any other offset (a duplicate, one overtaken by another) is answered with the state
  and not stored, so a resend or a reordering costs a message, never a wrong byte;
- a chunk whose CRC-32 does not match is REFUSED with the reason, `held` unchanged;
- once `held` reaches the size, the whole is hashed: COMPLETE when it matches the digest
  (the bytes stay for the photo's `media_url` and `show --export`), else REFUSED "digest
  does not match" with what was held dropped (`held` 0: the device starts again);
- a digest no stored event record of *this* device lists is UNKNOWN (another device's
  digest included: a device can never add bytes to someone else's event); a size other
  than the record's is REFUSED.

**Where the bytes go.** Into the attachment's own row (`event_attachments.data`), appended
chunk by chunk in the same transaction that moves `held`, not into files under a data
folder. The center's workers may run on several machines over one PostgreSQL database and
share the chunks of one upload through the shared subscription, so only the database is a
place they all see; and a `held` committed with its bytes in one transaction can never
claim bytes a crash lost. The price is that each append rewrites the row's blob, so the
cost of a chunk grows with what is held: measured here (SQLite, WAL, synchronous=FULL, 32 KiB
chunks, one transaction per chunk), 100 photos of 300 kB take 2.7 s in all (2.7 ms a chunk,
11 MB/s), which is the size the device re-encodes photos to; the largest attachment, 4 MiB,
takes 4.4 s (34 ms a chunk). Were attachments of megabytes common, a row per chunk, joined
once at the end, would keep each chunk's cost flat. The rows are locked (FOR UPDATE in
PostgreSQL; SQLite's write lock is the whole database) so two workers never
append the same offset twice.

`AttachmentReceiver` is the thin part the service calls on its database thread: it opens
the center's database for the events tables once (`EventDb`), runs `receive` in one write
transaction and hands back the device and the answer to publish after the commit.
`handle_many` does the same for a group of messages (those the service found queued) in ONE
transaction: one COMMIT and one fsync for the group instead of one per chunk, and each
attachment's blob read and written once per group, not once per chunk; every message is
judged by the same rules, in order, so the answers are those one at a time would give.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from center.events.store import EventDb
from center.tables import Dialect, Sql
from contract.attachments import (
    AttachmentState,
    Chunk,
    CrcMismatch,
    Question,
    Status,
    decode_upload,
    digest_prefix,
)
from contract.errors import RemoteError
from contract.events import AttachmentKind
from contract.protocol import attachment_topic, device_of_topic

__all__ = ["AttachmentReceiver", "Held", "ReceiverStats", "receive"]

log = logging.getLogger(__name__)

DIGEST_MISMATCH = "digest does not match"


@dataclass(frozen=True, slots=True)
class Held:
    """What the center holds of one attachment of one device (all its rows agree)."""

    events: tuple[int, ...]  # the events of the device whose records list the digest
    kind: int
    size: int
    held: int
    complete: bool


def _held(sql: Sql, device: str, digest: bytes) -> Held | None:
    lock = " FOR UPDATE OF a" if sql.dialect is Dialect.POSTGRESQL else ""
    query = (
        "SELECT a.event, a.kind, a.size, a.held, a.complete FROM event_attachments a "
        "JOIN events e ON e.number = a.event WHERE e.device = ? AND a.sha256 = ? "
        "ORDER BY a.event"
    )
    rows = sql.rows(query + lock, (device, digest))
    if not rows:
        return None
    _, kind, size, held, complete = rows[0]
    return Held(tuple(int(r[0]) for r in rows), int(kind), int(size), int(held), bool(complete))


def _where(found: Held) -> tuple[str, list[object]]:
    marks = ",".join("?" * len(found.events))
    return f"sha256 = ? AND event IN ({marks})", list(found.events)


def _data(sql: Sql, found: Held, digest: bytes) -> bytes:
    cond, params = _where(found)
    rows = sql.rows(f"SELECT data FROM event_attachments WHERE {cond} LIMIT 1", [digest, *params])  # noqa: S608 (placeholders only)
    return bytes(rows[0][0]) if rows and rows[0][0] is not None else b""


def _write(sql: Sql, found: Held, digest: bytes, held: int, *, complete: bool, data: bytes) -> None:
    cond, params = _where(found)
    sql.run(
        f"UPDATE event_attachments SET held = ?, complete = ?, data = ? WHERE {cond}",  # noqa: S608 (placeholders only)
        [held, int(complete), data if data else None, digest, *params],
    )


def _note(sql: Sql, found: Held, data: bytes) -> None:
    """A complete note becomes the events' note (the text the member typed)."""
    text = data.decode("utf-8", errors="replace")
    marks = ",".join("?" * len(found.events))
    sql.run(
        f"UPDATE events SET note = ? WHERE number IN ({marks})",  # noqa: S608 (placeholders only)
        [text, *found.events],
    )


@dataclass(slots=True)
class _Row:
    """One attachment of one device as this transaction holds it: read once, its appended
    bytes kept here and written back once (`_Tx.flush`), not once per chunk."""

    digest: bytes
    found: Held
    data: bytearray | None = None  # read on the first append
    dirty: bool = False


class _Tx:
    """The rows one write transaction touched, so that the chunks of one attachment in a
    group cost one read and one write of its blob; `flush` before the COMMIT."""

    CACHE_BYTES = 16 * 2**20  # written back and forgotten past this (a bound on memory)

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.rows: dict[tuple[str, bytes], _Row] = {}
        self.cached = 0

    def row(self, device: str, digest: bytes) -> _Row | None:
        key = (device, digest)
        row = self.rows.get(key)
        if row is None:
            found = _held(self.sql, device, digest)
            if found is None:
                return None
            row = self.rows[key] = _Row(digest, found)
        return row

    def data(self, row: _Row) -> bytearray:
        if row.data is None:
            row.data = bytearray(_data(self.sql, row.found, row.digest))
            self.cached += len(row.data)
        return row.data

    def set(self, row: _Row, held: int, *, complete: bool) -> None:
        row.found = replace(row.found, held=held, complete=complete)
        row.dirty = True

    def flush(self) -> None:
        for row in self.rows.values():
            if row.dirty:
                found = row.found
                data = bytes(row.data or b"")
                _write(self.sql, found, row.digest, found.held, complete=found.complete, data=data)
        self.rows.clear()
        self.cached = 0


def receive(
    sql: Sql, device: str, message: bytes, now_ms: int, stats: ReceiverStats | None = None
) -> Status | None:
    """Judge one message of `device` on …/up/att inside the caller's write transaction; the
    status to publish after the commit, or None for a message that names no attachment
    (it cannot be answered: the caller counts it). `now_ms` is for the record of changes;
    `stats` counts the chunks stored and those the center held already."""
    tx = _Tx(sql)
    status = _judge(tx, device, message, now_ms, stats)
    tx.flush()
    return status


def _judge(
    tx: _Tx, device: str, message: bytes, now_ms: int, stats: ReceiverStats | None
) -> Status | None:
    """`receive`'s rules over the rows of `tx` (written when it is flushed)."""
    del now_ms  # nothing is timed yet; kept so the driver passes the time as everywhere
    try:
        msg: Chunk | Question | CrcMismatch = decode_upload(message)
    except CrcMismatch as exc:
        msg = exc
    except RemoteError:
        return None
    digest = msg.digest
    row = tx.row(device, digest)
    if row is None:
        return Status(digest, 0, AttachmentState.UNKNOWN)
    found = row.found
    if msg.size != found.size:
        reason = f"size {msg.size}, but the event record says {found.size}"
        return Status(digest, found.held, AttachmentState.REFUSED, reason)
    if found.complete:
        return Status(digest, found.size, AttachmentState.COMPLETE)
    if isinstance(msg, CrcMismatch):
        return Status(digest, found.held, AttachmentState.REFUSED, str(msg))
    if isinstance(msg, Question) or msg.offset != found.held:
        if stats is not None and isinstance(msg, Chunk) and msg.offset < found.held:
            stats.repeated += 1
        return Status(digest, found.held, AttachmentState.PARTIAL)
    if stats is not None:
        stats.stored += 1
    data = tx.data(row)
    data += msg.data
    tx.cached += len(msg.data)
    held = len(data)
    if held < found.size:
        tx.set(row, held, complete=False)
        return Status(digest, held, AttachmentState.PARTIAL)
    if hashlib.sha256(data).digest() != digest:
        data.clear()
        tx.set(row, 0, complete=False)
        log.warning("%s: attachment %s dropped: %s", device, digest_prefix(digest), DIGEST_MISMATCH)
        return Status(digest, 0, AttachmentState.REFUSED, DIGEST_MISMATCH)
    tx.set(row, held, complete=True)
    if found.kind == AttachmentKind.NOTE:
        _note(tx.sql, found, bytes(data))
    return Status(digest, held, AttachmentState.COMPLETE)


@dataclass(slots=True)
class ReceiverStats:
    messages: int = 0
    bad: int = 0  # messages that name no attachment: not answered
    complete: int = 0
    refused: int = 0
    stored: int = 0  # chunks appended (a chunk is stored only at `held`, so once)
    repeated: int = 0  # chunks below `held`: sent again though held (a restart from zero)


def _device(topic: str) -> str:
    """The device whose …/{device}/up/att `topic` is ("" when it cannot be told)."""
    try:
        device = device_of_topic(topic)
    except RemoteError:
        return ""
    return device if attachment_topic(device) == topic else ""


class AttachmentReceiver:
    """`receive` over the center's database (a SQLite path or a postgresql:// URL), opened
    on first use; used from the service's one database thread."""

    def __init__(self, db: str | Path) -> None:
        self.name = db
        self.stats = ReceiverStats()
        self._db: EventDb | None = None

    def handle(self, topic: str, payload: bytes, now_ms: int) -> tuple[str, Status] | None:
        """The device and the status to publish to it once this returned (committed), or
        None for a message that cannot be answered. StoreError when the database fails."""
        return self.handle_many([(topic, payload)], now_ms)[0]

    def handle_many(
        self, messages: Sequence[tuple[str, bytes]], now_ms: int
    ) -> list[tuple[str, Status] | None]:
        """`handle` for each (topic, payload), in order, in ONE write transaction (one
        COMMIT, one fsync, for a group of chunks): the answers are those `handle` would
        give one message at a time, each to publish only once this returned (committed).
        StoreError when the database fails: nothing of the group is stored."""
        devices = [_device(topic) for topic, _payload in messages]
        statuses: list[Status | None] = [None] * len(messages)
        if any(devices):
            if self._db is None:
                self._db = EventDb(self.name)
            with self._db.write() as sql:
                tx = _Tx(sql)
                for i, (device, (_topic, payload)) in enumerate(
                    zip(devices, messages, strict=True)
                ):
                    if device:
                        statuses[i] = _judge(tx, device, payload, now_ms, self.stats)
                        if tx.cached > tx.CACHE_BYTES:
                            tx.flush()
                tx.flush()
        return [
            self._count(topic, payload, device, status)
            for (topic, payload), device, status in zip(messages, devices, statuses, strict=True)
        ]

    def _count(
        self, topic: str, payload: bytes, device: str, status: Status | None
    ) -> tuple[str, Status] | None:
        self.stats.messages += 1
        if status is None:
            self.stats.bad += 1
            level = logging.WARNING if self.stats.bad == 1 else logging.DEBUG
            log.log(level, "unanswerable attachment message on %s (%d bytes)", topic, len(payload))
            return None
        if status.state is AttachmentState.COMPLETE:
            self.stats.complete += 1
        elif status.state is AttachmentState.REFUSED:
            self.stats.refused += 1
        return device, status

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
