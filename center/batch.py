"""What a store does with a batch, before any SQL: its values, its protocol, its pure step.

The ingest (center/ingest.py) hands a store the records of a batch that verified and the
items it refused; the store answers with a `Saved`, what became of each record. Both stores
(SQLite in center/store.py, PostgreSQL in center/pgstore.py) keep that promise the same
way: for each device of the batch they read its chain state and the hashes of the sequence
numbers it already holds, and `plan_device` decides, without touching the database, which
records are new, which fork, and what the device's chain, outbox depth and dropped ranges
become. The writes that follow are center/tables.py's, the same for both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from center.chain import ChainState, Fork, ForkKind, Link, Placement, Verdict, place
from center.duplicates import AckedBatch
from center.snapshot import Presence, Snapshot
from contract.records import DroppedKey, HealthKey, Record, RecordType

# What `refused` keeps of input that no key of the device signed: its first bytes (every
# ordinary record whole), its size and its SHA-256, never the whole of a message that can
# be megabytes of junk. What a device's key signed (a fork, a malformed body, a record
# signed after its key's revocation) is kept whole: it is evidence, and at most a record's
# size (contract/bounds.py's MAX_RECORD, 1 KiB).
REFUSED_PREFIX = 256
MAX_DETAIL = 1000  # characters of a refusal's detail (it may quote what was refused)


@dataclass(frozen=True, slots=True)
class RefusedItem:
    device: str | None
    seq: int | None
    reason: str
    detail: str
    raw: bytes  # what is kept: the whole input, or its first REFUSED_PREFIX bytes
    size: int = -1  # of the whole input; -1: len(raw)
    digest: bytes = b""  # SHA-256 of the whole input; b"": of raw

    @classmethod
    def of(
        cls,
        device: str | None,
        seq: int | None,
        reason: str,
        detail: str,
        payload: bytes,
        *,
        whole: bool = False,
    ) -> RefusedItem:
        """The item for refused input `payload`, kept `whole` or cut to its prefix."""
        kept = payload if whole else payload[:REFUSED_PREFIX]
        digest = hashlib.sha256(payload).digest()
        return cls(device, seq, reason, detail[:MAX_DETAIL], kept, len(payload), digest)

    def row(self, now_ms: int) -> tuple[object, ...]:
        """The `refused` table row, in the column order of tables.write_refused."""
        size = len(self.raw) if self.size < 0 else self.size
        digest = self.digest or hashlib.sha256(self.raw).digest()
        return (self.device, self.seq, self.reason, self.detail, self.raw, now_ms, size, digest)


@dataclass(frozen=True, slots=True)
class Saved:
    """What one `save` did to each record, in order (every one is durable now), and the
    forks it found. CONFLICT records went to `refused` with reason FORK."""

    verdicts: tuple[Verdict, ...]
    forks: tuple[Fork, ...] = ()

    @property
    def fresh(self) -> list[bool]:
        return [v is Verdict.NEW for v in self.verdicts]


# What else a batch's new records make, written in the batch's transaction: called with the
# store's `tables.Sql` (Any here: center/tables.py is above this module), each device's new
# records and the time (the ingest passes center/events/newrecords.py's: events).
NewRecords = Callable[[Any, Sequence[Record], int], None]


class Store(Protocol):
    def save(
        self,
        records: Sequence[Record],
        refused: Sequence[RefusedItem],
        now_ms: int,
        keys: Sequence[tuple[str, bytes]] = (),
        acked: AckedBatch | None = None,
        *,
        on_new: NewRecords | None = None,
    ) -> Saved:
        """`acked`: the batch being acknowledged, noted in the same transaction
        (center/duplicates.py: a batch acknowledged twice); `on_new`: called with each
        device's new records, in the same transaction."""

    def note_presence(
        self, device: str, presence: Presence, now_ms: int, *, retained: bool = False
    ) -> None:
        """Keep the newest state message; a retained one (replayed on subscribe) only when
        it changes the state, so a reconnect does not pass for the device being seen."""

    def snapshot(self) -> Snapshot: ...

    def close(self) -> None: ...


# --- the pure step shared by the stores ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceWrite:
    """What one device's share of a batch writes, decided before anything is written."""

    placement: Placement
    new: tuple[tuple[Record, Link], ...]
    forked: tuple[RefusedItem, ...]
    depth: tuple[int, int] | None  # (depth, time_ms) of the newest new HEALTH record
    dropped: tuple[tuple[int, int, int], ...]  # (seq, first, last) of new DROPPED records


def plan_device(
    state: ChainState, records: Sequence[Record], links: Sequence[Link], stored: Mapping[int, bytes]
) -> DeviceWrite:
    done = place(state, links, stored)
    new: list[tuple[Record, Link]] = []
    forked: list[RefusedItem] = []
    depth: tuple[int, int] | None = None
    dropped: list[tuple[int, int, int]] = []
    conflicts = iter(f for f in done.forks if f.kind is ForkKind.CONFLICT)
    for rec, link, verdict in zip(records, links, done.verdicts, strict=True):
        h = rec.header
        if verdict is Verdict.CONFLICT:
            fork = next(conflicts)
            forked.append(
                RefusedItem.of(
                    h.device,
                    h.seq,
                    "FORK",
                    f"another record is stored for sequence {h.seq} "
                    f"(hash {fork.expected.hex()}, this one {fork.found.hex()})",
                    rec.raw,
                    whole=True,
                )
            )
        if verdict is not Verdict.NEW:
            continue
        new.append((rec, link))
        if h.type is RecordType.HEALTH:
            d = rec.body.get(HealthKey.DEPTH)
            if isinstance(d, int) and (depth is None or h.time_ms >= depth[1]):
                depth = (d, h.time_ms)
        elif h.type is RecordType.DROPPED:
            first, last = rec.body.get(DroppedKey.FIRST_SEQ), rec.body.get(DroppedKey.LAST_SEQ)
            if isinstance(first, int) and isinstance(last, int):
                dropped.append((h.seq, first, last))
    return DeviceWrite(done, tuple(new), tuple(forked), depth, tuple(dropped))


def by_device(records: Iterable[Record]) -> dict[str, list[int]]:
    """Positions of the records of each device, in first-seen device order."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        out.setdefault(r.header.device, []).append(i)
    return out
