"""The attachment store: a report's photos and note, durable until the center holds them.

**Its own file.** Attachments live in `attachments.db` beside the outbox, never in it: they
are large, they have their own quota (`attachment_quota_mb`), and they must never evict a
check-in or an alert, nor be evicted by the outbox's cap. The file is opened as the outbox
is (agent/store/outbox.py): SQLite in WAL mode with `synchronous=FULL`, so what a call has
stored survives a crash or a power cut, and each call is one transaction.

**One row per attachment**, found by its SHA-256 (the digest the signed event record lists)
and numbered by a device-local id: its kind, size and bytes, the outbox sequence number of
the event record that lists it (NULL until that record is stored), when it was made (passed
in), how much of it the center holds (`held`, what the upload continues from) and its state:
waiting, uploading, complete. `complete` deletes the bytes and keeps the row's digest.

**The quota.** `put_many` stores all of a report's attachments or none. It refuses, with
`QuotaFull` and before writing anything, when they would bring the bytes waiting to upload
over the quota; nothing stored before is touched, and the message tells the member why and
what frees space. A full disk (SQLite's "database or disk is full", a `PRAGMA
max_page_count`) is a `StorageError` saying "disk full"; the transaction is rolled back and
every row stored before stays as it was.

**"Saved" across two files.** A report is one event record in the outbox and its attachments
here; SQLite cannot commit both files in one transaction. The order makes it safe:

1. `put_many(items, None, now)`: the attachments are stored, linked to no record yet;
2. the event record, listing their digests, is appended to the outbox (its own commit);
3. `link(digests, seq)`: the rows are linked to that record's sequence number;
4. only then is the member told "saved".

A crash before 2 leaves rows no record lists: the member was never told "saved", and the
center would refuse the bytes (no record lists the digest). A crash between 2 and 3 leaves a
stored record whose rows are not linked. Both look the same here, so on start `orphans(now)`
reports the unlinked rows older than `ORPHAN_AFTER_MS` (younger ones may belong to a report
being saved right now); the caller looks in the outbox for an event record listing each
digest and either `link`s it to that record or, when none does, `forget`s it. Nothing is
deleted here on a guess. Uploading waits for the link (the record is acknowledged first), so
an unlinked row is never half sent.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError, StorageError
from agent.events.sqlitefile import SqliteFile
from agent.store.schema import transaction

__all__ = [
    "ORPHAN_AFTER_MS",
    "AttachmentStore",
    "Held",
    "Item",
    "QuotaFull",
    "State",
    "Usage",
]

ORPHAN_AFTER_MS = 5 * 60_000  # an unlinked row younger than this may be a report being saved
MB = 1_000_000

TABLE = """
CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY,         -- device-local id, in the order they were stored
    sha256 BLOB NOT NULL UNIQUE,    -- the digest the event record lists
    kind INTEGER NOT NULL,          -- 1 photo, 2 note, 3 voice (docs/events.md)
    size INTEGER NOT NULL,
    data BLOB,                      -- NULL once the center holds it all (complete)
    event_seq INTEGER,              -- the outbox sequence of the record listing it
    created_ms INTEGER NOT NULL,
    held INTEGER NOT NULL DEFAULT 0, -- bytes the center holds from the start
    state INTEGER NOT NULL DEFAULT 0 -- State
)"""


class State(enum.IntEnum):
    WAITING = 0  # stored, nothing sent yet
    UPLOADING = 1  # the center holds part of it (or was asked)
    COMPLETE = 2  # the center holds it all, digest checked: the bytes are deleted


class QuotaFull(AgentError):
    """The attachments of a report do not fit in the attachment quota; nothing was stored."""

    def __init__(self, used: int, quota: int, waiting: int, needed: int) -> None:
        self.used, self.quota, self.waiting, self.needed = used, quota, waiting, needed
        super().__init__(
            f"photo storage full: {used / MB:.1f} of {quota / MB:g} MB used by {waiting} "
            f"attachment{'' if waiting == 1 else 's'} waiting to upload, and this report "
            f"needs {needed / MB:.1f} MB; free space by letting them upload (connect to "
            "the network)"
        )


@dataclass(frozen=True, slots=True)
class Item:
    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Held:
    """One attachment's row, without its bytes (`read` serves those)."""

    id: int
    digest: bytes
    kind: int
    size: int
    event_seq: int | None
    created_ms: int
    held: int
    state: State


