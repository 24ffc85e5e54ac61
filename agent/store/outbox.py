"""The durable outbox: the agent's one way into the device's SQLite file.

**The promise.** Once `append` returns, the record survives a crash or a power cut: SQLite
in WAL mode with synchronous=FULL fsyncs the log before it reports the commit. One
transaction numbers a record (boot, sequence, previous hash), stores it and moves the chain
on, so a crash keeps both or neither, and sequence numbers never repeat or go backwards.
Records leave only through `acknowledge` (the center's acknowledgement covers them) or,
when they were appended as evictable (health telemetry), through the size cap: the oldest
are deleted and, in the same transaction, a signed DROPPED record says what went (the
policy is agent/store/eviction.py). `pending` serves alerts first, then the records that
are never evicted, then evictable ones, each oldest first.

**Where the rest is.** Opening the file, and the chain taken up or begun again after a loss,
is agent/store/opening.py; what it does when the file is damaged or lost (the sidecar that
keeps sequence numbers from repeating, damaged files moved aside, the chain resumed) is
agent/store/recovery.py and agent/store/salvage.py; the file's layout is
agent/store/schema.py; the size cap's policy agent/store/eviction.py; the table of answered
commands agent/store/answered.py. This module is the API the agent calls: numbering,
storing, serving, settling and evicting records.

**Chain state.** The newest row is the chain state: the next record takes its sequence
number + 1 and the hash of its bytes. An append therefore writes its rows and nothing else
(a bare SQLite commit writes as much; `bench/outbox.py` compares them), and the meta table
holds boot, next sequence number and previous hash only for when the newest row is gone:
every transaction that deletes records writes them. Boot, next sequence number and
previous hash are read once, when the file is opened, and replaced in memory only after a
COMMIT succeeds: a failed commit (a full disk) leaves memory where the file is.

**Full disk.** SQLITE_FULL (and ENOSPC from the sidecar) becomes
StorageError("outbox …: disk full: …"). The record in hand is not stored, everything
stored before stays readable, and once space is freed the next append takes the next
number. Calls are short and synchronous (one commit per call, well under a millisecond on
flash); the asyncio drivers call them inline.

**Commands.** `answer_command` writes a command's row (agent/store/answered.py) and its
records (its receipt, and a roll call's answer) in one transaction, so a command is answered
exactly once, even across a crash: its highest number is the replay floor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import StorageError
from agent.store import answered
from agent.store.answered import AnsweredCommand
from agent.store.eviction import evict, priority
from agent.store.opening import held_bytes, open_outbox, read_chain
from agent.store.recovery import RESERVE_BLOCK
from agent.store.schema import (
    INSERT,
    INSERT_CHUNK,
    PENDING,
    SET_CHAIN,
    SET_META,
    SQL_INT_MAX,
    Priority,
    insert_sql,
    storage_error,
    transaction,
)
from contract.fix import TimeSource
from contract.records import ChainPosition, Eviction, RecordType, build, chain_hash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = ["AnsweredCommand", "Builder", "Built", "EvictionBuilder", "Outbox", "Stored", "signed"]

log = logging.getLogger(__name__)


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


Builder = Callable[[ChainPosition], Built]
EvictionBuilder = Callable[[ChainPosition, Eviction], Built]


def signed(
    key: Ed25519PrivateKey,
    device: str,
    rtype: RecordType,
    *,
    time_ms: int,
    source: TimeSource,
    body: Mapping[int, object],
) -> Builder:
    """The builder of one record: signed by `key` once the outbox has numbered it."""

    def make(pos: ChainPosition) -> Built:
        raw = build(
            key,
            device=device,
            chain=pos,
            rtype=rtype,
            time_ms=time_ms,
            time_source=source,
            body=body,
        )
        return Built(rtype, time_ms, raw)

    return make


class Outbox:
    def __init__(
        self,
        path: Path,
        device: str,
        *,
        cap_bytes: int | None = None,
        on_evict: EvictionBuilder | None = None,
        keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        """`keys`: the device's public record keys, which prove records found in the bytes
        of a damaged file (agent/store/salvage.py); without them only SQLite's rows are."""
        if cap_bytes is not None and on_evict is None:
            raise ValueError("a size cap needs on_evict: every eviction leaves a DROPPED record")
        self.path = path
        self.device = device
        self.cap_bytes = cap_bytes
        self.evicted = 0  # records removed by the cap since this outbox was opened
        self._on_evict = on_evict
        self._cap_warned = False
        opened = open_outbox(path, device, tuple(keys))
        self.recovered_from = opened.recovered_from  # the damaged file records came back from
        self.salvage = opened.salvage  # records put back, not yet reported
        self._db, self._sidecar, self._held = opened.db, opened.sidecar, opened.held
        self._boot, self._next_seq, self._prev = opened.chain

    # -- helpers -------------------------------------------------------------------------

    def _error(self, what: str, exc: sqlite3.Error | OSError) -> StorageError:
        return storage_error(self.path, what, exc)

    def _tx(self) -> contextlib.AbstractContextManager[None]:
        return transaction(self._db)

    def _resync(self) -> None:
        """After a failed write, believe the file: a commit may fail after it became durable."""
        with contextlib.suppress(sqlite3.Error, StorageError):
            chain = read_chain(self._db, self.path, self.device)
            if chain is not None:
                self._boot, self._next_seq, self._prev = chain
            self._held = held_bytes(self._db)

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
        sidecar = self._sidecar
        boot = max(self._boot, sidecar.boot) + 1
        sidecar.write(boot, max(sidecar.seq_limit, self._next_seq))
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
        fact that changes exactly with the record (a dock's closed mission, a settled agenda item).
        """
        also = None if meta is None else (SET_META, (f"x:{meta[0]}", meta[1]))
        return self._append((build,), evictable, also)[0]

    def meta_int(self, key: str) -> int | None:
        """A value `append(meta=...)` wrote (None: never written)."""
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (f"x:{key}",)).fetchone()
        return row[0] if row is not None and isinstance(row[0], int) else None

    def forget_meta(self, start: str, below: str) -> None:
        """Delete the values `append(meta=...)` wrote under keys from `start` to `below`."""
        keys = (f"x:{start}", f"x:{below}")
        try:
            with self._tx():
                self._db.execute("DELETE FROM meta WHERE k >= ? AND k < ?", keys)
        except sqlite3.Error as exc:
            raise self._error("cannot forget meta values", exc) from exc

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
                        params += (seq, rtype, built.time_ms, raw, priority(rtype, evictable))
                    else:
                        params += (seq, rtype, built.time_ms, raw, kept)
                    out.append(Stored(seq, rtype, raw))
                    added += len(raw)
                    prev = chain_hash(raw)
                    seq += 1
                for i in range(0, len(params), INSERT_CHUNK * 5):
                    chunk = params[i : i + INSERT_CHUNK * 5]
                    db.execute(insert_sql(len(chunk) // 5), chunk)
                cap = self.cap_bytes
                if cap is not None and self._held + added > cap:
                    eviction = self._evict(
                        cap, first, self._held + added, ChainPosition(boot, seq, prev)
                    )
                    if eviction is not None:
                        added += len(eviction[1].raw) - eviction[0].bytes
                        prev = chain_hash(eviction[1].raw)
                        seq += 1
                sidecar = self._sidecar
                if seq > sidecar.seq_limit:
                    sidecar.write(sidecar.boot, seq + RESERVE_BLOCK)
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
        """Evict what the policy says (agent/store/eviction.py), and append what went."""
        assert self._on_evict is not None  # the constructor insists on it with a cap
        eviction = evict(self._db, cap, first, total)
        if eviction is None:
            return None
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
        wanted = [s for s in map(int, seqs) if 0 < s <= SQL_INT_MAX]  # no other number is held
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
        if not 0 < seq <= SQL_INT_MAX:
            return  # no record has that number
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
        if not 0 <= time_ms <= SQL_INT_MAX:
            log.warning("outbox %s: time %d ms not stored: out of range", self.path, time_ms)
            return
        try:
            with self._tx():
                old = self.stored_time()
                if old is None or time_ms > old:
                    self._db.execute(SET_META, ("time_ms", time_ms))
        except sqlite3.Error as exc:
            raise self._error("cannot store time", exc) from exc

    def last_command(self) -> int:
        """The highest number of a command answered here (0: none yet): the replay floor."""
        return answered.last(self._db)

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
        row = answered.row(
            AnsweredCommand(number, command_type, outcome, reason, time_ms, command, receipt)
        )
        return self._append(tuple(builds), False, row)

    def report_salvage(self, build: Builder | None) -> Stored | None:
        """Append the record that states `salvage` (a DROPPED record, agent/health.py) and
        forget the report, in one transaction; with `build` None (nothing was lost) only
        forget it. A kill before the commit leaves the report for the next start."""
        if self.salvage is None:
            return None
        forget = ("DELETE FROM meta WHERE k = 'salvage'", ())
        if build is None:
            try:
                with self._tx():
                    self._db.execute(*forget)
            except sqlite3.Error as exc:
                raise self._error("cannot forget the salvage report", exc) from exc
            self.salvage = None
            return None
        stored = self._append((build,), False, forget)[0]
        self.salvage = None
        return stored

    def answered_commands(self, command_type: int | None = None) -> list[AnsweredCommand]:
        """Commands answered here (of one type, if given), oldest number first."""
        return answered.listed(self._db, command_type)

    def depth(self) -> int:
        """How many records wait to be sent (refused ones are not counted)."""
        row = self._db.execute("SELECT count(*) FROM outbox WHERE refused IS NULL").fetchone()
        return int(row[0])
