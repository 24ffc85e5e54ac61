"""The uplink's send order as docs/protocol.md ("Order") states it, written apart from the code.

agent/uplink/sync.py builds its queue by concatenating lists; this model gives every
candidate record a rank from the documented rule and sorts by it, so a slip in either
shows as a difference:

1. alerts, oldest first (whether just stored or from the backlog);
2. records stored while the uplink runs, in the order they were stored (health records
   never jump, and only the newest `fresh_limit` are held);
3. the backlog, in the order the outbox served it.

What is in flight is left out. Batches are the queue cut into consecutive pieces of the
batch size, no more of them than the window has room for, each listed oldest first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from agent.store.outbox import Stored
from contract.records import RecordType


def held_fresh(stored_since: Sequence[Stored], fresh_limit: int) -> list[Stored]:
    """Which of the records stored since the core began still jump the queue."""
    jumping = [s for s in stored_since if s.type is not RecordType.HEALTH]
    return jumping[-fresh_limit:] if fresh_limit > 0 else []


def send_queue(
    fresh: Sequence[Stored], backlog: Sequence[Stored], in_flight: Collection[int] = ()
) -> list[int]:
    """Sequence numbers in the order they are to be sent."""

    def rank(s: Stored) -> tuple[int, int]:
        if s.type is RecordType.ALERT:
            return (0, s.seq)
        fresh_seqs = [f.seq for f in fresh]
        if s.seq in fresh_seqs:
            return (1, fresh_seqs.index(s.seq))
        return (2, [b.seq for b in backlog].index(s.seq))

    candidates = {s.seq: s for s in [*backlog, *fresh] if s.seq not in in_flight}
    return [s.seq for s in sorted(candidates.values(), key=rank)]


def send_batches(queue: Sequence[int], batch_size: int, free_slots: int) -> list[list[int]]:
    """The batches one plan publishes, each listed oldest first."""
    cut = [list(queue[i : i + batch_size]) for i in range(0, len(queue), batch_size)]
    return [sorted(batch) for batch in cut[:free_slots]]
