"""The device's own events: what it reported, what it was sent to handle, where each stands.

A member wants to see the report they made an hour ago: accepted? dispatched to whom, by
when? And a handler wants the events dispatched to them. This is a small table in
`attachments.db` (its own connection; WAL, `synchronous=FULL`), one row per event:

- a report of this device gets its row when it is stored (agent/events/report.py), found
  by its record's sequence number; the center's number is filled in by the first status;
- an event reported elsewhere gets its row from the first EVENT_STATUS naming it (this
  device is its assignee, or was relieved of it), found by the center's number.

**Status changes** come as signed EVENT_STATUS commands, carried out by
agent/commands/executor.py, which calls `apply_status` after the receipt is committed and
again, for every command answered DONE, at each start (`restore`): a kill between the two
loses nothing. So applying is idempotent and order-proof: a change is taken only when it is
newer than the row's, by (changed at, command number).

**The catalogue** comes as a CATALOGUE command; `apply_catalogue` keeps it only when its
version is higher than the one held, so a late or replayed older one changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cbor2

from agent.errors import StorageError
from agent.events.sqlitefile import SqliteFile
from agent.store.schema import transaction
from contract.cose import strict_loads
from contract.errors import RecordError
from contract.eventcommands import Catalogue, EventStatus, EventStatusCode, Invalid, read_catalogue

__all__ = ["ATTACHMENTS_DB", "MyEvent", "MyEvents", "attachments_path"]

ATTACHMENTS_DB = "attachments.db"  # beside the outbox: attachments and the device's events


def attachments_path(outbox_path: Path) -> Path:
    """The device's attachments.db, beside its outbox."""
    return outbox_path.with_name(ATTACHMENTS_DB)


TABLES = (
    """CREATE TABLE IF NOT EXISTS my_events (
    id INTEGER PRIMARY KEY,
    seq INTEGER UNIQUE,             -- the report's record sequence here (NULL: reported elsewhere)
    number INTEGER UNIQUE,          -- the center's number of the event, once a status named it
    reporter TEXT NOT NULL,
    category INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,       -- when reported (elsewhere: when this device first heard)
    note TEXT,
    photos INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL DEFAULT 0,
    assignee TEXT,
    deadline_ms INTEGER,
    text TEXT,                      -- the reason of a rejection, the result of a resolution
    merged_into INTEGER,
    changed_ms INTEGER,             -- the newest change applied, and the command that said it
    command INTEGER
)""",
    "CREATE TABLE IF NOT EXISTS my_catalogue (one INTEGER PRIMARY KEY CHECK (one = 1),"
    " version INTEGER NOT NULL, body BLOB NOT NULL)",
)
SELECT = (
    "SELECT seq, number, reporter, category, time_ms, note, photos, status, assignee,"
    " deadline_ms, text, merged_into, changed_ms FROM my_events"
)
BY_SEQ = SELECT + " WHERE seq = ?"
BY_NUMBER = SELECT + " WHERE number = ?"
NEWEST_FIRST = SELECT + " ORDER BY time_ms DESC, id DESC"


@dataclass(frozen=True, slots=True)
class MyEvent:
    seq: int | None  # this device's report: its record's sequence number
    number: int | None  # the center's number, once known
    reporter: str
    category: int
    time_ms: int
    note: str | None
    photos: int
    status: EventStatusCode
    assignee: str | None
    deadline_ms: int | None
    text: str | None
    merged_into: int | None
    changed_ms: int | None


def _event(row: Sequence[object]) -> MyEvent:
    seq, number, reporter, category, time_ms, note, photos, status, assignee, deadline, text, \
        merged, changed = row  # fmt: skip
    assert isinstance(reporter, str) and isinstance(category, int) and isinstance(time_ms, int)
    assert isinstance(photos, int) and isinstance(status, int)
    return MyEvent(
        seq=_opt_int(seq),
        number=_opt_int(number),
        reporter=reporter,
        category=category,
        time_ms=time_ms,
        note=_opt_str(note),
        photos=photos,
        status=EventStatusCode(status),
        assignee=_opt_str(assignee),
        deadline_ms=_opt_int(deadline),
        text=_opt_str(text),
        merged_into=_opt_int(merged),
        changed_ms=_opt_int(changed),
    )


