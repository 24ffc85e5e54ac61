"""The center's PostgreSQL store (psycopg 3): the SQLite store's tables and promises.

Chosen by `--db postgresql://…`. Several center processes, on several machines, share one
database: each batch is one transaction, and a device's chain row is locked
(`SELECT … FOR UPDATE`) before its records are placed, so two workers holding batches of
the same device take turns while batches of different devices go side by side. A save
that touches several devices locks them in name order, so two saves never wait on each
other in a circle.

A lost connection (a server restart) fails the batch in hand with StoreError, which the
service answers like a broker outage: nothing was acknowledged, the device sends again,
and the next call connects afresh.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import psycopg

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
from center.tables import Dialect
from contract.records import Record

CONNECT_TIMEOUT_S = 10
RECORDS_AT_ONCE = 10_000  # rows per fetch when a status walks the records

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    device TEXT NOT NULL,
    seq BIGINT NOT NULL,
    boot BIGINT NOT NULL,
    type SMALLINT NOT NULL,
    time_ms BIGINT NOT NULL,
    time_source SMALLINT NOT NULL,
    prev BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    raw BYTEA NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS refused (
    id BIGSERIAL PRIMARY KEY,
    device TEXT,
    seq BIGINT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw BYTEA NOT NULL,
    received_ms BIGINT NOT NULL,
    size BIGINT,  -- of what was refused; raw may hold only its first bytes
    sha256 BYTEA  -- SHA-256 of what was refused
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT NOT NULL,
    public_key BYTEA NOT NULL CHECK (length(public_key) = 32),
    first_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (id, public_key)
);
CREATE TABLE IF NOT EXISTS chains (
    device TEXT PRIMARY KEY,
    records BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    last_boot BIGINT NOT NULL,
    last_hash BYTEA NOT NULL,
    gaps BIGINT NOT NULL DEFAULT 0,
    last_received_ms BIGINT,
    depth BIGINT,
    depth_time_ms BIGINT
);
CREATE TABLE IF NOT EXISTS gaps (
    device TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    below BYTEA,
    above BYTEA NOT NULL,
    PRIMARY KEY (device, first_seq)
);
CREATE TABLE IF NOT EXISTS forks (
    device TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    expected BYTEA NOT NULL,
    found BYTEA NOT NULL,
    found_ms BIGINT NOT NULL,
    PRIMARY KEY (device, seq, kind, found)
);
CREATE TABLE IF NOT EXISTS dropped (
    device TEXT NOT NULL,
    seq BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS presence (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    state_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    device TEXT NOT NULL,
    batch BIGINT NOT NULL,
    digest BYTEA NOT NULL,  -- of its records, the last time (center/duplicates.py)
    acks BIGINT NOT NULL,  -- times the center acknowledged this batch id
    reused BIGINT NOT NULL,  -- of them, with other records than the time before
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (device, batch)
);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v BIGINT NOT NULL
);
"""

# One lock for creating the schema: CREATE TABLE IF NOT EXISTS is not safe against another
# process doing the same at the same moment.
SCHEMA_LOCK = 0x70696B65  # "pike"

Conn = psycopg.Connection[tuple[Any, ...]]


