"""Duplicates counted from content: one event stored twice under different sequence numbers.

The center keeps a record once per (device, sequence number), so counting rows per
(device, seq) finds nothing by construction. What a person means by a duplicate is the
same *event* stored twice: a device that restarted and replayed what it had already
recorded numbers the copy anew, and the center, rightly, stores both (each is signed
evidence). This module tells such copies apart from genuine repeats, by kind, each kind
with an identity of its own taken from what the agent can and cannot produce
(docs/records.md for the keys, docs/center.md for the rules):

- **check-in** (type 1): one device, one point (and one drone, for an aerial check-in)
  and stays that overlap. A stay is [arrival, arrival + dwell], the dwell shortened by
  the half second its rounding to whole seconds may add. The engine closes a visit only
  after EXIT_FIXES fixes beyond the point (agent/checkin/visits.py) and opens the next on
  a later fix, so two genuine visits never overlap; within one run it already drops a
  stay it has recorded (`CheckinEngine._fresh`, the same overlap). What overlaps comes
  from a run that forgot: a restart whose receiver replayed fixes the old run had seen.
  A replay of fixes older than the persisted time floor is restamped by the time keeper
  (agent/gnss/timekeeper.py: source PERSISTED, the fixes' spacing kept), which moves the
  copy past the original; so a check-in is also a copy of an earlier one when its body is
  identical (same best fix to the centimetre, dwell, fixes, speed) and it was made in a
  later boot with a restamped time.
- **missed point** (type 2): the same point, plan version, line and window; the time of
  the report is not part of it. The engine reports a window once, and the mark that it was
  settled is stored with the record and restored after a restart (docs/engine.md); a copy
  means that mark was lost (an outbox found damaged and moved aside keeps its records
  through salvage, not its marks).
- **roll-call answer** (type 5): the same challenge (bytes, or the command id).
- **command receipt** (type 7): the same command id. The executor answers a command
  number once, ever: the receipt is committed with the number in one transaction, and
  the replay floor, kept in the outbox and beside the keys, refuses a redelivery
  unanswered (agent/commands/executor.py), so a second receipt is never legitimate.
- **mission** (type 10): the same FLY_LINE command number. A dock stores the MISSION
  record in the transaction that closes that number, and a restart takes up only a
  number not yet closed (agent/dock/executor.py).
- **dropped** (type 8): the same body. The records an eviction names are gone from the
  outbox, so no later eviction can name them again with the same count, bytes and types.
- **suspicion** (type 3): the same kind raised by the same fix (time and position); the
  detail text is left out, as it names figures of the fix before, which a replay may not
  have.
- **health, alert, dock state** (types 4, 6, 9): the same body at the same time (key 6).
- **event** (type 11): the same category, place (its source and position) and attachment
  digests within the same minute of key 6 (contract/events.py): a report sent twice.

A record whose time source is NONE (the device did not know the time: an alert raised
before the first fix carries time 0) has no time to compare, so the kinds that need one
never count it. Counts are of the copies: n records stating one event are n - 1
duplicates, and the examples name their sequence numbers for a person to look at.

**A batch acknowledged twice.** The center acknowledges a batch by its id, after the
COMMIT; the device settles by the sequence numbers the acknowledgement lists, never by the
id (agent/uplink/sync.py: `on_ack` deletes what `stored` names; the id only frees the
batch's place in the window). A resend after a lost or late acknowledgement goes out under
a new id. So the same (device, batch id) reaches the center again in two ways: the same
message delivered again (MQTT QoS 1), whose records are all stored already: normal, counted
apart as `batches_redelivered`; or an id used again for other records, after a restart
whose first id (milliseconds modulo 2**31, agent/uplink/mqtt.py) met one used before. The
second is the duplicate of this kind: the device cannot lose a record by it, but "batch 7
was acknowledged" no longer names one set of records, in the device's log or the center's.
The store keeps one row per batch id (center/tables.py `write_batch`, in the batch's
transaction): how often it was acknowledged, and how often with other records than the
time before, which `AckedBatch` tells by a digest of the records.

Pure: records (or stored rows) in, counts out; the audit (center/audit.py) feeds it every
record it verified, the status (center/snapshot.py) every stored row, in one pass each.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cbor2

from contract.events import EventKey
from contract.fix import TimeSource
from contract.records import (
    CheckinKey,
    DroppedKey,
    MissedKey,
    MissionKey,
    ReceiptKey,
    Record,
    RecordType,
    RollcallKey,
    SuspicionKey,
)

DWELL_ROUNDING_MS = 500  # a check-in's dwell is rounded to whole seconds
MAX_EXAMPLES = 5  # per kind

# The columns of the `records` table `Finder.add_row` reads, in its order.
ROW_COLUMNS = "device, seq, boot, type, time_ms, time_source, raw"


class Kind(enum.StrEnum):
    """What a duplicate is of: each record type, and a batch acknowledged twice."""

    CHECKIN = "checkin"
    MISSED = "missed"
    SUSPICION = "suspicion"
    HEALTH = "health"
    ROLLCALL = "rollcall"
    ALERT = "alert"
    RECEIPT = "receipt"
    DROPPED = "dropped"
    DOCK_STATE = "dock_state"
    MISSION = "mission"
    EVENT = "event"
    BATCH = "batch"


# How reports and `picket center status` name each kind.
KIND_NAMES: Mapping[Kind, str] = {
    Kind.CHECKIN: "check-in",
    Kind.MISSED: "missed point",
    Kind.SUSPICION: "suspicion",
    Kind.HEALTH: "health",
    Kind.ROLLCALL: "roll-call answer",
    Kind.ALERT: "alert",
    Kind.RECEIPT: "command receipt",
    Kind.DROPPED: "dropped",
    Kind.DOCK_STATE: "dock state",
    Kind.MISSION: "mission",
    Kind.EVENT: "event",
    Kind.BATCH: "batch acknowledged twice",
}

_KIND_OF = {t: Kind(t.name.lower()) for t in RecordType}
_RTYPE_OF = {k: t for t, k in _KIND_OF.items()}


@dataclass(frozen=True, slots=True)
class AckedBatch:
    """A batch the center acknowledges: its device, its id, and the digest of its records
    (SHA-256 over each record's length and bytes, in order; the first 16 bytes)."""

    device: str
    batch: int
    digest: bytes

    @classmethod
    def of(cls, device: str, batch: int, records: Iterable[bytes]) -> AckedBatch:
        h = hashlib.sha256()
        for raw in records:
            h.update(len(raw).to_bytes(4, "big"))
            h.update(raw)
        return cls(device, batch, h.digest()[:16])


@dataclass(frozen=True, slots=True)
class Example:
    """One event stored more than once: its records' sequence numbers, oldest first; for a
    batch, its id (and no sequence numbers)."""

    kind: Kind
    device: str
    seqs: tuple[int, ...] = ()
    batch: int | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind.value, "device": self.device}
        if self.batch is None:
            out["seqs"] = list(self.seqs)
        else:
            out["batch"] = self.batch
        return out