@dataclass(frozen=True, slots=True)
class Usage:
    used_bytes: int  # bytes of the attachments not yet complete: what the quota measures
    waiting: int  # how many attachments those are
    quota_bytes: int

    @property
    def free_bytes(self) -> int:
        return max(0, self.quota_bytes - self.used_bytes)


def _held(row: Sequence[object]) -> Held:
    rid, digest, kind, size, seq, created, held, state = row
    assert isinstance(digest, bytes) and isinstance(rid, int) and isinstance(kind, int)
    assert isinstance(size, int) and isinstance(created, int) and isinstance(held, int)
    assert seq is None or isinstance(seq, int)
    assert isinstance(state, int)
    return Held(rid, digest, kind, size, seq, created, held, State(state))


class AttachmentStore(SqliteFile):
    label = "attachments"

    def __init__(self, path: Path, quota_bytes: int) -> None:
        if quota_bytes <= 0:
            raise ValueError(f"quota_bytes {quota_bytes}: must be positive")
        self.quota_bytes = quota_bytes
        # auto_vacuum before the first table: freed pages go back to the file system, so
        # the space photos took is the outbox's again once they are uploaded
        super().__init__(
            path,
            (TABLE, "CREATE INDEX IF NOT EXISTS attachments_open ON attachments(state, id)"),
            first=("PRAGMA auto_vacuum=INCREMENTAL",),
        )

    # -- storing ------------------------------------------------------------------------

    def put_many(self, items: Iterable[Item], event_seq: int | None, now_ms: int) -> list[bytes]:
        """Store every item or none, in one transaction; their digests, in order.

        An item whose digest is already held waiting costs nothing and is not stored twice;
        one already uploaded (complete) is stored again. QuotaFull when the new bytes do not
        fit, StorageError when the disk is full: either way nothing is written.
        """
        batch = list(items)
        digests = [hashlib.sha256(item.data).digest() for item in batch]
        for item in batch:
            if not item.data:
                raise ValueError("an attachment of 0 bytes")
        db = self._db
        try:
            with transaction(db):
                new: dict[bytes, Item] = {}
                for digest, item in zip(digests, batch, strict=True):
                    row = db.execute(
                        "SELECT state FROM attachments WHERE sha256 = ?", (digest,)
                    ).fetchone()
                    if row is None or row[0] == State.COMPLETE:
                        new[digest] = item
                needed = sum(len(item.data) for item in new.values())
                used, waiting = self._used()
                if used + needed > self.quota_bytes:
                    raise QuotaFull(used, self.quota_bytes, waiting, needed)
                for digest, item in new.items():
                    db.execute(
                        "INSERT INTO attachments(sha256, kind, size, data, event_seq, created_ms)"
                        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET"
                        " kind = excluded.kind, data = excluded.data, held = 0, state = 0,"
                        " event_seq = excluded.event_seq, created_ms = excluded.created_ms",
                        (digest, item.kind, len(item.data), item.data, event_seq, now_ms),
                    )
        except sqlite3.Error as exc:
            raise self._error(f"cannot store {len(batch)} attachment(s)", exc) from exc
        return digests

    def link(self, digests: Iterable[bytes], seq: int) -> int:
        """Link unlinked rows to the event record stored at outbox sequence `seq` (one
        transaction); how many were linked."""
        wanted = list(digests)
        try:
            with transaction(self._db):
                done = 0
                for digest in wanted:
                    cur = self._db.execute(
                        "UPDATE attachments SET event_seq = ? WHERE sha256 = ?"
                        " AND event_seq IS NULL",
                        (seq, digest),
                    )
                    done += cur.rowcount
        except sqlite3.Error as exc:
            raise self._error(f"cannot link attachments to record {seq}", exc) from exc
        return done

    # -- uploading ----------------------------------------------------------------------

    def pending(self) -> list[Held]:
        """Every attachment not yet complete, oldest first (linked or not: see `event_seq`)."""
        rows = self._query(
            "SELECT id, sha256, kind, size, event_seq, created_ms, held, state FROM attachments"
            " WHERE state != ? ORDER BY id",
            (State.COMPLETE,),
        )
        return [_held(r) for r in rows]

    def get(self, digest: bytes) -> Held | None:
        rows = self._query(
            "SELECT id, sha256, kind, size, event_seq, created_ms, held, state FROM attachments"
            " WHERE sha256 = ?",
            (digest,),
        )
        return _held(rows[0]) if rows else None

    def read(self, digest: bytes, offset: int, n: int) -> bytes:
        """Up to `n` bytes of the attachment from `offset` (b"" at its end). Read through
        SQLite's blob I/O: only the pages of those bytes, not the whole attachment (as
        `substr` would load it) for every chunk."""
        if offset < 0 or n < 0:
            raise ValueError(f"offset {offset}, n {n}: must not be negative")
        rows = self._query("SELECT id, length(data) FROM attachments WHERE sha256 = ?", (digest,))
        if not rows or rows[0][1] is None:
            raise StorageError(
                f"attachments {self.path}: {digest.hex()[:16]}… is not held "
                "(never stored, or already complete)"
            )
        rowid, size = rows[0]
        assert isinstance(rowid, int) and isinstance(size, int)
        start, end = min(offset, size), min(offset + n, size)
        if end <= start:
            return b""
        try:
            with self._db.blobopen("attachments", "data", rowid, readonly=True) as blob:
                blob.seek(start)
                return blob.read(end - start)
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc

    def set_held(self, digest: bytes, held: int) -> None:
        """What the center holds of it now (it may go back to 0: the center dropped it)."""
        self._write(
            "UPDATE attachments SET held = min(max(?, 0), size), state = ?"
            " WHERE sha256 = ? AND state != ?",
            (held, State.UPLOADING, digest, State.COMPLETE),
            "cannot record the upload's progress",
        )

    def complete(self, digest: bytes) -> None:
        """The center holds it all, digest checked: delete its bytes (idempotent)."""
        self._write(
            "UPDATE attachments SET data = NULL, held = size, state = ? WHERE sha256 = ?",
            (State.COMPLETE, digest),
            "cannot mark an attachment complete",
        )
        with contextlib.suppress(sqlite3.Error):  # only gives pages back; harmless to skip
            self._db.execute("PRAGMA incremental_vacuum")

    # -- accounting ---------------------------------------------------------------------

    def usage(self) -> Usage:
        try:
            used, waiting = self._used()
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return Usage(used, waiting, self.quota_bytes)

    def orphans(self, now_ms: int, older_than_ms: int = ORPHAN_AFTER_MS) -> list[Held]:
        """Rows no event record was linked to, stored at least `older_than_ms` ago."""
        rows = self._query(
            "SELECT id, sha256, kind, size, event_seq, created_ms, held, state FROM attachments"
            " WHERE event_seq IS NULL AND state != ? AND created_ms <= ? ORDER BY id",
            (State.COMPLETE, now_ms - older_than_ms),
        )
        return [_held(r) for r in rows]

    def forget(self, digests: Iterable[bytes]) -> int:
        """Delete unlinked rows whose event record was never stored (see `orphans`)."""
        wanted = list(digests)
        try:
            with transaction(self._db):
                gone = 0
                for digest in wanted:
                    cur = self._db.execute(
                        "DELETE FROM attachments WHERE sha256 = ? AND event_seq IS NULL",
                        (digest,),
                    )
                    gone += cur.rowcount
        except sqlite3.Error as exc:
            raise self._error("cannot forget attachments", exc) from exc
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA incremental_vacuum")
        return gone

    # -- helpers ------------------------------------------------------------------------

    def _used(self) -> tuple[int, int]:
        used, waiting = self._db.execute(
            "SELECT total(size), count(*) FROM attachments WHERE state != ?", (State.COMPLETE,)
        ).fetchone()
        return int(used), int(waiting)
