"""The durable outbox: the only code that touches the device's SQLite file.

One transaction both numbers a record (boot, sequence, previous hash) and stores it, so a
crash either keeps the record and its chain position or neither: sequence numbers never
repeat or go backwards. WAL with synchronous=FULL: once `append` returns, the record
survives a power cut. Records leave only through `acknowledge`, which is called with the
sequence numbers the center's acknowledgement covers. Calls are short and synchronous
(one commit per record, well under a millisecond); the asyncio drivers call them inline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import StorageError
from agent.records import ChainPosition, RecordType, chain_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    type INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    raw BLOB NOT NULL,
    refused TEXT
);
"""


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


class Outbox:
    def __init__(self, path: Path, device: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            owner = self._meta("device")
            if owner is None:
                self._set_meta_tx({"device": device, "boot": 0, "next_seq": 1, "prev": b""})
            elif owner != device:
                raise StorageError(f"{path} belongs to device {owner!r}, not {device!r}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox {path}: {exc}") from exc
        self.device = device

    def close(self) -> None:
        self._db.close()

    def _meta(self, k: str) -> object:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return None if row is None else row[0]

    def _meta_int(self, k: str) -> int:
        v = self._meta(k)
        if not isinstance(v, int):
            raise StorageError(f"{self.path}: outbox metadata {k!r} is damaged ({v!r})")
        return v

    def _meta_bytes(self, k: str) -> bytes:
        v = self._meta(k)
        if not isinstance(v, bytes):
            raise StorageError(f"{self.path}: outbox metadata {k!r} is damaged ({v!r})")
        return v

    def _set_meta_tx(self, values: dict[str, object]) -> None:
        with self._tx():
            self._set_meta(values)

    def _set_meta(self, values: dict[str, object]) -> None:
        self._db.executemany(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            list(values.items()),
        )

    def _tx(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db  # sqlite3.Connection as a context manager commits or rolls back

    @property
    def boot(self) -> int:
        return self._meta_int("boot")

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest record ever created here (0 if none)."""
        return self._meta_int("next_seq") - 1

    def begin_boot(self) -> int:
        """Count one more start of the agent; records carry it as key 3."""
        try:
            with self._tx():
                boot = self.boot + 1
                self._set_meta({"boot": boot})
        except sqlite3.Error as exc:
            raise StorageError(f"cannot record boot in {self.path}: {exc}") from exc
        return boot

    def append(self, build: Callable[[ChainPosition], Built]) -> Stored:
        """Number, sign (via `build`) and store one record atomically."""
        try:
            with self._tx():
                pos = ChainPosition(
                    boot=self.boot,
                    seq=self._meta_int("next_seq"),
                    prev=self._meta_bytes("prev"),
                )
                built = build(pos)
                self._db.execute(
                    "INSERT INTO outbox (seq, type, time_ms, raw) VALUES (?, ?, ?, ?)",
                    (pos.seq, int(built.type), built.time_ms, built.raw),
                )
                self._set_meta({"next_seq": pos.seq + 1, "prev": chain_hash(built.raw)})
        except sqlite3.Error as exc:
            raise StorageError(f"cannot store record in {self.path}: {exc}") from exc
        return Stored(pos.seq, built.type, built.raw)

    def pending(self, limit: int, skip: Iterable[int] = ()) -> list[Stored]:
        """Oldest-first records not yet acknowledged nor refused, leaving out `skip`."""
        skipped = set(skip)
        rows = self._db.execute(
            "SELECT seq, type, raw FROM outbox WHERE refused IS NULL ORDER BY seq LIMIT ?",
            (limit + len(skipped),),
        ).fetchall()
        out = [Stored(s, RecordType(t), r) for s, t, r in rows if s not in skipped]
        return out[:limit]

    def acknowledge(self, seqs: Iterable[int]) -> int:
        """Delete the records the center's acknowledgement covers; returns how many went."""
        try:
            with self._tx():
                cur = self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
                return cur.rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"cannot delete acknowledged records: {exc}") from exc

    def refuse(self, seq: int, reason: str) -> None:
        """The center refused this record: keep it for inspection, stop sending it."""
        with self._tx():
            self._db.execute("UPDATE outbox SET refused = ? WHERE seq = ?", (reason, seq))

    def stored_time(self) -> int | None:
        """The last known good time the agent wrote down (ms), if any."""
        v = self._meta("time_ms")
        return v if isinstance(v, int) else None

    def store_time(self, time_ms: int) -> None:
        """Persist the last known good time; it only ever moves forward."""
        try:
            with self._tx():
                old = self._meta("time_ms")
                if not isinstance(old, int) or time_ms > old:
                    self._set_meta({"time_ms": time_ms})
        except sqlite3.Error as exc:
            raise StorageError(f"cannot store time in {self.path}: {exc}") from exc

    def depth(self) -> int:
        return int(
            self._db.execute("SELECT count(*) FROM outbox WHERE refused IS NULL").fetchone()[0]
        )