@dataclass(frozen=True, slots=True)
class Duplicates:
    """Duplicates by kind (every kind listed, 0 included), a few examples of each, and the
    batches acknowledged again with the same records (normal: not duplicates)."""

    by_kind: Mapping[Kind, int] = field(default_factory=lambda: dict.fromkeys(Kind, 0))
    examples: tuple[Example, ...] = ()
    batches_redelivered: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def counts(self) -> dict[str, int]:
        """By kind, as reports name them (`duplicates_by_kind`)."""
        return {k.value: self.by_kind.get(k, 0) for k in Kind}


@dataclass(slots=True)
class _Stay:
    seq: int
    boot: int
    arrival: int
    end: int
    restamped: bool
    body: Mapping[int, object]


# The types whose identity is their body (besides their time, or a range): compared only
# between records that already agree on the rest, so most bodies are never made hashable.
_BY_BODY = frozenset(
    {RecordType.HEALTH, RecordType.ALERT, RecordType.DOCK_STATE, RecordType.DROPPED}
)


class Finder:
    """Fed records one at a time (`add`, `add_row`) and batch rows (`add_batch`), in any
    order; `result` says what repeats."""

    def __init__(self) -> None:
        # (kind, device, identity but the body) -> (seq, body when it is part of the identity)
        self._same: dict[tuple[Kind, str, object], list[tuple[int, Mapping[int, object]]]] = {}
        self._stays: dict[tuple[str, object, object], list[_Stay]] = {}
        self._batches: list[Example] = []
        self._batch_copies = 0
        self._redelivered = 0
        self.unreadable = 0  # stored rows whose body could not be read (a damaged database)

    def add(self, rec: Record) -> None:
        h = rec.header
        self._take(h.device, h.seq, boot=h.boot, rtype=h.type, time_ms=h.time_ms,
                   source=h.time_source, body=rec.body)  # fmt: skip

    def add_row(self, row: Sequence[object]) -> None:
        """A row of the center's `records` table, as `ROW_COLUMNS` names its columns. Its
        bytes were verified when stored, so the body is read without checking the
        signature again."""
        device, seq, boot, rtype, time_ms, source, raw = row
        try:
            if not isinstance(device, str) or not isinstance(raw, bytes | memoryview):
                raise TypeError("not a row of records")
            payload = cbor2.loads(cbor2.loads(bytes(raw)).value[2])
            body = {k: v for k, v in payload.items() if type(k) is int and k >= 16}
            self._take(
                device,
                _int(seq),
                boot=_int(boot),
                rtype=RecordType(_int(rtype)),
                time_ms=_int(time_ms),
                source=TimeSource(_int(source)),
                body=body,
            )
        except (ValueError, TypeError, AttributeError, IndexError, KeyError):
            self.unreadable += 1

    def add_batch(self, device: str, batch: int, acks: int, reused: int) -> None:
        """A row of `batches`: the center acknowledged batch id `batch` of `device` `acks`
        times, `reused` of them with other records than the time before (center/batch.py)."""
        self._batch_copies += reused
        self._redelivered += max(0, acks - 1 - reused)
        if reused > 0:
            self._batches.append(Example(Kind.BATCH, device, batch=batch))

    def _take(
        self,
        device: str,
        seq: int,
        *,
        boot: int,
        rtype: RecordType,
        time_ms: int,
        source: TimeSource,
        body: Mapping[int, object],
    ) -> None:
        if rtype is RecordType.CHECKIN:
            if source is TimeSource.NONE:
                return
            dwell = body.get(CheckinKey.DWELL_S)
            end = (
                time_ms + max(0, dwell * 1000 - DWELL_ROUNDING_MS)
                if type(dwell) is int
                else time_ms
            )
            stay = _Stay(seq, boot, time_ms, end, source is TimeSource.PERSISTED, body)
            point, drone = body.get(CheckinKey.POINT), body.get(CheckinKey.DRONE)
            self._stays.setdefault((device, _hashable(point), _hashable(drone)), []).append(stay)
            return
        ident = _identity(rtype, time_ms, source, body)
        if ident is not None:
            self._same.setdefault((_KIND_OF[rtype], device, ident), []).append((seq, body))

    def result(self) -> Duplicates:
        found: list[Example] = []
        for (kind, device, _), entries in self._same.items():
            if len(entries) < 2:
                continue
            groups: dict[object, list[int]] = {}
            whole = _RTYPE_OF[kind] in _BY_BODY
            for seq, body in entries:
                groups.setdefault(_frozen(body) if whole else None, []).append(seq)
            found.extend(
                Example(kind, device, tuple(sorted(g))) for g in groups.values() if len(g) > 1
            )
        for (device, _, _), stays in self._stays.items():
            if len(stays) > 1:
                found.extend(Example(Kind.CHECKIN, device, s) for s in _same_stays(stays))
        by_kind = dict.fromkeys(Kind, 0)
        for e in found:
            by_kind[e.kind] += len(e.seqs) - 1
        by_kind[Kind.BATCH] = self._batch_copies
        found.sort(key=lambda e: (e.device, e.seqs))
        shown: list[Example] = []
        for kind in Kind:
            of_kind = found if kind is not Kind.BATCH else self._batches
            shown.extend([e for e in of_kind if e.kind is kind][:MAX_EXAMPLES])
        return Duplicates(by_kind, tuple(shown), self._redelivered)


