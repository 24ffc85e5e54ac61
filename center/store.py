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

This module holds what every store shares (values, the `Store` protocol, `open_store`,
and `plan_device`, the pure step from a batch to its writes) and the SQLite store, the
default; `center/pgstore.py` has PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.cose import decode_sign1
from agent.errors import RecordError
from agent.records import DroppedKey, HealthKey, Record, RecordType, parse_payload
from center.chain import (
    ChainState,
    Fork,
    ForkKind,
    Gap,
    Link,
    Placement,
    Verdict,
    place,
)
from center.export import CenterDbError
from center.status import Presence, Snapshot, snapshot_of

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
    received_ms INTEGER NOT NULL
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
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v INTEGER NOT NULL
);
"""

# What `picket center status` reads, by argument of `status.snapshot_of`: small tables only.
STATUS_QUERIES = {
    "chains": "SELECT device, records, last_seq, last_boot, last_hash, last_received_ms, "
    "depth, depth_time_ms FROM chains",
    "gaps": "SELECT device, first_seq, last_seq, below, above FROM gaps ORDER BY device, first_seq",
    "forks": "SELECT device, count(*) FROM forks GROUP BY device",
    "dropped": "SELECT device, first_seq, last_seq FROM dropped",
    "presence": "SELECT device, state, state_ms FROM presence",
    "refused": "SELECT reason, count(*) FROM refused GROUP BY reason",
}

# Set once every device with records has a `chains` row: a database begun by a center that
# predates chain state gets them all in one pass when a current center first opens it.
CHAINS_COMPLETE = "chains_complete"


class StoreError(Exception):
    """The database failed (locked too long, disk full, connection lost): nothing of the
    batch was committed, so nothing was acknowledged; the device will send it again."""


@dataclass(frozen=True, slots=True)
class RefusedItem:
    device: str | None
    seq: int | None
    reason: str
    detail: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Saved:
    """What one `save` did to each record, in order (every one is durable now), and the
    forks it found. CONFLICT records went to `refused` with reason FORK."""

    verdicts: tuple[Verdict, ...]
    forks: tuple[Fork, ...] = ()

    @property
    def fresh(self) -> list[bool]:
        return [v is Verdict.NEW for v in self.verdicts]


class Store(Protocol):
    def save(
        self,
        records: Sequence[Record],
        refused: Sequence[RefusedItem],
        now_ms: int,
        keys: Sequence[tuple[str, bytes]] = (),
    ) -> Saved: ...

    def note_presence(
        self, device: str, presence: Presence, now_ms: int, *, retained: bool = False
    ) -> None:
        """Keep the newest state message; a retained one (replayed on subscribe) only when
        it changes the state, so a reconnect does not pass for the device being seen."""

    def snapshot(self) -> Snapshot: ...

    def close(self) -> None: ...


def is_postgres(db: str | Path) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def open_store(db: str | Path, *, readonly: bool = False) -> Store:
    """A SQLite path, or a postgresql:// URL (libpq's; `?options=-csearch_path%3DS` picks
    a schema)."""
    if is_postgres(db):
        from center.pgstore import PgStore

        return PgStore(str(db), readonly=readonly)
    return CenterStore(Path(db), readonly=readonly)


# --- the pure step shared by the stores ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceWrite:
    """What one device's share of a batch writes, decided before anything is written."""

    placement: Placement
    new: tuple[tuple[Record, Link], ...]
    forked: tuple[RefusedItem, ...]
    depth: tuple[int, int] | None  # (depth, time_ms) of the newest new HEALTH record
    dropped: tuple[tuple[int, int, int], ...]  # (seq, first, last) of new DROPPED records


def chain_row(
    device: str, state: ChainState, received_ms: int | None, depth: tuple[int, int] | None
) -> tuple[object, ...]:
    """The `chains` table row of a device, in column order (both stores)."""
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
    """The `records` table rows of a device's new records, in column order (both stores)."""
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


