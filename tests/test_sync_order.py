"""The order the uplink sends records in, against the rule docs/protocol.md states ("Order"):
alerts first, oldest first; then records stored while the uplink runs, health excepted;
then the backlog as the outbox serves it; each batch oldest first.

The expected orders below are written out by hand from that rule, and the property test
holds the core to tests/sendorder.py, a model that ranks records instead of concatenating
lists as agent/uplink/sync.py does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import signed
from sendorder import held_fresh, send_batches, send_queue

from agent.store.outbox import Outbox, Stored
from agent.uplink.sync import SyncCore
from contract.protocol import Ack, Batch
from contract.records import RecordType, alert_body, health_body

T = 1_000_000
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
CHECKIN, ALERT, HEALTH = RecordType.CHECKIN, RecordType.ALERT, RecordType.HEALTH


def rec(seq: int, rtype: RecordType = CHECKIN) -> Stored:
    return Stored(seq, rtype, f"record-{seq}".encode())


def seqs_of(batches: Iterable[Batch]) -> list[list[int]]:
    return [[int(r.decode().removeprefix("record-")) for r in b.records] for b in batches]


def served(records: Mapping[int, Stored], skip: Iterable[int] = ()) -> list[Stored]:
    """What the outbox hands the driver (docs/protocol.md): alerts, then records never
    evicted, then health records, each oldest first; without what the core skips."""
    skipped = set(skip)
    alerts = [s for n, s in sorted(records.items()) if s.type is ALERT and n not in skipped]
    kept = [s for n, s in sorted(records.items()) if s.type not in (ALERT, HEALTH)]
    health = [s for n, s in sorted(records.items()) if s.type is HEALTH]
    return alerts + [s for s in kept + health if s.seq not in skipped]


# --------------------------------------------------------------------------- by hand


def test_a_drain_after_an_outage_through_a_real_outbox(tmp_path: Path) -> None:
    bodies: dict[RecordType, dict[int, object]] = {
        HEALTH: health_body(depth=3, battery_pct=80),
        ALERT: alert_body(),
        CHECKIN: {16: "P001"},
    }
    box = Outbox(tmp_path / "outbox.db", "h0001")

    def store(rtype: RecordType) -> Stored:
        return box.append(signed(KEY, "h0001", rtype, bodies[rtype]), evictable=rtype is HEALTH)

    # stored while offline: 1 check-in, 2 health, 3 check-in, 4 alert, 5 health, 6 check-in
    for rtype in (CHECKIN, HEALTH, CHECKIN, ALERT, HEALTH, CHECKIN):
        store(rtype)
    core = SyncCore(batch_size=1, window=16)
    # stored while the uplink drains: 7 check-in, 8 health, 9 alert, 10 check-in
    for rtype in (CHECKIN, HEALTH, ALERT, CHECKIN):
        core.note_stored(store(rtype))
    seq_of = {s.raw: s.seq for s in box.pending(100)}
    batches = core.plan(box.pending(16, skip=core.skip), T)
    order = [seq_of[raw] for b in batches for raw in b.records]
    # alerts oldest first; the new check-ins; the backlog: check-ins, then health (8 never jumps)
    assert order == [4, 9, 7, 10, 1, 3, 6, 2, 5, 8]
    box.close()


def test_batches_are_consecutive_pieces_of_the_queue_each_oldest_first() -> None:
    records = {s: rec(s, t) for s, t in enumerate((CHECKIN, HEALTH, CHECKIN, ALERT), 1)}
    core = SyncCore(batch_size=3, window=3)
    for seq, rtype in ((5, CHECKIN), (6, HEALTH), (7, ALERT), (8, CHECKIN)):
        records[seq] = rec(seq, rtype)
        core.note_stored(records[seq])
    # the queue: 4 7 | 5 8 | 1 3 2 6, cut in threes: 4 7 5 | 8 1 3 | 2 6
    assert seqs_of(core.plan(served(records, core.skip), T)) == [[4, 5, 7], [1, 3, 8], [2, 6]]


def test_an_alert_pushed_out_of_the_fresh_list_still_goes_before_a_newer_one() -> None:
    records = {1: rec(1), 2: rec(2, ALERT)}
    core = SyncCore(batch_size=1, window=8, fresh_limit=1)
    for seq in (3, 4):  # two new alerts: only 4 is held; 3 goes back to the outbox's order
        records[seq] = rec(seq, ALERT)
        core.note_stored(records[seq])
    assert seqs_of(core.plan(served(records, core.skip), T)) == [[2], [3], [4], [1]]


def test_what_is_in_flight_or_acknowledged_is_left_out_and_the_rest_keeps_its_order() -> None:
    records = {s: rec(s, HEALTH if s == 2 else CHECKIN) for s in range(1, 5)}
    core = SyncCore(batch_size=2, window=2)
    for seq, rtype in ((5, CHECKIN), (6, ALERT), (7, CHECKIN)):
        records[seq] = rec(seq, rtype)
        core.note_stored(records[seq])
    # the queue: 6 | 5 7 | 1 3 4 2 (2 is health), two batches of two
    b1, b2 = core.plan(served(records, core.skip), T)
    assert seqs_of([b1, b2]) == [[5, 6], [1, 7]]
    core.on_ack(Ack(b1.id, (5, 6), ()), T + 1)
    del records[5], records[6]
    # 1 and 7 still fly; the window has room for one batch
    assert seqs_of(core.plan(served(records, core.skip), T + 2)) == [[3, 4]]
    core.link_down()  # nothing more acknowledged: all of it goes again, 7 still first
    assert seqs_of(core.plan(served(records, core.skip), T + 3)) == [[1, 7], [3, 4]]


# --------------------------------------------------------------------------- against the model

TYPES = st.sampled_from([CHECKIN, CHECKIN, ALERT, HEALTH, RecordType.MISSED, RecordType.RECEIPT])


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(TYPES, max_size=20),
    since=st.lists(TYPES, max_size=12),
    batch_size=st.integers(1, 5),
    window=st.integers(1, 6),
    fresh_limit=st.integers(0, 5),
    first_take=st.integers(0, 12),
)
def test_every_plan_follows_the_documented_order(
    *,
    before: list[RecordType],
    since: list[RecordType],
    batch_size: int,
    window: int,
    fresh_limit: int,
    first_take: int,
) -> None:
    records = {seq: rec(seq, t) for seq, t in enumerate([*before, *since], 1)}
    core = SyncCore(batch_size=batch_size, window=window, fresh_limit=fresh_limit)
    stored_since = [records[seq] for seq in range(len(before) + 1, len(records) + 1)]
    for s in stored_since:
        core.note_stored(s)
    fresh = held_fresh(stored_since, fresh_limit)
    assert core.skip == {s.seq for s in fresh}

    # a first plan from part of the backlog (the driver reads no more than the window takes)
    backlog = served(records, core.skip)[:first_take]
    first = seqs_of(core.plan(backlog, T))
    assert first == send_batches(send_queue(fresh, backlog), batch_size, window)
    flying = {seq for batch in first for seq in batch}
    assert core.skip == flying | {s.seq for s in fresh}

    # then the whole backlog: what is in flight stays out, the window holds what is left
    backlog = served(records, core.skip)
    second = seqs_of(core.plan(backlog, T + 1))
    assert second == send_batches(
        send_queue(fresh, backlog, flying), batch_size, window - len(first)
    )

    # the link drops: nothing was acknowledged, so everything goes again from the top
    core.link_down()
    backlog = served(records, core.skip)
    again = seqs_of(core.plan(backlog, T + 2))
    assert again == send_batches(send_queue(fresh, backlog), batch_size, window)
