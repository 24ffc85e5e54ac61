"""Field events in `picket sim fleet`: the device side in the workers, the desk and the
audit in the parent (simulators/fieldevents.py does the work; this is the fleet's wiring).

In a worker (simulators/fleetworker.py) each device has a `DeviceEvents`: its member's
planned reports, and the attachment store the agent opens at every boot beside its outbox
(`attachments.db`), with the uploader on every uplink the device makes (a new one after a
dead spot too). A kill abandons the store's connection as it abandons the outbox's. The
worker's `Backlog` counts the attachments still waiting, so the drain waits for them, and
each device's `DeviceFinal` lists what it reported: (record sequence, digests in hex).

In the parent (simulators/fleetrun.py) `FleetDesk` runs the center's desk on the run's
center database while the shift and the drain last, lets it settle after the drain, and
`events_report` audits the center against the finals. A shard has no center of its own:
it reports what its devices reported and leaves the rest to whoever runs the center.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.events.attachstore import AttachmentStore
from agent.events.mine import attachments_path
from agent.events.report import reconcile
from simulators.fieldevents import Desk, MemberReports, attach_uploader, audit_events

if TYPE_CHECKING:
    from agent.checkin.device import DeviceAgent
    from agent.config import AgentConfig
    from agent.store.outbox import Outbox
    from agent.uplink.mqtt import Uplink
    from contract.eventcommands import Catalogue
    from simulators.fleetwire import Final

__all__ = ["DeviceEvents", "FleetDesk", "events_report"]

# The uploader looks at its store this often besides being woken by every report: with
# thousands of devices per worker a look each second would cost a query per device-second.
UPLOADER_POLL_S = 30.0
SETTLE_TIMEOUT_S = 120.0


@dataclass(slots=True)
class DeviceEvents:
    """One device's field events in a worker."""

    reports: MemberReports
    config: AgentConfig
    store: AttachmentStore | None = None
    abandoned: list[AttachmentStore] = field(default_factory=list)

    def boot(self, outbox: Outbox, now_ms: int) -> None:
        """At the agent's start: the store beside the outbox, reconciled with it."""
        cfg = self.config
        self.store = AttachmentStore(attachments_path(cfg.outbox_path), cfg.events.quota_bytes)
        reconcile(outbox, self.store, now_ms)

    def attach(self, uplink: Uplink) -> None:
        assert self.store is not None
        attach_uploader(uplink, self.store, self.config.events.chunk_bytes, UPLOADER_POLL_S)

    def due(self, t_ms: int, agent: DeviceAgent, uplink: Uplink, catalogue: Catalogue) -> None:
        if not self.reports.planned or self.reports.planned[0].at_ms > t_ms:
            return  # the common case, every device-second: nothing to do
        assert self.store is not None
        self.reports.due(
            t_ms,
            outbox=agent.outbox,
            store=self.store,
            key=agent.key,
            settings=self.config.events,
            catalogue=catalogue,
            fix=agent.last_fix,
            uplink=uplink,
        )

    def waiting(self) -> int:
        """Attachments not yet complete at the center (stored, uploading)."""
        return 0 if self.store is None else self.store.usage().waiting

    def abandon(self) -> None:
        """kill -9: the connection is dropped without a close."""
        if self.store is not None:
            self.abandoned.append(self.store)
            self.store = None

    def close(self) -> None:
        for s in [*self.abandoned, *([self.store] if self.store is not None else [])]:
            s.close()

    def final(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        return tuple((seq, tuple(d.hex() for d in ds)) for seq, ds in self.reports.reported)


class FleetDesk:
    """The desk on the run's center database from the center's start to the audit."""

    def __init__(self, center_db: Path) -> None:
        self.desk = Desk(center_db)
        self.task: asyncio.Task[None] | None = None
        self.settled: bool | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.desk.run(), name="desk")

    async def finish(self) -> None:
        """After the drain: stop looking on a timer, look until every event is closed."""
        if self.task is None:
            return
        self.desk.stop()
        await self.task
        self.task = None
        self.settled = await self.desk.settle(SETTLE_TIMEOUT_S)

    async def close(self) -> None:
        if self.task is not None:
            self.desk.stop()
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        self.desk.close()


def _reported(finals: Iterable[Final]) -> dict[str, list[tuple[int, list[bytes]]]]:
    return {
        d.id: [(seq, [bytes.fromhex(h) for h in ds]) for seq, ds in d.events]
        for f in finals
        for d in f.devices
    }


def events_report(finals: Iterable[Final], center_db: Path | None) -> dict[str, Any]:
    """The report's event keys; with no center database (a shard) only what was reported."""
    reported = _reported(finals)
    if center_db is not None:
        return audit_events(center_db, reported)
    return {
        "events_reported": sum(len(r) for r in reported.values()),
        "attachments_reported": sum(len(ds) for r in reported.values() for _s, ds in r),
    }
