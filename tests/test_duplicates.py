"""Duplicates counted from content: the same event stored twice under new sequence numbers,
and a batch id acknowledged again for other records (center/duplicates.py).

Every record here is made the way a device makes it: the real body builders, signed with
the device's key, numbered and chained by a real outbox; a duplicate is a copy made after
a restart (a new boot on the same outbox), never bytes forged by the test. The check-ins
come from the real engine fed fixes, the copies from the same fixes replayed. Records go
through the real ingest into the real SQLite store, and what is asserted is the audit's
count by kind, as the demo, fleet and dock reports print it. `picket center status`, the
MQTT path, PostgreSQL and the demo are in tests/test_duplicates_read.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.checkin.device import DeviceAgent, missed_body, suspicion_body
from agent.checkin.engine import MissedEvent
from agent.checkin.geo import offset
from agent.checkin.motion import SuspicionEvent, SuspicionKind
from agent.checkin.plan import Line, Plan, Point
from agent.checkin.visits import EXIT_FIXES, EXIT_MARGIN_M
from agent.dock.outputs import (
    DockState,
    MissionOutcome,
    MissionSummary,
    StateChange,
    dock_state_body,
    mission_body,
)
from agent.gnss.timekeeper import TimeKeeper
from agent.store.outbox import Outbox, signed
from center.audit import Audit, audit
from center.duplicates import Kind
from center.ingest import Ingest
from center.service import KeyCache
from center.store import CenterStore
from contract.commands import CommandType, Priority
from contract.events import Attachment, AttachmentKind, PlaceSource, event_body
from contract.fix import Fix, FixMode, TimeSource
from contract.protocol import Batch, records_topic, relayed_topic
from contract.records import (
    AlertKind,
    Eviction,
    Outcome,
    RecordType,
    alert_body,
    dropped_body,
    health_body,
    receipt_body,
    rollcall_body,
)
from provisioning.registry import Registry

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
LAT0, LON0 = 29.265, 106.255
RADIUS, DWELL = 25.0, 60
OUT = RADIUS + EXIT_MARGIN_M + 10.0  # clearly beyond the radius and its margin
PLAN = Plan(
    1,
    (Point("A", LAT0, LON0, radius_m=RADIUS, dwell_s=DWELL),),
    (Line("L1", ("A",)),),
)
NO_DUPLICATES = dict.fromkeys((k.value for k in Kind), 0)


# --- devices and the center, as they are -------------------------------------------------------


@dataclass
class Device:
    """A device's key and outbox; `restart` is a kill -9 and a new start on the same file."""

    name: str
    folder: Path
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    abandoned: list[Outbox] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.folder / f"{self.name}.db", self.name)
        self.outbox.begin_boot()
        self.agent = DeviceAgent(self.name, self.key, PLAN, self.outbox)

    def restart(self) -> None:
        self.abandoned.append(self.outbox)  # never closed, as after kill -9
        self.outbox = Outbox(self.folder / f"{self.name}.db", self.name)
        self.outbox.begin_boot()
        self.agent = DeviceAgent(self.name, self.key, PLAN, self.outbox)

    def record(
        self,
        rtype: RecordType,
        body: dict[int, object],
        time_ms: int,
        source: TimeSource = TimeSource.GNSS,
    ) -> bytes:
        make = signed(self.key, self.name, rtype, time_ms=time_ms, source=source, body=body)
        return self.outbox.append(make).raw

    def checkins(self, fixes: Sequence[Fix]) -> list[bytes]:
        """Feed the engine; the check-in records it made, in order."""
        made = [s for f in fixes for s in self.agent.on_fix(f)]
        return [s.raw for s in made if s.type is RecordType.CHECKIN]

    def close(self) -> None:
        for box in (*self.abandoned, self.outbox):
            box.close()


