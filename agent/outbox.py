"""The durable outbox: the only code that touches the device's SQLite file.

**The promise.** Once `append` returns, the record survives a crash or a power cut: SQLite
in WAL mode with synchronous=FULL fsyncs the log before it reports the commit. One
transaction numbers a record (boot, sequence, previous hash), stores it and moves the chain
on, so a crash keeps both or neither, and sequence numbers never repeat or go backwards.
Records leave only through `acknowledge` (the center's acknowledgement covers them) or,
when they were appended as evictable (health telemetry), through the size cap: the oldest
are deleted and, in the same transaction, a signed DROPPED record says what went. An
eviction frees down to 7/8 of the cap, so one DROPPED record stands for many evicted ones
rather than replacing each with a record of the same size. Check-ins, alerts, roll-call
answers and every other type are never evicted; if they alone fill the cap they are kept
and `cap_exceeded` says so. `pending` serves alerts first, then the records that are never
evicted, then evictable ones, each oldest first.

**Chain state.** The newest row is the chain state: the next record takes its sequence
number + 1 and the hash of its bytes. An append therefore writes its rows and nothing else
(a bare SQLite commit writes as much; `bench/outbox.py` compares them), and the meta table
holds boot, next sequence number and previous hash only for when the newest row is gone:
every transaction that deletes records writes them. Boot, next sequence number and
previous hash are read once, when the file is opened, and replaced in memory only after a
COMMIT succeeds: a failed commit (a full disk) leaves memory where the file is.

**Why a sidecar.** SQLite keeps the counters safe across crashes, not across the loss of
the file. A damaged database is moved aside and a new one begun; counting from 1 again
would hand the center repeated sequence numbers. NAME.reserve, a few bytes of JSON written
atomically (temp file, fsync, rename, fsync of the directory), holds the highest boot ever
begun and a sequence number no committed record has reached. It is moved RESERVE_BLOCK
ahead before the commit that would pass it (two fsyncs per 4096 records) and written at
every boot. A database begun afresh where records have been kept before starts at boot =
reserved boot + 1 and seq = the reserved mark: numbers may skip, never repeat. When the
damaged file's newest record can still be read, its hash becomes the new chain's previous
hash, so the chain links across the break; otherwise the chain restarts (prev empty) and
the log says so.

**Why quick_check.** Opening runs `PRAGMA quick_check` on a read-only connection: it reads
every page in O(N), where integrity_check also cross-checks indexes in O(N log N). A file
that fails it, is not a database, or whose chain state is not whole, is renamed with its
-wal and -shm to NAME.damaged-<UTC time> (never deleted nor written over), logged at ERROR
and named by `recovered_from`; the caller gets a working outbox, not an exception.

**Full disk.** SQLITE_FULL (and ENOSPC from the sidecar) becomes
StorageError("outbox …: disk full: …"). The record in hand is not stored, everything
stored before stays readable, and once space is freed the next append takes the next
number. Calls are short and synchronous (one commit per call, well under a millisecond on
flash); the asyncio drivers call them inline.

**Commands.** The table `commands` holds every command from the center this device has
answered (agent/cmdexec.py, docs/commands.md): its number, type, outcome and signed bytes.
`answer_command` writes that row and the command's records (its receipt, and a roll call's
answer) in one transaction, so a command is answered exactly once, even across a crash: its
highest number is the replay floor. The rest of the outbox never reads the table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import errno
import functools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import StorageError
from agent.records import PREV_LEN, ChainPosition, Eviction, RecordType, chain_hash

log = logging.getLogger(__name__)

RESERVE_BLOCK = 4096  # sequence numbers reserved per sidecar write
INSERT_CHUNK = 100  # rows per INSERT statement: 500 variables, under SQLite's oldest limit
EVICT_TO = 7 / 8  # an eviction frees down to this share of the cap
DROPPED_ALLOWANCE = 200  # bytes set aside for the DROPPED record an eviction adds
EVICTABLE_TYPES = frozenset({RecordType.HEALTH})
_CORRUPT = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class Priority(enum.IntEnum):
    """The `priority` column: the order `pending` serves records in, and who may be evicted."""

    URGENT = 0  # alerts jump the queue
    KEPT = 1  # never evicted: check-ins, missed points, suspicions, roll calls, receipts, dropped
    EVICTABLE = 2  # health telemetry, oldest first when the cap is reached


TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS commands (
        number INTEGER PRIMARY KEY,
        type INTEGER NOT NULL,
        outcome INTEGER NOT NULL,
        reason TEXT,
        time_ms INTEGER NOT NULL,
        command BLOB NOT NULL,
        receipt INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY,
        type INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,
        raw BLOB NOT NULL,
        refused TEXT,
        priority INTEGER NOT NULL DEFAULT 1
    )""",
)
# Partial indexes: a check-in (priority 1) touches neither, so it costs one row, as in raw SQLite.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS outbox_urgent ON outbox (seq) WHERE priority = 0",
    "CREATE INDEX IF NOT EXISTS outbox_evictable ON outbox (seq) WHERE priority = 2",
)
INSERT = "INSERT INTO outbox (seq, type, time_ms, raw, priority) VALUES (?, ?, ?, ?, ?)"
SET_META = "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
SET_CHAIN = (
    "INSERT INTO meta (k, v) VALUES ('next_seq', ?), ('prev', ?)"
    " ON CONFLICT (k) DO UPDATE SET v = excluded.v"
)
PENDING = (
    "SELECT seq, type, raw FROM outbox WHERE priority = 0 AND refused IS NULL ORDER BY seq LIMIT ?",
    "SELECT seq, type, raw FROM outbox WHERE priority = 1 AND refused IS NULL ORDER BY seq LIMIT ?",
    "SELECT seq, type, raw FROM outbox WHERE priority = 2 AND refused IS NULL ORDER BY seq LIMIT ?",
)


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int
    type: RecordType
    raw: bytes


