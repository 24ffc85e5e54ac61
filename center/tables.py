"""The center's tables, written once for both SQL dialects.

The SQLite store (center/store.py) and the PostgreSQL store (center/pgstore.py) keep the same
tables and make the same promises; what differs between them is how they connect, how they
take a device's write lock, and a few spellings. So everything they write (a device's records,
chain row and gaps, forks, dropped ranges; keys, refusals, state messages) and how they read a
device's chain back is written here once, against `Sql`: one connection in one `Dialect`,
statements written with `?` marks, which the PostgreSQL store turns into `%s`. The few
statements the dialects spell differently are chosen by dialect, side by side.

`complete_chains` is the one-off rebuild of chain state for a database begun by a center
that predates it: run inside the store's write transaction, it gives every device with
records and no `chains` row its chain, then marks the database complete in `meta`.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from center.batch import DeviceWrite, RefusedItem, plan_device
from center.chain import ChainState, Fork, Gap, Link, place
from center.duplicates import AckedBatch
from center.snapshot import Presence
from contract.cose import decode_sign1
from contract.errors import RecordError
from contract.records import DroppedKey, Record, RecordType, parse_payload

# Set once every device with records has a `chains` row: a database begun by a center that
# predates chain state gets them all in one pass when a current center first opens it.
CHAINS_COMPLETE = "chains_complete"

# A device's `chains` row, as `chain_of` reads it.
CHAIN_ROW = "SELECT records, last_seq, last_boot, last_hash, gaps FROM chains WHERE device = ?"


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Sql(Protocol):
    """One connection in one dialect; statements use `?` marks."""

    @property
    def dialect(self) -> Dialect: ...

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> None: ...

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Nothing at all when `rows` is empty."""


class SqliteSql:
    """`Sql` over a sqlite3 connection (the center's store and its events tables)."""

    dialect = Dialect.SQLITE

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> None:
        self.db.execute(sql, params)

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.db.executemany(sql, rows)


# The newest time a device was heard from survives an older batch: SQLite's max() of two
# values is NULL when either is, PostgreSQL's greatest() skips a NULL.
_LATEST_RECEIVED = {
    Dialect.SQLITE: "max(coalesce(c.last_received_ms, 0), excluded.last_received_ms)",
    Dialect.POSTGRESQL: "greatest(c.last_received_ms, excluded.last_received_ms)",
}
_UPSERT_CHAIN = (
    "INSERT INTO chains AS c (device, records, last_seq, last_boot, last_hash, gaps, "
    "last_received_ms, depth, depth_time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (device) DO UPDATE SET records = excluded.records, "
    "last_seq = excluded.last_seq, last_boot = excluded.last_boot, "
    "last_hash = excluded.last_hash, gaps = excluded.gaps, "
    "last_received_ms = {latest}, "
    "depth = CASE WHEN excluded.depth_time_ms >= coalesce(c.depth_time_ms, -1) "
    "THEN excluded.depth ELSE c.depth END, "
    "depth_time_ms = CASE WHEN excluded.depth_time_ms >= coalesce(c.depth_time_ms, -1) "
    "THEN excluded.depth_time_ms ELSE c.depth_time_ms END"
)
UPSERT_CHAIN = {d: _UPSERT_CHAIN.format(latest=e) for d, e in _LATEST_RECEIVED.items()}


# --- rows ----------------------------------------------------------------------------------------


def chain_row(
    device: str, state: ChainState, received_ms: int | None, depth: tuple[int, int] | None
) -> tuple[object, ...]:
    """The `chains` table row of a device, in column order."""
    return (
        device,
        state.records,
        state.last_seq,
        state.last_boot,
        state.last_hash,
        len(state.gaps),
        received_ms,
        None if depth is None else depth[0],
        None if depth is None else depth[1],
    )


def record_rows(device: str, plan: DeviceWrite, now_ms: int) -> list[tuple[object, ...]]:
    """The `records` table rows of a device's new records, in column order."""
    return [
        (
            device,
            r.header.seq,
            r.header.boot,
            int(r.header.type),
            r.header.time_ms,
            int(r.header.time_source),
            r.header.prev,
            link.hash,
            r.raw,
            now_ms,
        )
        for r, link in plan.new
    ]


def gap_changes(old: Sequence[Gap], new: Sequence[Gap]) -> tuple[list[Gap], list[Gap]]:
    """(gaps to delete, gaps to insert): usually both empty."""
    if tuple(old) == tuple(new):
        return [], []
    before, after = set(old), set(new)
    return [g for g in old if g not in after], [g for g in new if g not in before]


def dropped_ranges(raw: bytes) -> list[tuple[int, int, int]]:
    """(seq, first, last) of a stored DROPPED record, read back from its bytes."""
    try:
        rec = parse_payload(decode_sign1(raw).payload, raw)
    except RecordError:
        return []
    first, last = rec.body.get(DroppedKey.FIRST_SEQ), rec.body.get(DroppedKey.LAST_SEQ)
    if isinstance(first, int) and isinstance(last, int):
        return [(rec.header.seq, first, last)]
    return []


