"""Health telemetry: what the center needs to know about a device that is not a check-in.

`health_snapshot` is pure: the daemon hands in what it knows (the outbox depth and the time
of its oldest unsent record, where the clock came from, the last fix, battery and link
readings when the hardware has them) and gets the body of a HEALTH record (type 4,
docs/records.md). A reading the device does not have is left out, never sent as zero.
`HealthTimer` says when the next one is due, on the monotonic clock, so a clock step never
bunches or starves them. `store_health` signs the body and appends it as evictable: under
the outbox's size cap, health goes first (with a DROPPED record saying so), and the uplink
never lets it jump ahead of a backlog of check-ins.

How the daemon uses it, once per `HealthTimer.due`:

    body = health_snapshot(
        now_ms=keeper_now.time_ms, outbox_depth=outbox.depth(),
        oldest_unsent_ms=None,  # until the outbox can say (see below)
        clock_source=keeper_now.source, fix=agent.last_fix, now_mono_ms=mono,
        started_mono_ms=started, battery_pct=…, rssi_dbm=…,
    )
    uplink.on_stored(store_health(outbox, key, body, time_ms=…, time_source=…))

The outbox keeps each record's event time but has no query for the oldest unsent one yet;
`oldest_unsent_ms=None` leaves key 17 out until it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.store.outbox import Outbox, Stored, signed
from contract.fix import Fix, Quality, TimeSource
from contract.records import (
    DroppedKey,
    Eviction,
    RecordType,
    dropped_body,
    health_body,
)

if TYPE_CHECKING:
    from agent.checkin.device import DeviceAgent

FIX_STALE_MS = 30_000  # a fix older than this says nothing about the receiver now


def health_snapshot(
    *,
    now_ms: int,
    outbox_depth: int,
    oldest_unsent_ms: int | None = None,
    clock_source: TimeSource | None = None,
    fix: Fix | None = None,
    battery_pct: int | None = None,
    battery_mv: int | None = None,
    rssi_dbm: int | None = None,
    now_mono_ms: int | None = None,
    started_mono_ms: int | None = None,
) -> dict[int, object]:
    """The body of a HEALTH record (integer keys, as `records.build` takes it).

    `now_ms` is the time the record will carry (the clock `oldest_unsent_ms` is on). With
    no fix, or one older than FIX_STALE_MS, the fix quality is INVALID and no satellites
    are reported. Uptime needs both monotonic readings.
    """
    fresh = (
        fix is not None and fix.time_ms is not None and 0 <= now_ms - fix.time_ms <= FIX_STALE_MS
    )
    uptime = None
    if now_mono_ms is not None and started_mono_ms is not None:
        uptime = max(0, now_mono_ms - started_mono_ms) // 1000
    return health_body(
        depth=max(0, outbox_depth),
        oldest_unsent_s=(
            None if oldest_unsent_ms is None else max(0, now_ms - oldest_unsent_ms) // 1000
        ),
        clock_source=clock_source,
        fix_quality=fix.quality if fresh and fix is not None else Quality.INVALID,
        satellites=fix.satellites if fresh and fix is not None else None,
        battery_pct=None if battery_pct is None else min(100, max(0, battery_pct)),
        battery_mv=battery_mv,
        rssi_dbm=rssi_dbm,
        uptime_s=uptime,
    )


def store_health(
    outbox: Outbox,
    key: Ed25519PrivateKey,
    body: dict[int, object],
    *,
    time_ms: int,
    time_source: TimeSource,
) -> Stored:
    """Sign `body` as a HEALTH record and append it as evictable; returns what was stored."""

    make = signed(
        key, outbox.device, RecordType.HEALTH, time_ms=time_ms, source=time_source, body=body
    )
    return outbox.append(make, evictable=True)


def store_salvage_report(
    outbox: Outbox, key: Ed25519PrivateKey, *, time_ms: int, time_source: TimeSource
) -> Stored | None:
    """State what the outbox put back from a damaged file (`outbox.salvage`): a DROPPED
    record whose keys 16–18 are the numbers no record was found for (their sizes and types
    unknown: 19 is 0, 20 empty) and key 21 the records put back (docs/records.md, "A damaged
    outbox"). Nothing lost: no record, the report is only forgotten (the log said it)."""
    report = outbox.salvage
    if report is None:
        return None
    if not report.lost:
        outbox.report_salvage(None)
        return None
    lost = Eviction(report.lost, report.first, report.last, 0, ())
    body = {**dropped_body(lost), DroppedKey.SALVAGED: report.salvaged}

    make = signed(
        key, outbox.device, RecordType.DROPPED, time_ms=time_ms, source=time_source, body=body
    )
    return outbox.report_salvage(make)


@dataclass(slots=True)
class HealthTimer:
    """Due every `interval_ms` of monotonic time, the first time at once."""

    interval_ms: int
    _next_ms: int | None = None

    def due(self, mono_ms: int) -> bool:
        if self._next_ms is not None and mono_ms < self._next_ms:
            return False
        self._next_ms = mono_ms + self.interval_ms
        return True


def store_agent_health(agent: DeviceAgent, t_ms: int, started_ms: int) -> Stored:
    """A health record for a simulated device, whose virtual clock is also its monotonic
    one: the snapshot of `agent` at `t_ms`, stored, counted and handed to its `on_stored`."""
    fix = agent.last_fix
    source = fix.time_source if fix else TimeSource.NONE
    body = health_snapshot(
        now_ms=t_ms,
        outbox_depth=agent.outbox.depth(),
        clock_source=source,
        fix=fix,
        now_mono_ms=t_ms,
        started_mono_ms=started_ms,
    )
    stored = store_health(agent.outbox, agent.key, body, time_ms=t_ms, time_source=source)
    agent.created[RecordType.HEALTH] += 1
    agent.on_stored(stored)
    return stored
