"""The uplink's pure state machine: what to send, what is settled, what to send again."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agent.outbox import Stored
from agent.protocol import Ack, Batch, Refusal
from agent.records import RecordType
from agent.sync import SyncCore

T = 1_000_000


def rec(seq: int) -> Stored:
    return Stored(seq, RecordType.CHECKIN, f"record-{seq}".encode())


def seqs_of(batch: Batch) -> list[int]:
    return [int(r.decode().removeprefix("record-")) for r in batch.records]


class Box:
    """A model outbox as the driver uses it: pending oldest first, minus what is in flight."""

    def __init__(self, seqs: Iterable[int]) -> None:
        self.records = {s: rec(s) for s in seqs}
        self.refused: set[int] = set()

    def pending(self, core: SyncCore) -> list[Stored]:
        flying = core.in_flight
        return [
            self.records[s]
            for s in sorted(self.records)
            if s not in flying and s not in self.refused
        ]

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
    settled = core.on_ack(Ack(b1.id, (2, 1), ()))
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
    settled = core.on_ack(Ack(b.id, (1, 3), ((2, Refusal.BAD_SIGNATURE),)))
    assert settled.delete == (1, 3)
    assert settled.refused == ((2, Refusal.BAD_SIGNATURE),)
    assert core.idle


def test_ack_for_unknown_batch_settles_what_it_covers() -> None:
    core = SyncCore(batch_size=2, window=3, first_batch_id=10)
    box = Box(range(1, 7))
    b10, b11, b12 = core.plan(box.pending(core), T)
    assert [seqs_of(b) for b in (b10, b11, b12)] == [[1, 2], [3, 4], [5, 6]]
    # e.g. the ack of an earlier, expired copy of these records, under another batch id
    settled = core.on_ack(Ack(999, (1, 2, 3), ((4, Refusal.MALFORMED),)))
    assert settled.delete == (1, 2, 3)
    assert settled.refused == ((4, Refusal.MALFORMED),)
    # 10 and 11 are wholly covered (stored or refused): no longer in flight; 12 still is
    assert core.in_flight == frozenset({5, 6})
    assert core.free_slots() == 2


def test_ack_for_unknown_batch_keeps_partly_covered_batches_in_flight() -> None:
    core = SyncCore(batch_size=3, window=2)
    b1, b2 = core.plan([rec(s) for s in range(1, 7)], T)
    settled = core.on_ack(Ack(12345, (1, 2, 4), ()))
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
    settled = core.on_ack(Ack(old.id, (1, 2), ()))
    assert settled.delete == (1, 2)
    assert core.idle  # the resent copy is wholly covered


# --------------------------------------------------------------------------- state machine


class SyncMachine(RuleBasedStateMachine):
    """Random plan / ack / expire / link-down interleavings against a model outbox."""

    @initialize(batch_size=st.integers(1, 4), window=st.integers(1, 3), n=st.integers(0, 12))
    def setup(self, batch_size: int, window: int, n: int) -> None:
        self.core = SyncCore(batch_size=batch_size, window=window, ack_timeout_ms=5_000)
        self.box = Box(range(1, n + 1))
        self.next_seq = n + 1
        self.created: set[int] = set(range(1, n + 1))
        self.now = T
        self.sent: dict[int, list[int]] = {}  # every batch ever published, by id
        self.listed_stored: set[int] = set()
        self.deleted: set[int] = set()

    @rule(k=st.integers(1, 5))
    def append(self, k: int) -> None:
        for _ in range(k):
            self.box.records[self.next_seq] = rec(self.next_seq)
            self.created.add(self.next_seq)
            self.next_seq += 1

    @rule()
    def plan(self) -> None:
        self._plan()

    def _plan(self) -> list[Batch]:
        before = self.core.in_flight
        slots = self.core.free_slots()
        pending = self.box.pending(self.core)[: slots * self.core.batch_size]
        batches = self.core.plan(pending, self.now)
        assert len(batches) <= slots
        seen: set[int] = set()
        for b in batches:
            seqs = seqs_of(b)
            assert 1 <= len(seqs) <= self.core.batch_size
            assert seqs == sorted(seqs)
            assert not (set(seqs) & before), "a record in flight was sent again"
            assert not (set(seqs) & seen), "a record is in two new batches"
            assert b.id not in self.sent, "a batch id was reused"
            seen.update(seqs)
            self.sent[b.id] = seqs
        # oldest first: what fits in the free slots is sent, in order
        assert [x for b in batches for x in seqs_of(b)] == [s.seq for s in pending]
        return batches

    def _apply(self, ack: Ack) -> None:
        settled = self.core.on_ack(ack)
        assert set(settled.delete) <= set(ack.stored)
        assert set(settled.refused) == set(ack.refused)
        self.listed_stored.update(ack.stored)
        self.box.acknowledge(settled.delete)
        self.deleted.update(settled.delete)
        self.box.refused.update(s for s, _ in settled.refused)

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

    def teardown(self) -> None:
        # the link settles: time passes, everything pending is sent and fully acknowledged
        for _ in range(2 * (len(self.created) + 2)):
            self.now += self.core.ack_timeout_ms
            self.core.expire(self.now)  # whatever was still in flight is sendable again
            assert self.core.idle
            for batch in self._plan():
                self._apply(Ack(batch.id, tuple(seqs_of(batch)), ()))
            if not self.box.pending(self.core):
                break
        assert self.core.idle
        assert set(self.box.records) <= self.box.refused, "a record was never delivered"
        assert self.created == self.deleted | self.box.refused
        assert self.deleted <= self.listed_stored


SyncMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestSyncMachine = SyncMachine.TestCase
