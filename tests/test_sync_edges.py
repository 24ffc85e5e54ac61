"""The uplink's pure state machine at its edges: the documented defaults and each bound taken
exactly (found by the mutation benchmark, bench/mutation.py; docs/testing.md).

tests/test_sync.py holds the rules with values picked for the test; these hold the values a
device really runs with (`SyncCore()` with no arguments, as agent/uplink/mqtt.py builds it
unless configured) and what happens one step either side of each limit.
"""

from __future__ import annotations

import pytest

from agent.store.outbox import Stored
from agent.uplink.sync import SyncCore
from contract.protocol import MAX_BATCH, Ack, Batch
from contract.records import RecordType

T = 5_000_000


def rec(seq: int, rtype: RecordType = RecordType.CHECKIN) -> Stored:
    return Stored(seq, rtype, f"record-{seq}".encode())


def seqs_of(batch: Batch) -> list[int]:
    return [int(r.decode().removeprefix("record-")) for r in batch.records]


def backlog(n: int, start: int = 1) -> list[Stored]:
    return [rec(s) for s in range(start, start + n)]


def test_by_default_a_batch_is_resent_after_15_s_and_not_before() -> None:
    core = SyncCore()  # docs/protocol.md: "a timeout (15 s by default)"
    (b,) = core.plan(backlog(3), T)[:1]
    core.expire(T + 14_999)
    assert core.plan(backlog(3), T + 14_999) == []  # still in flight: nothing to send
    core.expire(T + 15_000)
    (again,) = core.plan(backlog(3), T + 15_000)
    assert seqs_of(again) == seqs_of(b) == [1, 2, 3]
    assert core.resent_batches == 1


def test_the_first_batch_of_a_new_core_is_number_1() -> None:
    (b,) = SyncCore().plan(backlog(1), T)
    assert b.id == 1


def test_by_default_a_full_batch_answered_within_2_s_grows_the_next() -> None:
    for answered_after, grown in ((2_000, True), (2_001, False)):
        core = SyncCore(batch_size=4, max_batch_size=16)
        (b,) = core.plan(backlog(4), T)[:1]
        core.on_ack(Ack(b.id, tuple(seqs_of(b)), ()), T + answered_after)
        (nxt,) = core.plan(backlog(40, start=5), T + answered_after)[:1]
        assert len(nxt.records) == (8 if grown else 4), answered_after


def test_a_fast_answer_exactly_at_fast_ack_ms_still_counts() -> None:
    core = SyncCore(batch_size=2, max_batch_size=8, fast_ack_ms=300)
    (b,) = core.plan(backlog(2), T)[:1]
    core.on_ack(Ack(b.id, (1, 2), ()), T + 300)
    assert core.batch_size == 4


def test_with_only_a_maximum_timeouts_shrink_the_batch_down_to_8() -> None:
    core = SyncCore(batch_size=32, max_batch_size=64, ack_timeout_ms=1_000)
    now = T
    sizes = []
    for _ in range(4):
        core.plan(backlog(200), now)
        now += 1_000
        core.expire(now)
        sizes.append(core.batch_size)
    assert sizes == [16, 8, 8, 8]


def test_a_small_batch_with_a_maximum_never_shrinks_below_itself() -> None:
    core = SyncCore(batch_size=4, max_batch_size=64, ack_timeout_ms=1_000)
    core.plan(backlog(20), T)
    core.expire(T + 1_000)
    assert core.batch_size == 4  # the minimum is min(batch size, 8)


def test_without_a_maximum_timeouts_leave_the_size_alone() -> None:
    core = SyncCore(batch_size=32, ack_timeout_ms=1_000)
    core.plan(backlog(100), T)
    core.expire(T + 1_000)
    (b, *_) = core.plan(backlog(100), T + 1_000)
    assert len(b.records) == 32


def test_the_largest_batch_the_protocol_allows_is_accepted_one_more_is_not() -> None:
    core = SyncCore(batch_size=MAX_BATCH, max_batch_size=MAX_BATCH)
    (b, *_) = core.plan(backlog(MAX_BATCH + 5), T)
    assert len(b.records) == MAX_BATCH
    with pytest.raises(ValueError, match=str(MAX_BATCH)):
        SyncCore(batch_size=MAX_BATCH, max_batch_size=MAX_BATCH + 1)


def test_every_dropped_link_counts_its_batches_as_resent() -> None:
    core = SyncCore(batch_size=2, window=4)
    assert len(core.plan(backlog(6), T)) == 3
    core.link_down()
    assert len(core.plan(backlog(4), T + 1)) == 2
    core.link_down()
    assert core.resent_batches == 5


def test_by_default_256_new_records_jump_the_queue_and_the_257th_oldest_does_not() -> None:
    core = SyncCore()
    for s in range(1_000, 1_257):  # 257 new records
        core.note_stored(rec(s))
    assert core.skip == frozenset(range(1_001, 1_257))  # 1000 went back to outbox order


def test_a_fresh_limit_of_one_keeps_one_and_of_zero_keeps_none() -> None:
    one = SyncCore(batch_size=2, fresh_limit=1)
    one.note_stored(rec(90))
    one.note_stored(rec(91))
    (b,) = one.plan(backlog(1), T)[:1]
    assert seqs_of(b) == [1, 91]  # the newest jumped the backlog
    none = SyncCore(batch_size=2, fresh_limit=0)
    none.note_stored(rec(91))
    assert none.skip == frozenset()
    (b,) = none.plan(backlog(2), T)[:1]
    assert seqs_of(b) == [1, 2]  # the backlog in its order


def test_by_default_8_batches_of_32_records_are_in_flight() -> None:
    """docs/protocol.md, "Window and batch size": at most 8 batches in flight; a batch
    starts at 32 records."""
    core = SyncCore()
    batches = core.plan(backlog(1_000), T)
    assert [len(b.records) for b in batches] == [32] * 8
    assert core.plan(backlog(100, start=2_000), T) == []  # the window is full
