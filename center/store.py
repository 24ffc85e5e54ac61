"""The center's SQLite store: verified records, de-duplicated on (device, sequence).

A record is inserted once; a second delivery of the same (device, seq) is a duplicate and
changes nothing. Refused input is kept too (with the reason), so an operator can see what
was sent and why it was not accepted: nothing that reaches the center is silently dropped.

Each public key that verified a stored record is kept beside the records (`devices`), in
the same transaction as the first record it verified: the database alone is then enough
to check its evidence (`picket center export` / `devices`), even after the fleet registry
has moved on. A re-provisioned device has one row per key, in the order first seen.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.records import Record, chain_hash

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
"""


@dataclass(frozen=True, slots=True)
class RefusedItem:
    device: str | None
    seq: int | None
    reason: str
    detail: str
    raw: bytes


class CenterStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(
        self,
        records: Sequence[Record],
        refused: Sequence[RefusedItem],
        now_ms: int,
        keys: Sequence[tuple[str, bytes]] = (),
    ) -> list[bool]:
        """Store in one transaction; returns per record whether it was new (not a duplicate).

        `keys` are (device, raw Ed25519 public key) pairs that verified `records`; a pair
        already known keeps its first-seen time.
        """
        fresh: list[bool] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO devices (id, public_key, first_seen_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (id, public_key) DO NOTHING",
                [(device, key, now_ms) for device, key in keys],
            )
            for r in records:
                h = r.header
                cur = self._db.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (device, seq) DO NOTHING",
                    (
                        h.device,
                        h.seq,
                        h.boot,
                        int(h.type),
                        h.time_ms,
                        int(h.time_source),
                        h.prev,
                        chain_hash(r.raw),
                        r.raw,
                        now_ms,
                    ),
                )
                fresh.append(cur.rowcount == 1)
            self._db.executemany(
                "INSERT INTO refused (device, seq, reason, detail, raw, received_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(x.device, x.seq, x.reason, x.detail, x.raw, now_ms) for x in refused],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return fresh
