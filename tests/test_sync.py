"""The uplink's pure state machine: what to send, what is settled, what to send again; and
the pure health snapshot the uplink carries besides check-ins."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sendorder import send_batches, send_queue

from agent.health import HealthTimer, health_snapshot
from agent.store.outbox import Stored
from agent.uplink.sync import SyncCore
from contract.fix import Fix, Quality, TimeSource
from contract.protocol import Ack, Batch, Refusal
from contract.records import HealthKey, RecordType
from contract.recordschema import validate_body

T = 1_000_000


def rec(seq: int, rtype: RecordType = RecordType.CHECKIN) -> Stored:
    return Stored(seq, rtype, f"record-{seq}".encode())


def seqs_of(batch: Batch) -> list[int]:
    return [int(r.decode().removeprefix("record-")) for r in batch.records]


class Box:
    """A model outbox as the driver uses it: pending alerts first, then records never evicted,
    then health, each oldest first, minus what the driver skips (in flight, or held by the
    core as fresh)."""

    def __init__(self, seqs: Iterable[int]) -> None:
        self.records = {s: rec(s) for s in seqs}
        self.refused: set[int] = set()

    def pending(self, skip: SyncCore | frozenset[int]) -> list[Stored]:
        skipped = skip.in_flight if isinstance(skip, SyncCore) else skip
        sendable = [
            self.records[s]
            for s in sorted(self.records)
            if s not in skipped and s not in self.refused
        ]
        served = {RecordType.ALERT: 0, RecordType.HEALTH: 2}
        return sorted(sendable, key=lambda r: (served.get(r.type, 1), r.seq))

    def acknowledge(self, seqs: Iterable[int]) -> None:
        for s in seqs:
            self.records.pop(s, None)


# --------------------------------------------------------------------------- plan


def test_plan_fills_the_window_oldest_first() -> None:
    core = SyncCore(batch_size=3, window=2, first_batch_id=40)
    box = Box(range(1, 11))
    batches = core.plan(box.pending(core), T)
    assert [b.id for b in batches] == [40, 41]
    assert [seqs_of(b) for b in batches] == [[1, 2, 3], [4, 5, 6]]
    assert core.in_flight == frozenset(range(1, 7))
    assert core.free_slots() == 0
    assert not core.idle
    # window full: nothing more, even though records 7..10 wait
    assert core.plan(box.pending(core), T + 1) == []
    assert core.plan([rec(7), rec(8)], T + 1) == []


def test_plan_short_last_batch_and_nothing_when_everything_flies() -> None:
    core = SyncCore(batch_size=4, window=8)
    box = Box(range(1, 7))
    batches = core.plan(box.pending(core), T)
    assert [seqs_of(b) for b in batches] == [[1, 2, 3, 4], [5, 6]]
    assert core.free_slots() == 6
    assert box.pending(core) == []
    assert core.plan(box.pending(core), T + 1) == []
    # a new record is sent alone, never together with the ones in flight
    box.records[7] = rec(7)
    again = core.plan(box.pending(core), T + 2)
    assert [seqs_of(b) for b in again] == [[7]]
    assert again[0].id not in {b.id for b in batches}


def test_batch_ids_never_repeat() -> None:
    core = SyncCore(batch_size=1, window=1)
    ids = []
    for seq in range(1, 6):
        (batch,) = core.plan([rec(seq)], T)
        ids.append(batch.id)
        core.link_down()
    assert len(set(ids)) == 5


# --------------------------------------------------------------------------- acks


def test_ack_deletes_stored_and_frees_the_slot() -> None:
    core = SyncCore(batch_size=2, window=1)
    box = Box(range(1, 6))
    (b1,) = core.plan(box.pending(core), T)
    settled = core.on_ack(Ack(b1.id, (2, 1), ()), T)
    assert settled.delete == (1, 2)
    assert settled.refused == ()
    assert core.idle
    assert core.free_slots() == 1
    box.acknowledge(settled.delete)
    (b2,) = core.plan(box.pending(core), T + 1)
    assert seqs_of(b2) == [3, 4]


def test_refusals_are_returned_and_not_deleted() -> None:
    core = SyncCore(batch_size=3, window=1)
    (b,) = core.plan([rec(1), rec(2), rec(3)], T)
    settled = core.on_ack(Ack(b.id, (1, 3), ((2, Refusal.BAD_SIGNATURE),)), T)
    assert settled.delete == (1, 3)
    assert settled.refused == ((2, Refusal.BAD_SIGNATURE),)
    assert core.idle


def test_ack_for_unknown_batch_settles_what_it_covers() -> None:
    core = SyncCore(batch_size=2, window=3, first_batch_id=10)
    box = Box(range(1, 7))
    b10, b11, b12 = core.plan(box.pending(core), T)
    assert [seqs_of(b) for b in (b10, b11, b12)] == [[1, 2], [3, 4], [5, 6]]
    # e.g. the ack of an earlier, expired copy of these records, under another batch id
    settled = core.on_ack(Ack(999, (1, 2, 3), ((4, Refusal.MALFORMED),)), T)
    assert settled.delete == (1, 2, 3)
    assert settled.refused == ((4, Refusal.MALFORMED),)
    # 10 and 11 are wholly covered (stored or refused): no longer in flight; 12 still is
    assert core.in_flight == frozenset({5, 6})
    assert core.free_slots() == 2


def test_ack_for_unknown_batch_keeps_partly_covered_batches_in_flight() -> None:
    core = SyncCore(batch_size=3, window=2)
    b1, b2 = core.plan([rec(s) for s in range(1, 7)], T)
    settled = core.on_ack(Ack(12345, (1, 2, 4), ()), T)
    assert settled.delete == (1, 2, 4)
    assert core.in_flight == frozenset(seqs_of(b1) + seqs_of(b2))
    assert core.free_slots() == 0


# --------------------------------------------------------------------------- timeouts


def test_expire_makes_records_sendable_again_after_the_timeout() -> None:
    core = SyncCore(batch_size=2, window=2, ack_timeout_ms=15_000)
    box = Box(range(1, 5))
    first = core.plan(box.pending(core), T)
    assert len(first) == 2
    core.expire(T + 14_999)
    assert core.resent_batches == 0
    assert core.plan(box.pending(core), T + 14_999) == []
    core.expire(T + 15_000)
    assert core.resent_batches == 2
    assert core.idle
    again = core.plan(box.pending(core), T + 15_000)
    assert [seqs_of(b) for b in again] == [[1, 2], [3, 4]]
    assert {b.id for b in again}.isdisjoint({b.id for b in first})


def test_expire_only_the_old_batches() -> None:
    core = SyncCore(batch_size=1, window=4, ack_timeout_ms=10_000)
    box = Box([1, 2])
    (old,) = core.plan(box.pending(core)[:1], T)
    (new,) = core.plan(box.pending(core), T + 5_000)
    assert seqs_of(old) == [1]
    assert seqs_of(new) == [2]
    core.expire(T + 10_000)
    assert core.in_flight == frozenset({2})
    assert core.resent_batches == 1
    assert [seqs_of(b) for b in core.plan(box.pending(core), T + 10_000)] == [[1]]


def test_link_down_makes_everything_in_flight_sendable() -> None:
    core = SyncCore(batch_size=2, window=3)
    box = Box(range(1, 6))
    sent = core.plan(box.pending(core), T)
    assert len(sent) == 3
    core.link_down()
    assert core.idle
    assert core.resent_batches == 3
    again = core.plan(box.pending(core), T + 1)
    assert [seqs_of(b) for b in again] == [[1, 2], [3, 4], [5]]


def test_late_ack_after_expiry_still_settles_the_resent_copy() -> None:
    core = SyncCore(batch_size=2, window=1, ack_timeout_ms=1_000)
    box = Box([1, 2])
    (old,) = core.plan(box.pending(core), T)
    core.expire(T + 1_000)
    (resent,) = core.plan(box.pending(core), T + 1_000)
    assert seqs_of(resent) == [1, 2]
    settled = core.on_ack(Ack(old.id, (1, 2), ()), T + 1_500)
    assert settled.delete == (1, 2)
    assert core.idle  # the resent copy is wholly covered


# --------------------------------------------------------------------------- batch size


def test_fixed_batch_size_without_a_maximum() -> None:
    core = SyncCore(batch_size=4, window=1, ack_timeout_ms=1_000)
    (b,) = core.plan([rec(s) for s in range(1, 9)], T)
    core.on_ack(Ack(b.id, tuple(seqs_of(b)), ()), T + 1)
    assert core.batch_size == 4
    core.plan([rec(s) for s in range(5, 9)], T + 2)
    core.expire(T + 2_000)
    assert core.batch_size == 4


def test_batch_grows_on_fast_full_acks_up_to_the_maximum() -> None:
    core = SyncCore(batch_size=4, max_batch_size=16, window=1, fast_ack_ms=500)
    box = Box(range(1, 200))
    sizes = []
    now = T
    for _ in range(5):
        (b,) = core.plan(box.pending(core)[: core.batch_size], now)
        sizes.append(len(b.records))
        now += 100
        settled = core.on_ack(Ack(b.id, tuple(seqs_of(b)), ()), now)
        box.acknowledge(settled.delete)
    assert sizes == [4, 8, 16, 16, 16]
    assert core.batch_size == 16


def test_batch_does_not_grow_on_slow_or_short_batches() -> None:
    core = SyncCore(batch_size=4, max_batch_size=16, window=2, fast_ack_ms=500)
    slow, short = core.plan([rec(s) for s in range(1, 8)], T)  # 4 records, then 3
    assert (len(slow.records), len(short.records)) == (4, 3)
    core.on_ack(Ack(slow.id, tuple(seqs_of(slow)), ()), T + 501)  # full, but slow
    core.on_ack(Ack(short.id, tuple(seqs_of(short)), ()), T + 10)  # fast, but not full
    assert core.batch_size == 4


def test_batch_halves_on_timeouts_down_to_the_minimum() -> None:
    core = SyncCore(batch_size=32, max_batch_size=64, min_batch_size=8, ack_timeout_ms=1_000)
    now = T
    sizes = []
    for _ in range(4):
        core.plan([rec(s) for s in range(1, 100)], now)
        now += 1_000
        core.expire(now)
        sizes.append(core.batch_size)
    assert sizes == [16, 8, 8, 8]
    (b, *_) = core.plan([rec(s) for s in range(1, 100)], now)
    assert len(b.records) == 8


def test_bad_batch_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="min"):
        SyncCore(batch_size=4, min_batch_size=8, max_batch_size=16)
    with pytest.raises(ValueError, match="256"):
        SyncCore(batch_size=32, max_batch_size=1000)
    with pytest.raises(ValueError, match="window"):
        SyncCore(window=0)


# --------------------------------------------------------------------------- queue jumping


def test_new_records_jump_the_backlog_but_not_alerts() -> None:
    core = SyncCore(batch_size=4, window=1)
    backlog = [rec(50, RecordType.ALERT), *(rec(s) for s in range(1, 50))]  # as the outbox serves
    new = rec(120)
    core.note_stored(new)
    assert core.skip == frozenset({120})
    (b,) = core.plan(backlog[:4], T)
    assert seqs_of(b) == [1, 2, 50, 120]  # the old alert, the new check-in, then the backlog


def test_new_alert_goes_first_and_new_health_waits_its_turn() -> None:
    core = SyncCore(batch_size=2, window=1)
    core.note_stored(rec(100, RecordType.HEALTH))
    core.note_stored(rec(101))
    core.note_stored(rec(102, RecordType.ALERT))
    assert core.skip == frozenset({101, 102})
    (b,) = core.plan([rec(s) for s in range(1, 5)], T)
    assert seqs_of(b) == [101, 102]


def test_fresh_records_stay_until_settled_and_are_bounded() -> None:
    core = SyncCore(batch_size=8, window=1, fresh_limit=3)
    for s in range(10, 15):
        core.note_stored(rec(s))
    assert core.skip == frozenset({12, 13, 14})  # the oldest went back to outbox order
    (b,) = core.plan([], T)
    assert seqs_of(b) == [12, 13, 14]
    core.link_down()  # unacknowledged: still fresh, sent first again
    (again,) = core.plan([rec(1)], T + 1)
    assert seqs_of(again) == [1, 12, 13, 14]
    core.on_ack(Ack(again.id, (1, 12), ((13, Refusal.MALFORMED),)), T + 2)
    assert core.skip == frozenset({14})  # the answer left 14 out: still fresh, sent first again
    core.on_ack(Ack(999, (14,), ()), T + 3)
    assert core.skip == frozenset()
    assert core.idle


# --------------------------------------------------------------------------- health telemetry


def test_health_snapshot_reports_what_the_device_knows_and_leaves_out_the_rest() -> None:
    now = 1_772_330_000_000
    fix = Fix(now - 2_000, 29.5, 106.5, quality=Quality.DGPS, satellites=11)
    body = health_snapshot(
        now_ms=now,
        outbox_depth=42,
        oldest_unsent_ms=now - 95_500,
        clock_source=TimeSource.GNSS,
        fix=fix,
        battery_pct=130,
        rssi_dbm=-97,
        now_mono_ms=5_000_000,
        started_mono_ms=1_400_000,
    )
    assert body == {
        HealthKey.DEPTH: 42,
        HealthKey.OLDEST_UNSENT_S: 95,
        HealthKey.CLOCK_SOURCE: int(TimeSource.GNSS),
        HealthKey.FIX_QUALITY: int(Quality.DGPS),
        HealthKey.SATELLITES: 11,
        HealthKey.BATTERY_PCT: 100,
        HealthKey.RSSI_DBM: -97,
        HealthKey.UPTIME_S: 3_600,
    }
    validate_body(RecordType.HEALTH, body)
    bare = health_snapshot(now_ms=now, outbox_depth=0)
    assert bare == {HealthKey.DEPTH: 0, HealthKey.FIX_QUALITY: int(Quality.INVALID)}
    stale = health_snapshot(now_ms=now, outbox_depth=1, fix=Fix(now - 60_000, 29.5, 106.5))
    assert stale[HealthKey.FIX_QUALITY] == int(Quality.INVALID)
    assert HealthKey.SATELLITES not in stale


def test_health_timer_is_due_at_once_then_every_interval() -> None:
    timer = HealthTimer(60_000)
    assert [timer.due(t) for t in (0, 1, 59_999, 60_000, 60_001, 130_000, 180_000)] == [
        True,
        False,
        False,
        True,
        False,
        True,
        False,
    ]


# --------------------------------------------------------------------------- state machine


class SyncMachine(RuleBasedStateMachine):
    """Random plan / ack / expire / link-down interleavings against a model outbox, with new
    records (some of them alerts) jumping the queue and, in half the runs, adaptive batches."""

    @initialize(
        batch_size=st.integers(1, 4),
        window=st.integers(1, 3),
        n=st.integers(0, 12),
        adaptive=st.booleans(),
    )
    def setup(self, batch_size: int, window: int, n: int, adaptive: bool) -> None:
        self.core = SyncCore(
            batch_size=batch_size,
            window=window,
            ack_timeout_ms=5_000,
            min_batch_size=1 if adaptive else None,
            max_batch_size=8 if adaptive else None,
            fast_ack_ms=3_000,
            fresh_limit=3,
        )
        self.box = Box(range(1, n + 1))
        self.next_seq = n + 1
        self.created: set[int] = set(range(1, n + 1))
        self.fresh: list[int] = []  # the model of the core's fresh list
        self.now = T
        self.sent: dict[int, list[int]] = {}  # every batch ever published, by id
        self.listed_stored: set[int] = set()
        self.deleted: set[int] = set()

    def _new(self, rtype: RecordType) -> Stored:
        stored = rec(self.next_seq, rtype)
        self.box.records[self.next_seq] = stored
        self.created.add(self.next_seq)
        self.next_seq += 1
        return stored

    @rule(k=st.integers(1, 5))
    def append(self, k: int) -> None:
        """Records the driver is not told about (stored before this core began)."""
        for _ in range(k):
            self._new(RecordType.CHECKIN)

    @rule(rtype=st.sampled_from([RecordType.CHECKIN, RecordType.ALERT, RecordType.HEALTH]))
    def store_new(self, rtype: RecordType) -> None:
        stored = self._new(rtype)
        self.core.note_stored(stored)
        if rtype is not RecordType.HEALTH:
            self.fresh = [*self.fresh, stored.seq][-3:]

    @rule()
    def plan(self) -> None:
        self._plan()

    def _plan(self) -> list[Batch]:
        before = self.core.in_flight
        assert before <= self.core.skip
        slots = self.core.free_slots()
        size = self.core.batch_size
        pending = self.box.pending(self.core.skip)[: slots * size]
        fresh = [self.box.records[s] for s in self.fresh]
        expected = send_batches(send_queue(fresh, pending, before), size, slots)
        batches = self.core.plan(pending, self.now)
        assert len(batches) <= slots
        seen: set[int] = set()
        for b in batches:
            seqs = seqs_of(b)
            assert 1 <= len(seqs) <= size
            assert seqs == sorted(seqs)
            assert not (set(seqs) & before), "a record in flight was sent again"
            assert not (set(seqs) & seen), "a record is in two new batches"
            assert b.id not in self.sent, "a batch id was reused"
            seen.update(seqs)
            self.sent[b.id] = seqs
        # alerts, then new records, then the backlog (tests/sendorder.py, docs/protocol.md)
        assert [seqs_of(b) for b in batches] == expected
        return batches

    def _apply(self, ack: Ack) -> None:
        settled = self.core.on_ack(ack, self.now)
        assert set(settled.delete) <= set(ack.stored)
        assert set(settled.refused) == set(ack.refused)
        self.listed_stored.update(ack.stored)
        self.box.acknowledge(settled.delete)
        self.deleted.update(settled.delete)
        self.box.refused.update(s for s, _ in settled.refused)
        gone = set(ack.stored) | {s for s, _ in ack.refused}
        self.fresh = [s for s in self.fresh if s not in gone]

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        """The center answers some batch (in flight, expired or stale), fully or in part."""
        bid = data.draw(st.sampled_from(sorted(self.sent)), label="batch")
        seqs = self.sent[bid]
        stored = data.draw(st.lists(st.sampled_from(seqs), unique=True), label="stored")
        rest = [s for s in seqs if s not in stored]
        refused = (
            data.draw(st.lists(st.sampled_from(rest), unique=True), label="refused") if rest else []
        )
        as_id = data.draw(st.sampled_from([bid, 10**6 + bid]), label="id")  # known or unknown
        self._apply(Ack(as_id, tuple(stored), tuple((s, Refusal.BAD_SIGNATURE) for s in refused)))

    @rule(ms=st.integers(0, 8_000))
    def tick_and_expire(self, ms: int) -> None:
        self.now += ms
        before = self.core.resent_batches
        slots = self.core.free_slots()
        self.core.expire(self.now)
        assert self.core.resent_batches - before == self.core.free_slots() - slots

    @rule()
    def link_down(self) -> None:
        self.core.link_down()
        assert self.core.idle
        assert self.core.in_flight == frozenset()

    @invariant()
    def nothing_deleted_unless_stored(self) -> None:
        assert self.deleted <= self.listed_stored
        # what is neither deleted nor refused is still in the outbox
        assert set(self.box.records) == self.created - self.deleted
        assert self.core.min_batch_size <= self.core.batch_size <= self.core.max_batch_size

    def teardown(self) -> None:
        # the link settles: time passes, everything pending is sent and fully acknowledged
        for _ in range(2 * (len(self.created) + 2)):
            self.now += self.core.ack_timeout_ms
            self.core.expire(self.now)  # whatever was still in flight is sendable again
            assert self.core.idle
            for batch in self._plan():
                self._apply(Ack(batch.id, tuple(seqs_of(batch)), ()))
            if set(self.box.records) <= self.box.refused:
                break
        assert self.core.idle
        assert set(self.box.records) <= self.box.refused, "a record was never delivered"
        assert self.created == self.deleted | self.box.refused
        assert self.deleted <= self.listed_stored
        assert self.core.skip == frozenset()


SyncMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestSyncMachine = SyncMachine.TestCase
