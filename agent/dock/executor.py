"""A drone dock as a Picket device: telemetry and commands in, records and drone actions out.

The decisions are agent/dock/machine.py's (pure); this module is the thin layer that makes them
durable and acts on them, the same way for a real dock and for simulators/docksim.py:

- `DockAgent` is the device agent (agent/checkin/device.py) with one addition: its check-ins name
  the drone (key 25), and it stores the dock's own records (DOCK_STATE, MISSION). Its check-in
  engine is the one the dock feeds, so there is one engine per device, as on a handset.
- `DockExecutor` is the command executor (agent/commands/executor.py) for a dock: the verification,
  the exactly-once receipt and the five common commands are inherited unchanged; it judges
  FLY_LINE and ABORT_MISSION through `Dock.check_fly` / `check_abort` (the receipt's reason
  when refused) and carries them out only after the receipt is committed, by `_apply`. It also
  takes the drone's telemetry (`on_telemetry`) and the time (`tick`), and routes every output:
  events to records, actions to the drone's link.

The link to the drone is a `DroneLink` (start a mission, come home): the simulated drone
(simulators/drone.py) is one; `MissionLink` (agent/dock/mission.py: the MAVLink mission upload
and commands, over UDP) is the one `picket agent run` uses (agent/dock/run.py).

A mission survives the dock's restart: the MISSION record is stored in the same transaction
as the number of its command (outbox meta `MISSION_CLOSED`), and `restore` takes up a DONE
FLY_LINE newer than that (`Dock.resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.checkin.device import DeviceAgent
from agent.checkin.engine import Event
from agent.commands.executor import CommandExecutor
from agent.dock.machine import Dock, Telemetry
from agent.dock.outputs import (
    MissionSummary,
    Output,
    ReturnHome,
    StartMission,
    StateChange,
    dock_state_body,
    mission_body,
)
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Stored
from contract.commands import (
    AbortMission,
    Command,
    CommandType,
    CommandVerifier,
    FlyLine,
    read_stored,
)
from contract.errors import RecordError
from contract.fix import TimeSource
from contract.records import CheckinKey, Outcome, RecordType

__all__ = ["DockAgent", "DockExecutor", "DroneLink"]

log = logging.getLogger(__name__)
MISSION_CLOSED = "dock.mission_closed"  # outbox meta: the newest FLY_LINE with a MISSION record


class DroneLink(Protocol):
    """How the dock tells its drone what to do."""

    def start_mission(
        self, waypoints: Sequence[tuple[float, float, float, float]], now_ms: int
    ) -> None: ...

    def abort(self, now_ms: int) -> None: ...


@dataclass(slots=True)
class DockAgent(DeviceAgent):
    """The device agent of a dock: aerial check-ins name the drone; dock records."""

    drone: str | None = None

    def _describe(self, e: Event) -> tuple[RecordType, int, TimeSource, Mapping[int, object]]:
        # DeviceAgent._describe, explicitly: a slotted dataclass has no zero-argument super()
        rtype, time_ms, source, body = DeviceAgent._describe(self, e)
        if rtype is RecordType.CHECKIN and self.drone is not None:
            body = {**body, CheckinKey.DRONE: self.drone}
        return rtype, time_ms, source, body

    def record_events(self, events: list[Event]) -> list[Stored]:
        """Store the check-in engine's events the dock passed on."""
        return self._store(events)


class DockExecutor(CommandExecutor):
    def __init__(
        self,
        agent: DockAgent,
        verifier: CommandVerifier,
        clock: Callable[[], Stamp],
        dock: Dock,
        link: DroneLink,
        *,
        identity: Path | None = None,
        on_rotated: Callable[[], None] = lambda: None,
    ) -> None:
        """`dock` must feed `agent.engine` (`Dock(config, plan, engine=agent.engine)`);
        `identity`, `on_rotated`: key rotation, as for any device (agent/commands/executor.py)."""
        super().__init__(agent, verifier, clock, identity=identity, on_rotated=on_rotated)
        if dock.engine is not agent.engine:
            raise ValueError("the dock must feed the agent's check-in engine")
        self.dock_agent = agent
        self.dock = dock
        self.link = link
        self.missions: list[MissionSummary] = []  # ended, oldest first

    # -- commands --------------------------------------------------------------------------

    def restore(self) -> None:
        """At start-up, as any device; and a mission the dock was flying when it stopped
        (its FLY_LINE answered DONE, no MISSION record since) is taken up (`Dock.resume`),
        so that every mission the center was told of ends with a MISSION record."""
        super().restore()
        closed = self.agent.outbox.meta_int(MISSION_CLOSED) or 0
        rows = [
            row
            for row in self.agent.outbox.answered_commands(int(CommandType.FLY_LINE))
            if row.outcome == Outcome.DONE and row.number > closed
        ]
        if not rows:
            return
        row = rows[-1]
        try:
            body = read_stored(row.command).body
        except RecordError as exc:
            log.error("command %d in the outbox cannot be read again: %s", row.number, exc)
            return
        if not isinstance(body, FlyLine):
            return
        now = self.clock().time_ms
        device, number = self.agent.device, row.number
        log.warning("%s: took up mission %d (line %s) after a restart", device, number, body.line)
        now_ms = row.time_ms if now is None else now
        self.carry_out(self.dock.resume(number, body.line, body.priority, row.time_ms, now_ms))

    def problem(self, command: Command) -> str | None:
        body = command.body
        if isinstance(body, FlyLine):
            return self.dock.check_fly(body.line)
        if isinstance(body, AbortMission):
            return self.dock.check_abort()
        return super().problem(command)

    def _apply(self, command: Command, now_ms: int) -> None:
        body = command.body
        if isinstance(body, FlyLine):
            self.carry_out(self.dock.fly(command.number, body.line, body.priority, now_ms))
        elif isinstance(body, AbortMission):
            self.carry_out(self.dock.abort(command.number, now_ms))
        else:
            super()._apply(command, now_ms)

    # -- the drone ---------------------------------------------------------------------------

    def on_telemetry(self, t: Telemetry) -> None:
        if t.fix is not None:
            self.agent.last_fix = t.fix  # a roll call answers with the drone's position
        self.carry_out(self.dock.telemetry(t))

    def tick(self, now_ms: int) -> None:
        self.carry_out(self.dock.tick(now_ms))

    def carry_out(self, outputs: list[Output]) -> None:
        """Record the events and send the actions, in the order the dock made them."""
        agent, source = self.dock_agent, self.clock().source
        for o in outputs:
            if isinstance(o, StartMission):
                log.info("%s: flying line %s", agent.device, o.line)
                self.link.start_mission([w.as_tuple() for w in o.waypoints], self._now())
            elif isinstance(o, ReturnHome):
                log.info("%s: drone told to come home (%s)", agent.device, o.reason)
                self.link.abort(self._now())
            elif isinstance(o, StateChange):
                agent.record(RecordType.DOCK_STATE, o.time_ms, source, dock_state_body(o))
            elif isinstance(o, MissionSummary):
                self.missions.append(o)
                agent.record(
                    RecordType.MISSION,
                    o.time_ms,
                    source,
                    mission_body(o),
                    meta=(MISSION_CLOSED, max(o.command, self._closed())),
                )
            else:
                agent.record_events([o])

    def _closed(self) -> int:
        return self.agent.outbox.meta_int(MISSION_CLOSED) or 0

    def _now(self) -> int:
        now = self.clock().time_ms
        return now if now is not None else self.dock.now_ms