@dataclass
class Center:
    """A center database fed through the real ingest and store, its registry beside it."""

    folder: Path
    devices: dict[str, Device] = field(default_factory=dict)
    batch_id: int = 100

    def __post_init__(self) -> None:
        self.db = self.folder / "center.db"
        self.registry = self.folder / "registry.db"
        Registry(self.registry).close()
        self.ingest = Ingest(CenterStore(self.db), KeyCache(self.registry, min_reload_s=0))

    def device(self, name: str) -> Device:
        d = self.devices[name] = Device(name, self.folder)
        reg = Registry(self.registry)
        reg.add(name, d.key.public_key().public_bytes_raw(), 0)
        reg.close()
        return d

    def send(
        self, device: str, raws: Sequence[bytes], batch: int | None = None, now: int = T0
    ) -> None:
        """One batch from `device`, acknowledged (a fresh batch id unless given)."""
        if batch is None:
            self.batch_id += 1
            batch = self.batch_id
        ack = self.ingest.handle(records_topic(device), Batch(batch, tuple(raws)).encode(), now)
        assert ack is not None and len(ack.stored) == len(raws) and not ack.refused

    def audit(self) -> Audit:
        return audit(self.db, self.registry)

    def close(self) -> None:
        self.ingest.store.close()
        for d in self.devices.values():
            d.close()


@pytest.fixture
def center(tmp_path: Path) -> Iterator[Center]:
    c = Center(tmp_path)
    try:
        yield c
    finally:
        c.close()


def only(kind: Kind, n: int = 1) -> dict[str, int]:
    return {**NO_DUPLICATES, kind.value: n}


# --- fixes ---------------------------------------------------------------------------------------


class Track:
    """Fixes at 1 Hz, positions in metres north of the point."""

    def __init__(self, start_ms: int = T0) -> None:
        self.t = start_ms

    def at(self, north: float) -> Fix:
        lat, lon = offset(LAT0, LON0, north, 0.0)
        fix = Fix(self.t, lat, lon, accuracy_m=3.0, hdop=1.0, mode=FixMode.FIX_3D,
                  satellites=9, speed_mps=0.0)  # fmt: skip
        self.t += 1000
        return fix

    def stay(self, seconds: int = DWELL + 30) -> list[Fix]:
        """Walk in from outside, stand at the point, walk out far enough to end the visit."""
        return [
            *(self.at(OUT + 20) for _ in range(5)),
            *(self.at(1.0) for _ in range(seconds)),
            *(self.at(OUT + 20) for _ in range(EXIT_FIXES + 5)),
        ]


def restamped(fixes: Sequence[Fix], floor_ms: int) -> list[Fix]:
    """The fixes as the agent sees them after a restart whose persisted time floor is
    `floor_ms`: through the real time keeper (monotonic time 1 s a fix)."""
    keeper = TimeKeeper(persisted_ms=floor_ms, mono_ms=0)
    return [keeper.observe(f, mono_ms=1000 * i) for i, f in enumerate(fixes)]


def header(raw: bytes) -> dict[int, Any]:
    payload: dict[int, Any] = cbor2.loads(cbor2.loads(raw).value[2])
    return payload


# --- check-ins: one stay recorded twice, and two stays that are not ------------------------------


def test_a_stay_replayed_after_a_restart_is_one_check_in_stored_twice(center: Center) -> None:
    dev = center.device("h0001")
    fixes = Track().stay()
    first = dev.checkins(fixes)
    center.send("h0001", first)
    assert center.audit().duplicates_by_kind == NO_DUPLICATES
    dev.restart()  # the receiver replays its buffer to the new run
    again = dev.checkins(fixes[20:])  # from the middle of the stay: a later arrival
    assert len(first) == len(again) == 1
    assert header(again[0])[6] > header(first[0])[6], "the replay starts later in the stay"
    center.send("h0001", again)
    found = center.audit()
    assert found.duplicates_by_kind == only(Kind.CHECKIN)
    assert found.duplicated == 1
    assert [(e.device, e.seqs) for e in found.duplicate_examples] == [("h0001", (1, 2))]


