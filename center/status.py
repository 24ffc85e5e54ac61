"""What `picket center status` says: per device online or not, last seen, chain, outbox.

Reading is cheap by construction: the stores keep each device's chain state (records, last
sequence number, gaps), its newest state message and its last reported outbox depth in a
row of their own, moved on with every batch (center/store.py), so the per-device status is
one read of a few small tables. Duplicates counted from content (center/duplicates.py) are
the one exception: they need every record's body, so the snapshot walks the records once,
streamed, reading each body without checking its signature again: 0.8 s for 67,000
records (a whole-district fleet run's worth) on 2 shared cores. A store's `snapshot` turns those
rows (the same in SQLite and PostgreSQL) into values (center/snapshot.py); `build_status`
decides, for a given `now`, what each device is; `render` and `as_json` present it. All of
it is pure except `read_status`, which opens the database read-only (it may run beside
live centers).

Online: the device's retained state message (`online`, or `offline`: its last will, sent
by the broker when the link drops), when it has sent one; otherwise whether the center
heard from it within the online window. Gaps are the device's missing sequence numbers
below its newest; SKIPPED and DROPPED ones are listed but not counted as missing
(center/chain.py says why).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from center.chain import GapKind
from center.database import open_store
from center.duplicates import KIND_NAMES, Duplicates, Kind
from center.snapshot import Presence, Snapshot

DEFAULT_ONLINE_WINDOW_MS = 10 * 60_000


# --- the status ---------------------------------------------------------------------------------


class OnlineFrom(enum.Enum):
    STATE = "state"  # the device's retained state message
    LAST_SEEN = "last_seen"  # no state message: heard from within the window, or not


@dataclass(frozen=True, slots=True)
class GapStatus:
    first: int
    last: int
    kind: GapKind


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device: str
    online: bool
    online_from: OnlineFrom
    last_seen_ms: int | None
    records: int
    last_seq: int
    last_boot: int
    gaps: tuple[GapStatus, ...]
    missing: int  # sequence numbers in MISSING gaps
    forks: int
    depth: int | None  # outbox depth in the newest HEALTH record
    depth_time_ms: int | None


@dataclass(frozen=True, slots=True)
class Status:
    now_ms: int
    devices: tuple[DeviceStatus, ...]
    refused: Mapping[str, int]
    duplicates: Duplicates = field(default_factory=Duplicates)

    @property
    def totals(self) -> dict[str, int]:
        d = self.devices
        return {
            "devices": len(d),
            "online": sum(x.online for x in d),
            "records": sum(x.records for x in d),
            "missing": sum(x.missing for x in d),
            "gaps": sum(1 for x in d for g in x.gaps if g.kind is GapKind.MISSING),
            "forks": sum(x.forks for x in d),
            "outbox_depth": sum(x.depth or 0 for x in d),
            "refused": sum(self.refused.values()),
        }


def build_status(
    snap: Snapshot, now_ms: int, online_window_ms: int = DEFAULT_ONLINE_WINDOW_MS
) -> Status:
    out = []
    for row in snap.devices:
        seen = [t for t in (row.last_received_ms, row.presence_ms) if t is not None]
        last_seen = max(seen) if seen else None
        if row.presence is not None:
            online, source = row.presence is Presence.ONLINE, OnlineFrom.STATE
        else:
            recent = last_seen is not None and now_ms - last_seen <= online_window_ms
            online, source = recent, OnlineFrom.LAST_SEEN
        gaps = tuple(GapStatus(g.first, g.last, g.kind(row.dropped)) for g in row.chain.gaps)
        out.append(
            DeviceStatus(
                device=row.device,
                online=online,
                online_from=source,
                last_seen_ms=last_seen,
                records=row.chain.records,
                last_seq=row.chain.last_seq,
                last_boot=row.chain.last_boot,
                gaps=gaps,
                missing=sum(g.last - g.first + 1 for g in gaps if g.kind is GapKind.MISSING),
                forks=row.forks,
                depth=row.depth,
                depth_time_ms=row.depth_time_ms,
            )
        )
    return Status(now_ms, tuple(out), dict(snap.refused), snap.duplicates)


def read_status(
    db: str | Path, now_ms: int, online_window_ms: int = DEFAULT_ONLINE_WINDOW_MS
) -> Status:
    """Open the database read-only and read one consistent snapshot.

    Raises CenterDbError when it is missing, not a center's, or cannot be read.
    """
    store = open_store(db, readonly=True)
    try:
        return build_status(store.snapshot(), now_ms, online_window_ms)
    finally:
        store.close()


# --- presenting -----------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    """An ISO 8601 UTC time, or None. Defensive: a database may hold a time from before the
    contract bounded them (a record's time in the year 292278994); such a time is shown as
    None here, and its milliseconds beside it where the JSON has them."""
    if ms is None:
        return None
    try:
        t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def as_json(status: Status) -> dict[str, object]:
    return {
        "now": _iso(status.now_ms),
        "devices": [
            {
                "device": d.device,
                "online": d.online,
                "online_from": d.online_from.value,
                "last_seen": _iso(d.last_seen_ms),
                "last_seen_ms": d.last_seen_ms,
                "records": d.records,
                "last_seq": d.last_seq,
                "last_boot": d.last_boot,
                "missing": d.missing,
                "gaps": [{"first": g.first, "last": g.last, "kind": g.kind.value} for g in d.gaps],
                "forks": d.forks,
                "outbox_depth": d.depth,
                "outbox_depth_at": _iso(d.depth_time_ms),
                "outbox_depth_at_ms": d.depth_time_ms,
            }
            for d in status.devices
        ],
        "totals": status.totals,
        "refused": dict(sorted(status.refused.items())),
        "duplicates": {
            "total": status.duplicates.total,
            "by_kind": status.duplicates.counts(),
            "examples": [e.as_json() for e in status.duplicates.examples],
            "batches_redelivered": status.duplicates.batches_redelivered,
        },
    }


def _ago(now_ms: int, ms: int | None) -> str:
    if ms is None:
        return "never"
    s = max(0, now_ms - ms) // 1000
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172_800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def _ranges(gaps: Sequence[GapStatus], limit: int = 3) -> str:
    shown = [
        f"{g.first}" if g.first == g.last else f"{g.first}-{g.last}"
        for g in gaps
        if g.kind is GapKind.MISSING
    ]
    more = len(shown) - limit
    return ", ".join(shown[:limit]) + (f" +{more} more" if more > 0 else "")


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# What to do about duplicates, in one line (docs/center.md, "Duplicates counted from content").
DUPLICATES_FIX = (
    "fix: each later record repeats an event the first already states (a device that "
    "restarted and recorded it again, or used a batch id again): count the event once, and "
    "look at those devices' restarts (key 3, the boot counter); --json lists the records"
)


def _duplicates(found: Duplicates) -> list[str]:
    """Two lines when the center holds duplicates (what, then the fix), none otherwise."""
    if not found.total:
        return []
    kinds = ", ".join(f"{KIND_NAMES[k]} {n}" for k, n in found.by_kind.items() if n)
    shown = []
    for e in found.examples[:3]:
        what = f"batch {e.batch}" if e.kind is Kind.BATCH else "seqs " + ", ".join(map(str, e.seqs))
        shown.append(f"{e.device} {KIND_NAMES[e.kind]} {what}")
    return [
        f"duplicates: {found.total} ({kinds}), e.g. {'; '.join(shown)}",
        DUPLICATES_FIX,
    ]


def render(status: Status) -> str:
    """A table for people, one device a line, then the totals."""
    head = ("DEVICE", "STATE", "LAST SEEN", "RECORDS", "LAST SEQ", "MISSING", "FORKS", "OUTBOX")
    lines: list[tuple[str, ...]] = [head]
    for d in status.devices:
        state = ("online" if d.online else "offline") + (
            "" if d.online_from is OnlineFrom.STATE else "?"
        )
        missing = str(d.missing) + (f" ({_ranges(d.gaps)})" if d.missing else "")
        lines.append(
            (
                d.device,
                state,
                _ago(status.now_ms, d.last_seen_ms),
                str(d.records),
                str(d.last_seq),
                missing,
                str(d.forks),
                "-" if d.depth is None else str(d.depth),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    right = {3, 4, 6, 7}
    text = [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in lines
    ]
    t = status.totals
    refused = ", ".join(f"{n} {r}" for r, n in sorted(status.refused.items())) or "none"
    text.append("")
    text.append(
        f"{_n(t['devices'], 'device')}, {t['online']} online; {_n(t['records'], 'record')}, "
        f"{t['missing']} missing in {_n(t['gaps'], 'gap')}, {_n(t['forks'], 'fork')}; "
        f"{t['outbox_depth']} in outboxes (last reported); refused: {refused}"
    )
    explained = [
        (d.device, g) for d in status.devices for g in d.gaps if g.kind is not GapKind.MISSING
    ]
    if explained:
        text.append(
            "not missing: "
            + "; ".join(f"{dev} {g.first}-{g.last} {g.kind.value.lower()}" for dev, g in explained)
        )
    text.extend(_duplicates(status.duplicates))
    if any(d.online_from is OnlineFrom.LAST_SEEN for d in status.devices):
        text.append("?: no state message from the device; online means heard from recently")
    return "\n".join(text) + "\n"
