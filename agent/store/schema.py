"""What the outbox file is: its tables and statements, and how its chain state reads back.

The outbox (agent/store/outbox.py) writes this layout and the recovery code
(agent/store/recovery.py) reads it, from a healthy file or a damaged one, so both take it
from here rather than from each other. The statements are constants, built once: the
append path binds them thousands of times a second. Here too are the write transaction
every change runs in, and the one place where SQLite's and the operating system's errors
about the file become `StorageError`, with "disk full" said when that is the cause
(SQLITE_FULL, ENOSPC, EDQUOT).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from agent.errors import StorageError
from contract.records import PREV_LEN, ChainPosition, chain_hash

INSERT_CHUNK = 100  # rows per INSERT statement: 500 variables, under SQLite's oldest limit
SQL_INT_MAX = 2**63 - 1  # the largest SQLite INTEGER: binding a larger int raises OverflowError


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


@functools.cache
def insert_sql(rows: int) -> str:
    """One INSERT of `rows` rows: a multi-row INSERT binds faster than executemany."""
    return INSERT + ", (?, ?, ?, ?, ?)" * (rows - 1)


def chain_in(con: sqlite3.Connection, meta: dict[str, object]) -> ChainPosition | None:
    """The chain state: the newest record if it is newer than what meta says, else meta."""
    chain = chain_from_meta(meta)
    if chain is None:
        return None
    row = con.execute("SELECT seq, raw FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None or row[0] < chain.seq:
        return chain
    if not isinstance(row[1], bytes):
        return None
    return ChainPosition(chain.boot, row[0] + 1, chain_hash(row[1]))


def chain_from_meta(meta: dict[str, object]) -> ChainPosition | None:
    """The chain state in the meta table, or None if any part is missing or malformed."""
    boot, seq, prev = meta.get("boot"), meta.get("next_seq"), meta.get("prev")
    if type(boot) is not int or type(seq) is not int or not isinstance(prev, bytes):
        return None
    if boot < 0 or seq < 1 or len(prev) not in (0, PREV_LEN):
        return None
    return ChainPosition(boot=boot, seq=seq, prev=prev)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (unless SQLite already did)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may already have rolled back (SQLITE_FULL)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def storage_error(path: Path, what: str, exc: sqlite3.Error | OSError) -> StorageError:
    """`exc`, met doing `what` to the outbox at `path`, as the agent's own error."""
    code = getattr(exc, "sqlite_errorcode", None)
    full = (isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    )
    return StorageError(f"outbox {path}: {'disk full: ' if full else ''}{what}: {exc}")