def test_a_replay_restamped_past_the_original_is_still_the_same_stay(center: Center) -> None:
    """Fixes older than the persisted time floor are restamped (source PERSISTED), which
    moves the copy past the original: no overlap, but the same body in a later boot."""
    dev = center.device("h0001")
    fixes = Track().stay()
    first = dev.checkins(fixes)
    dev.restart()
    floor = fixes[-1].time_ms + 30_000  # type: ignore[operator]
    again = dev.checkins(restamped(fixes, floor))
    assert len(first) == len(again) == 1
    a, b = header(first[0]), header(again[0])
    assert b[7] == TimeSource.PERSISTED and b[6] > a[6] + a[18] * 1000, "moved past the stay"
    assert {k: v for k, v in a.items() if k >= 16} == {k: v for k, v in b.items() if k >= 16}
    center.send("h0001", first + again)
    assert center.audit().duplicates_by_kind == only(Kind.CHECKIN)


def test_two_genuine_visits_one_after_the_other_are_not_duplicates(center: Center) -> None:
    dev = center.device("h0001")
    track = Track()
    first = [track.at(OUT + 20) for _ in range(5)] + [track.at(1.0) for _ in range(DWELL + 30)]
    # out just long enough for the engine to close the visit, and straight back
    first += [track.at(OUT + 20) for _ in range(EXIT_FIXES)]
    second = [track.at(1.0) for _ in range(DWELL + 5)]
    second += [track.at(OUT + 20) for _ in range(EXIT_FIXES + 5)]
    made = dev.checkins(first + second)
    assert len(made) == 2, "the engine saw two visits"
    end = header(made[0])[6] + header(made[0])[18] * 1000
    assert header(made[1])[6] - end <= (EXIT_FIXES + 2) * 1000, "the second began at once"
    center.send("h0001", made)
    assert center.audit().duplicates_by_kind == NO_DUPLICATES
    # the same path counts a copy of the second visit, made after a restart
    dev.restart()
    center.send("h0001", dev.checkins(second))
    assert center.audit().duplicates_by_kind == only(Kind.CHECKIN)


def test_the_same_point_visited_by_two_devices_is_no_duplicate(center: Center) -> None:
    fixes = Track().stay()
    for name in ("h0001", "h0002"):
        center.send(name, center.device(name).checkins(fixes))
    found = center.audit()
    assert found.delivered == 2
    assert found.duplicates_by_kind == NO_DUPLICATES


# --- every other kind: the original, a genuine repeat that is no copy, then the copy -------------

FIX = Fix(T0, LAT0, LON0, accuracy_m=4.0, mode=FixMode.FIX_3D)
MIN = 60_000


@dataclass(frozen=True)
class Case:
    """(body, time) of the first record, of a genuine other event of the same type (no
    copy: the control), and of the copy a restart makes."""

    rtype: RecordType
    first: tuple[dict[int, object], int]
    other: tuple[dict[int, object], int]
    copy: tuple[dict[int, object], int]


def _missed(end_min: int, at: int) -> dict[int, object]:
    event = MissedEvent(PLAN.points[0], "L1", 0, T0, T0 + end_min * MIN, at)
    return missed_body(event, PLAN.version)


def _suspicion(at: int, detail: str) -> dict[int, object]:
    fix = Fix(at, LAT0, LON0, accuracy_m=4.0, mode=FixMode.FIX_3D)
    return suspicion_body(SuspicionEvent(SuspicionKind.JUMP, at, fix, detail))


def _state(at: int) -> dict[int, object]:
    change = StateChange(at, DockState.READY, DockState.CHARGING, "charged", 100)
    return dock_state_body(change)


_EVENT = event_body(
    101,
    place=PlaceSource.FIX,
    lat=LAT0,
    lon=LON0,
    accuracy_m=4.0,
    attachments=[Attachment.of(AttachmentKind.PHOTO, b"\xff\xd8 a photo")],
)


def _mission(command: int, outcome: int, at: int) -> dict[int, object]:
    summary = MissionSummary(
        at, "A1", command, Priority.ROUTINE, MissionOutcome(outcome), ("A", "B"), (), 300, 12
    )
    return mission_body(summary)


