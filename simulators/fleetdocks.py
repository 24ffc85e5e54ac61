"""The district's drone docks inside a fleet run (`picket sim fleet`, unless `--no-docks`).

Each dock is `picket sim dock`'s (simulators/docksim.py: its agent, outbox, uplink, command
executor and SimDrone over real UDP), but on the fleet's infrastructure: provisioned in the
fleet's `Fleet` (workdir/devices/<dock>), connected over TLS to the fleet's broker, its
records stored by the fleet's center in the same center.db and audited with the walkers',
its FLY_LINE commands signed with the fleet's center key (numbered in center.db) and
published with the center's TLS identity. The docks' virtual clocks follow the fleet's: at
each barrier the runner calls `advance(t)` and every dock flies its seconds up to `t`.
After the shift a mission in flight lands (at most docksim's AFTER_S), then the outboxes
drain. A fault that holds a command up (broker down) is counted, never fatal.

The docks and the aerial plan are read from the plan folder (streets.geojson's docks,
aerial.geojson), the files `picket sim district` writes; a folder without them has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.checkin.plan import Plan
from agent.checkin.planfile import load_plan
from agent.dock.executor import DockExecutor
from agent.dock.mavsource import MavlinkSource
from center.commands import CommandSigner
from provisioning.device import registry_path
from provisioning.fleet import Fleet, service_tls
from simulators.bigdistrict import Dock as DockSite
from simulators.districtfiles import AERIAL_FILE, STREETS_FILE
from simulators.dockreport import Stay, aerial_checkins
from simulators.docksim import (
    AFTER_S,
    STEP_MS,
    DockSimError,
    DockSimOptions,
    Infra,
    _CenterLink,
    _Parts,
    _Sim,
    _wait,
)
from simulators.drone import SimDrone
from simulators.fleetwire import DeviceFinal

__all__ = ["FleetDocks", "load_docks"]

READY_TIMEOUT_S = 30.0


def load_docks(plan_dir: Path) -> tuple[list[DockSite], Plan | None]:
    """The docks (in the district's order) and the aerial plan of a generated plan folder."""
    streets, aerial = plan_dir / STREETS_FILE, plan_dir / AERIAL_FILE
    if not streets.is_file() or not aerial.is_file():
        return [], None
    doc = json.loads(streets.read_text(encoding="utf-8"))
    docks = []
    for f in doc.get("features", []):
        props = f.get("properties") or {}
        if "dock" in props:
            lon, lat = f["geometry"]["coordinates"]
            docks.append(DockSite(str(props["dock"]), (0.0, 0.0), lat, lon, float(props["alt_m"])))
    return docks, load_plan(aerial)


def _opened(source: MavlinkSource) -> Callable[[], bool]:
    return lambda: source.address is not None


@dataclass(slots=True)
class _Flying:
    sim: _Sim
    parts: _Parts
    drone: SimDrone
    tasks: list[asyncio.Task[None]]


class FleetDocks:
    """The docks of a fleet run: `start` after the center, `advance` at every barrier,
    `finish` after the shift, `stop` with the workers, `report` after the center stopped."""

    def __init__(
        self, plan_dir: Path, workdir: Path, *, seed: int, start_ms: int, end_ms: int
    ) -> None:
        sites, aerial = load_docks(plan_dir)
        self.workdir = workdir
        self.end_ms = end_ms
        self.t = start_ms
        minutes = (end_ms - start_ms) / 60_000
        self.sims = [
            _Sim(
                DockSimOptions(minutes=minutes, seed=seed, dock=k, workdir=workdir),
                workdir,
                sites,
                aerial,
                start_ms=start_ms,
            )
            for k in range(1, len(sites) + 1)
            if aerial is not None
        ]
        for sim in self.sims:
            sim.lenient = True
        self._stack = contextlib.ExitStack()
        self._flying: list[_Flying] = []
        self._link: _CenterLink | None = None
        self._truth: dict[str, list[Stay]] = {}
        self._stopped = False

    async def start(self, trust: Fleet, host: str, port: int) -> None:
        """Provision the docks, connect them to the broker, open the operator's signer.

        After the center started: the signer numbers commands in its center.db."""
        if not self.sims:
            return
        tls = service_tls(self.workdir / "center-tls", "center")
        assert tls is not None
        db = self.workdir / "center.db"
        infra = Infra(trust, host, port, tls, db, registry_path(self.workdir / "fleet"))
        real_ms = int(time.time() * 1000)  # certificates are checked against the real clock
        stack = self._stack
        signer = stack.enter_context(CommandSigner(trust.center_key, db))
        self._link = _CenterLink(signer, host, port, tls)
        for sim in self.sims:
            parts = sim._build(stack, infra, real_ms)
            tasks = [
                asyncio.create_task(parts.uplink.run(), name=f"uplink-{sim.device}"),
                asyncio.create_task(sim._telemetry(parts.source), name=f"mavlink-{sim.device}"),
            ]
            source = parts.source
            if not await _wait(_opened(source), READY_TIMEOUT_S):
                raise DockSimError(f"{sim.device}: the MAVLink socket did not open")
            drone = stack.enter_context(sim._drone(source))
            sim.executor = DockExecutor(
                parts.agent, parts.verifier, sim.clock.stamp, parts.dock, drone
            )
            self._flying.append(_Flying(sim, parts, drone, tasks))
        for f in self._flying:
            await asyncio.wait_for(f.parts.uplink.connected.wait(), READY_TIMEOUT_S)

    async def advance(self, to_ms: int) -> None:
        """Every dock flies its virtual seconds up to `to_ms` (the runner's barrier)."""
        link = self._link
        while self.t < to_ms and link is not None:
            for f in self._flying:
                await f.sim.second(f.parts, f.drone, link, self.t, self.end_ms)
            self.t += STEP_MS
        self.t = max(self.t, to_ms)
        for f in self._flying:
            f.sim.clock.now_ms = self.t

    async def finish(self) -> None:
        """After the shift: missions in flight land (within AFTER_S), no new command."""
        hard_end = self.t + AFTER_S * 1000
        while any(f.parts.dock.flight is not None for f in self._flying) and self.t < hard_end:
            await self.advance(self.t + STEP_MS)

    def queued(self) -> int:
        return sum(f.parts.agent.outbox.depth() for f in self._flying)

    async def stop(self) -> list[DeviceFinal]:
        """Stop the uplinks and drones; the docks as device entries for the runner's finals."""
        if self._stopped:
            return []
        self._stopped = True
        entries = []
        for f in self._flying:
            sim = f.sim
            self._truth[sim.device] = sim.truth(f.drone)
            f.parts.uplink.stop()
            f.tasks[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(f.tasks[0], 20)
                await f.tasks[1]
            entries.append(
                DeviceFinal(
                    id=sim.device,
                    tier="dock",
                    last_seq=f.parts.agent.outbox.last_seq,
                    checkins=0,
                    missed=0,
                    suspicions=0,
                    visits=(),
                    line="",
                    nmea=False,
                    nmea_errors=0,
                )
            )
        self._stack.close()
        return entries

    def report(self) -> dict[str, int]:
        """The docks' figures, from center.db (read after the center stopped)."""
        db, registry = self.workdir / "center.db", registry_path(self.workdir / "fleet")
        expected = recorded = flown = refused = sent = unsent = unanswered = 0
        for f in self._flying:
            sim = f.sim
            expected += len(self._truth.get(sim.device, []))
            recorded += len(aerial_checkins(db, registry, sim.drone_id))
            assert sim.executor is not None
            flown += sum(1 for m in sim.executor.missions if m.flight_s > 0)
            refused += sum(sim.refusals(sim.answers(db)).values())
            sent += len(sim.run.sent)
            unsent += sim.run.unsent
            unanswered += sim.run.unanswered
        return {
            "docks": len(self._flying),
            "dock_commands_sent": sent,
            "dock_commands_unsent": unsent,
            "dock_commands_unanswered": unanswered,
            "aerial_checkins_expected": expected,
            "aerial_checkins_recorded": recorded,
            "missions_flown": flown,
            "missions_refused": refused,
        }
