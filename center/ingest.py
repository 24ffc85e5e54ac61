"""The center's ingest core: one batch in, an acknowledgement out.

Every record is checked for structure, for the sender (the device in the record must be
the device of the topic it arrived on, which broker rules tie to the client's identity),
and for its signature against the registered key; only then is it stored. The answer
acknowledges what is now durable (new, duplicate, or a fork kept for inspection) and
names what was refused and why, so the device stops resending a record that can never
be accepted and deletes the rest.

A correctly signed record whose body does not fit its type (`validate_body`) is refused as
MALFORMED: the signature proves who wrote it, not that it states anything readable. So is
one whose sequence number is 0 (they start at 1). The key that verified a stored record is
stored with it (the `devices` table), once per process and key.

**Hostile input.** One bad record must never stop the center: every size and number is
bounded by the contract where it is decoded (contract/bounds.py), so nothing out of range
reaches SQL, and a bound crossed is a refusal with a reason, never an exception out of
`handle`. A batch over MAX_BATCH_BYTES and a record over MAX_RECORD (1 KiB) are refused
before they are decoded; a record whose header is out of bounds (a time past 2200, a
sequence number past 2**53 - 1) as MALFORMED, naming its sequence number whenever that can
be read, so the device stops resending it. The
`refused` table keeps what was refused whole when it is a record of legitimate size
(evidence), else its first bytes, its size and its SHA-256 (center/batch.py).

A record is decoded once: the COSE envelope, then the payload, then the signature is
checked over the decoded parts (what `open_record` does, without decoding twice). This is
the hot path of `bench/center_ingest.py`.

**Keys.** `key_of` gives a device's keys, current first (provisioning/registry.py keeps
the history: a rotated-out key still verifies what it signed). A key revoked at time T
verifies nothing whose own time is T or later: such a record is refused as REVOKED. The
record's time is the device's claim; a thief with the key could backdate, which is why
revocation also closes the broker to the device's certificate (docs/provisioning.md).

A record that verifies but conflicts with the one stored for its sequence number is a
fork: the store keeps it in `refused` (reason FORK) and the acknowledgement lists it as
durable, because protocol v1 has no refusal code for it and the center does hold it; the
chain state reports the fork (`picket center status`).

Each batch the center answers is noted with a digest of its records, in the batch's own
transaction (one row per batch id), so that an id acknowledged again for other records can
be counted (center/duplicates.py). A new event record makes its event in the same
transaction too (center/events/newrecords.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from center.batch import RefusedItem, Store
from center.chain import Verdict
from center.duplicates import AckedBatch
from center.events.newrecords import store_events
from contract.bounds import MAX_RECORD
from contract.cose import decode_sign1, sig_structure
from contract.errors import RecordError, RemoteError
from contract.protocol import Ack, Refusal, decode_batch, device_of_topic, relayed_topic
from contract.records import Record, claimed_seq, parse_payload
from contract.recordschema import validate_body
from provisioning.registry import KeyEntry

Trust = Ed25519PublicKey | Sequence[KeyEntry] | None

log = logging.getLogger(__name__)

# Refusals that a registry read a moment later could turn around (a cached key history).
STALE_KEYS = frozenset({Refusal.BAD_SIGNATURE.name, Refusal.UNKNOWN_DEVICE.name})


@dataclass(slots=True)
class IngestStats:
    batches: int = 0
    bad_batches: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    forks: int = 0  # forks found (links that do not match, conflicting records)
    refused_by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "bad_batches": self.bad_batches,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "forks": self.forks,
        }


class Ingest:
    def __init__(self, store: Store, key_of: Callable[[str], Trust]):
        self.store = store
        self.key_of = key_of
        self.stats = IngestStats()
        self._keys_saved: set[tuple[str, bytes]] = set()

    def handle(self, topic: str, payload: bytes, now_ms: int) -> Ack | None:
        """Process one batch; None when the message is not a batch at all (counted).

        Raises StoreError when the database fails: nothing was stored or acknowledged.
        """
        try:
            device = device_of_topic(topic)
            batch = decode_batch(payload)
        except RemoteError as exc:
            self.stats.bad_batches += 1
            level = logging.WARNING if self.stats.bad_batches == 1 else logging.DEBUG
            log.log(level, "refused message on %s: %s", topic, exc)
            self.store.save(
                [], [RefusedItem.of(None, None, "BAD_BATCH", str(exc), payload)], now_ms
            )
            return None
        good: list[Record] = []
        refused: list[RefusedItem] = []
        answers: list[tuple[int, Refusal]] = []
        keys = trusted(self.key_of(device))
        used: set[bytes] = set()
        refresh = getattr(self.key_of, "refresh", None)
        for raw in batch.records:
            checked = check_record(raw, device, keys)
            if (
                isinstance(checked, RefusedItem)
                and checked.reason in STALE_KEYS
                and refresh is not None
            ):
                # A key rotated or registered a moment ago: read the registry again, once.
                keys, refresh = trusted(refresh(device)), None
                checked = check_record(raw, device, keys)
            if isinstance(checked, tuple):
                good.append(checked[0])
                used.add(checked[1].public_bytes_raw())
                continue
            refused.append(checked)
            if checked.seq is not None:
                answers.append((checked.seq, Refusal[checked.reason]))
        new_keys = [(device, k) for k in sorted(used) if (device, k) not in self._keys_saved]
        # a relayed batch is stored but never answered: only the device's own are noted
        acked = (
            None
            if topic == relayed_topic(device)
            else AckedBatch.of(device, batch.id, batch.records)
        )
        saved = self.store.save(good, refused, now_ms, new_keys, acked, on_new=store_events)
        self._keys_saved.update(new_keys)
        self.stats.batches += 1
        verdicts = Counter(saved.verdicts)
        self.stats.stored += verdicts[Verdict.NEW]
        self.stats.duplicates += verdicts[Verdict.DUPLICATE]
        self.stats.refused += len(refused) + verdicts[Verdict.CONFLICT]
        self.stats.refused_by_reason.update(r.reason for r in refused)
        if verdicts[Verdict.CONFLICT]:
            self.stats.refused_by_reason["FORK"] += verdicts[Verdict.CONFLICT]
        if saved.forks:
            self.stats.forks += len(saved.forks)
            log.log(
                logging.WARNING if self.stats.forks == len(saved.forks) else logging.DEBUG,
                "%s: chain fork at sequence %d (%s)",
                device,
                saved.forks[0].seq,
                saved.forks[0].kind.value,
            )
        if refused:
            log.log(
                logging.WARNING if self.stats.refused == len(refused) else logging.DEBUG,
                "refused %d record(s) from %s: %s",
                len(refused),
                device,
                refused[0].detail,
            )
        return Ack(batch.id, tuple(r.header.seq for r in good), tuple(answers))


def trusted(found: Trust) -> tuple[KeyEntry, ...]:
    """`key_of`'s answer as a key history (a bare key: one key, never revoked)."""
    if found is None:
        return ()
    if isinstance(found, Ed25519PublicKey):
        return (KeyEntry(found),)
    return tuple(found)