# --- reading a device's chain --------------------------------------------------------------------


def chain_of(sql: Sql, device: str, row: Sequence[Any]) -> ChainState:
    """A device's chain state from its `CHAIN_ROW`; its gaps are read only if it has any."""
    if not row[4]:
        return ChainState(row[0], row[1], row[2], bytes(row[3]))
    gaps = tuple(
        Gap(first, last, None if below is None else bytes(below), bytes(above))
        for first, last, below, above in sql.rows(
            "SELECT first_seq, last_seq, below, above FROM gaps WHERE device = ? "
            "ORDER BY first_seq",
            (device,),
        )
    )
    return ChainState(row[0], row[1], row[2], bytes(row[3]), gaps)


def plan_writes(sql: Sql, device: str, state: ChainState, records: Sequence[Record]) -> DeviceWrite:
    """Decide a device's writes (reads only): the stored hashes of the sequence numbers its
    chain already holds, then `plan_device`."""
    links = [Link.of(r) for r in records]
    held = sorted({link.seq for link in links if state.holds(link.seq)})
    stored: dict[int, bytes] = {}
    if held and sql.dialect is Dialect.POSTGRESQL:
        rows = sql.rows(
            "SELECT seq, hash FROM records WHERE device = ? AND seq = ANY(?)", (device, held)
        )
        stored = {seq: bytes(h) for seq, h in rows}
    elif held:
        marks = ",".join("?" * len(held))
        query = f"SELECT seq, hash FROM records WHERE device = ? AND seq IN ({marks})"  # noqa: S608 (only placeholders are formatted in)
        stored = {seq: bytes(h) for seq, h in sql.rows(query, (device, *held))}
    return plan_device(state, records, links, stored)


# --- writing -------------------------------------------------------------------------------------


def write_chain(
    sql: Sql,
    device: str,
    state: ChainState,
    *,
    old_gaps: Sequence[Gap],
    received_ms: int | None,
    depth: tuple[int, int] | None,
) -> None:
    sql.run(UPSERT_CHAIN[sql.dialect], chain_row(device, state, received_ms, depth))
    gone, added = gap_changes(old_gaps, state.gaps)
    sql.run_many(
        "DELETE FROM gaps WHERE device = ? AND first_seq = ?", [(device, g.first) for g in gone]
    )
    sql.run_many(
        "INSERT INTO gaps (device, first_seq, last_seq, below, above) VALUES (?, ?, ?, ?, ?)",
        [(device, g.first, g.last, g.below, g.above) for g in added],
    )


def write_forks(sql: Sql, device: str, forks: Sequence[Fork], now_ms: int) -> None:
    sql.run_many(
        "INSERT INTO forks (device, seq, kind, expected, found, found_ms) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(device, f.seq, f.kind.value, f.expected, f.found, now_ms) for f in forks],
    )


def write_dropped(sql: Sql, device: str, dropped: Sequence[tuple[int, int, int]]) -> None:
    sql.run_many(
        "INSERT INTO dropped (device, seq, first_seq, last_seq) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(device, *d) for d in dropped],
    )


def write_device(
    sql: Sql, device: str, old_gaps: Sequence[Gap], plan: DeviceWrite, now_ms: int
) -> None:
    """A device's share of a batch, as `plan_writes` decided it: its new records, its chain
    (which had `old_gaps`), the forks found, the ranges its DROPPED records name."""
    sql.run_many(
        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (device, seq) DO NOTHING",
        record_rows(device, plan, now_ms),
    )
    write_chain(
        sql, device, plan.placement.state, old_gaps=old_gaps, received_ms=now_ms, depth=plan.depth
    )
    write_forks(sql, device, plan.placement.forks, now_ms)
    write_dropped(sql, device, plan.dropped)


# One row per (device, batch id) acknowledged: how often, and how often with other records
# than the time before (center/duplicates.py). Same SQL in both dialects. A device's batch ids
# start from its clock's milliseconds modulo 2**31 (agent/uplink/mqtt.py), so they come round
# again every 24.8 days: an id last acknowledged longer than BATCH_MEMORY_MS ago starts afresh,
# and a device's rows that old are deleted now and then (every PRUNE_EVERY-th batch id), so
# the table holds about one day of batches, not every batch ever.
BATCH_MEMORY_MS = 24 * 3600 * 1000
PRUNE_EVERY = 256
_WRITE_BATCH = (  # the marks: the new row's five values, then three times "forgotten before"
    "INSERT INTO batches AS b (device, batch, digest, acks, reused, first_ms, last_ms) "
    "VALUES (?, ?, ?, 1, 0, ?, ?) ON CONFLICT (device, batch) DO UPDATE SET "
    "acks = CASE WHEN b.last_ms < ? THEN 1 ELSE b.acks + 1 END, "
    "reused = CASE WHEN b.last_ms < ? THEN 0 "
    "WHEN b.digest = excluded.digest THEN b.reused ELSE b.reused + 1 END, "
    "first_ms = CASE WHEN b.last_ms < ? THEN excluded.first_ms ELSE b.first_ms END, "
    "digest = excluded.digest, last_ms = excluded.last_ms"
)
_PRUNE_BATCHES = "DELETE FROM batches WHERE device = ? AND last_ms < ?"