def redact(url: str) -> str:
    """The URL without a password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"


@functools.cache
def _marks(sql: str) -> str:
    """A statement of center/tables.py (`?` marks) as psycopg takes it (`%s`)."""
    return sql.replace("?", "%s")


class _Pg:
    """`tables.Sql` over a psycopg connection; inside a pipeline, writes are only queued."""

    dialect = Dialect.POSTGRESQL

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(_marks(sql), params or None).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(_marks(sql), params or None)

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(_marks(sql), rows)


class PgStore:
    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self._conn: Conn | None = None
        conn = self._connect()
        if readonly:
            row = conn.execute("SELECT to_regclass('chains') IS NOT NULL").fetchone()
            if not row or not row[0]:
                self.close()
                raise CenterDbError(f"{redact(url)} holds no Picket center tables")
            return
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(SCHEMA)
                tables.upgrade_refused(_Pg(conn))
                events_schema.create(_Pg(conn))
                tables.complete_chains(_Pg(conn))
        except psycopg.Error as exc:
            self.close()
            raise CenterDbError(f"cannot set up {redact(url)}: {exc}") from exc

    def _connect(self) -> Conn:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
            except psycopg.Error as exc:
                raise CenterDbError(f"cannot connect to {redact(self.url)}: {exc}") from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing

    def _lock_chain(self, sql: _Pg, device: str) -> ChainState:
        lock = tables.CHAIN_ROW + " FOR UPDATE"
        row = sql.rows(lock, (device,))
        if not row:  # a device's first batch: make its row, or wait for another worker's
            sql.run(
                "INSERT INTO chains (device, records, last_seq, last_boot, last_hash) "
                "VALUES (?, 0, 0, 0, '') ON CONFLICT (device) DO NOTHING",
                (device,),
            )
            row = sql.rows(lock, (device,))
            assert row
        return tables.chain_of(sql, device, row[0])

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
        """As `CenterStore.save`: one transaction, committed before this returns.

        Pipelined: BEGIN goes with the first lock, and every write with the COMMIT, so a
        batch of one device costs two round trips to the server (reads first: lock each
        device's chain, in name order, and plan; then write).
        """
        try:
            conn = self._connect()
        except CenterDbError as exc:
            raise StoreError(str(exc)) from exc
        sql = _Pg(conn)
        verdicts: list[Verdict | None] = [None] * len(records)
        forks: list[Fork] = []
        refused = list(refused)
        try:
            with conn.pipeline(), conn.transaction():
                groups = by_device(records)
                plans: list[tuple[str, ChainState, DeviceWrite]] = []
                for device in sorted(groups):  # lock order: never a deadlock between workers
                    where = groups[device]
                    old = self._lock_chain(sql, device)
                    plan = tables.plan_writes(sql, device, old, [records[i] for i in where])
                    plans.append((device, old, plan))
                    for i, verdict in zip(where, plan.placement.verdicts, strict=True):
                        verdicts[i] = verdict
                    forks.extend(plan.placement.forks)
                    refused.extend(plan.forked)
                tables.write_keys(sql, keys, now_ms)
                for device, old, plan in plans:
                    tables.write_device(sql, device, old.gaps, plan, now_ms)
                    if on_new is not None and plan.new:
                        on_new(sql, [rec for rec, _link in plan.new], now_ms)
                tables.write_refused(sql, refused, now_ms)
                tables.write_batch(sql, acked, now_ms)
        except psycopg.Error as exc:
            if conn.broken:
                self.close()
            raise StoreError(f"center database {redact(self.url)}: {exc}") from exc
        return Saved(tuple(v for v in verdicts if v is not None), tuple(forks))

    def note_presence(
        self, device: str, presence: Presence, now_ms: int, *, retained: bool = False
    ) -> None:
        """Keep the newest state message; a retained one (replayed on subscribe) only when
        it changes the state, so a reconnect does not pass for the device being seen."""
        try:
            sql = _Pg(self._connect())
            tables.write_presence(sql, device, presence, now_ms, retained=retained)
        except (psycopg.Error, CenterDbError) as exc:
            if self._conn is not None and self._conn.broken:
                self.close()
            raise StoreError(f"center database {redact(self.url)}: {exc}") from exc

    # -- reading

    def snapshot(self) -> Snapshot:
        conn = self._connect()
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                rows = {k: conn.execute(q).fetchall() for k, q in STATUS_QUERIES.items()}
                have = conn.execute("SELECT to_regclass('batches') IS NOT NULL").fetchone()
                batches = conn.execute(BATCH_ROWS).fetchall() if have and have[0] else []
                # the records streamed, RECORDS_AT_ONCE rows at a time (a server-side cursor)
                with conn.cursor(name="picket_status_records") as records:
                    records.itersize = RECORDS_AT_ONCE
                    records.execute(RECORD_ROWS)
                    found = duplicates_of(records, batches)
                return snapshot_of(**rows, duplicates=found)
        except psycopg.Error as exc:
            raise CenterDbError(f"cannot read {redact(self.url)}: {exc}") from exc