_HEALTH = health_body(depth=3, clock_source=TimeSource.GNSS, battery_pct=80)
_ALERT = alert_body(AlertKind.SOS, FIX, battery_pct=55)
_FLY = int(CommandType.FLY_LINE)

CASES = {
    Kind.MISSED: Case(
        RecordType.MISSED,
        (_missed(30, T0 + 31 * MIN), T0 + 31 * MIN),
        (_missed(90, T0 + 91 * MIN), T0 + 91 * MIN),  # the next window of the line
        (_missed(30, T0 + 95 * MIN), T0 + 95 * MIN),  # reported again after a restart
    ),
    Kind.SUSPICION: Case(
        RecordType.SUSPICION,
        (_suspicion(T0, "jump: 900 m in 1 s"), T0),
        (_suspicion(T0 + MIN, "jump: 900 m in 1 s"), T0 + MIN),
        (_suspicion(T0, "jump: 850 m in 1 s"), T0),  # the same fix, another fix before it
    ),
    Kind.HEALTH: Case(
        RecordType.HEALTH,
        (_HEALTH, T0),
        (_HEALTH, T0 + 5 * MIN),  # a steady device: the same readings, five minutes on
        (_HEALTH, T0),
    ),
    Kind.ROLLCALL: Case(
        RecordType.ROLLCALL,
        (rollcall_body(b"c" * 16, FIX), T0),
        (rollcall_body(b"d" * 16, FIX), T0),  # another roll call, answered at once
        (rollcall_body(b"c" * 16, None), T0 + MIN),
    ),
    Kind.ALERT: Case(
        RecordType.ALERT,
        (_ALERT, T0),
        (_ALERT, T0 + MIN),  # SOS pressed again a minute later, in the same place
        (_ALERT, T0),
    ),
    Kind.RECEIPT: Case(
        RecordType.RECEIPT,
        (receipt_body(12, _FLY, Outcome.DONE), T0),
        (receipt_body(13, _FLY, Outcome.DONE), T0),
        (receipt_body(12, _FLY, Outcome.REFUSED, "busy"), T0 + MIN),
    ),
    Kind.DROPPED: Case(
        RecordType.DROPPED,
        (dropped_body(Eviction(2, 10, 12, 290, (RecordType.HEALTH,))), T0),
        (dropped_body(Eviction(2, 20, 21, 290, (RecordType.HEALTH,))), T0),
        (dropped_body(Eviction(2, 10, 12, 290, (RecordType.HEALTH,))), T0 + MIN),
    ),
    Kind.DOCK_STATE: Case(
        RecordType.DOCK_STATE,
        (_state(T0), T0),
        (_state(T0 + 30 * MIN), T0 + 30 * MIN),  # charged and ready again, half an hour on
        (_state(T0), T0),
    ),
    Kind.MISSION: Case(
        RecordType.MISSION,
        (_mission(40, 0, T0), T0),
        (_mission(41, 0, T0), T0),
        (_mission(40, 2, T0 + MIN), T0 + MIN),
    ),
    Kind.EVENT: Case(
        RecordType.EVENT,
        (_EVENT, T0),
        (_EVENT, T0 + MIN),  # the pile still there a minute later: reported again
        (_EVENT, T0 + 30_000),  # sent twice within the minute
    ),
}


@pytest.mark.parametrize("kind", list(CASES), ids=lambda k: k.value)
def test_an_event_recorded_again_after_a_restart_is_counted_for_its_kind(
    center: Center, kind: Kind
) -> None:
    case = CASES[kind]
    dev = center.device("h0001")
    center.send("h0001", [dev.record(case.rtype, *case.first), dev.record(case.rtype, *case.other)])
    found = center.audit()
    assert found.delivered == 2 and found.duplicates_by_kind == NO_DUPLICATES
    dev.restart()
    center.send("h0001", [dev.record(case.rtype, *case.copy)])
    found = center.audit()
    assert found.duplicates_by_kind == only(kind)
    assert [(e.kind, e.seqs) for e in found.duplicate_examples] == [(kind, (1, 3))]


