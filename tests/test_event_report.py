"""Reporting an event on the device (agent/events/report.py) through a real outbox and a real
attachment store, and the device's own events (agent/events/mine.py) kept from the center's
signed commands through the real command executor.

What a member or a technician would check: the record in the outbox verifies with the
device's key and says what was reported (category, place, the digest and size of every
photo and of the note), and the bytes stored are the bytes those digests name; a full
quota, an unknown category, too many photos or a file that is not a photo refuse the report
with nothing appended anywhere; a reporter killed with SIGKILL between storing the
attachments and linking them leaves a record the next start links (or rows the next start
forgets, once old, when no record was stored); status commands show up in the device's
list, a forged one is refused, an older catalogue never replaces a newer one.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import kill_child_at
from PIL import Image

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Plan
from agent.commands.executor import CommandExecutor
from agent.events.attachstore import ORPHAN_AFTER_MS, AttachmentStore, QuotaFull
from agent.events.mine import MyEvents
from agent.events.photos import PhotoError, reencode
from agent.events.report import Picked, Reported, ReportError, reconcile, report_event
from agent.events.settings import EventsConfig
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Outbox
from contract.commands import CommandVerifier, command_payload
from contract.cose import sign1
from contract.eventcommands import Catalogue, Category, EventStatus, EventStatusCode
from contract.events import AttachmentKind, PlaceSource, parse_event
from contract.fix import Fix, TimeSource
from contract.records import Outcome, RecordType, open_record
from contract.recordschema import validate_body
from simulators.camera import SimCamera

REPO = Path(__file__).resolve().parents[1]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
CENTER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
INTRUDER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
DEVICE = "h0007"
T0 = 1_772_359_200_000  # 2026-03-01T10:00Z
NOW = Stamp(T0, TimeSource.GNSS)
SETTINGS = EventsConfig(photo_max_side=640, photo_quality=75)
CATALOGUE = Catalogue(
    2,
    (
        Category(1, "装修垃圾未清理", "Decoration rubbish not cleared", "环境卫生", "社区级"),
        Category(2, "楼道杂物堆放", "Stairwell blocked by clutter", "消防安全", "网格级"),
    ),
)


@dataclass
class Device:
    outbox: Outbox
    store: AttachmentStore
    mine: MyEvents

    def report(self, **kw: object) -> Reported:
        args: dict[str, object] = {"category": 2, "stamp": NOW, "settings": SETTINGS}
        args.update(kw)
        return report_event(
            self.outbox,
            self.store,
            KEY,
            DEVICE,
            mine=self.mine,
            **args,  # type: ignore[arg-type]
        )

    def records(self) -> list[tuple[int, RecordType]]:
        return [(s.seq, s.type) for s in self.outbox.pending(1000)]


def open_device(folder: Path, quota: int = 50_000_000) -> Device:
    outbox = Outbox(folder / "outbox.db", DEVICE)
    store = AttachmentStore(folder / "attachments.db", quota)
    return Device(outbox, store, MyEvents(store.path, DEVICE))


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Device]:
    d = open_device(tmp_path)
    yield d
    d.mine.close()
    d.store.close()
    d.outbox.close()


def photo(n: int = 0) -> bytes:
    return SimCamera(seed=3, width=1280, height=960).jpeg(n)


def test_a_report_is_a_signed_record_whose_digests_name_the_stored_bytes(dev: Device) -> None:
    note = "6号楼楼道堆满杂物, stairwell blocked"
    fix = Fix(T0 - 2_000, 29.2651234, 106.2551234, accuracy_m=4.2)
    done = dev.report(note=note, photos=[photo(0), photo(1)], place=fix)
    stored = dev.outbox.pending(10)
    assert [(s.seq, s.type) for s in stored] == [(done.seq, RecordType.EVENT)]
    record = open_record(stored[0].raw, KEY.public_key())  # the device's signature holds
    validate_body(record.header.type, record.body)  # what the center checks
    event = parse_event(record.body)
    assert (record.header.time_ms, record.header.time_source) == (T0, TimeSource.GNSS)
    assert (event.category, event.catalogue, event.place) == (2, 0, PlaceSource.FIX)
    assert (event.lat_e7, event.lon_e7, event.accuracy_dm) == (292651234, 1062551234, 42)
    kinds = [a.kind for a in event.attachments]
    assert kinds == [AttachmentKind.PHOTO, AttachmentKind.PHOTO, AttachmentKind.NOTE]
    for a in event.attachments:
        row = dev.store.get(a.sha256)
        assert row is not None and row.event_seq == done.seq and row.size == a.size
        data = dev.store.read(a.sha256, 0, a.size)
        assert hashlib.sha256(data).digest() == a.sha256 and len(data) == a.size
    assert dev.store.read(event.attachments[2].sha256, 0, 10_000) == note.encode()
    first = dev.store.read(event.attachments[0].sha256, 0, event.attachments[0].size)
    with Image.open(io.BytesIO(first)) as img:
        assert max(img.size) == 640 and not img.getexif()  # re-encoded, no metadata
    mine = dev.mine.get(seq=done.seq)
    assert mine is not None
    assert (mine.category, mine.note, mine.photos, mine.status) == (
        2, note, 2, EventStatusCode.REPORTED,
    )  # fmt: skip


def test_a_picked_place_and_no_place_are_said_as_such(dev: Device) -> None:
    dev.report(place=Picked(29.5, 106.25), note="x")
    dev.report(place=None, note="y")
    events = [parse_event(open_record(s.raw, KEY.public_key()).body) for s in dev.outbox.pending(9)]
    assert [(e.place, e.position, e.accuracy_dm) for e in events] == [
        (PlaceSource.PICKED, (29.5, 106.25), None),
        (PlaceSource.UNKNOWN, None, None),
    ]


def test_a_full_quota_refuses_the_report_before_anything_is_appended(tmp_path: Path) -> None:
    one = photo(0)
    size = reencode(one, max_side=640, quality=75, max_input_bytes=10**8).size
    d = open_device(tmp_path, quota=size + 100)  # room for one photo, not for two
    first = d.report(photos=[one])
    before_rows = d.store.pending()
    with pytest.raises(QuotaFull, match="photo storage full") as refused:
        d.report(photos=[photo(1)], note="second")
    assert "free space by letting them upload" in str(refused.value)
    assert d.records() == [(first.seq, RecordType.EVENT)]
    assert d.outbox.last_seq == first.seq
    assert d.store.pending() == before_rows
    assert [e.seq for e in d.mine.listed()] == [first.seq]


@pytest.mark.parametrize(
    ("kw", "error", "words"),
    [
        ({"category": 9, "catalogue": CATALOGUE}, ReportError, "not in catalogue version 2"),
        ({"note": "x" * 501}, ReportError, "501 characters"),
        ({"note": "   "}, ReportError, "must say something"),
        ({"photos": [b"GIF89a not really"]}, PhotoError, "photo 1"),
        ({"photos": [photo(i) for i in range(5)], "note": "n"}, ReportError, "at most 4"),
        ({"photos": [photo(0), photo(0)]}, ReportError, "same picture"),
        ({"place": Picked(91.0, 0.0)}, ReportError, "latitude"),
    ],
    ids=["category", "long-note", "empty-note", "not-an-image", "too-many", "twice", "place"],
)
def test_bad_input_is_refused_with_nothing_stored(
    dev: Device, kw: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        dev.report(**kw)
    assert dev.records() == [] and dev.outbox.last_seq == 0
    assert dev.store.pending() == [] and dev.mine.listed() == []


def test_a_category_in_the_catalogue_is_reported_against_its_version(dev: Device) -> None:
    dev.report(category=1, catalogue=CATALOGUE, note="ok")
    event = parse_event(open_record(dev.outbox.pending(1)[0].raw, KEY.public_key()).body)
    assert (event.category, event.catalogue) == (1, 2)


# --- kill -9 between the steps ------------------------------------------------------------------

CHILD = """
import os, sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}, {repo!r}]
import test_event_report as t