def _opt_int(v: object) -> int | None:
    assert v is None or isinstance(v, int)
    return v


def _opt_str(v: object) -> str | None:
    assert v is None or isinstance(v, str)
    return v


class MyEvents(SqliteFile):
    label = "events"

    def __init__(self, path: Path, device: str) -> None:
        self.device = device
        super().__init__(path, TABLES)

    # -- what changes it ------------------------------------------------------------------

    def add_report(
        self, seq: int, category: int, time_ms: int, note: str | None, photos: int
    ) -> None:
        """This device reported an event as record `seq` (again: nothing changes)."""
        self._write(
            "INSERT INTO my_events(seq, reporter, category, time_ms, note, photos)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(seq) DO NOTHING",
            (seq, self.device, category, time_ms, note, photos),
            f"cannot add report {seq}",
        )

    def apply_status(self, command: int, st: EventStatus) -> bool:
        """One status change (EVENT_STATUS command number `command`); False when the row
        already holds this change or a newer one."""
        mine = st.reporter == self.device
        try:
            with transaction(self._db):
                row = self._db.execute(
                    "SELECT id, changed_ms, command FROM my_events WHERE number = ?"
                    " OR (? AND seq = ?) ORDER BY number IS NULL",
                    (st.event, mine, st.report_seq),
                ).fetchone()
                if row is None:
                    cur = self._db.execute(
                        "INSERT INTO my_events(seq, number, reporter, category, time_ms)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (st.report_seq if mine else None, st.event, st.reporter, st.category,
                         st.changed_ms),
                    )  # fmt: skip
                    rid = cur.lastrowid
                else:
                    rid, changed, number = row
                    if changed is not None and (changed, number) >= (st.changed_ms, command):
                        return False
                self._db.execute(
                    "UPDATE my_events SET number = ?, status = ?, assignee = ?, deadline_ms = ?,"
                    " text = ?, merged_into = ?, changed_ms = ?, command = ? WHERE id = ?",
                    (st.event, int(st.status), st.assignee, st.deadline_ms, st.text,
                     st.merged_into, st.changed_ms, command, rid),
                )  # fmt: skip
        except sqlite3.Error as exc:
            raise self._error(f"cannot record the status of event {st.event}", exc) from exc
        return True

    def apply_catalogue(self, catalogue: Catalogue) -> bool:
        """Keep `catalogue` when its version is higher than the one held; True if it was."""
        body = cbor2.dumps(catalogue.as_map())
        try:
            with transaction(self._db):
                row = self._db.execute("SELECT version FROM my_catalogue").fetchone()
                if row is not None and row[0] >= catalogue.version:
                    return False
                self._db.execute(
                    "INSERT OR REPLACE INTO my_catalogue(one, version, body) VALUES (1, ?, ?)",
                    (catalogue.version, body),
                )
        except sqlite3.Error as exc:
            raise self._error("cannot store the catalogue", exc) from exc
        return True

    # -- what it holds ----------------------------------------------------------------------

    def catalogue(self) -> Catalogue | None:
        """The newest catalogue received (None: none yet, any code is reported as given)."""
        row = self._query("SELECT body FROM my_catalogue", ())
        if not row:
            return None
        body = row[0][0]
        assert isinstance(body, bytes)
        try:
            m = strict_loads(body)
            if isinstance(m, dict):
                return read_catalogue(m)
        except (RecordError, Invalid):  # written by a version that knew more
            pass
        raise StorageError(f"events {self.path}: the stored catalogue cannot be read")

    def listed(self) -> list[MyEvent]:
        """Every event, the newest report first."""
        rows = self._query(NEWEST_FIRST, ())
        return [_event(r) for r in rows]

    def get(self, *, seq: int | None = None, number: int | None = None) -> MyEvent | None:
        rows = self._query(BY_SEQ, (seq,)) if seq is not None else self._query(BY_NUMBER, (number,))
        return _event(rows[0]) if rows else None
