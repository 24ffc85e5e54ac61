"""The center's stores: verified records, de-duplicated on (device, sequence), with chains.

A record is inserted once; a second delivery of the same (device, seq) is a duplicate and
changes nothing. A second record with other bytes for a stored (device, seq) is a fork:
it is kept in `refused` (reason FORK) beside the first, never silently dropped. Refused
input is kept too (with the reason), so an operator can see what was sent and why it was
not accepted: nothing that reaches the center is lost.

Each public key that verified a stored record is kept beside the records (`devices`), in
the same transaction as the first record it verified: the database alone is then enough
to check its evidence (`picket center export` / `devices`), even after the fleet registry
has moved on. A re-provisioned device has one row per key, in the order first seen.

Each device's chain state (center/chain.py) lives in `chains` and `gaps` and moves on in
the same transaction as the records, under the database's write lock (SQLite's
`BEGIN IMMEDIATE`; a row lock in PostgreSQL), so several center processes can share one
database: they queue for the lock, never interleave one device's chain. `presence` holds
each device's last `online`/`offline` state message, `chains.depth` its last reported
outbox depth (HEALTH records). A store is used from one thread at a time.

This module is the SQLite store, the default. What every store shares is elsewhere: its
values, protocol and pure step in center/batch.py, its writes in center/tables.py; the
PostgreSQL store is center/pgstore.py, and center/database.py picks one by the database's name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from center import tables
from center.batch import DeviceWrite, NewRecords, RefusedItem, Saved, by_device
from center.chain import ChainState, Fork, Verdict
from center.duplicates import AckedBatch
from center.errors import CenterDbError, StoreError
from center.events import schema as events_schema
from center.snapshot import (
    BATCH_ROWS,
    RECORD_ROWS,
    STATUS_QUERIES,
    Presence,
    Snapshot,
    duplicates_of,
    snapshot_of,
)
from center.tables import SqliteSql
from contract.records import Record

BUSY_TIMEOUT_S = 30.0  # another center process holding the write lock: wait, don't fail

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot INTEGER NOT NULL,
    type INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    time_source INTEGER NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL,
    raw BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS refused (
    id INTEGER PRIMARY KEY,
    device TEXT,
    seq INTEGER,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    size INTEGER,  -- of what was refused; raw may hold only its first bytes
    sha256 BLOB  -- SHA-256 of what was refused
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT NOT NULL,
    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (id, public_key)
);
CREATE TABLE IF NOT EXISTS chains (
    device TEXT PRIMARY KEY,
    records INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    last_boot INTEGER NOT NULL,
    last_hash BLOB NOT NULL,
    gaps INTEGER NOT NULL DEFAULT 0,  -- rows in gaps: none to read when 0, the usual case
    last_received_ms INTEGER,
    depth INTEGER,
    depth_time_ms INTEGER
);
CREATE TABLE IF NOT EXISTS gaps (
    device TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    below BLOB,
    above BLOB NOT NULL,
    PRIMARY KEY (device, first_seq)
);
CREATE TABLE IF NOT EXISTS forks (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    expected BLOB NOT NULL,
    found BLOB NOT NULL,
    found_ms INTEGER NOT NULL,
    PRIMARY KEY (device, seq, kind, found)
);
CREATE TABLE IF NOT EXISTS dropped (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS presence (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    state_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    device TEXT NOT NULL,
    batch INTEGER NOT NULL,
    digest BLOB NOT NULL,  -- of its records, the last time (center/duplicates.py)
    acks INTEGER NOT NULL,  -- times the center acknowledged this batch id
    reused INTEGER NOT NULL,  -- of them, with other records than the time before
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (device, batch)
);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v INTEGER NOT NULL
);
"""