def test_alerts_raised_before_the_time_was_known_are_never_counted(center: Center) -> None:
    """Two SOS presses before the first fix carry time 0 (source NONE) and the same body:
    nothing tells them apart, so they are not called one event."""
    dev = center.device("h0001")
    blind = alert_body(AlertKind.SOS, None, battery_pct=55)
    center.send("h0001", [dev.record(RecordType.ALERT, blind, 0, TimeSource.NONE)])
    dev.restart()
    center.send("h0001", [dev.record(RecordType.ALERT, blind, 0, TimeSource.NONE)])
    assert center.audit().duplicates_by_kind == NO_DUPLICATES
    # positive control, through the same path: with a known time, a copy is counted
    timed = [dev.record(RecordType.ALERT, blind, T0) for _ in range(2)]
    center.send("h0001", timed)
    assert center.audit().duplicates_by_kind == only(Kind.ALERT)


# --- a batch acknowledged twice ------------------------------------------------------------------


def test_a_batch_id_used_again_for_other_records_is_a_batch_acknowledged_twice(
    center: Center,
) -> None:
    dev = center.device("h0001")
    a, b = (dev.record(RecordType.HEALTH, health_body(depth=n), T0 + n * MIN) for n in (1, 2))
    center.send("h0001", [a], batch=7)
    assert center.audit().duplicates_by_kind == NO_DUPLICATES
    center.send("h0001", [b], batch=7)  # a restart began its batch ids where it had been
    found = center.audit()
    assert found.duplicates_by_kind == only(Kind.BATCH)
    assert [(e.device, e.batch) for e in found.duplicate_examples] == [("h0001", 7)]


def test_deliveries_of_records_already_stored_are_no_duplicates(center: Center) -> None:
    """The same batch delivered again (QoS 1), the same records resent in a new batch (an
    acknowledgement lost), a gateway relaying them under its own id: all normal."""
    dev = center.device("h0001")
    raws = [dev.record(RecordType.HEALTH, health_body(depth=n), T0 + n * MIN) for n in (1, 2)]
    payload = Batch(7, tuple(raws)).encode()
    for _ in range(2):
        ack = center.ingest.handle(records_topic("h0001"), payload, T0)
        assert ack is not None and sorted(ack.stored) == [1, 2]
    center.send("h0001", raws)  # resent under a new id
    other = Batch(7, (raws[1],)).encode()  # a relay, numbered by the gateway
    assert center.ingest.handle(relayed_topic("h0001"), other, T0) is not None
    found = center.audit()
    assert (found.delivered, found.duplicated, found.batches_redelivered) == (2, 0, 1)
    assert found.duplicates_by_kind == NO_DUPLICATES
    # positive control, through the same path: the id used for other records counts
    center.send("h0001", [dev.record(RecordType.HEALTH, health_body(depth=9), T0)], batch=7)
    assert center.audit().duplicates_by_kind == only(Kind.BATCH)


def test_batch_ids_coming_round_again_days_later_are_no_duplicates(center: Center) -> None:
    """A device's batch ids start from its clock (milliseconds modulo 2**31) and come round
    every 24.8 days: an id last answered more than a day ago starts afresh, and the center
    forgets batches that old instead of keeping every batch ever."""
    dev = center.device("h0001")
    day = 24 * 60 * MIN
    health = [dev.record(RecordType.HEALTH, health_body(depth=n), T0 + n * MIN) for n in range(4)]
    center.send("h0001", [health[0]], batch=7)
    center.send("h0001", [health[1]], batch=512)
    center.send("h0001", [health[2]], batch=512, now=T0 + day + MIN)  # ids came round
    assert center.audit().duplicates_by_kind == NO_DUPLICATES
    con = sqlite3.connect(center.db)
    try:  # batch 7, a day old when batch 512 was answered again, is gone
        assert con.execute("SELECT batch FROM batches ORDER BY batch").fetchall() == [(512,)]
    finally:
        con.close()
    # positive control, through the same path: used again within the day, it counts
    center.send("h0001", [health[3]], batch=512, now=T0 + day + 2 * MIN)
    assert center.audit().duplicates_by_kind == only(Kind.BATCH)
