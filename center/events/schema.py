"""The events tables, in both SQL dialects, created with the rest of the center's tables.

Each center store (center/store.py for SQLite, center/pgstore.py for PostgreSQL) calls
`create` in the transaction that sets up its own tables, so every center database has them
and tools that open one read-only find them. The spellings that differ (an integer that
numbers itself, a byte string, a 64-bit integer) are chosen by dialect; the columns are the
same, so center/events/store.py writes one set of statements for both.

- `events`: one row per event, numbered by the center (1, 2, 3, …: the Open311
  service_request_id). A device's report is unique on (device, seq), so a record delivered
  twice is one event; a request filed through Open311 has device `open311` and no seq.
- `event_changes`: every status change, with who and when (center/events/lifecycle.py).
- `event_reporters`: the devices to tell of an event's changes besides its own reporter:
  those of the events merged into it.
- `event_attachments`: the photos and notes an event record lists, by digest, with how much
  of each the center holds (`held`) and whether it is `complete` (digest checked).
"""

from __future__ import annotations

from center.tables import Dialect, Sql

__all__ = ["create"]

_TYPES = {
    Dialect.SQLITE: {"serial": "INTEGER PRIMARY KEY", "int": "INTEGER", "bytes": "BLOB"},
    Dialect.POSTGRESQL: {"serial": "BIGSERIAL PRIMARY KEY", "int": "BIGINT", "bytes": "BYTEA"},
}

_DDL = (
    """CREATE TABLE IF NOT EXISTS events (
    number {serial},
    device TEXT NOT NULL,
    seq {int},  -- the report's record sequence; NULL for a request filed through Open311
    category {int} NOT NULL,
    catalogue {int} NOT NULL DEFAULT 0,
    place {int} NOT NULL,  -- 0 the device's fix, 1 picked on the map, 2 unknown
    lat_e7 {int},
    lon_e7 {int},
    accuracy_dm {int},
    address TEXT,  -- an Open311 address_string
    reported_ms {int} NOT NULL,
    received_ms {int} NOT NULL,
    note TEXT,
    media_url TEXT,  -- an Open311 media_url, as filed
    status {int} NOT NULL,
    assignee TEXT,
    deadline_ms {int},
    merged_into {int},
    answers {int},  -- for a result report: the event it answers
    reason TEXT,
    result TEXT,
    result_report {int},
    updated_ms {int} NOT NULL,
    UNIQUE (device, seq)
)""",
    "CREATE INDEX IF NOT EXISTS events_reported ON events (reported_ms)",
    "CREATE INDEX IF NOT EXISTS events_category ON events (category, reported_ms)",
    """CREATE TABLE IF NOT EXISTS event_changes (
    event {int} NOT NULL,
    at_ms {int} NOT NULL,
    n {int} NOT NULL,  -- the change's place among the event's changes: 1, 2, …
    from_status {int} NOT NULL,
    to_status {int} NOT NULL,
    by_whom TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (event, n)
)""",
    """CREATE TABLE IF NOT EXISTS event_reporters (
    event {int} NOT NULL,
    device TEXT NOT NULL,
    PRIMARY KEY (event, device)
)""",
    """CREATE TABLE IF NOT EXISTS event_attachments (
    event {int} NOT NULL,
    sha256 {bytes} NOT NULL,
    pos {int} NOT NULL DEFAULT 0,  -- its place in the record's list of attachments
    kind {int} NOT NULL,  -- 1 a photo (JPEG), 2 a note, 3 a voice note
    size {int} NOT NULL,
    held {int} NOT NULL DEFAULT 0,
    complete {int} NOT NULL DEFAULT 0,
    path TEXT,  -- where the bytes are, when kept as a file
    data {bytes},  -- or the bytes themselves
    PRIMARY KEY (event, sha256)
)""",
    "CREATE INDEX IF NOT EXISTS event_attachments_sha ON event_attachments (sha256)",
)


def create(sql: Sql) -> None:
    """Create the events tables that do not exist yet (in the caller's transaction)."""
    types = _TYPES[sql.dialect]
    for statement in _DDL:
        sql.run(statement.format(**types))