def _identity(
    rtype: RecordType, time_ms: int, source: TimeSource, body: Mapping[int, object]
) -> object | None:
    """What makes two records of `rtype` one event (None: nothing to compare on), but the
    body itself, which `result` compares for the types of `_BY_BODY`."""
    g = body.get
    if rtype is RecordType.MISSED:
        keys = (MissedKey.POINT, MissedKey.PLAN_VERSION, MissedKey.LINE)
        return (
            *(_hashable(g(k)) for k in keys),
            g(MissedKey.WINDOW_START),
            g(MissedKey.WINDOW_END),
        )
    if rtype is RecordType.ROLLCALL:
        return _hashable(g(RollcallKey.CHALLENGE))
    if rtype is RecordType.RECEIPT:
        return _hashable(g(ReceiptKey.COMMAND))
    if rtype is RecordType.MISSION:
        return _hashable(g(MissionKey.COMMAND))
    if rtype is RecordType.DROPPED:
        return (_hashable(g(DroppedKey.FIRST_SEQ)), _hashable(g(DroppedKey.LAST_SEQ)))
    if source is TimeSource.NONE:
        return None
    if rtype is RecordType.SUSPICION:
        fix = (SuspicionKey.KIND, SuspicionKey.LAT_E7, SuspicionKey.LON_E7)
        return (time_ms, *(_hashable(g(k)) for k in fix))
    if rtype is RecordType.EVENT:
        where = (EventKey.CATEGORY, EventKey.PLACE, EventKey.LAT_E7, EventKey.LON_E7)
        attached = g(EventKey.ATTACHMENTS)
        digests = sorted(repr(a[1]) for a in attached) if isinstance(attached, list) else []
        return (time_ms // 60_000, *(_hashable(g(k)) for k in where), tuple(digests))
    return time_ms


def _same_stays(stays: list[_Stay]) -> list[tuple[int, ...]]:
    """The check-ins of one device at one point (and drone) that record one stay: sequence
    numbers of each group of two or more, oldest first."""
    parent = list(range(len(stays)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[root(j)] = root(i)

    # overlapping stays: a sweep in arrival order
    order = sorted(range(len(stays)), key=lambda i: (stays[i].arrival, stays[i].seq))
    first, reach = order[0], stays[order[0]].end
    for i in order[1:]:
        if stays[i].arrival <= reach:
            join(first, i)
            reach = max(reach, stays[i].end)
        else:
            first, reach = i, stays[i].end
    # a stay replayed and restamped past the original: the same body, a later boot
    alike: dict[tuple[object, ...], list[int]] = {}
    if any(s.restamped for s in stays):
        for i, s in enumerate(stays):
            alike.setdefault(_frozen(s.body), []).append(i)
    for same in alike.values():
        for a in same:
            for b in same:
                later, earlier = stays[b], stays[a]
                if later.seq > earlier.seq and later.restamped and later.boot > earlier.boot:
                    join(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(stays)):
        groups.setdefault(root(i), []).append(stays[i].seq)
    return [tuple(sorted(g)) for g in groups.values() if len(g) > 1]


def _hashable(v: object) -> object:
    """A value of a decoded body as a dictionary key: arrays become tuples, and what a
    later version may add that cannot be a key (a map, a tag) its text."""
    if isinstance(v, list | tuple):
        return tuple(_hashable(x) for x in v)
    try:
        hash(v)
    except TypeError:
        return repr(v)
    return v


def _int(v: object) -> int:
    if not isinstance(v, int):
        raise TypeError(f"{v!r} is not an integer")
    return v


def _frozen(body: Mapping[int, object]) -> tuple[object, ...]:
    return tuple((k, _hashable(body[k])) for k in sorted(body))
