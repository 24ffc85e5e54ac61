"""The events tables (center/events/store.py, schema.py) in SQLite and in PostgreSQL.

Every test runs once per store (the `target` fixture of tests/test_center_pg.py: a SQLite
file, and a schema of its own on the session's PostgreSQL), and holds each to the same
expected values, written here by hand: so both stores give the same results. A center
database made by the center's own store has the tables; a report delivered twice is one
event; actions are stored with who and when; a merge keeps both reporters told; the
duplicates offered are the ones the doc describes (same category, ≤ 50 m, ≤ 24 h, still
live); photos come back byte for byte.
"""

from __future__ import annotations

import hashlib

import pytest
from test_center_pg import Target, target

from center.events import duplicates, intake, lifecycle
from center.events import store as ev
from center.events.lifecycle import Refused
from center.events.store import EventDb, EventQuery, NewEvent
from contract.eventcommands import EventStatusCode as S

__all__ = ["target"]

T = 1_772_323_200_000
HOUR = 3_600_000
LAT, LON = 295_000_000, 1_063_000_000  # 29.5 N, 106.3 E (degrees × 10⁷)
M_E7 = 90  # about one metre of latitude in units of 1e-7 degree (111 km per degree)


def report(device: str, seq: int, **kw: object) -> intake.Report:
    values: dict[str, object] = {
        "time_ms": T + seq * 1000,
        "category": 1,
        "place": 0,
        "lat_e7": LAT,
        "lon_e7": LON,
        "accuracy_dm": 35,
    }
    values.update(kw)
    return intake.Report(device=device, seq=seq, **values)  # type: ignore[arg-type]


def opened(target: Target) -> EventDb:
    target.open().close()  # the center's own store makes its tables
    return EventDb(target.db)


def test_the_center_store_makes_the_events_tables(target: Target) -> None:
    target.open().close()
    for table in ("events", "event_changes", "event_reporters", "event_attachments"):
        assert target.query(f"SELECT count(*) FROM {table}") == [(0,)]  # noqa: S608


def test_a_report_delivered_twice_is_one_event(target: Target) -> None:
    db = opened(target)
    sha = hashlib.sha256(b"photo").digest()
    with db.write() as sql:
        a = intake.store_report(
            sql, report("h0001", 5, attachments=(intake.Attachment(1, sha, 5),)), T
        )
        b = intake.store_report(sql, report("h0001", 5), T + 1)
        c = intake.store_report(sql, report("h0002", 5), T + 2)
    assert (a.number, a.new, b.number, b.new, c.number, c.new) == (1, True, 1, False, 2, True)
    with db.read() as sql:
        row = ev.get_event(sql, 1)
        atts = ev.attachments(sql, 1)
    assert row is not None
    assert (row.device, row.seq, row.status, row.reported_ms, row.accuracy_dm) == (
        "h0001",
        5,
        S.REPORTED,
        T + 5000,
        35,
    )
    assert [(x.sha256, x.kind, x.size, x.held, x.complete) for x in atts] == [(sha, 1, 5, 0, False)]
    db.close()


def test_actions_are_stored_with_who_and_when(target: Target) -> None:
    db = opened(target)
    with db.write() as sql:
        n = intake.store_report(sql, report("h0001", 1), T).number
        ev.act(sql, n, lifecycle.Accept(), by="alice", at_ms=T + 10)
        ev.act(sql, n, lifecycle.Dispatch("h0007", T + HOUR), by="alice", at_ms=T + 20)
    refused = "event 1 is dispatched: it can be dispatched or started"
    with pytest.raises(Refused, match=refused), db.write() as sql:
        ev.act(sql, n, lifecycle.Close(), by="bob", at_ms=T + 30)
    with pytest.raises(Refused, match="there is no event 9"), db.write() as sql:
        ev.act(sql, 9, lifecycle.Accept(), by="bob", at_ms=T + 30)
    # the handler's result report starts and resolves it
    with db.write() as sql:
        done = intake.store_report(sql, report("h0007", 1, answers=n), T + 40)
    assert [o.event.status for o in done.outcomes] == [S.IN_PROGRESS, S.RESOLVED]
    with db.read() as sql:
        row = ev.get_event(sql, n)
        history = ev.changes(sql, n)
    assert row is not None
    assert (row.status, row.assignee, row.deadline_ms, row.result_report) == (
        S.RESOLVED,
        "h0007",
        T + HOUR,
        done.number,
    )
    assert [(c.from_, c.to, c.by, c.at_ms) for c in history] == [
        (S.REPORTED, S.ACCEPTED, "alice", T + 10),
        (S.ACCEPTED, S.DISPATCHED, "alice", T + 20),
        (S.DISPATCHED, S.IN_PROGRESS, "h0007", T + 40),
        (S.IN_PROGRESS, S.RESOLVED, "h0007", T + 40),
    ]
    db.close()


