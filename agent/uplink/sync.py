"""What to send and what is settled: the uplink's pure state machine.

It knows which sequence numbers are in flight in which batch and since when; it never
publishes or deletes anything itself. The driver asks `plan` for batches to publish
(records that are pending and not in flight, up to a window of batches), and feeds it
acknowledgements; the answer says which records the outbox may delete. A batch with no
acknowledgement within the timeout, or in flight when the link drops, becomes sendable
again: the center de-duplicates, so resending is always safe, and losing is never.

**Batch size follows the link.** Given a `max_batch_size`, a full batch acknowledged
within `fast_ack_ms` doubles the size (up to the maximum: a backlog drains in few, large
batches), and a batch that times out halves it (down to `min_batch_size`, 8 by default: a
link too slow for big batches still moves small ones). Without a maximum the size is fixed.

**New records jump the queue.** The outbox serves its oldest records first (alerts before
everything else), so after an outage a new check-in would wait behind the whole backlog.
`note_stored` keeps up to `fresh_limit` records stored since this core began; `plan` sends
them right after alerts and before the backlog it is handed. Health records never jump:
they are the first thing the backlog can spare. A fresh record leaves the list when the
center settles it; the outbox still holds it until then, so nothing depends on the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.store.outbox import Stored
from contract.protocol import MAX_BATCH, Ack, Batch, Refusal
from contract.records import RecordType


@dataclass(slots=True)
class _InFlight:
    seqs: frozenset[int]
    sent_ms: int
    full: bool  # as many records as the batch size allowed: evidence for growing it


@dataclass(frozen=True, slots=True)
class Settled:
    delete: tuple[int, ...]
    refused: tuple[tuple[int, Refusal], ...]


class SyncCore:
    def __init__(
        self,
        *,
        batch_size: int = 32,
        window: int = 8,
        ack_timeout_ms: int = 15_000,
        first_batch_id: int = 1,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        fast_ack_ms: int = 2_000,
        fresh_limit: int = 256,
    ) -> None:
        adaptive = max_batch_size is not None
        self.min_batch_size = min_batch_size or (min(batch_size, 8) if adaptive else batch_size)
        self.max_batch_size = max_batch_size or batch_size
        if not 1 <= self.min_batch_size <= batch_size <= self.max_batch_size <= MAX_BATCH:
            raise ValueError(
                f"need 1 <= min {self.min_batch_size} <= batch {batch_size} "
                f"<= max {self.max_batch_size} <= {MAX_BATCH}"
            )
        if window < 1:
            raise ValueError("the window holds at least one batch")
        self.batch_size = batch_size
        self.window = window
        self.ack_timeout_ms = ack_timeout_ms
        self.fast_ack_ms = fast_ack_ms
        self.fresh_limit = fresh_limit
        self._next_id = first_batch_id
        self._flying: dict[int, _InFlight] = {}
        self._fresh: dict[int, Stored] = {}  # insertion order = storing order
        self.resent_batches = 0

    @property
    def in_flight(self) -> frozenset[int]:
        return frozenset().union(*(f.seqs for f in self._flying.values()))

    @property
    def skip(self) -> frozenset[int]:
        """What the driver leaves out of the backlog it reads: in flight, or held as fresh."""
        return self.in_flight | self._fresh.keys()

    @property
    def idle(self) -> bool:
        return not self._flying

    def free_slots(self) -> int:
        return max(0, self.window - len(self._flying))

    def note_stored(self, stored: Stored) -> None:
        """A record was just stored: send it before the backlog (health excepted)."""
        if stored.type is RecordType.HEALTH or self.fresh_limit <= 0:
            return
        self._fresh[stored.seq] = stored
        while len(self._fresh) > self.fresh_limit:  # the oldest go back to outbox order
            del self._fresh[next(iter(self._fresh))]

    def link_down(self) -> None:
        """Everything unacknowledged is sendable again on the next connection."""
        self.resent_batches += len(self._flying)
        self._flying.clear()

    def expire(self, now_ms: int) -> None:
        late = [b for b, f in self._flying.items() if now_ms - f.sent_ms >= self.ack_timeout_ms]
        for bid in late:
            del self._flying[bid]
            self.resent_batches += 1
        if late:
            self.batch_size = max(self.min_batch_size, self.batch_size // 2)

    def plan(self, pending: Sequence[Stored], now_ms: int) -> list[Batch]:
        """Batches to publish now: alerts, then fresh records, then `pending` (the backlog,
        as the outbox serves it), leaving out whatever is in flight. Each batch lists its
        records oldest first."""
        flying = self.in_flight
        queue = [s for s in _ordered(self._fresh.values(), pending) if s.seq not in flying]
        out: list[Batch] = []
        i = 0
        while i < len(queue) and len(self._flying) < self.window:
            chunk = sorted(queue[i : i + self.batch_size], key=lambda s: s.seq)
            i += len(chunk)
            bid = self._next_id
            self._next_id += 1
            full = len(chunk) == self.batch_size
            self._flying[bid] = _InFlight(frozenset(s.seq for s in chunk), now_ms, full)
            out.append(Batch(bid, tuple(s.raw for s in chunk)))
        return out

    def on_ack(self, ack: Ack, now_ms: int) -> Settled:
        settled = set(ack.stored) | {s for s, _ in ack.refused}
        answered = self._flying.pop(ack.batch, None)
        if (
            answered is not None
            and answered.full
            and now_ms - answered.sent_ms <= self.fast_ack_ms
            and self.batch_size < self.max_batch_size
        ):
            self.batch_size = min(self.max_batch_size, self.batch_size * 2)
        for bid in [b for b, f in self._flying.items() if f.seqs <= settled]:
            del self._flying[bid]
        for seq in settled:
            self._fresh.pop(seq, None)
        return Settled(tuple(sorted(ack.stored)), ack.refused)


def _ordered(fresh: Iterable[Stored], backlog: Sequence[Stored]) -> list[Stored]:
    """Alerts (oldest first), then fresh records, then the rest of the backlog in its order."""
    fresh = list(fresh)
    seen = {s.seq for s in fresh}
    rest = [s for s in backlog if s.seq not in seen]
    alerts = sorted((s for s in (*fresh, *rest) if s.type is RecordType.ALERT), key=lambda s: s.seq)
    return [
        *alerts,
        *(s for s in fresh if s.type is not RecordType.ALERT),
        *(s for s in rest if s.type is not RecordType.ALERT),
    ]
