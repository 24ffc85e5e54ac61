"""The center's ingest core: one batch in, an acknowledgement out.

Every record is checked for structure, for the sender (the device in the record must be
the device of the topic it arrived on, which broker rules tie to the client's identity),
and for its signature against the registered key; only then is it stored. The answer
acknowledges what is now durable (new or duplicate) and names what was refused and why,
so the device stops resending a record that can never be accepted and deletes the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.cose import decode_sign1
from agent.errors import RecordError, RemoteError
from agent.protocol import Ack, Refusal, decode_batch, device_of_topic
from agent.records import Record, open_record, parse_payload
from center.store import CenterStore, RefusedItem

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestStats:
    batches: int = 0
    bad_batches: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0


class Ingest:
    def __init__(self, store: CenterStore, key_of: Callable[[str], Ed25519PublicKey | None]):
        self.store = store
        self.key_of = key_of
        self.stats = IngestStats()

    def handle(self, topic: str, payload: bytes, now_ms: int) -> Ack | None:
        """Process one batch; None when the message is not a batch at all (counted)."""
        try:
            device = device_of_topic(topic)
            batch = decode_batch(payload)
        except RemoteError as exc:
            self.stats.bad_batches += 1
            level = logging.WARNING if self.stats.bad_batches == 1 else logging.DEBUG
            log.log(level, "refused message on %s: %s", topic, exc)
            self.store.save([], [RefusedItem(None, None, "BAD_BATCH", str(exc), payload)], now_ms)
            return None
        self.stats.batches += 1
        good: list[Record] = []
        refused: list[RefusedItem] = []
        answers: list[tuple[int, Refusal]] = []
        key = self.key_of(device)
        for raw in batch.records:
            try:
                claimed = parse_payload(decode_sign1(raw).payload, raw).header
            except RecordError as exc:
                refused.append(RefusedItem(device, None, Refusal.MALFORMED.name, str(exc), raw))
                continue
            reason: Refusal | None = None
            detail = ""
            if claimed.device != device:
                reason, detail = Refusal.WRONG_DEVICE, f"record names {claimed.device!r}"
            elif key is None:
                reason, detail = Refusal.UNKNOWN_DEVICE, f"{device!r} is not registered"
            else:
                try:
                    good.append(open_record(raw, key))
                except RecordError as exc:
                    reason, detail = Refusal.BAD_SIGNATURE, str(exc)
            if reason is not None:
                refused.append(RefusedItem(device, claimed.seq, reason.name, detail, raw))
                answers.append((claimed.seq, reason))
        fresh = self.store.save(good, refused, now_ms)
        new = sum(fresh)
        self.stats.stored += new
        self.stats.duplicates += len(fresh) - new
        self.stats.refused += len(refused)
        if refused:
            log.log(
                logging.WARNING if self.stats.refused == len(refused) else logging.DEBUG,
                "refused %d record(s) from %s: %s",
                len(refused),
                device,
                refused[0].detail,
            )
        return Ack(batch.id, tuple(r.header.seq for r in good), tuple(answers))
