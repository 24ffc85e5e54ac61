"""The center's ingest core: one batch in, an acknowledgement out.

Every record is checked for structure, for the sender (the device in the record must be
the device of the topic it arrived on, which broker rules tie to the client's identity),
and for its signature against the registered key; only then is it stored. The answer
acknowledges what is now durable (new or duplicate) and names what was refused and why,
so the device stops resending a record that can never be accepted and deletes the rest.

A correctly signed record whose body does not fit its type (`validate_body`) is refused as
MALFORMED: the signature proves who wrote it, not that it states anything readable. The
key that verified a stored record is stored with it (the `devices` table), once per
process and key.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.cose import decode_sign1
from agent.errors import RecordError, RemoteError
from agent.protocol import Ack, Refusal, decode_batch, device_of_topic
from agent.records import Record, open_record, parse_payload, validate_body
from center.store import CenterStore, RefusedItem

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestStats:
    batches: int = 0
    bad_batches: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    refused_by_reason: Counter[str] = field(default_factory=Counter)


class Ingest:
    def __init__(self, store: CenterStore, key_of: Callable[[str], Ed25519PublicKey | None]):
        self.store = store
        self.key_of = key_of
        self.stats = IngestStats()
        self._keys_saved: set[tuple[str, bytes]] = set()

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
            checked = check_record(raw, device, key)
            if isinstance(checked, Record):
                good.append(checked)
                continue
            refused.append(checked)
            if checked.seq is not None:
                answers.append((checked.seq, Refusal[checked.reason]))
        keys: list[tuple[str, bytes]] = []
        if good and key is not None:
            pair = (device, key.public_bytes_raw())
            keys = [] if pair in self._keys_saved else [pair]
        fresh = self.store.save(good, refused, now_ms, keys)
        self._keys_saved.update(keys)
        new = sum(fresh)
        self.stats.stored += new
        self.stats.duplicates += len(fresh) - new
        self.stats.refused += len(refused)
        self.stats.refused_by_reason.update(r.reason for r in refused)
        if refused:
            log.log(
                logging.WARNING if self.stats.refused == len(refused) else logging.DEBUG,
                "refused %d record(s) from %s: %s",
                len(refused),
                device,
                refused[0].detail,
            )
        return Ack(batch.id, tuple(r.header.seq for r in good), tuple(answers))


def check_record(raw: bytes, device: str, key: Ed25519PublicKey | None) -> Record | RefusedItem:
    """One record from `device`'s topic: the verified record, or why it is refused.

    A record whose claimed header cannot be read is refused without a sequence number (the
    device cannot be told which one it was); every other refusal names its sequence.
    """
    try:
        claimed = parse_payload(decode_sign1(raw).payload, raw).header
    except RecordError as exc:
        return RefusedItem(device, None, Refusal.MALFORMED.name, str(exc), raw)
    if claimed.device != device:
        reason, detail = Refusal.WRONG_DEVICE, f"record names {claimed.device!r}"
    elif key is None:
        reason, detail = Refusal.UNKNOWN_DEVICE, f"{device!r} is not registered"
    else:
        try:
            rec = open_record(raw, key)
        except RecordError as exc:
            reason, detail = Refusal.BAD_SIGNATURE, str(exc)
        else:
            try:
                validate_body(rec.header.type, rec.body)
            except RecordError as exc:
                reason, detail = Refusal.MALFORMED, str(exc)
            else:
                return rec
    return RefusedItem(device, claimed.seq, reason.name, detail, raw)
