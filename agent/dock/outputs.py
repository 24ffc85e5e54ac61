"""What a dock's state machine says: its states, the actions and events it outputs, and
the bodies of the records those events become.

Values only, frozen and slotted, so the machine (agent/dock/machine.py) returns lists of
them and the driver (agent/dock/executor.py) acts on or records each one, and a test
compares them as a table. `DockState` and `MissionOutcome` are also record fields (a
DOCK_STATE record's state, a MISSION record's outcome, docs/records.md), so their values
never change; `dock_state_body` and `mission_body` turn events into those records' bodies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.checkin.engine import Event
from agent.dock.planning import Waypoint
from contract.commands import Priority
from contract.records import DockStateKey, MissionKey

__all__ = [
    "FLYING",
    "DockState",
    "MissionOutcome",
    "MissionSummary",
    "Output",
    "ReturnHome",
    "StartMission",
    "StateChange",
    "dock_state_body",
    "mission_body",
]


class DockState(enum.IntEnum):
    """The dock's state; the value is key 16/17 of a DOCK_STATE record."""

    DOCKED = 1  # on the pad, state of charge not known yet (start-up, after a fault)
    CHARGING = 2
    READY = 3  # charged to `ready_pct`
    LAUNCHING = 4  # mission sent, waiting for the drone to arm and take off
    ON_MISSION = 5
    RETURNING = 6
    LANDED = 7  # back on the pad, disarmed; charging starts at the next reading
    FAULT = 8  # the drone's heartbeat is lost


FLYING = frozenset({DockState.LAUNCHING, DockState.ON_MISSION, DockState.RETURNING})


class MissionOutcome(enum.IntEnum):
    """How a mission ended; key 18 of a MISSION record."""

    COMPLETED = 0  # every waypoint flown, back on the pad
    ABORTED = 1  # the center's ABORT_MISSION, or the battery ran low in flight
    FAULT = 2  # the heartbeat was lost during the mission


@dataclass(frozen=True, slots=True)
class StartMission:
    """Action: upload these waypoints and fly them (then come home and land)."""

    line: str
    waypoints: tuple[Waypoint, ...]


@dataclass(frozen=True, slots=True)
class ReturnHome:
    """Action: leave the mission and come home now."""

    reason: str


@dataclass(frozen=True, slots=True)
class StateChange:
    """Event: the dock went from `previous` to `state` (a DOCK_STATE record)."""

    time_ms: int
    state: DockState
    previous: DockState
    reason: str | None = None
    battery_pct: int | None = None
    line: str | None = None


@dataclass(frozen=True, slots=True)
class MissionSummary:
    """Event: a mission ended (a MISSION record). `reached`: the line's points with a
    check-in during the flight; `missed`: the others, in line order."""

    time_ms: int
    line: str
    command: int
    priority: Priority
    outcome: MissionOutcome
    reached: tuple[str, ...]
    missed: tuple[str, ...]
    flight_s: int
    battery_used_pct: int | None


Output = StartMission | ReturnHome | StateChange | MissionSummary | Event


def dock_state_body(e: StateChange) -> dict[int, object]:
    body: dict[int, object] = {
        DockStateKey.STATE: int(e.state),
        DockStateKey.PREVIOUS: int(e.previous),
    }
    if e.reason is not None:
        body[DockStateKey.REASON] = e.reason
    if e.battery_pct is not None:
        body[DockStateKey.BATTERY_PCT] = min(100, max(0, e.battery_pct))
    if e.line is not None:
        body[DockStateKey.LINE] = e.line
    return body


def mission_body(e: MissionSummary) -> dict[int, object]:
    body: dict[int, object] = {
        MissionKey.LINE: e.line,
        MissionKey.COMMAND: e.command,
        MissionKey.OUTCOME: int(e.outcome),
        MissionKey.REACHED: len(e.reached),
        MissionKey.MISSED: list(e.missed),
        MissionKey.FLIGHT_S: max(0, e.flight_s),
        MissionKey.PRIORITY: int(e.priority),
    }
    if e.battery_used_pct is not None:
        body[MissionKey.BATTERY_USED_PCT] = min(100, max(0, e.battery_used_pct))
    return body