folder, phase = Path(sys.argv[1]), sys.argv[2]
d = t.open_device(folder)
def stall(*_a, **_k):
    os.write(1, phase.encode() + b"\\n")
    time.sleep(60)
if phase == "linking":  # the record is appended; the rows are not linked yet
    d.store.link = stall
else:  # "appending": the rows are stored; the record is not
    d.outbox.append = stall
os.write(1, b"ready\\n")
d.report(note="killed", photos=[t.photo(4)])
os.write(1, b"returned\\n")
"""


def report_and_kill(folder: Path, phase: str) -> None:
    code = CHILD.format(tests=str(REPO / "tests"), repo=str(REPO))
    kill_child_at(code, folder, phase, timeout=60)


def test_killed_after_the_record_the_next_start_links_its_attachments(tmp_path: Path) -> None:
    report_and_kill(tmp_path, "linking")
    d = open_device(tmp_path)
    [stored] = d.outbox.pending(10)
    event = parse_event(open_record(stored.raw, KEY.public_key()).body)
    assert [r.event_seq for r in d.store.pending()] == [None, None]  # the kill left them so
    assert d.mine.listed() == []
    assert reconcile(d.outbox, d.store, T0, d.mine) == (2, 0)  # young or old: linked
    rows = {r.digest: r for r in d.store.pending()}
    assert set(rows) == set(event.digests)
    assert all(r.event_seq == stored.seq for r in rows.values())
    [mine] = d.mine.listed()
    assert (mine.seq, mine.note, mine.photos) == (stored.seq, "killed", 1)
    assert reconcile(d.outbox, d.store, T0 + ORPHAN_AFTER_MS * 2, d.mine) == (0, 0)


def test_killed_before_the_record_the_rows_are_forgotten_once_old(tmp_path: Path) -> None:
    report_and_kill(tmp_path, "appending")
    d = open_device(tmp_path)
    assert d.outbox.pending(10) == [] and len(d.store.pending()) == 2
    assert reconcile(d.outbox, d.store, T0 + ORPHAN_AFTER_MS - 1, d.mine) == (0, 0)  # young
    assert len(d.store.pending()) == 2
    assert reconcile(d.outbox, d.store, T0 + ORPHAN_AFTER_MS, d.mine) == (0, 2)
    assert d.store.pending() == [] and d.store.usage().used_bytes == 0
    assert d.mine.listed() == []


# --- the device's own events, from the center's commands ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> Stamp:
        return Stamp(self.ms, TimeSource.GNSS)


def command(body: object, number: int, key: Ed25519PrivateKey = CENTER) -> bytes:
    payload = command_payload(
        target=DEVICE,
        number=number,
        issued_ms=T0,
        expires_ms=T0 + 60_000,
        body=body,  # type: ignore[arg-type]
    )
    return sign1(payload, key)


def executor(d: Device, clock: Clock) -> CommandExecutor:
    agent = DeviceAgent(DEVICE, KEY, Plan(0, (), ()), d.outbox)
    ex = CommandExecutor(agent, CommandVerifier(CENTER.public_key(), DEVICE), clock)
    ex.events = d.mine
    return ex


def status(code: EventStatusCode, seq: int, changed: int, **kw: object) -> EventStatus:
    args: dict[str, object] = {
        "event": 17, "status": code, "reporter": DEVICE, "report_seq": seq, "category": 2,
        "text": None, "assignee": None, "deadline_ms": None, "changed_ms": changed,
        "by": "center",
    }  # fmt: skip
    args.update(kw)
    return EventStatus(**args)  # type: ignore[arg-type]


def receipts(d: Device) -> list[tuple[object, object]]:
    out: list[tuple[object, object]] = []
    for s in d.outbox.pending(100):
        if s.type is RecordType.RECEIPT:
            body = open_record(s.raw, KEY.public_key()).body
            out.append((body[16], body[18]))  # command number, outcome
    return out


def test_status_commands_show_in_the_devices_list_and_survive_a_restart(tmp_path: Path) -> None:
    d = open_device(tmp_path)
    seq = d.report(note="堆物").seq
    clock = Clock()
    ex = executor(d, clock)
    deadline = T0 + 4 * 3_600_000
    dispatched = status(
        EventStatusCode.DISPATCHED, seq, T0 + 2_000, assignee="h0099", deadline_ms=deadline
    )
    accepted = status(EventStatusCode.ACCEPTED, seq, T0 + 1_000)
    assert ex.handle(command(dispatched, 1)).outcome is Outcome.DONE
    assert ex.handle(command(accepted, 2)).outcome is Outcome.DONE  # older: does not win
    mine = d.mine.get(seq=seq)
    assert mine is not None
    assert (mine.number, mine.status, mine.assignee, mine.deadline_ms) == (
        17, EventStatusCode.DISPATCHED, "h0099", deadline,
    )  # fmt: skip
    assert receipts(d) == [(1, Outcome.DONE), (2, Outcome.DONE)]
    # an event dispatched to this device, reported by another
    other = status(EventStatusCode.DISPATCHED, 5, T0 + 3_000, event=18, reporter="h0100",
                   assignee=DEVICE, deadline_ms=deadline)  # fmt: skip
    ex.handle(command(other, 3))
    assert [(e.number, e.reporter, e.seq) for e in d.mine.listed()] == [
        (18, "h0100", None), (17, DEVICE, seq),
    ]  # fmt: skip
    # a restart with the list lost: the answered commands give it back
    d.mine.close()
    (tmp_path / "x").mkdir()
    d.mine = MyEvents(tmp_path / "x" / "events.db", DEVICE)
    executor(d, clock).restore()
    again = d.mine.get(number=17)
    assert again is not None and (again.status, again.assignee) == (
        EventStatusCode.DISPATCHED, "h0099",
    )  # fmt: skip


def test_a_forged_status_command_is_refused_and_changes_nothing(dev: Device) -> None:
    seq = dev.report(note="堆物").seq
    ex = executor(dev, Clock())
    forged = command(status(EventStatusCode.CLOSED, seq, T0 + 1), 1, key=INTRUDER)
    assert ex.handle(forged).outcome is None
    mine = dev.mine.get(seq=seq)
    assert mine is not None and mine.status is EventStatusCode.REPORTED and mine.number is None
    assert receipts(dev) == []


def test_only_a_newer_catalogue_replaces_the_one_held(dev: Device) -> None:
    ex = executor(dev, Clock())
    older = Catalogue(1, (Category(9, "旧", "Old", "g", "t"),))
    assert ex.handle(command(CATALOGUE, 1)).outcome is Outcome.DONE
    assert ex.handle(command(older, 2)).outcome is Outcome.DONE
    assert dev.mine.catalogue() == CATALOGUE
    with pytest.raises(ReportError, match="not in catalogue version 2"):
        dev.report(category=9, catalogue=dev.mine.catalogue())


def test_without_the_events_list_the_device_refuses_event_commands(dev: Device) -> None:
    ex = executor(dev, Clock())
    ex.events = None
    handled = ex.handle(command(CATALOGUE, 1))
    assert (handled.outcome, handled.reason) == (Outcome.REFUSED, "not handled by this device yet")
