"""`picket agent run` as a drone dock: the daemon's parts a handset does not have.

agent/daemon.py builds a `DockRole` when the config has a `[dock]` section and runs its
`run()` beside the uplink; the decisions stay in agent/dock/machine.py (pure) and the records in
agent/dock/executor.py, so this module only joins real I/O to them:

- **Telemetry.** `MavlinkSource` (UDP or serial) reads the drone; each reading is renumbered
  to the dock's mission numbering (`as_dock_numbering`: the upload puts a take-off item
  first) and handed to `DockExecutor.on_telemetry`, which feeds the check-in engine (the
  dock decimates positions to one a second) and the dock's state machine.
- **Missions.** A `MissionLink` (its own UDP socket to `drone_address`) is the executor's
  `DroneLink`: FLY_LINE uploads the mission, arms and starts it; ABORT_MISSION sends RTL.
  It addresses the system and component the telemetry came from.
- **Time.** A dock is on mains power and a network: its system clock (NTP) is offered to
  the time keeper every tick (`TimeKeeper.observe_clock`), which believes it unless it is
  behind the last known good time (a dock that booted in 1970); the dock's own GNSS, when
  `[gnss]` is configured, is a second source (agent/daemon.py). Telemetry is stamped on the
  keeper's time, so the dock, its records and its commands share one clock.
- **Ticks** (every `TICK_S`): the wind (`read_wind`: the fixed figure or the sensor's file;
  unreadable means unknown, and the dock refuses to fly), the keeper's time, then
  `DockExecutor.tick` (heartbeat silence, launch timeout, open visits).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.dock.executor import DockAgent, DockExecutor
from agent.dock.machine import Dock
from agent.dock.mavlink import DroneTelemetry
from agent.dock.mavsource import MavlinkSource
from agent.dock.mission import MissionLink, MissionUploader, as_dock_numbering
from agent.dock.planning import DockConfig
from agent.dock.settings import DockSection, read_wind
from agent.gnss.sources import SourceStatus
from agent.gnss.timekeeper import Stamp, TimeKeeper
from contract.commands import CommandVerifier
from contract.fix import TimeSource

__all__ = ["TICK_S", "DockRole"]

log = logging.getLogger(__name__)
TICK_S = 1.0


@dataclass(slots=True)
class DockRole:
    section: DockSection
    agent: DockAgent
    executor: DockExecutor
    source: MavlinkSource
    link: MissionLink
    keeper: TimeKeeper
    mono_ms: Callable[[], int]
    wall_ms: Callable[[], int]
    telemetry_seen: int = 0

    @classmethod
    def build(
        cls,
        section: DockSection,
        agent: DockAgent,
        verifier: CommandVerifier,
        keeper: TimeKeeper,
        *,
        mono_ms: Callable[[], int],
        wall_ms: Callable[[], int],
        identity: Path | None = None,
        on_rotated: Callable[[], None] = lambda: None,
    ) -> DockRole:
        """The dock around `agent` (whose plan is the aerial plan); `identity`, `on_rotated`:
        key rotation, as for any device (agent/commands/executor.py)."""
        lat, lon, alt = section.home
        config = DockConfig(
            section.drone,
            lat,
            lon,
            alt,
            wind_limit_mps=section.wind_limit_mps,
            wind_mps=read_wind(section),
            reserve_pct=section.reserve_pct,
        )
        dock = Dock(config, agent.plan, engine=agent.engine)
        link = MissionLink(section.drone_address, MissionUploader(), clock=wall_ms)

        def stamp() -> Stamp:
            return keeper.now(mono_ms())

        def clock_ms() -> int:
            now = stamp().time_ms
            return now if now is not None else wall_ms()

        source = MavlinkSource(
            section.mavlink, clock=clock_ms, time_source=TimeSource.NTP, on_status=_status
        )
        executor = DockExecutor(
            agent, verifier, stamp, dock, link, identity=identity, on_rotated=on_rotated
        )
        return cls(section, agent, executor, source, link, keeper, mono_ms, wall_ms)

    @property
    def dock(self) -> Dock:
        return self.executor.dock

    def observe_clock(self) -> Stamp:
        """Offer the system clock to the time keeper (module docstring, "Time")."""
        return self.keeper.observe_clock(self.wall_ms(), TimeSource.NTP, self.mono_ms())

    def tick(self, now_ms: int) -> None:
        """The dock's tick: the wind, then the executor (the daemon's tick task calls it)."""
        self.dock.observe_wind(read_wind(self.section))
        self.executor.tick(now_ms)

    def on_telemetry(self, t: DroneTelemetry) -> None:
        self.telemetry_seen += 1
        decoder = self.source.decoder
        uploader = self.link.uploader
        if decoder.system_id is not None and decoder.component_id is not None:
            uploader.target_system = decoder.system_id  # the drone we hear is the one we fly
            uploader.target_component = decoder.component_id
        t = as_dock_numbering(t)
        source = self.keeper.now(self.mono_ms()).source
        if t.fix is not None and t.fix.time_source is not source:
            t = dataclasses.replace(t, fix=dataclasses.replace(t.fix, time_source=source))
        self.executor.on_telemetry(t)

    async def run(self) -> None:
        """The drone's telemetry and the mission link, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.link.run(), name="mission-link")
            await self.link.ready.wait()  # what the first reading decides can be sent
            tg.create_task(self._read(), name="mavlink")

    async def _read(self) -> None:
        async for t in self.source.telemetry():
            self.on_telemetry(t)


def _status(status: SourceStatus) -> None:
    log.info("drone link %s: %s", status.state.name.lower(), status.detail)
