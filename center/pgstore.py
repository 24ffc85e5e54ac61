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

from collections.abc import Sequence
from typing import Any

import psycopg

from agent.records import Record, RecordType
from center.chain import ChainState, Fork, Gap, Link, Verdict, place
from center.export import CenterDbError
from center.status import Presence, Snapshot, snapshot_of
from center.store import (
    CHAINS_COMPLETE,
    STATUS_QUERIES,
    DeviceWrite,
    RefusedItem,
    Saved,
    StoreError,
    by_device,
    chain_row,
    dropped_ranges,
    gap_changes,
    plan_device,
    record_rows,
)

CONNECT_TIMEOUT_S = 10

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
    received_ms BIGINT NOT NULL
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
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v BIGINT NOT NULL
);
"""

TABLES = ("records", "refused", "devices", "chains", "gaps", "forks", "dropped", "presence")

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
                self._complete_chains(conn)
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

    def _complete_chains(self, conn: Conn) -> None:
        if conn.execute("SELECT v FROM meta WHERE k = %s", (CHAINS_COMPLETE,)).fetchone():
            return
        devices = conn.execute(
            "SELECT DISTINCT device FROM records WHERE device NOT IN (SELECT device FROM chains)"
        ).fetchall()
        for (device,) in devices:
            links = [
                Link(seq, boot, bytes(prev), bytes(h))
                for seq, boot, prev, h in conn.execute(
                    "SELECT seq, boot, prev, hash FROM records WHERE device = %s ORDER BY seq",
                    (device,),
                )
            ]
            done = place(ChainState(), links, {})
            row = conn.execute(
                "SELECT max(received_ms) FROM records WHERE device = %s", (device,)
            ).fetchone()
            last_ms = row[0] if row else None
            self._write_chain(
                conn, device, done.state, old_gaps=(), received_ms=last_ms, depth=None
            )
            self._write_forks(conn, device, done.forks, last_ms or 0)
            raws = conn.execute(
                "SELECT raw FROM records WHERE device = %s AND type = %s",
                (device, int(RecordType.DROPPED)),
            ).fetchall()
            self._write_dropped(
                conn, device, [d for (raw,) in raws for d in dropped_ranges(bytes(raw))]
            )
        conn.execute(
            "INSERT INTO meta (k, v) VALUES (%s, 1) ON CONFLICT DO NOTHING", (CHAINS_COMPLETE,)
        )

    def _lock_chain(self, conn: Conn, device: str) -> ChainState:
        lock = (
            "SELECT records, last_seq, last_boot, last_hash, gaps FROM chains "
            "WHERE device = %s FOR UPDATE"
        )
        row = conn.execute(lock, (device,)).fetchone()
        if row is None:  # a device's first batch: make its row, or wait for another worker's
            conn.execute(
                "INSERT INTO chains (device, records, last_seq, last_boot, last_hash) "
                "VALUES (%s, 0, 0, 0, '') ON CONFLICT (device) DO NOTHING",
                (device,),
            )
            row = conn.execute(lock, (device,)).fetchone()
            assert row is not None
        if not row[4]:
            return ChainState(row[0], row[1], row[2], bytes(row[3]))
        gaps = tuple(
            Gap(first, last, None if below is None else bytes(below), bytes(above))
            for first, last, below, above in conn.execute(
                "SELECT first_seq, last_seq, below, above FROM gaps WHERE device = %s "
                "ORDER BY first_seq",
                (device,),
            )
        )
        return ChainState(row[0], row[1], row[2], bytes(row[3]), gaps)

    def _write_chain(
        self,
        conn: Conn,
        device: str,
        state: ChainState,
        *,
        old_gaps: Sequence[Gap],
        received_ms: int | None,
        depth: tuple[int, int] | None,
    ) -> None:
        conn.execute(
            "INSERT INTO chains AS c (device, records, last_seq, last_boot, last_hash, gaps, "
            "last_received_ms, depth, depth_time_ms) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (device) DO UPDATE SET records = excluded.records, "
            "last_seq = excluded.last_seq, last_boot = excluded.last_boot, "
            "last_hash = excluded.last_hash, gaps = excluded.gaps, "
            "last_received_ms = greatest(c.last_received_ms, excluded.last_received_ms), "
            "depth = CASE WHEN excluded.depth_time_ms >= coalesce(c.depth_time_ms, -1) "
            "THEN excluded.depth ELSE c.depth END, "
            "depth_time_ms = CASE WHEN excluded.depth_time_ms >= coalesce(c.depth_time_ms, -1) "
            "THEN excluded.depth_time_ms ELSE c.depth_time_ms END",
            chain_row(device, state, received_ms, depth),
        )
        gone, added = gap_changes(old_gaps, state.gaps)
        with conn.cursor() as cur:
            if gone:
                cur.executemany(
                    "DELETE FROM gaps WHERE device = %s AND first_seq = %s",
                    [(device, g.first) for g in gone],
                )
            if added:
                cur.executemany(
                    "INSERT INTO gaps (device, first_seq, last_seq, below, above) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(device, g.first, g.last, g.below, g.above) for g in added],
                )

    def _write_forks(self, conn: Conn, device: str, forks: Sequence[Fork], now_ms: int) -> None:
        if forks:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO forks (device, seq, kind, expected, found, found_ms) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(device, f.seq, f.kind.value, f.expected, f.found, now_ms) for f in forks],
                )

    def _write_dropped(
        self, conn: Conn, device: str, dropped: Sequence[tuple[int, int, int]]
    ) -> None:
        if dropped:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO dropped (device, seq, first_seq, last_seq) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(device, *d) for d in dropped],
                )

    def _plan_device(
        self, conn: Conn, device: str, records: Sequence[Record]
    ) -> tuple[ChainState, DeviceWrite]:
        """Lock the device's chain and decide its writes (reads only)."""
        state = self._lock_chain(conn, device)
        links = [Link.of(r) for r in records]
        held = sorted({link.seq for link in links if state.holds(link.seq)})
        stored: dict[int, bytes] = {}
        if held:
            stored = {
                seq: bytes(h)
                for seq, h in conn.execute(
                    "SELECT seq, hash FROM records WHERE device = %s AND seq = ANY(%s)",
                    (device, held),
                )
            }
        return state, plan_device(state, records, links, stored)

    def _write_device(
        self, conn: Conn, device: str, old: ChainState, plan: DeviceWrite, now_ms: int
    ) -> None:
        if plan.new:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO records VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (device, seq) DO NOTHING",
                    record_rows(device, plan, now_ms),
                )
        self._write_chain(
            conn,
            device,
            plan.placement.state,
            old_gaps=old.gaps,
            received_ms=now_ms,
            depth=plan.depth,
        )
        self._write_forks(conn, device, plan.placement.forks, now_ms)
        self._write_dropped(conn, device, plan.dropped)

    def save(
        self,
        records: Sequence[Record],
        refused: Sequence[RefusedItem],
        now_ms: int,
        keys: Sequence[tuple[str, bytes]] = (),
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
        verdicts: list[Verdict | None] = [None] * len(records)
        forks: list[Fork] = []
        refused = list(refused)
        try:
            with conn.pipeline(), conn.transaction():
                groups = by_device(records)
                plans = []
                for device in sorted(groups):  # lock order: never a deadlock between workers
                    where = groups[device]
                    old, plan = self._plan_device(conn, device, [records[i] for i in where])
                    plans.append((device, old, plan))
                    for i, verdict in zip(where, plan.placement.verdicts, strict=True):
                        verdicts[i] = verdict
                    forks.extend(plan.placement.forks)
                    refused.extend(plan.forked)
                with conn.cursor() as cur:
                    if keys:
                        cur.executemany(
                            "INSERT INTO devices (id, public_key, first_seen_ms) "
                            "VALUES (%s, %s, %s) ON CONFLICT (id, public_key) DO NOTHING",
                            [(device, key, now_ms) for device, key in keys],
                        )
                    for device, old, plan in plans:
                        self._write_device(conn, device, old, plan, now_ms)
                    if refused:
                        cur.executemany(
                            "INSERT INTO refused (device, seq, reason, detail, raw, received_ms) "
                            "VALUES (%s, %s, %s, %s, %s, %s)",
                            [(x.device, x.seq, x.reason, x.detail, x.raw, now_ms) for x in refused],
                        )
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
            conn = self._connect()
            conn.execute(
                "INSERT INTO presence AS p (device, state, state_ms) VALUES (%s, %s, %s) "
                "ON CONFLICT (device) DO UPDATE SET state = excluded.state, "
                "state_ms = excluded.state_ms WHERE excluded.state_ms >= p.state_ms "
                "AND (%s OR p.state <> excluded.state)",
                (device, presence.value, now_ms, not retained),
            )
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
                return snapshot_of(
                    **{k: conn.execute(q).fetchall() for k, q in STATUS_QUERIES.items()}
                )
        except psycopg.Error as exc:
            raise CenterDbError(f"cannot read {redact(self.url)}: {exc}") from exc