class CenterStore:
    """SQLite in WAL mode with synchronous=FULL: a COMMIT is on disk before the ack goes."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:
                if not path.is_file():
                    raise CenterDbError(f"no center database at {path}")
                self._db = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._sql = SqliteSql(self._db)
                names = {
                    r[0]
                    for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if "records" not in names or "chains" not in names:
                    self._db.close()
                    raise CenterDbError(
                        f"{path} is not a Picket center database (it has no records table)"
                        if "records" not in names
                        else f"{path} was written by an older center and has no chain state "
                        "(run `picket center run` on it once)"
                    )
                return
            # check_same_thread=False: the service opens the store on the event loop's
            # thread and uses it on its one database thread, never from two at once.
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
            self._sql = SqliteSql(self._db)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._complete_chains()
        except sqlite3.DatabaseError as exc:
            raise CenterDbError(f"cannot open center database {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # -- writing

    def _complete_chains(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            tables.upgrade_refused(self._sql)
            events_schema.create(self._sql)
            tables.complete_chains(self._sql)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _save_device(
        self, device: str, records: Sequence[Record], now_ms: int, on_new: NewRecords | None
    ) -> DeviceWrite:
        row = self._sql.rows(tables.CHAIN_ROW, (device,))
        state = tables.chain_of(self._sql, device, row[0]) if row else ChainState()
        plan = tables.plan_writes(self._sql, device, state, records)
        tables.write_device(self._sql, device, state.gaps, plan, now_ms)
        if on_new is not None and plan.new:
            on_new(self._sql, [rec for rec, _link in plan.new], now_ms)
        return plan

    def save(
        self,
        records: Sequence[Record],
        refused: Sequence[RefusedItem],
        now_ms: int,
        keys: Sequence[tuple[str, bytes]] = (),
        acked: AckedBatch | None = None,
        *,
        on_new: NewRecords | None = None,
    ) -> Saved:
        """Store in one transaction; say what became of each record.

        `keys` are (device, raw Ed25519 public key) pairs that verified `records`; a pair
        already known keeps its first-seen time. `acked`: the batch that is answered, one
        row in `batches` (center/duplicates.py). `on_new`: each device's new records, to
        write what they make (events) in the same transaction.
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                tables.write_keys(self._sql, keys, now_ms)
                verdicts: list[Verdict | None] = [None] * len(records)
                forks: list[Fork] = []
                refused = list(refused)
                for device, where in by_device(records).items():
                    plan = self._save_device(device, [records[i] for i in where], now_ms, on_new)
                    for i, verdict in zip(where, plan.placement.verdicts, strict=True):
                        verdicts[i] = verdict
                    forks.extend(plan.placement.forks)
                    refused.extend(plan.forked)
                tables.write_refused(self._sql, refused, now_ms)
                tables.write_batch(self._sql, acked, now_ms)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"center database {self.path}: {exc}") from exc
        return Saved(tuple(v for v in verdicts if v is not None), tuple(forks))

    def note_presence(
        self, device: str, presence: Presence, now_ms: int, *, retained: bool = False
    ) -> None:
        """Keep the newest state message; a retained one (replayed on subscribe) only when
        it changes the state, so a reconnect does not pass for the device being seen."""
        try:
            tables.write_presence(self._sql, device, presence, now_ms, retained=retained)
        except sqlite3.Error as exc:
            raise StoreError(f"center database {self.path}: {exc}") from exc

    # -- reading

    def _has_batches(self) -> bool:
        """False for a database only centers older than the `batches` table have written
        (opened read-only, it was never given one)."""
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batches'"
        ).fetchone()
        return found is not None

    def snapshot(self) -> Snapshot:
        """Every device's chain, presence and health, refusals by reason, and duplicates
        counted from content (one walk over the records): one read transaction, so one
        consistent view beside a live center."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                rows = {k: db.execute(q).fetchall() for k, q in STATUS_QUERIES.items()}
                batches = db.execute(BATCH_ROWS) if self._has_batches() else ()
                found = duplicates_of(db.execute(RECORD_ROWS), batches)
                return snapshot_of(**rows, duplicates=found)
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CenterDbError(f"cannot read {self.path}: {exc}") from exc
