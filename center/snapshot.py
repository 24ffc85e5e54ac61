"""What a store holds of each device, read back in one go: the rows `picket center status` reads.

Both stores keep a device's chain state, its newest state message and its last reported
outbox depth in small tables of their own (center/store.py, center/pgstore.py), moved on with
every batch. `STATUS_QUERIES` reads those tables, the same SQL in SQLite and PostgreSQL, and
`snapshot_of` turns the rows into values; center/status.py decides from them, for a given
`now`, what each device is. These values sit apart from the status so that the stores, which
make snapshots, and the status, which opens a store, need not import each other.

One thing a snapshot cannot read from small tables: duplicates counted from content (the
same event stored twice under different sequence numbers, center/duplicates.py) need every
record's body. So a snapshot also walks the records once, in the same read transaction,
streamed (`RECORD_ROWS`, fed to `duplicates_of` row by row; the signatures are not checked
again), and reads the batches acknowledged more than once (`BATCH_ROWS`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from center.chain import ChainState, Gap, merge
from center.duplicates import ROW_COLUMNS, Duplicates, Finder

# What a snapshot reads, by argument of `snapshot_of`: small tables only.
STATUS_QUERIES = {
    "chains": "SELECT device, records, last_seq, last_boot, last_hash, last_received_ms, "
    "depth, depth_time_ms FROM chains",
    "gaps": "SELECT device, first_seq, last_seq, below, above FROM gaps ORDER BY device, first_seq",
    "forks": "SELECT device, count(*) FROM forks GROUP BY device",
    "dropped": "SELECT device, first_seq, last_seq FROM dropped",
    "presence": "SELECT device, state, state_ms FROM presence",
    "refused": "SELECT reason, count(*) FROM refused GROUP BY reason",
}

# Read apart from STATUS_QUERIES: every record, streamed; batch ids answered more than once.
RECORD_ROWS = f"SELECT {ROW_COLUMNS} FROM records"  # noqa: S608 (a constant list of columns)
BATCH_ROWS = "SELECT device, batch, acks, reused FROM batches WHERE acks > 1"


class Presence(enum.Enum):
    """A device's retained state message (picket/v1/{device}/up/state)."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device as the store holds it: chain state, presence, health."""

    device: str
    chain: ChainState
    forks: int = 0
    last_received_ms: int | None = None
    depth: int | None = None
    depth_time_ms: int | None = None
    presence: Presence | None = None
    presence_ms: int | None = None
    dropped: tuple[tuple[int, int], ...] = ()  # merged (first, last) ranges evicted


@dataclass(frozen=True, slots=True)
class Snapshot:
    devices: tuple[DeviceRow, ...]
    refused: Mapping[str, int] = field(default_factory=dict)
    duplicates: Duplicates = field(default_factory=Duplicates)


Row = Sequence[object]


def snapshot_of(
    *,
    chains: Sequence[Row],
    gaps: Sequence[Row],
    forks: Sequence[Row],
    dropped: Sequence[Row],
    presence: Sequence[Row],
    refused: Sequence[Row],
    duplicates: Duplicates | None = None,
) -> Snapshot:
    """The rows of the status queries (the same in every store) as a `Snapshot`."""
    gap_map: dict[str, list[Gap]] = {}
    for device, first, last, below, above in gaps:
        gap_map.setdefault(str(device), []).append(
            Gap(_int(first), _int(last), None if below is None else _bytes(below), _bytes(above))
        )
    drop_map: dict[str, list[tuple[int, int]]] = {}
    for device, first, last in dropped:
        drop_map.setdefault(str(device), []).append((_int(first), _int(last)))
    fork_map = {str(d): _int(n) for d, n in forks}
    seen = {str(d): (Presence(str(s)), _int(ms)) for d, s, ms in presence}
    rows: dict[str, DeviceRow] = {}
    for device, records, last_seq, last_boot, last_hash, received, depth, depth_ms in chains:
        name = str(device)
        p = seen.get(name)
        rows[name] = DeviceRow(
            device=name,
            chain=ChainState(
                _int(records),
                _int(last_seq),
                _int(last_boot),
                _bytes(last_hash),
                tuple(gap_map.get(name, ())),
            ),
            forks=fork_map.get(name, 0),
            last_received_ms=None if received is None else _int(received),
            depth=None if depth is None else _int(depth),
            depth_time_ms=None if depth_ms is None else _int(depth_ms),
            presence=None if p is None else p[0],
            presence_ms=None if p is None else p[1],
            dropped=merge(drop_map.get(name, ())),
        )
    for name, (pres, ms) in seen.items():
        if name not in rows:
            rows[name] = DeviceRow(name, ChainState(), presence=pres, presence_ms=ms)
    return Snapshot(
        tuple(rows[n] for n in sorted(rows)),
        {str(r): _int(n) for r, n in refused},
        duplicates or Duplicates(),
    )


def duplicates_of(records: Iterable[Row], batches: Iterable[Row]) -> Duplicates:
    """Duplicates counted from content, from the rows of `RECORD_ROWS` and `BATCH_ROWS`
    (an iterator each: the records are taken one at a time, never all held)."""
    finder = Finder()
    for row in records:
        finder.add_row(row)
    for device, batch, acks, reused in batches:
        finder.add_batch(str(device), _int(batch), _int(acks), _int(reused))
    return finder.result()


def _int(v: object) -> int:
    assert isinstance(v, int)
    return v


def _bytes(v: object) -> bytes:
    assert isinstance(v, bytes | bytearray | memoryview)
    return bytes(v)
