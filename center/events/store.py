"""The events tables, read and written the same way in SQLite and PostgreSQL.

`EventDb` (center/events/connection.py) opens the center's database; what is read and
written here is plain functions over `tables.Sql` (one connection, `?` marks), so the two
dialects share every statement; the few that differ are chosen side by side (a row lock,
which SQLite takes for the whole database instead).

An action on an event is one write transaction: the event's row is read (locked in
PostgreSQL), the pure lifecycle (center/events/lifecycle.py) decides, and its new state and
the change are written before the transaction commits. What to tell which device comes
back to the caller, who sends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from center.events import lifecycle
from center.events.connection import EventDb
from center.events.lifecycle import Change, EventState, Outcome
from center.tables import Dialect, Sql
from contract.eventcommands import EventStatusCode

__all__ = [
    "AttachmentRow",
    "EventDb",
    "EventQuery",
    "EventRow",
    "NewEvent",
    "act",
    "add_attachment",
    "add_event",
    "attachment_bytes",
    "attachments",
    "changes",
    "first_photos",
    "get_event",
    "list_events",
    "media",
    "nearby",
]

PHOTO = 1  # attachment kind: a JPEG photo (docs/events.md)

_COLUMNS = (
    "number, device, seq, category, catalogue, place, lat_e7, lon_e7, accuracy_dm, address, "
    "reported_ms, received_ms, note, media_url, status, assignee, deadline_ms, merged_into, "
    "answers, reason, result, result_report, updated_ms"
)
_SELECT = f"SELECT {_COLUMNS} FROM events"  # noqa: S608 (constant column names)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A new event: a device's report (device, seq) or an Open311 request (seq None)."""

    device: str
    seq: int | None
    category: int
    reported_ms: int
    place: int = 2  # 0 the device's fix, 1 picked on the map, 2 unknown
    lat_e7: int | None = None
    lon_e7: int | None = None
    accuracy_dm: int | None = None
    catalogue: int = 0
    note: str | None = None
    address: str | None = None
    media_url: str | None = None
    answers: int | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    number: int
    device: str
    seq: int | None
    category: int
    catalogue: int
    place: int
    lat_e7: int | None
    lon_e7: int | None
    accuracy_dm: int | None
    address: str | None
    reported_ms: int
    received_ms: int
    note: str | None
    media_url: str | None
    status: EventStatusCode
    assignee: str | None
    deadline_ms: int | None
    merged_into: int | None
    answers: int | None
    reason: str | None
    result: str | None
    result_report: int | None
    updated_ms: int
    reporters: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: Sequence[Any], reporters: tuple[str, ...] = ()) -> EventRow:
        values: list[Any] = list(row)
        values[14] = EventStatusCode(values[14])
        values.append(reporters or (values[1],))
        return cls(*values)

    def state(self) -> EventState:
        return EventState(
            self.number,
            self.status,
            self.reporters,
            self.assignee,
            self.deadline_ms,
            self.merged_into,
            self.reason,
            self.result,
            self.result_report,
            self.updated_ms,
        )

    @property
    def lat(self) -> float | None:
        return None if self.lat_e7 is None else self.lat_e7 / 1e7

    @property
    def lon(self) -> float | None:
        return None if self.lon_e7 is None else self.lon_e7 / 1e7


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    event: int
    sha256: bytes
    kind: int
    size: int
    held: int
    complete: bool
    path: str | None


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to list: each filter given narrows (None: any); newest first."""

    numbers: tuple[int, ...] | None = None
    statuses: tuple[EventStatusCode, ...] | None = None
    categories: tuple[int, ...] | None = None
    start_ms: int | None = None  # reported at or after
    end_ms: int | None = None  # reported at or before
    limit: int | None = None
    skip: frozenset[str] = field(default_factory=frozenset)  # devices left out


# --- events --------------------------------------------------------------------------------------


def add_event(sql: Sql, new: NewEvent, now_ms: int) -> tuple[int, bool]:
    """Store a new event (reported); (its number, True), or (the number it already has,
    False) for a report of (device, seq) stored before (looked up first, so that a
    repeated report does not use up a number of PostgreSQL's sequence)."""
    if new.seq is not None:
        old = sql.rows(
            "SELECT number FROM events WHERE device = ? AND seq = ?", (new.device, new.seq)
        )
        if old:
            return int(old[0][0]), False
    row = sql.rows(
        "INSERT INTO events (device, seq, category, catalogue, place, lat_e7, lon_e7, "
        "accuracy_dm, address, reported_ms, received_ms, note, media_url, status, answers, "
        "updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (device, seq) DO NOTHING RETURNING number",
        (
            new.device,
            new.seq,
            new.category,
            new.catalogue,
            new.place,
            new.lat_e7,
            new.lon_e7,
            new.accuracy_dm,
            new.address,
            new.reported_ms,
            now_ms,
            new.note,
            new.media_url,
            int(EventStatusCode.REPORTED),
            new.answers,
            now_ms,
        ),
    )
    if row:
        return int(row[0][0]), True
    old = sql.rows("SELECT number FROM events WHERE device = ? AND seq = ?", (new.device, new.seq))
    return int(old[0][0]), False


def _reporters(sql: Sql, number: int, device: str) -> tuple[str, ...]:
    more = sql.rows("SELECT device FROM event_reporters WHERE event = ? ORDER BY device", (number,))
    return tuple(dict.fromkeys([device, *(d for (d,) in more)]))


def get_event(sql: Sql, number: int, *, lock: bool = False) -> EventRow | None:
    """One event with its reporters; `lock`: for update, inside a write transaction."""
    suffix = " FOR UPDATE" if lock and sql.dialect is Dialect.POSTGRESQL else ""
    rows = sql.rows(f"{_SELECT} WHERE number = ?{suffix}", (number,))
    if not rows:
        return None
    return EventRow.of(rows[0], _reporters(sql, number, rows[0][1]))


def _in(column: str, values: Sequence[object], params: list[object]) -> str:
    params.extend(values)
    return f"{column} IN ({','.join('?' * len(values))})"


def list_events(sql: Sql, q: EventQuery, *, with_reporters: bool = True) -> list[EventRow]:
    where: list[str] = []
    params: list[object] = []
    if q.numbers is not None:
        where.append(_in("number", q.numbers or (-1,), params))
    if q.statuses is not None:
        where.append(_in("status", [int(s) for s in q.statuses] or [-1], params))
    if q.categories is not None:
        where.append(_in("category", q.categories or (-1,), params))
    if q.start_ms is not None:
        where.append("reported_ms >= ?")
        params.append(q.start_ms)
    if q.end_ms is not None:
        where.append("reported_ms <= ?")
        params.append(q.end_ms)
    if q.skip:
        where.append("NOT " + _in("device", sorted(q.skip), params))
    text = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
    text += " ORDER BY reported_ms DESC, number DESC"
    if q.limit is not None:
        text += " LIMIT ?"
        params.append(q.limit)
    rows = sql.rows(text, params)
    if not with_reporters or not rows:
        return [EventRow.of(r) for r in rows]
    extra: dict[int, list[str]] = {}
    numbers = [r[0] for r in rows]
    for i in range(0, len(numbers), 500):
        part: list[object] = []
        cond = _in("event", numbers[i : i + 500], part)
        for event, device in sql.rows(
            f"SELECT event, device FROM event_reporters WHERE {cond} ORDER BY device",  # noqa: S608 (placeholders only)
            part,
        ):
            extra.setdefault(event, []).append(device)
    return [EventRow.of(r, tuple(dict.fromkeys([r[1], *extra.get(r[0], [])]))) for r in rows]


def _write_state(sql: Sql, state: EventState) -> None:
    sql.run(
        "UPDATE events SET status = ?, assignee = ?, deadline_ms = ?, merged_into = ?, "
        "reason = ?, result = ?, result_report = ?, updated_ms = ? WHERE number = ?",
        (
            int(state.status),
            state.assignee,
            state.deadline_ms,
            state.merged_into,
            state.reason,
            state.result,
            state.result_report,
            state.updated_ms,
            state.number,
        ),
    )


def _write_change(sql: Sql, change: Change) -> None:
    sql.run(
        "INSERT INTO event_changes (event, at_ms, n, from_status, to_status, by_whom, detail) "
        "SELECT ?, ?, coalesce(max(n), 0) + 1, ?, ?, ?, ? FROM event_changes WHERE event = ?",
        (
            change.event,
            change.at_ms,
            int(change.from_),
            int(change.to),
            change.by,
            change.detail,
            change.event,
        ),
    )


def act(sql: Sql, number: int, action: lifecycle.Action, *, by: str, at_ms: int) -> Outcome:
    """Do `action` to event `number` (inside the caller's write transaction): the pure
    lifecycle decides, its new state and change are written. lifecycle.Refused when the
    event does not exist or its status does not allow the action."""
    first = number
    if isinstance(action, lifecycle.Merge):
        first = min(number, action.into)  # lock order: never a deadlock between two merges
    rows = {first: get_event(sql, first, lock=True)}
    if isinstance(action, lifecycle.Merge):
        other = action.into if first == number else number
        rows[other] = get_event(sql, other, lock=True)
    event = rows[number]
    if event is None:
        raise lifecycle.Refused(f"there is no event {number}")
    target: EventState | None = None
    if isinstance(action, lifecycle.Merge):
        found = rows[action.into]
        if found is None:
            raise lifecycle.Refused(f"there is no event {action.into} to merge into")
        target = found.state()
    out = lifecycle.apply(event.state(), action, by=by, at_ms=at_ms, target=target)
    _write_state(sql, out.event)
    for change in out.changes:
        _write_change(sql, change)
    if out.target is not None:
        target_device = rows[out.target.number]
        own = target_device.device if target_device is not None else ""
        sql.run_many(
            "INSERT INTO event_reporters (event, device) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(out.target.number, d) for d in out.target.reporters if d != own],
        )
        sql.run("UPDATE events SET updated_ms = ? WHERE number = ?", (at_ms, out.target.number))
    return out


def changes(sql: Sql, number: int) -> list[Change]:
    return [
        Change(event, EventStatusCode(f), EventStatusCode(t), by, at, detail)
        for event, f, t, by, at, detail in sql.rows(
            "SELECT event, from_status, to_status, by_whom, at_ms, detail FROM event_changes "
            "WHERE event = ? ORDER BY n",
            (number,),
        )
    ]


def nearby(sql: Sql, event: EventRow, *, radius_e7: int, window_ms: int) -> list[EventRow]:
    """The rows a duplicate of `event` may be among: same category, within a box of
    `radius_e7` (degrees × 10⁷, widened for longitude by the caller) and `window_ms`; the
    exact test is center/events/duplicates.py's."""
    if event.lat_e7 is None or event.lon_e7 is None:
        return []
    rows = sql.rows(
        f"{_SELECT} WHERE category = ? AND number <> ? AND reported_ms BETWEEN ? AND ? "
        "AND lat_e7 BETWEEN ? AND ? AND lon_e7 BETWEEN ? AND ?",
        (
            event.category,
            event.number,
            event.reported_ms - window_ms,
            event.reported_ms + window_ms,
            event.lat_e7 - radius_e7,
            event.lat_e7 + radius_e7,
            event.lon_e7 - 4 * radius_e7,
            event.lon_e7 + 4 * radius_e7,
        ),
    )
    return [EventRow.of(r, _reporters(sql, r[0], r[1])) for r in rows]


# --- attachments ---------------------------------------------------------------------------------


def add_attachment(
    sql: Sql,
    event: int,
    sha256: bytes,
    kind: int,
    size: int,
    *,
    data: bytes | None = None,
    path: str | None = None,
    pos: int = 0,
) -> None:
    """An attachment the event's record lists (at `pos` in its list); with its bytes
    (`data`, or a file at `path`) when the center holds them all, digest checked."""
    complete = data is not None or path is not None
    held = size if complete else 0
    sql.run(
        "INSERT INTO event_attachments (event, sha256, pos, kind, size, held, complete, path, "
        "data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event, sha256) DO UPDATE SET "
        "held = excluded.held, complete = excluded.complete, path = excluded.path, "
        "data = excluded.data",
        (event, sha256, pos, kind, size, held, int(complete), path, data),
    )


def attachments(sql: Sql, number: int) -> list[AttachmentRow]:
    return [
        AttachmentRow(e, bytes(s), k, size, held, bool(c), p)
        for e, s, k, size, held, c, p in sql.rows(
            "SELECT event, sha256, kind, size, held, complete, path FROM event_attachments "
            "WHERE event = ? ORDER BY pos, sha256",
            (number,),
        )
    ]


def _bytes(rows: list[tuple[Any, ...]]) -> bytes | None:
    if not rows:
        return None
    data, path = rows[0]
    if data is not None:
        return bytes(data)
    try:
        return Path(path).read_bytes()
    except (OSError, TypeError):
        return None


def media(sql: Sql, sha256: bytes) -> bytes | None:
    """The bytes of a complete photo with this digest, if the center holds one."""
    return _bytes(
        sql.rows(
            "SELECT data, path FROM event_attachments WHERE sha256 = ? AND kind = ? "
            "AND complete = 1 LIMIT 1",
            (sha256, PHOTO),
        )
    )


def attachment_bytes(sql: Sql, event: int, sha256: bytes) -> bytes | None:
    """The bytes of one complete attachment of an event."""
    return _bytes(
        sql.rows(
            "SELECT data, path FROM event_attachments WHERE event = ? AND sha256 = ? "
            "AND complete = 1",
            (event, sha256),
        )
    )


def first_photos(sql: Sql, numbers: Iterable[int]) -> dict[int, bytes]:
    """For each event that has one, the digest of its first complete photo."""
    wanted = list(numbers)
    out: dict[int, bytes] = {}
    for i in range(0, len(wanted), 500):
        params: list[object] = [PHOTO]
        cond = _in("event", wanted[i : i + 500], params)
        for event, sha in sql.rows(
            "SELECT event, sha256 FROM event_attachments WHERE kind = ? AND complete = 1 "  # noqa: S608 (placeholders only)
            f"AND {cond} ORDER BY event, pos DESC, sha256 DESC",
            params,
        ):
            out[int(event)] = bytes(sha)  # the last written per event is the first in order
    return out