def plan_device(
    state: ChainState, records: Sequence[Record], links: Sequence[Link], stored: Mapping[int, bytes]
) -> DeviceWrite:
    done = place(state, links, stored)
    new: list[tuple[Record, Link]] = []
    forked: list[RefusedItem] = []
    depth: tuple[int, int] | None = None
    dropped: list[tuple[int, int, int]] = []
    conflicts = iter(f for f in done.forks if f.kind is ForkKind.CONFLICT)
    for rec, link, verdict in zip(records, links, done.verdicts, strict=True):
        h = rec.header
        if verdict is Verdict.CONFLICT:
            fork = next(conflicts)
            forked.append(
                RefusedItem(
                    h.device,
                    h.seq,
                    "FORK",
                    f"another record is stored for sequence {h.seq} "
                    f"(hash {fork.expected.hex()}, this one {fork.found.hex()})",
                    rec.raw,
                )
            )
        if verdict is not Verdict.NEW:
            continue
        new.append((rec, link))
        if h.type is RecordType.HEALTH:
            d = rec.body.get(HealthKey.DEPTH)
            if isinstance(d, int) and (depth is None or h.time_ms >= depth[1]):
                depth = (d, h.time_ms)
        elif h.type is RecordType.DROPPED:
            first, last = rec.body.get(DroppedKey.FIRST_SEQ), rec.body.get(DroppedKey.LAST_SEQ)
            if isinstance(first, int) and isinstance(last, int):
                dropped.append((h.seq, first, last))
    return DeviceWrite(done, tuple(new), tuple(forked), depth, tuple(dropped))


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