@dataclass(frozen=True, slots=True)
class Built:
    """What a record builder returns: the signed bytes and what the outbox indexes."""

    type: RecordType
    time_ms: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class AnsweredCommand:
    """A row of `commands`: a command from the center this device answered."""

    number: int
    type: int
    outcome: int  # agent.records.Outcome
    reason: str | None
    time_ms: int
    command: bytes  # the signed command, as received
    receipt: int  # the sequence number of its receipt record


Builder = Callable[[ChainPosition], Built]
EvictionBuilder = Callable[[ChainPosition, Eviction], Built]


@dataclass(frozen=True, slots=True)
class Reservation:
    """The sidecar: no boot above `boot` has begun, no record reached `seq_limit`."""

    device: str
    boot: int
    seq_limit: int

    @property
    def used(self) -> bool:
        return self.boot > 0 or self.seq_limit > 1


@dataclass(frozen=True, slots=True)
class Salvage:
    """What a damaged file still tells: its counters, and its newest record's hash if readable."""

    boot: int
    seq: int
    prev: bytes | None


class Outbox:
    def __init__(
        self,
        path: Path,
        device: str,
        *,
        cap_bytes: int | None = None,
        on_evict: EvictionBuilder | None = None,
    ) -> None:
        if cap_bytes is not None and on_evict is None:
            raise ValueError("a size cap needs on_evict: every eviction leaves a DROPPED record")
        self.path = path
        self.device = device
        self.cap_bytes = cap_bytes
        self.evicted = 0  # records removed by the cap since this outbox was opened
        self.recovered_from: Path | None = None
        self._on_evict = on_evict
        self._reserve_path = path.with_name(path.name + ".reserve")
        self._cap_warned = False
        reserve = self._read_reserve()
        damage, salvaged = _inspect(path)
        if damage is not None:
            self.recovered_from = _move_aside(path)
            log.error(
                "outbox %s is damaged (%s): moved aside to %s; a new outbox begins",
                path, damage, self.recovered_from,
            )  # fmt: skip
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc
        try:
            self._prepare()
            chain = self._read_chain()
            known = chain is not None
            if chain is None:
                chain = self._begin_chain(reserve, salvaged)  # writes the sidecar first
            self._boot, self._next_seq, self._prev = chain.boot, chain.seq, chain.prev
            self._held = int(
                self._db.execute("SELECT total(length(raw)) FROM outbox").fetchone()[0]
            )
            if known:
                self._keep_reserve(reserve)
        except BaseException:
            self._db.close()
            raise

    # -- opening -----------------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._tx():
                for statement in TABLES:
                    self._db.execute(statement)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
                if "priority" not in columns:  # an outbox from before priorities
                    self._db.execute(
                        "ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 1"
                    )
                    self._db.execute(
                        "UPDATE outbox SET priority = 0 WHERE type = ?", (RecordType.ALERT,)
                    )
                for statement in INDEXES:
                    self._db.execute(statement)
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc

    def _read_chain(self) -> ChainPosition | None:
        meta = dict(self._db.execute("SELECT k, v FROM meta").fetchall())
        owner = meta.get("device")
        if owner is None:
            return None
        if owner != self.device:
            raise StorageError(f"{self.path} belongs to device {owner!r}, not {self.device!r}")
        chain = _chain_in(self._db, meta)
        if chain is None:
            raise StorageError(f"outbox {self.path}: chain state is damaged: {meta!r}")
        return chain

    def _begin_chain(self, reserve: Reservation | None, salvaged: Salvage | None) -> ChainPosition:
        """A database without chain state: brand new, or begun again after a loss."""
        if self.recovered_from is None and (reserve is None or not reserve.used):
            chain = ChainPosition(boot=0, seq=1, prev=b"")
        else:
            boot = max(reserve.boot if reserve else 0, salvaged.boot if salvaged else 0) + 1
            seq = max(reserve.seq_limit if reserve else 1, salvaged.seq if salvaged else 1)
            prev = salvaged.prev if salvaged else None
            chain = ChainPosition(boot=boot, seq=seq, prev=prev or b"")
            what = (
                "the database was damaged"
                if self.recovered_from
                else "the database is missing or empty"
            )
            link = (
                "the hash chain continues from the old file's newest record"
                if prev is not None
                else "the old file's newest record is unreadable: the chain restarts (prev empty)"
            )
            unsafe = "" if reserve else "; no sidecar either, so sequence numbers MAY REPEAT"
            log.error(
                "outbox %s: %s; continuing at boot %d, seq %d; %s%s",
                self.path, what, chain.boot, chain.seq, link, unsafe,
            )  # fmt: skip
        self._write_reserve(chain.boot, chain.seq)  # before any record can use these numbers
        try:
            with self._tx():
                self._db.executemany(
                    SET_META,
                    [
                        ("device", self.device),
                        ("boot", chain.boot),
                        ("next_seq", chain.seq),
                        ("prev", chain.prev),
                    ],
                )
        except sqlite3.Error as exc:
            raise self._error("cannot create", exc) from exc
        return chain

    def _keep_reserve(self, reserve: Reservation | None) -> None:
        """Make the sidecar cover what the database holds (it is missing on first use)."""
        if (
            reserve is not None
            and reserve.boot >= self._boot
            and reserve.seq_limit >= self._next_seq
        ):
            self._reserve_boot, self._seq_limit = reserve.boot, reserve.seq_limit
            return
        self._reserve_boot = max(self._boot, reserve.boot if reserve else 0)
        self._seq_limit = 0  # the next append writes it, if this attempt fails
        if reserve is not None:
            log.warning("outbox %s: sidecar %s was behind the database", self.path, reserve)
        try:
            self._write_reserve(self._reserve_boot, self._next_seq + RESERVE_BLOCK)
        except StorageError as exc:
            log.warning("%s", exc)

    def _read_reserve(self) -> Reservation | None:
        try:
            text = self._reserve_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("cannot read sidecar", exc) from exc
        try:
            d = json.loads(text)
            reserve = Reservation(d["device"], d["boot"], d["seq_limit"])
            if not (
                isinstance(reserve.device, str)
                and all(type(v) is int and v >= 0 for v in (reserve.boot, reserve.seq_limit))
            ):
                raise TypeError(reserve)
        except (ValueError, TypeError, KeyError) as exc:
            aside = _move_aside(self._reserve_path)
            log.error("outbox sidecar %s is unreadable (%s): moved to %s", self.path, exc, aside)
            return None
        if reserve.device != self.device:
            raise StorageError(
                f"{self._reserve_path} belongs to device {reserve.device!r}, not {self.device!r}"
            )
        return reserve

    def _write_reserve(self, boot: int, seq_limit: int) -> None:
        """Atomically replace the sidecar: temp file, fsync, rename, fsync the directory."""
        data = json.dumps({"device": self.device, "boot": boot, "seq_limit": seq_limit})
        tmp = self._reserve_path.with_name(self._reserve_path.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.write(data + "\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self._reserve_path)
            fsync_dir(self._reserve_path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error("cannot reserve sequence numbers", exc) from exc
        self._reserve_boot, self._seq_limit = boot, seq_limit

    # -- helpers -------------------------------------------------------------------------

    def _error(self, what: str, exc: sqlite3.Error | OSError) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", None)
        full = (isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL) or (
            isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        )
        return StorageError(f"outbox {self.path}: {'disk full: ' if full else ''}{what}: {exc}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may already have rolled back (SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def _resync(self) -> None:
        """After a failed write, believe the file: a commit may fail after it became durable."""
        with contextlib.suppress(sqlite3.Error, StorageError):
            chain = self._read_chain()
            if chain is not None:
                self._boot, self._next_seq, self._prev = chain.boot, chain.seq, chain.prev
            row = self._db.execute("SELECT total(length(raw)) FROM outbox").fetchone()
            self._held = int(row[0])

    # -- the interface -------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    @property
    def boot(self) -> int:
        return self._boot

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest record ever created here (0 if none)."""
        return self._next_seq - 1

    @property
    def stored_bytes(self) -> int:
        """Bytes of the records held (pending or refused): what the cap measures."""
        return self._held

    @property
    def cap_exceeded(self) -> bool:
        """More than the cap is held, and what could be evicted is too little (or nothing)."""
        return self.cap_bytes is not None and self._held > self.cap_bytes

    def begin_boot(self) -> int:
        """Count one more start of the agent; records carry it as key 3. Never repeats."""
        boot = max(self._boot, self._reserve_boot) + 1
        self._write_reserve(boot, max(self._seq_limit, self._next_seq))
        try:
            with self._tx():
                self._db.execute(SET_META, ("boot", boot))
        except sqlite3.Error as exc:
            self._resync()
            raise self._error("cannot record boot", exc) from exc
        self._boot = boot
        return boot

    def append(
        self, build: Builder, *, evictable: bool = False, meta: tuple[str, int] | None = None
    ) -> Stored:
        """Number, sign (via `build`) and store one record atomically.

        `evictable` (health records only) lets the size cap delete it, oldest first.
        `meta`: (key, value) written in the same transaction (`meta_int` reads it), for a
        fact that must change exactly when the record is stored (a dock's closed mission).
        """
        also = None if meta is None else (SET_META, (f"x:{meta[0]}", meta[1]))
        return self._append((build,), evictable, also)[0]

    def meta_int(self, key: str) -> int | None:
        """A value `append(meta=...)` wrote (None: never written)."""
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (f"x:{key}",)).fetchone()
        return row[0] if row is not None and isinstance(row[0], int) else None

    def append_many(self, builds: Iterable[Builder], *, evictable: bool = False) -> list[Stored]:
        """`append` for several records in one transaction: all are stored, or none.

        The cap is checked once, after the batch; records of the batch itself are never
        evicted by it.
        """
        return self._append(tuple(builds), evictable)

    def _append(
        self,
        builds: Sequence[Builder],
        evictable: bool,
        also: tuple[str, Sequence[object]] | None = None,
    ) -> list[Stored]:
        """`also`: one more statement for the same transaction (`answer_command`)."""
        if not builds:
            return []
        db = self._db
        boot, seq, prev = self._boot, self._next_seq, self._prev
        first = seq
        alert, kept = RecordType.ALERT, Priority.KEPT
        params: list[object] = []  # flat: one multi-row INSERT binds faster than executemany
        out: list[Stored] = []
        added = 0
        eviction: tuple[Eviction, Built] | None = None
        try:
            with self._tx():
                if also is not None:
                    db.execute(*also)
                for build in builds:  # the hot loop of a batch: every attribute lookup counts
                    built = build(ChainPosition(boot, seq, prev))
                    rtype, raw = built.type, built.raw
                    # no dict or set lookups: hashing an IntEnum calls Python code
                    if evictable or rtype is alert:
                        params += (seq, rtype, built.time_ms, raw, _priority(rtype, evictable))
                    else:
                        params += (seq, rtype, built.time_ms, raw, kept)
                    out.append(Stored(seq, rtype, raw))
                    added += len(raw)
                    prev = chain_hash(raw)
                    seq += 1
                for i in range(0, len(params), INSERT_CHUNK * 5):
                    chunk = params[i : i + INSERT_CHUNK * 5]
                    db.execute(_insert_sql(len(chunk) // 5), chunk)
                cap = self.cap_bytes
                if cap is not None and self._held + added > cap:
                    eviction = self._evict(
                        cap, first, self._held + added, ChainPosition(boot, seq, prev)
                    )
                    if eviction is not None:
                        added += len(eviction[1].raw) - eviction[0].bytes
                        prev = chain_hash(eviction[1].raw)
                        seq += 1
                if seq > self._seq_limit:
                    self._write_reserve(self._reserve_boot, seq + RESERVE_BLOCK)
        except sqlite3.Error as exc:
            self._resync()
            raise self._error("cannot store record", exc) from exc
        self._next_seq, self._prev = seq, prev
        self._held += added
        if eviction is not None:
            self.evicted += eviction[0].count
            log.info("outbox %s: evicted %s", self.path, eviction[0])
        if self.cap_exceeded:
            level = logging.DEBUG if self._cap_warned else logging.WARNING
            self._cap_warned = True
            log.log(
                level,
                "outbox %s: %d bytes held, over the cap of %d, and too little to evict",
                self.path,
                self._held,
                self.cap_bytes,
            )
        return out

    def _evict(
        self, cap: int, first: int, total: int, pos: ChainPosition
    ) -> tuple[Eviction, Built] | None:
        """Delete the oldest evictable records older than `first`, and append what went.

        It frees down to EVICT_TO of the cap, counting the DROPPED record it adds. When the
        evictable records cannot get there (records that are never evicted fill the cap),
        it evicts only if that still frees a worthwhile amount (an eighth of the cap) or
        gets back under the cap, so that DROPPED records never just replace health
        records one for one.
        """
        assert self._on_evict is not None  # the constructor insists on it with a cap
        low = int(cap * EVICT_TO)
        need = total + DROPPED_ALLOWANCE - low
        cur = self._db.execute(
            "SELECT seq, type, length(raw) FROM outbox WHERE priority = 2 AND seq < ? ORDER BY seq",
            (first,),
        )
        seqs: list[int] = []
        types: set[RecordType] = set()
        freed = 0
        for seq, rtype, size in cur:
            seqs.append(seq)
            types.add(RecordType(rtype))
            freed += size
            if freed >= need:
                break
        cur.close()
        worthwhile = freed >= cap - low + DROPPED_ALLOWANCE
        if not seqs or not (worthwhile or total - freed + DROPPED_ALLOWANCE <= cap):
            return None
        self._db.execute("DELETE FROM outbox WHERE priority = 2 AND seq <= ?", (seqs[-1],))
        eviction = Eviction(len(seqs), seqs[0], seqs[-1], freed, tuple(sorted(types)))
        built = self._on_evict(pos, eviction)
        if built.type is not RecordType.DROPPED:
            raise ValueError(f"on_evict must build a DROPPED record, not {built.type.name}")
        self._db.execute(INSERT, (pos.seq, built.type, built.time_ms, built.raw, Priority.KEPT))
        return eviction, built

    def pending(self, limit: int, skip: Iterable[int] = ()) -> list[Stored]:
        """Records not yet acknowledged nor refused, leaving out `skip`: alerts first, then
        records that are never evicted, then evictable ones, each oldest first."""
        skipped = set(skip)
        out: list[Stored] = []
        for query in PENDING:
            if len(out) >= limit:
                break
            rows = self._db.execute(query, (limit - len(out) + len(skipped),)).fetchall()
            out.extend(Stored(s, RecordType(t), r) for s, t, r in rows if s not in skipped)
        return out[:limit]

    def acknowledge(self, seqs: Iterable[int]) -> int:
        """Delete the records the center's acknowledgement covers; returns how many went."""
        wanted = [int(s) for s in seqs]
        if not wanted:
            return 0
        try:
            with self._tx():
                sizes = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))"
                    " RETURNING length(raw)",
                    (json.dumps(wanted),),
                ).fetchall()
                self._db.execute(SET_CHAIN, (self._next_seq, self._prev))  # the newest may go
        except sqlite3.Error as exc:
            self._resync()
            raise self._error("cannot delete acknowledged records", exc) from exc
        self._held -= sum(n for (n,) in sizes)
        return len(sizes)

    def refuse(self, seq: int, reason: str) -> None:
        """The center refused this record: keep it for inspection, stop sending it."""
        try:
            with self._tx():
                self._db.execute("UPDATE outbox SET refused = ? WHERE seq = ?", (reason, seq))
        except sqlite3.Error as exc:
            raise self._error("cannot mark a record refused", exc) from exc

    def stored_time(self) -> int | None:
        """The last known good time the agent wrote down (ms), if any."""
        row = self._db.execute("SELECT v FROM meta WHERE k = 'time_ms'").fetchone()
        return row[0] if row is not None and isinstance(row[0], int) else None

    def store_time(self, time_ms: int) -> None:
        """Persist the last known good time; it only ever moves forward."""
        try:
            with self._tx():
                old = self.stored_time()
                if old is None or time_ms > old:
                    self._db.execute(SET_META, ("time_ms", time_ms))
        except sqlite3.Error as exc:
            raise self._error("cannot store time", exc) from exc

    def last_command(self) -> int:
        """The highest number of a command answered here (0: none yet): the replay floor."""
        row = self._db.execute("SELECT max(number) FROM commands").fetchone()
        return int(row[0] or 0)

    def answer_command(
        self,
        *,
        number: int,
        command_type: int,
        outcome: int,
        reason: str | None,
        time_ms: int,
        command: bytes,
        builds: Sequence[Builder],
    ) -> list[Stored]:
        """Mark a command answered and append its records, the receipt last, in one
        transaction: after a crash both are durable or neither is."""
        if not builds:
            raise ValueError("a command is answered with at least its receipt")
        receipt = self._next_seq + len(builds) - 1
        row = (number, command_type, outcome, reason, time_ms, command, receipt)
        insert = "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?)"
        return self._append(tuple(builds), False, (insert, row))

    def answered_commands(self, command_type: int | None = None) -> list[AnsweredCommand]:
        """Commands answered here (of one type, if given), oldest number first."""
        sql = "SELECT number, type, outcome, reason, time_ms, command, receipt FROM commands"
        params: tuple[int, ...] = ()
        if command_type is not None:
            sql, params = sql + " WHERE type = ?", (command_type,)
        rows = self._db.execute(sql + " ORDER BY number", params).fetchall()
        return [AnsweredCommand(*row) for row in rows]

    def depth(self) -> int:
        """How many records wait to be sent (refused ones are not counted)."""
        row = self._db.execute("SELECT count(*) FROM outbox WHERE refused IS NULL").fetchone()
        return int(row[0])


def _priority(rtype: RecordType, evictable: bool) -> Priority:
    if evictable:
        if rtype not in EVICTABLE_TYPES:
            raise ValueError(f"{rtype.name} records are never evicted")
        return Priority.EVICTABLE
    return Priority.URGENT if rtype is RecordType.ALERT else Priority.KEPT


@functools.cache
def _insert_sql(rows: int) -> str:
    return INSERT + ", (?, ?, ?, ?, ?)" * (rows - 1)


def _chain_in(con: sqlite3.Connection, meta: dict[str, object]) -> ChainPosition | None:
    """The chain state: the newest record if it is newer than what meta says, else meta."""
    chain = _chain_from_meta(meta)
    if chain is None:
        return None
    row = con.execute("SELECT seq, raw FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None or row[0] < chain.seq:
        return chain
    if not isinstance(row[1], bytes):
        return None
    return ChainPosition(chain.boot, row[0] + 1, chain_hash(row[1]))


def _chain_from_meta(meta: dict[str, object]) -> ChainPosition | None:
    """The chain state in the meta table, or None if any part is missing or malformed."""
    boot, seq, prev = meta.get("boot"), meta.get("next_seq"), meta.get("prev")
    if type(boot) is not int or type(seq) is not int or not isinstance(prev, bytes):
        return None
    if boot < 0 or seq < 1 or len(prev) not in (0, PREV_LEN):
        return None
    return ChainPosition(boot=boot, seq=seq, prev=prev)


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _CORRUPT


def _inspect(path: Path) -> tuple[str | None, Salvage | None]:
    """Why the file at `path` is damaged (None: healthy or absent), and its salvaged chain.

    Read-only, so that looking changes nothing in a damaged file (no checkpoint on close).
    Errors that are not damage (a locked or unreadable file) raise: moving a good file
    aside because of them would lose it.
    """
    if not path.exists():
        orphans = [p for p in _companions(path) if p.exists()]
        return (f"log without its database: {orphans[0].name}", None) if orphans else (None, None)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"outbox {path}: cannot open: {exc}") from exc
    try:
        try:
            result = [str(r[0]) for r in con.execute("PRAGMA quick_check").fetchall()]
            damage = None if result == ["ok"] else "; ".join(result[:3])
            if damage is None:
                damage = _check_meta(con)
        except sqlite3.Error as exc:
            if not _is_corruption(exc):
                raise StorageError(f"outbox {path}: cannot check: {exc}") from exc
            damage = str(exc)
        return (None, None) if damage is None else (damage, _salvage(con))
    finally:
        con.close()


def _check_meta(con: sqlite3.Connection) -> str | None:
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables or "outbox" not in tables:
        return None if not tables or tables <= {"meta", "outbox"} else "not an outbox"
    meta = dict(con.execute("SELECT k, v FROM meta").fetchall())
    (top,) = con.execute("SELECT max(seq) FROM outbox").fetchone()
    if "device" not in meta:
        return None if top is None else "records without chain state"
    if _chain_in(con, meta) is None:
        return f"chain state malformed: {meta!r}"
    return None


def _salvage(con: sqlite3.Connection) -> Salvage | None:
    """The chain state of a damaged file, as far as it can still be read."""
    try:
        con.execute("PRAGMA writable_schema = ON")  # read past a page count that is too large
        meta = dict(con.execute("SELECT k, v FROM meta").fetchall())
    except sqlite3.Error:
        return None
    chain = _chain_from_meta(meta)
    if chain is None:
        return None
    try:
        newest = _chain_in(con, meta)
    except sqlite3.Error:  # meta alone may be behind: its prev could link to an old record
        return Salvage(chain.boot, chain.seq, None)
    return (
        Salvage(chain.boot, chain.seq, None)
        if newest is None
        else Salvage(newest.boot, newest.seq, newest.prev)
    )


def _companions(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def _move_aside(path: Path) -> Path:
    """Rename `path` (with its -wal and -shm) to PATH.damaged-<UTC time>; returns the new name."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while any(p.exists() for p in (dest, *_companions(dest))):
        dest = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    try:  # the database first: a -wal left behind is an orphan, found and moved next time
        for src, dst in zip((path, *_companions(path)), (dest, *_companions(dest)), strict=True):
            if src.exists():
                src.rename(dst)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"outbox {path}: cannot move the damaged file aside: {exc}") from exc
    return dest


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (its entry, not only the data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
