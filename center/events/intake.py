"""A device's event record, stored at the center, becomes an event.

The ingest stores an event record (type 11, docs/events.md) like any record; this is what
turns it into a row of `events`, with a row in `event_attachments` for each digest it lists
(held 0: the bytes follow by IP, center/events attachments upload). It takes plain values,
`Report` (`report_of` reads them from a verified record with contract/events.py
`parse_event`); a report delivered twice is one event.

A result report (`answers` set: a handler's "done, here is the photo") is also an event of
its own, and moves the event it answers: one that its sender was dispatched to is started
(if it was not) and resolved, with this report as the result. A result report for an event
that is not its sender's to resolve is stored and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from center.events import lifecycle
from center.events import store as events
from center.events.lifecycle import Outcome
from center.events.store import NewEvent
from center.tables import Sql
from contract.eventcommands import EventStatusCode
from contract.events import parse_event
from contract.records import Record, RecordType

__all__ = ["Attachment", "Report", "Stored", "report_of", "store_report"]


@dataclass(frozen=True, slots=True)
class Attachment:
    kind: int  # 1 a photo, 2 the note, 3 a voice note
    sha256: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Report:
    """The values of one event record: its header's device, seq and time, and its body."""

    device: str
    seq: int
    time_ms: int
    category: int
    catalogue: int = 0
    place: int = 2
    lat_e7: int | None = None
    lon_e7: int | None = None
    accuracy_dm: int | None = None
    attachments: tuple[Attachment, ...] = ()
    answers: int | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    number: int
    new: bool  # False: the same report was stored before
    outcomes: tuple[Outcome, ...] = ()  # what a result report did to the event it answers


def report_of(record: Record) -> Report:
    """The values of a verified event record (RecordError when its body is not an event's)."""
    if record.header.type is not RecordType.EVENT:
        raise ValueError(f"record {record.header.seq} is not an event record")
    body = parse_event(record.body)
    return Report(
        device=record.header.device,
        seq=record.header.seq,
        time_ms=record.header.time_ms,
        category=body.category,
        catalogue=body.catalogue,
        place=int(body.place),
        lat_e7=body.lat_e7,
        lon_e7=body.lon_e7,
        accuracy_dm=body.accuracy_dm,
        attachments=tuple(Attachment(int(a.kind), a.sha256, a.size) for a in body.attachments),
        answers=body.answers,
    )


def store_report(sql: Sql, report: Report, now_ms: int) -> Stored:
    """Store `report` as an event (inside the caller's write transaction)."""
    new = NewEvent(
        device=report.device,
        seq=report.seq,
        category=report.category,
        reported_ms=report.time_ms,
        place=report.place,
        lat_e7=report.lat_e7,
        lon_e7=report.lon_e7,
        accuracy_dm=report.accuracy_dm,
        catalogue=report.catalogue,
        answers=report.answers,
    )
    number, fresh = events.add_event(sql, new, now_ms)
    if not fresh:
        return Stored(number, False)
    for pos, a in enumerate(report.attachments):
        events.add_attachment(sql, number, a.sha256, a.kind, a.size, pos=pos)
    if report.answers is None:
        return Stored(number, True)
    return Stored(number, True, _resolve(sql, report, number, now_ms))


def _resolve(sql: Sql, report: Report, number: int, now_ms: int) -> tuple[Outcome, ...]:
    answered = events.get_event(sql, report.answers or 0)
    if answered is None or answered.assignee != report.device:
        return ()
    done: list[Outcome] = []
    by = report.device
    if answered.status is EventStatusCode.DISPATCHED:
        done.append(events.act(sql, answered.number, lifecycle.Start(), by=by, at_ms=now_ms))
    if answered.status in (EventStatusCode.DISPATCHED, EventStatusCode.IN_PROGRESS):
        result = lifecycle.Resolve(f"result report: event {number}", number)
        done.append(events.act(sql, answered.number, result, by=by, at_ms=now_ms))
    return tuple(done)