def check_record(
    raw: bytes, device: str, keys: Trust
) -> tuple[Record, Ed25519PublicKey] | RefusedItem:
    """One record from `device`'s topic: the verified record and the key that verified it,
    or why it is refused.

    A record whose claimed sequence number cannot be read is refused without one (the
    device cannot be told which one it was); every other refusal names its sequence.
    """
    malformed = Refusal.MALFORMED.name
    if len(raw) > MAX_RECORD:
        detail = f"record of {len(raw)} bytes: at most {MAX_RECORD}"
        return RefusedItem.of(device, None, malformed, detail, raw)
    try:
        msg = decode_sign1(raw)
    except RecordError as exc:
        return RefusedItem.of(device, None, malformed, str(exc), raw)
    try:
        rec = parse_payload(msg.payload, raw)
    except RecordError as exc:
        return RefusedItem.of(device, claimed_seq(msg.payload), malformed, str(exc), raw)
    h = rec.header
    entries = trusted(keys)
    verified = False  # a key of the device signed it: kept whole, as evidence
    if h.device != device:
        reason, detail = Refusal.WRONG_DEVICE, f"record names {h.device!r}"
    elif not entries:
        reason, detail = Refusal.UNKNOWN_DEVICE, f"{device!r} is not registered"
    else:
        signed = sig_structure(msg.protected, msg.payload)
        entry = next((e for e in entries if _verifies(e.key, msg.signature, signed)), None)
        verified = entry is not None
        if entry is None:
            reason, detail = Refusal.BAD_SIGNATURE, "signature does not verify"
        elif entry.revoked_ms is not None and h.time_ms >= entry.revoked_ms:
            reason = Refusal.REVOKED
            detail = f"signed at {h.time_ms}, by a key revoked at {entry.revoked_ms}"
        else:
            try:
                validate_body(h.type, rec.body)
                if h.seq == 0:
                    raise RecordError("sequence numbers start at 1")
            except RecordError as exc:
                reason, detail = Refusal.MALFORMED, str(exc)
            else:
                return rec, entry.key
    return RefusedItem.of(device, h.seq, reason.name, detail, raw, whole=verified)


def _verifies(key: Ed25519PublicKey, signature: bytes, signed: bytes) -> bool:
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return False
    return True