def by_device(records: Iterable[Record]) -> dict[str, list[int]]:
    """Positions of the records of each device, in first-seen device order."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        out.setdefault(r.header.device, []).append(i)
    return out


def gap_changes(old: Sequence[Gap], new: Sequence[Gap]) -> tuple[list[Gap], list[Gap]]:
    """(gaps to delete, gaps to insert): usually both empty."""
    if tuple(old) == tuple(new):
        return [], []
    before, after = set(old), set(new)
    return [g for g in old if g not in after], [g for g in new if g not in before]


# --- SQLite ---------------------------------------------------------------------------------------


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
            done = db.execute("SELECT v FROM meta WHERE k = ?", (CHAINS_COMPLETE,)).fetchone()
            if done is None:
                devices = [
                    d
                    for (d,) in db.execute(
                        "SELECT DISTINCT device FROM records "
                        "WHERE device NOT IN (SELECT device FROM chains)"
                    ).fetchall()
                ]
                for device in devices:
                    self._rebuild(device)
                db.execute("INSERT INTO meta (k, v) VALUES (?, 1)", (CHAINS_COMPLETE,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _rebuild(self, device: str) -> None:
        """The chain state of a device whose records predate chain state."""
        db = self._db
        links = [
            Link(seq, boot, bytes(prev), bytes(h))
            for seq, boot, prev, h in db.execute(
                "SELECT seq, boot, prev, hash FROM records WHERE device = ? ORDER BY seq",
                (device,),
            )
        ]
        done = place(ChainState(), links, {})
        last_ms = db.execute(
            "SELECT max(received_ms) FROM records WHERE device = ?", (device,)
        ).fetchone()[0]
        self._write_chain(device, done.state, old_gaps=(), received_ms=last_ms, depth=None)
        self._write_forks(device, done.forks, last_ms or 0)
        raws = db.execute(
            "SELECT raw FROM records WHERE device = ? AND type = ?",
            (device, int(RecordType.DROPPED)),
        )
        db.executemany(
            "INSERT INTO dropped (device, seq, first_seq, last_seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(device, *d) for (raw,) in raws.fetchall() for d in dropped_ranges(bytes(raw))],
        )

    def _load_chain(self, device: str) -> ChainState | None:
        row = self._db.execute(
            "SELECT records, last_seq, last_boot, last_hash, gaps FROM chains WHERE device = ?",
            (device,),
        ).fetchone()
        if row is None:
            return None
        if not row[4]:
            return ChainState(row[0], row[1], row[2], bytes(row[3]))
        gaps = tuple(
            Gap(first, last, None if below is None else bytes(below), bytes(above))
            for first, last, below, above in self._db.execute(
                "SELECT first_seq, last_seq, below, above FROM gaps WHERE device = ? "
                "ORDER BY first_seq",
                (device,),
            )
        )
        return ChainState(row[0], row[1], row[2], bytes(row[3]), gaps)

    def _write_chain(
        self,
        device: str,
        state: ChainState,
        *,
        old_gaps: Sequence[Gap],
        received_ms: int | None,
        depth: tuple[int, int] | None,
    ) -> None:
        db = self._db
        db.execute(
            "INSERT INTO chains (device, records, last_seq, last_boot, last_hash, gaps, "
            "last_received_ms, depth, depth_time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET records = excluded.records, "
            "last_seq = excluded.last_seq, last_boot = excluded.last_boot, "
            "last_hash = excluded.last_hash, gaps = excluded.gaps, "
            "last_received_ms = max(coalesce(last_received_ms, 0), excluded.last_received_ms), "
            "depth = CASE WHEN excluded.depth_time_ms >= coalesce(depth_time_ms, -1) "
            "THEN excluded.depth ELSE depth END, "
            "depth_time_ms = CASE WHEN excluded.depth_time_ms >= coalesce(depth_time_ms, -1) "
            "THEN excluded.depth_time_ms ELSE depth_time_ms END",
            chain_row(device, state, received_ms, depth),
        )
        gone, added = gap_changes(old_gaps, state.gaps)
        db.executemany(
            "DELETE FROM gaps WHERE device = ? AND first_seq = ?", [(device, g.first) for g in gone]
        )
        db.executemany(
            "INSERT INTO gaps (device, first_seq, last_seq, below, above) VALUES (?, ?, ?, ?, ?)",
            [(device, g.first, g.last, g.below, g.above) for g in added],
        )

    def _write_forks(self, device: str, forks: Sequence[Fork], now_ms: int) -> None:
        self._db.executemany(
            "INSERT INTO forks (device, seq, kind, expected, found, found_ms) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(device, f.seq, f.kind.value, f.expected, f.found, now_ms) for f in forks],
        )

    def _save_device(self, device: str, records: Sequence[Record], now_ms: int) -> DeviceWrite:
        db = self._db
        state = self._load_chain(device) or ChainState()
        links = [Link.of(r) for r in records]
        held = sorted({link.seq for link in links if state.holds(link.seq)})
        stored: dict[int, bytes] = {}
        if held:
            marks = ",".join("?" * len(held))
            sql = f"SELECT seq, hash FROM records WHERE device = ? AND seq IN ({marks})"  # noqa: S608 (only placeholders are formatted in)
            stored = {seq: bytes(h) for seq, h in db.execute(sql, (device, *held))}
        plan = plan_device(state, records, links, stored)
        db.executemany(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device, seq) DO NOTHING",
            record_rows(device, plan, now_ms),
        )
        self._write_chain(
            device, plan.placement.state, old_gaps=state.gaps, received_ms=now_ms, depth=plan.depth
        )
        self._write_forks(device, plan.placement.forks, now_ms)
        db.executemany(
            "INSERT INTO dropped (device, seq, first_seq, last_seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(device, *d) for d in plan.dropped],
        )
        return plan

    def save(
        self,
        records: Sequence[Record],
        refused: Sequence[RefusedItem],
        now_ms: int,
        keys: Sequence[tuple[str, bytes]] = (),
    ) -> Saved:
        """Store in one transaction; say what became of each record.

        `keys` are (device, raw Ed25519 public key) pairs that verified `records`; a pair
        already known keeps its first-seen time.
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO devices (id, public_key, first_seen_ms) VALUES (?, ?, ?) "
                    "ON CONFLICT (id, public_key) DO NOTHING",
                    [(device, key, now_ms) for device, key in keys],
                )
                verdicts: list[Verdict | None] = [None] * len(records)
                forks: list[Fork] = []
                refused = list(refused)
                for device, where in by_device(records).items():
                    plan = self._save_device(device, [records[i] for i in where], now_ms)
                    for i, verdict in zip(where, plan.placement.verdicts, strict=True):
                        verdicts[i] = verdict
                    forks.extend(plan.placement.forks)
                    refused.extend(plan.forked)
                db.executemany(
                    "INSERT INTO refused (device, seq, reason, detail, raw, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(x.device, x.seq, x.reason, x.detail, x.raw, now_ms) for x in refused],
                )
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
            self._db.execute(
                "INSERT INTO presence (device, state, state_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (device) DO UPDATE SET state = excluded.state, "
                "state_ms = excluded.state_ms WHERE excluded.state_ms >= presence.state_ms "
                "AND (? OR presence.state <> excluded.state)",
                (device, presence.value, now_ms, not retained),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"center database {self.path}: {exc}") from exc

    # -- reading

    def snapshot(self) -> Snapshot:
        """Every device's chain, presence and health, and refusals by reason: one read
        transaction, so one consistent view beside a live center."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                return snapshot_of(
                    **{k: db.execute(q).fetchall() for k, q in STATUS_QUERIES.items()}
                )
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CenterDbError(f"cannot read {self.path}: {exc}") from exc
