"""What to send and what is settled: the uplink's pure state machine.

It knows which sequence numbers are in flight in which batch and since when; it never
publishes or deletes anything itself. The driver asks `plan` for batches to publish
(records that are pending and not in flight, up to a window of batches), and feeds it
acknowledgements; the answer says which records the outbox may delete. A batch with no
acknowledgement within the timeout, or in flight when the link drops, becomes sendable
again: the center de-duplicates, so resending is always safe, and losing is never.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.outbox import Stored
from agent.protocol import Ack, Batch, Refusal


@dataclass(slots=True)
class _InFlight:
    seqs: frozenset[int]
    sent_ms: int


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
    ) -> None:
        self.batch_size = batch_size
        self.window = window
        self.ack_timeout_ms = ack_timeout_ms
        self._next_id = first_batch_id
        self._flying: dict[int, _InFlight] = {}
        self.resent_batches = 0

    @property
    def in_flight(self) -> frozenset[int]:
        return frozenset().union(*(f.seqs for f in self._flying.values()))

    @property
    def idle(self) -> bool:
        return not self._flying

    def free_slots(self) -> int:
        return max(0, self.window - len(self._flying))

    def link_down(self) -> None:
        """Everything unacknowledged is sendable again on the next connection."""
        self.resent_batches += len(self._flying)
        self._flying.clear()

    def expire(self, now_ms: int) -> None:
        for bid in [
            b for b, f in self._flying.items() if now_ms - f.sent_ms >= self.ack_timeout_ms
        ]:
            del self._flying[bid]
            self.resent_batches += 1

    def plan(self, pending: Sequence[Stored], now_ms: int) -> list[Batch]:
        """Batches to publish now from `pending` (records not in flight, oldest first)."""
        out: list[Batch] = []
        i = 0
        while i < len(pending) and len(self._flying) < self.window:
            chunk = pending[i : i + self.batch_size]
            i += len(chunk)
            bid = self._next_id
            self._next_id += 1
            self._flying[bid] = _InFlight(frozenset(s.seq for s in chunk), now_ms)
            out.append(Batch(bid, tuple(s.raw for s in chunk)))
        return out

    def on_ack(self, ack: Ack) -> Settled:
        settled = set(ack.stored) | {s for s, _ in ack.refused}
        self._flying.pop(ack.batch, None)
        for bid in [b for b, f in self._flying.items() if f.seqs <= settled]:
            del self._flying[bid]
        return Settled(tuple(sorted(ack.stored)), ack.refused)
