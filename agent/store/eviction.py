"""The size cap's policy: which records may be evicted, and how many go at once.

Only records appended as evictable (health telemetry) may leave through the cap; check-ins,
alerts, roll-call answers and every other type are never evicted, and if they alone fill
the cap they are kept (the outbox's `cap_exceeded` says so). An eviction deletes the oldest
evictable records and, in the same transaction, the outbox appends a signed DROPPED record
saying what went. It frees down to EVICT_TO of the cap, so one DROPPED record stands for
many evicted ones rather than replacing each with a record of the same size. The policy
is apart from agent/store/outbox.py because it is a decision over rows (what to delete),
while the outbox owns the transaction and the DROPPED record it appends.
"""

from __future__ import annotations

import sqlite3

from agent.store.schema import Priority
from contract.records import Eviction, RecordType

EVICT_TO = 7 / 8  # an eviction frees down to this share of the cap
DROPPED_ALLOWANCE = 200  # bytes set aside for the DROPPED record an eviction adds
EVICTABLE_TYPES = frozenset({RecordType.HEALTH})


def priority(rtype: RecordType, evictable: bool) -> Priority:
    """The row's priority; a type that is never evicted may not be appended as evictable."""
    if evictable:
        if rtype not in EVICTABLE_TYPES:
            raise ValueError(f"{rtype.name} records are never evicted")
        return Priority.EVICTABLE
    return Priority.URGENT if rtype is RecordType.ALERT else Priority.KEPT


def evict(db: sqlite3.Connection, cap: int, first: int, total: int) -> Eviction | None:
    """Delete the oldest evictable records older than `first` (`total` bytes held); return
    what went, or None when nothing should go. Call it inside the outbox's transaction.

    It frees down to EVICT_TO of the cap, counting the DROPPED record the caller adds. When
    the evictable records cannot get there (records that are never evicted fill the cap),
    it evicts only if that still frees a worthwhile amount (an eighth of the cap) or gets
    back under the cap, so that DROPPED records never just replace health records one for
    one.
    """
    low = int(cap * EVICT_TO)
    need = total + DROPPED_ALLOWANCE - low
    cur = db.execute(
        "SELECT seq, type, length(raw) FROM outbox WHERE priority = 2 AND seq < ? ORDER BY seq",
        (first,),
    )
    seqs: list[int] = []
    types: set[RecordType] = set()
    freed = 0
    for seq, rtype, size in cur:
        seqs.append(seq)
        types.add(RecordType(rtype))
        freed += size
        if freed >= need:
            break
    cur.close()
    worthwhile = freed >= cap - low + DROPPED_ALLOWANCE
    if not seqs or not (worthwhile or total - freed + DROPPED_ALLOWANCE <= cap):
        return None
    db.execute("DELETE FROM outbox WHERE priority = 2 AND seq <= ?", (seqs[-1],))
    return Eviction(len(seqs), seqs[0], seqs[-1], freed, tuple(sorted(types)))