def write_batch(sql: Sql, acked: AckedBatch | None, now_ms: int) -> None:
    """Note the batch about to be acknowledged (nothing for None: a relayed batch, which
    is not answered)."""
    if acked is None:
        return
    before = now_ms - BATCH_MEMORY_MS
    row = (acked.device, acked.batch, acked.digest, now_ms, now_ms, before, before, before)
    sql.run(_WRITE_BATCH, row)
    if acked.batch % PRUNE_EVERY == 0:
        sql.run(_PRUNE_BATCHES, (acked.device, before))


def write_keys(sql: Sql, keys: Sequence[tuple[str, bytes]], now_ms: int) -> None:
    """(device, raw Ed25519 public key) pairs that verified records; a pair already known
    keeps its first-seen time."""
    sql.run_many(
        "INSERT INTO devices (id, public_key, first_seen_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (id, public_key) DO NOTHING",
        [(device, key, now_ms) for device, key in keys],
    )


def write_refused(sql: Sql, refused: Sequence[RefusedItem], now_ms: int) -> None:
    sql.run_many(
        "INSERT INTO refused (device, seq, reason, detail, raw, received_ms, size, sha256) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [x.row(now_ms) for x in refused],
    )


# Columns added to `refused` after its first version: NULL in the rows written before.
REFUSED_ADDED = {
    "size": {Dialect.SQLITE: "INTEGER", Dialect.POSTGRESQL: "BIGINT"},
    "sha256": {Dialect.SQLITE: "BLOB", Dialect.POSTGRESQL: "BYTEA"},
}
_COLUMNS = {
    Dialect.SQLITE: "SELECT name FROM pragma_table_info('refused')",
    Dialect.POSTGRESQL: "SELECT column_name FROM information_schema.columns "
    "WHERE table_name = 'refused' AND table_schema = current_schema()",
}


def upgrade_refused(sql: Sql) -> None:
    """Add the columns of `REFUSED_ADDED` to a `refused` table made before them. Run in the
    store's write transaction, after the CREATE TABLEs; the rows already there are kept."""
    have = {str(name) for (name,) in sql.rows(_COLUMNS[sql.dialect])}
    for column, types in REFUSED_ADDED.items():
        if column not in have:
            sql.run(f"ALTER TABLE refused ADD COLUMN {column} {types[sql.dialect]}")


def write_presence(
    sql: Sql, device: str, presence: Presence, now_ms: int, *, retained: bool
) -> None:
    """Keep the newest state message; a retained one only when it changes the state."""
    sql.run(
        "INSERT INTO presence AS p (device, state, state_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (device) DO UPDATE SET state = excluded.state, "
        "state_ms = excluded.state_ms WHERE excluded.state_ms >= p.state_ms "
        "AND (? OR p.state <> excluded.state)",
        (device, presence.value, now_ms, not retained),
    )


# --- chain state for records that predate it -----------------------------------------------------


def complete_chains(sql: Sql) -> None:
    """Give each device with records and no `chains` row its chain state, once per database
    (`meta` remembers). Run inside a write transaction."""
    if sql.rows("SELECT v FROM meta WHERE k = ?", (CHAINS_COMPLETE,)):
        return
    devices = sql.rows(
        "SELECT DISTINCT device FROM records WHERE device NOT IN (SELECT device FROM chains)"
    )
    for (device,) in devices:
        rebuild_chain(sql, device)
    sql.run("INSERT INTO meta (k, v) VALUES (?, 1) ON CONFLICT DO NOTHING", (CHAINS_COMPLETE,))


def rebuild_chain(sql: Sql, device: str) -> None:
    """The chain state of a device whose records predate chain state, from its records."""
    links = [
        Link(seq, boot, bytes(prev), bytes(h))
        for seq, boot, prev, h in sql.rows(
            "SELECT seq, boot, prev, hash FROM records WHERE device = ? ORDER BY seq", (device,)
        )
    ]
    done = place(ChainState(), links, {})
    last_ms = sql.rows("SELECT max(received_ms) FROM records WHERE device = ?", (device,))[0][0]
    write_chain(sql, device, done.state, old_gaps=(), received_ms=last_ms, depth=None)
    write_forks(sql, device, done.forks, last_ms or 0)
    raws = sql.rows(
        "SELECT raw FROM records WHERE device = ? AND type = ?", (device, int(RecordType.DROPPED))
    )
    write_dropped(sql, device, [d for (raw,) in raws for d in dropped_ranges(bytes(raw))])