def test_a_result_report_from_another_device_moves_nothing(target: Target) -> None:
    db = opened(target)
    with db.write() as sql:
        n = intake.store_report(sql, report("h0001", 1), T).number
        ev.act(sql, n, lifecycle.Accept(), by="alice", at_ms=T + 10)
        ev.act(sql, n, lifecycle.Dispatch("h0007", T + HOUR), by="alice", at_ms=T + 20)
        done = intake.store_report(sql, report("h0008", 1, answers=n), T + 40)
        row = ev.get_event(sql, n)
    assert done.outcomes == () and row is not None and row.status is S.DISPATCHED
    db.close()


def test_a_merged_reporter_hears_of_every_later_change(target: Target) -> None:
    db = opened(target)
    with db.write() as sql:
        first = intake.store_report(sql, report("h0001", 1), T).number
        second = intake.store_report(sql, report("h0002", 1), T).number
        ev.act(sql, first, lifecycle.Accept(), by="op", at_ms=T + 1)
        merged = ev.act(sql, second, lifecycle.Merge(first), by="op", at_ms=T + 2)
        later = ev.act(sql, first, lifecycle.Dispatch("h0003", T + HOUR), by="op", at_ms=T + 3)
    assert set(merged.notify) == {"h0001", "h0002"}
    assert later.notify == ("h0001", "h0002", "h0003")
    with db.read() as sql:
        gone = ev.get_event(sql, second)
        listed = ev.list_events(sql, EventQuery(numbers=(first, second)))
    assert gone is not None and (gone.status, gone.merged_into) == (S.MERGED, first)
    assert {r.number: r.reporters for r in listed} == {
        first: ("h0001", "h0002"),
        second: ("h0002",),
    }
    db.close()


def test_duplicates_are_offered_as_the_doc_says(target: Target) -> None:
    db = opened(target)
    with db.write() as sql:
        base = intake.store_report(sql, report("h0001", 1), T).number
        near = intake.store_report(sql, report("h0002", 1, lat_e7=LAT + 30 * M_E7), T).number
        far = intake.store_report(sql, report("h0003", 1, lat_e7=LAT + 80 * M_E7), T).number
        other = intake.store_report(sql, report("h0004", 1, category=2), T).number
        late = intake.store_report(sql, report("h0005", 1, time_ms=T + 25 * HOUR), T).number
        day = intake.store_report(sql, report("h0006", 1, time_ms=T - 23 * HOUR), T).number
        shut = intake.store_report(sql, report("h0007", 1), T).number
        ev.act(sql, shut, lifecycle.Reject("wrong"), by="op", at_ms=T)
        nowhere = intake.store_report(
            sql, report("h0008", 1, place=2, lat_e7=None, lon_e7=None), T
        ).number
        row = ev.get_event(sql, base)
        assert row is not None
        found = duplicates.find(sql, row)
    assert [d.number for d, _ in found] == [day, near]  # nearest first
    assert found[0][1] < 1 and 29 < found[1][1] < 31
    assert {far, other, late, shut, nowhere}.isdisjoint({d.number for d, _ in found})
    db.close()


def test_lists_filter_and_photos_come_back(target: Target) -> None:
    db = opened(target)
    photo = b"\xff\xd8\xff\xe0 a jpeg of sorts \xff\xd9"
    sha = hashlib.sha256(photo).digest()
    with db.write() as sql:
        for i in range(1, 6):
            ev.add_event(sql, NewEvent("h0001", i, 1 + i % 2, T + i * HOUR), T)
        ev.add_event(sql, NewEvent("open311", None, 3, T, place=1, lat_e7=LAT, lon_e7=LON), T)
        ev.add_attachment(sql, 2, sha, 1, len(photo), data=photo)
        ev.act(sql, 3, lifecycle.Reject("no"), by="op", at_ms=T)
    with db.read() as sql:
        newest = ev.list_events(sql, EventQuery(limit=3))
        odd = ev.list_events(sql, EventQuery(categories=(2,)))
        window = ev.list_events(sql, EventQuery(start_ms=T + 2 * HOUR, end_ms=T + 4 * HOUR))
        rejected = ev.list_events(sql, EventQuery(statuses=(S.REJECTED,)))
        photos = ev.first_photos(sql, [1, 2, 3])
        got = ev.media(sql, sha)
        missing = ev.media(sql, hashlib.sha256(b"other").digest())
    assert [r.number for r in newest] == [5, 4, 3]
    assert [r.number for r in odd] == [5, 3, 1]
    assert [r.number for r in window] == [4, 3, 2]
    assert [r.number for r in rejected] == [3]
    assert photos == {2: sha} and got == photo and missing is None
    db.close()
