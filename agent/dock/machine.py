"""A drone dock's decisions: a pure state machine fed telemetry, commands and the time.

A dock is a Picket device whose "carrier" is a drone. Like the check-in engine it reads no
clock, socket or file: the driver (agent/dock/executor.py; simulators/docksim.py on a virtual
clock) hands it the drone's telemetry (agent/dock/mavlink.py), the center's commands once they
verified, the wind, and `tick(now)` when nothing comes, and gets back a list of outputs
(values, in agent/dock/outputs.py):

- actions for the drone (`StartMission`, `ReturnHome`), which the driver sends over its link;
- events to record (`StateChange`, `MissionSummary`, and the check-in engine's events).

So every decision can be tested as a table of inputs, and the same code flies a simulated
drone many times faster than real time.

States (`DockState`, also the values of the DOCK_STATE record, docs/records.md), and what
moves the dock out of each (the table `_ON_TELEMETRY` at the end is the same, as code):

    DOCKED, LANDED  a reading of the disarmed drone     -> CHARGING, or READY when charged
    CHARGING        charged to `ready_pct`              -> READY
    READY           charge `READY_HYSTERESIS_PCT` below -> CHARGING
    (on the pad)    FLY_LINE accepted                   -> LAUNCHING (the mission is sent)
    LAUNCHING       the drone armed                     -> ON_MISSION
                    not armed within `launch_timeout_ms`-> DOCKED (mission ends: fault)
    ON_MISSION      past the last point (item n)        -> RETURNING
                    ABORT_MISSION, battery at `return_pct`-> RETURNING (told to come home)
    RETURNING       disarmed                            -> LANDED (+ the mission's summary)
    any             no heartbeat for `heartbeat_timeout_ms` -> FAULT
    FAULT           heartbeat back: armed               -> RETURNING (told to come home)
                                    disarmed, had flown -> LANDED (+ summary)
                                    else                -> DOCKED

A FLY_LINE is judged (`check_fly`) before it is carried out (`fly`): the line must be in
the dock's aerial plan, the drone ready (heartbeat, disarmed, on the pad: not flying, not in
fault), the wind below the limit, and the battery at least the reserve plus the mission's
estimated energy. The first reason that fails is the receipt's reason, in words the
operator reads ("battery 23 % below 40 % needed"). Checking and doing are separate so the
command executor can commit the receipt between them (agent/commands/executor.py).

Aerial check-ins are the ordinary engine's (agent/checkin/engine.py) fed the drone's fixes: the
aerial points carry altitude bands (above sea level, as the drone's fixes state altitude)
and a dwell, so a pass counts only inside the radius AND the band, for the dwell. The dock
plans each waypoint in the middle of its point's band and hovers the dwell plus a margin
(agent/dock/planning.py: a line turned into a flight, pure arithmetic the machine asks).
Fixes are decimated to 1 Hz, the rate the engine's exit run assumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.checkin.engine import CheckinEngine, CheckinEvent
from agent.checkin.plan import Plan
from agent.dock.outputs import (
    FLYING,
    DockState,
    MissionOutcome,
    MissionSummary,
    Output,
    ReturnHome,
    StartMission,
    StateChange,
)
from agent.dock.planning import DockConfig, Mission, plan_mission
from contract.commands import Priority
from contract.fix import Fix

__all__ = ["Dock", "Telemetry"]

FIX_INTERVAL_MS = 1000  # the engine counts exit runs in fixes at 1 Hz
READY_HYSTERESIS_PCT = 5.0  # READY falls back to CHARGING this far below ready_pct


class Telemetry(Protocol):
    """What the dock reads from the drone (agent/dock/mavlink.py `DroneTelemetry` is one)."""

    @property
    def time_ms(self) -> int: ...
    @property
    def fix(self) -> Fix | None: ...
    @property
    def armed(self) -> bool | None: ...  # None: not heard yet
    @property
    def battery_pct(self) -> float | None: ...
    @property
    def mission_seq(self) -> int | None: ...  # item i: waypoint i; item n: return to launch
    @property
    def reached(self) -> int | None: ...  # set on the reading a MISSION_ITEM_REACHED made
    @property
    def heartbeat_ok(self) -> bool: ...


@dataclass(slots=True)
class _Flight:
    """The mission in progress."""

    mission: Mission
    command: int
    priority: Priority
    sent_ms: int
    battery_start: float | None
    takeoff_ms: int | None = None
    landed_ms: int | None = None
    outcome: MissionOutcome = MissionOutcome.COMPLETED
    checked_in: set[str] = field(default_factory=set)
    started: bool = False  # the drone reported a waypoint of this mission as its current item
    reached: int = -1  # the highest waypoint it reported reached


def _num(x: float) -> str:
    """A figure for people: whole when it is, else to a tenth (10.4, not 10)."""
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def _pct(battery: float | None) -> int | None:
    return None if battery is None else round(battery)


class Dock:
    def __init__(self, config: DockConfig, plan: Plan, engine: CheckinEngine | None = None):
        """`engine`: the check-in engine to feed (the device agent's, so that it is the
        one engine of this device); a new one over `plan` if None."""
        self.config = config
        self.plan = plan
        self.engine = engine if engine is not None else CheckinEngine(plan)
        self.state = DockState.DOCKED
        self.wind_mps: float | None = config.wind_mps
        self.last: Telemetry | None = None  # the newest telemetry
        self.flight: _Flight | None = None
        self._last_fix_ms: int | None = None  # the last fix fed to the engine
        self._now_ms = 0

    @property
    def now_ms(self) -> int:
        """The newest time the dock has been told (telemetry, commands, ticks)."""
        return self._now_ms

    # -- inputs ----------------------------------------------------------------------------

    def observe_wind(self, mps: float | None) -> None:
        """A wind reading (sensor or operator); it stands until the next. None: the sensor
        gave nothing readable, the wind is unknown (no flight until a reading comes)."""
        self.wind_mps = mps

    def telemetry(self, t: Telemetry) -> list[Output]:
        """One reading from the drone."""
        self._now_ms = max(self._now_ms, t.time_ms)
        out: list[Output] = []
        if not t.heartbeat_ok:
            self.last = t
            self._fault(out, t.time_ms, "heartbeat lost")
            return out
        self.last = t
        out.extend(self._feed(t))
        self._advance(out, t)
        return out

    def tick(self, now_ms: int) -> list[Output]:
        """Time passes without telemetry: a silent drone is a lost heartbeat; a mission
        whose drone never armed is given up; the engine closes silent visits."""
        self._now_ms = max(self._now_ms, now_ms)
        out: list[Output] = list(self.engine.tick(now_ms))
        self._note_checkins(out)
        last = self.last
        silent = last is not None and now_ms - last.time_ms > self.config.heartbeat_timeout_ms
        if silent and self.state is not DockState.FAULT:
            self._fault(out, now_ms, "heartbeat lost")
        flight = self.flight
        if (
            self.state in (DockState.LAUNCHING, DockState.RETURNING)
            and flight is not None
            and flight.takeoff_ms is None
            and now_ms - flight.sent_ms > self.config.launch_timeout_ms
        ):
            flight.outcome = MissionOutcome.FAULT
            out.append(ReturnHome("did not take off"))  # cancel it, should it still try
            self._go(out, now_ms, DockState.DOCKED, "drone did not take off")
            self._summary(out, now_ms)
        return out

    # -- commands (judged, then carried out) --------------------------------------------------

    def check_fly(self, line: str) -> str | None:
        """Why the drone cannot fly `line` now (None: it can)."""
        mission = plan_mission(self.plan, line, self.config)
        if isinstance(mission, str):
            return mission
        problem = self._not_ready()
        if problem is not None:
            return f"drone not ready: {problem}"
        wind, limit = self.wind_mps, self.config.wind_limit_mps
        if wind is None:
            return "wind unknown: no reading"
        if wind >= limit:
            at = "above" if wind > limit else "at"
            return f"wind {_num(wind)} m/s {at} limit {_num(limit)} m/s"
        battery = self.last.battery_pct if self.last is not None else None
        needed = math.ceil(self.config.reserve_pct) + mission.energy_pct
        if battery is None:
            return "battery unknown: no reading"
        if battery < needed:
            return f"battery {battery:.0f} % below {needed} % needed"
        return None

    def fly(self, command: int, line: str, priority: Priority, now_ms: int) -> list[Output]:
        """Carry out a FLY_LINE that `check_fly` accepted: send the mission."""
        mission = plan_mission(self.plan, line, self.config)
        assert not isinstance(mission, str), mission
        self._now_ms = max(self._now_ms, now_ms)
        battery = self.last.battery_pct if self.last is not None else None
        self.flight = _Flight(mission, command, priority, now_ms, battery)
        out: list[Output] = [StartMission(line, mission.waypoints)]
        reason = f"command {command}: {priority.name.lower()}"
        self._go(out, now_ms, DockState.LAUNCHING, reason)
        return out

    def resume(
        self, command: int, line: str, priority: Priority, sent_ms: int, now_ms: int
    ) -> list[Output]:
        """At start-up: FLY_LINE `command` was answered DONE but its mission never ended
        (no MISSION record): the dock stopped during it, or between the receipt and the
        upload. Taken up as after a lost heartbeat (FAULT, the flight kept): the first
        reading brings an armed drone home, and a disarmed one ends the mission; it ends as
        `fault`, with the points the dock saw from now on."""
        mission = plan_mission(self.plan, line, self.config)
        if isinstance(mission, str):  # the plan changed under it: its points are unknown
            mission = Mission(line, (), (), 0.0, 0)
        self._now_ms = max(self._now_ms, now_ms)
        self.flight = _Flight(mission, command, priority, sent_ms, None)
        self.flight.outcome = MissionOutcome.FAULT
        out: list[Output] = []
        self._go(out, now_ms, DockState.FAULT, "restarted during a mission")
        return out

    def check_abort(self) -> str | None:
        if self.state in (DockState.LAUNCHING, DockState.ON_MISSION, DockState.RETURNING):
            return None
        if self.state is DockState.FAULT and self.flight is not None:
            return "drone not reachable: heartbeat lost"
        return "no mission in flight"

    def abort(self, command: int, now_ms: int) -> list[Output]:
        """Carry out an ABORT_MISSION that `check_abort` accepted."""
        self._now_ms = max(self._now_ms, now_ms)
        out: list[Output] = []
        flight = self.flight
        if flight is None or self.state is DockState.RETURNING:
            return out  # already coming home: nothing more to do
        flight.outcome = MissionOutcome.ABORTED
        reason = f"aborted by command {command}"
        out.append(ReturnHome(reason))  # even still launching: it may be spooling up
        self._go(out, now_ms, DockState.RETURNING, reason)
        return out

    # -- internals -----------------------------------------------------------------------------

    def _not_ready(self) -> str | None:
        state, last = self.state, self.last
        if state is DockState.FAULT:
            return "heartbeat lost"
        if last is None:
            return "no telemetry yet"
        if state in FLYING:
            line = self.flight.mission.line if self.flight else "?"
            return f"flying line {line}"
        if last.armed is None:
            return "not heard whether armed"
        if last.armed:
            return "armed"
        return None

    def _feed(self, t: Telemetry) -> list[Output]:
        """The drone's fix to the engine, at most one a second."""
        fix = t.fix
        if fix is None or fix.time_ms is None:
            return []
        if self._last_fix_ms is not None and fix.time_ms < self._last_fix_ms + FIX_INTERVAL_MS:
            return []
        self._last_fix_ms = fix.time_ms
        out: list[Output] = list(self.engine.feed(fix))
        self._note_checkins(out)
        return out

    def _note_checkins(self, events: Sequence[Output]) -> None:
        flight = self.flight
        if flight is None:
            return
        for e in events:
            if isinstance(e, CheckinEvent) and e.arrival_ms >= flight.sent_ms:
                flight.checked_in.add(e.point.id)

    def _advance(self, out: list[Output], t: Telemetry) -> None:
        """One reading with a heartbeat: the transition table, by state."""
        flight = self.flight
        if flight is not None:
            if t.armed and flight.takeoff_ms is None:
                flight.takeoff_ms = t.time_ms
            n = len(flight.mission.waypoints)
            if t.mission_seq is not None and t.mission_seq < n and flight.takeoff_ms is not None:
                flight.started = True  # (before: the item a previous mission ended on)
            if t.reached is not None and t.reached < n:
                flight.reached = max(flight.reached, t.reached)
        _ON_TELEMETRY[self.state](self, out, t)

    def _recover(self, out: list[Output], t: Telemetry) -> None:
        """FAULT, heartbeat back: a flying drone comes home, a flown one has landed."""
        flight, now = self.flight, t.time_ms
        if t.armed and flight is not None:
            out.append(ReturnHome("heartbeat back after a loss"))
            self._go(out, now, DockState.RETURNING, "heartbeat back, armed")
        elif flight is not None and flight.takeoff_ms is not None:
            self._land(out, now, "heartbeat back, landed")
        else:
            self._go(out, now, DockState.DOCKED, "heartbeat back")
            if flight is not None:  # it never took off
                self._summary(out, now)

    def _on_pad(self, out: list[Output], t: Telemetry) -> None:
        """DOCKED, LANDED: charging or charged, once the drone is disarmed on the pad."""
        if t.armed is False and t.battery_pct is not None:
            ready = t.battery_pct >= self.config.ready_pct
            state = DockState.READY if ready else DockState.CHARGING
            self._go(out, t.time_ms, state, "charged" if ready else None)

    def _charging(self, out: list[Output], t: Telemetry) -> None:
        if t.battery_pct is not None and t.battery_pct >= self.config.ready_pct:
            self._go(out, t.time_ms, DockState.READY, "charged")

    def _ready(self, out: list[Output], t: Telemetry) -> None:
        battery = t.battery_pct
        if battery is not None and battery < self.config.ready_pct - READY_HYSTERESIS_PCT:
            self._go(out, t.time_ms, DockState.CHARGING, "topping up")

    def _launching(self, out: list[Output], t: Telemetry) -> None:
        if t.armed:
            self._go(out, t.time_ms, DockState.ON_MISSION, "took off")

    def _on_mission(self, out: list[Output], t: Telemetry) -> None:
        flight, now, battery = self.flight, t.time_ms, t.battery_pct
        assert flight is not None
        n = len(flight.mission.waypoints)
        if t.armed is False:
            self._land(out, now, "landed early")
        elif battery is not None and battery <= self.config.return_pct:
            flight.outcome = MissionOutcome.ABORTED
            out.append(ReturnHome(f"battery {battery:.0f} %"))
            self._go(out, now, DockState.RETURNING, f"battery low: {battery:.0f} %")
        elif flight.started and t.mission_seq is not None and t.mission_seq >= n:
            # item n is the return to launch: after the last point, or the drone's own
            # failsafe (its battery, most likely) turned it back early
            if flight.reached >= n - 1:
                self._go(out, now, DockState.RETURNING, "every point flown")
            else:
                flight.outcome = MissionOutcome.ABORTED
                self._go(out, now, DockState.RETURNING, "drone turned back")

    def _returning(self, out: list[Output], t: Telemetry) -> None:
        flight = self.flight
        if t.armed is False and flight is not None and flight.takeoff_ms is not None:
            self._land(out, t.time_ms, "landed")  # (never armed: `tick` gives up on it)

    def _land(self, out: list[Output], now: int, reason: str) -> None:
        flight = self.flight
        assert flight is not None
        flight.landed_ms = now
        events = self.engine.finish(now)  # visits still open close: the drone is home
        self._note_checkins(events)
        out.extend(events)
        self._go(out, now, DockState.LANDED, reason)
        self._summary(out, now)

    def _summary(self, out: list[Output], now: int) -> None:
        flight = self.flight
        assert flight is not None
        self.flight = None
        m = flight.mission
        reached = tuple(p for p in m.points if p in flight.checked_in)
        missed = tuple(p for p in m.points if p not in flight.checked_in)
        flown_s = 0
        if flight.takeoff_ms is not None:
            flown_s = round(((flight.landed_ms or now) - flight.takeoff_ms) / 1000)
        used = None
        end = self.last.battery_pct if self.last is not None else None
        if flight.battery_start is not None and end is not None:
            used = round(flight.battery_start - end)
        out.append(
            MissionSummary(
                time_ms=now,
                line=m.line,
                command=flight.command,
                priority=flight.priority,
                outcome=flight.outcome,
                reached=reached,
                missed=missed,
                flight_s=flown_s,
                battery_used_pct=used,
            )
        )

    def _fault(self, out: list[Output], now: int, reason: str) -> None:
        if self.state is DockState.FAULT:
            return
        if self.flight is not None and self.state in FLYING:
            self.flight.outcome = MissionOutcome.FAULT
        self._go(out, now, DockState.FAULT, reason)

    def _go(self, out: list[Output], now: int, state: DockState, reason: str | None) -> None:
        if state is self.state:
            return
        battery = None if self.last is None else _pct(self.last.battery_pct)
        line = self.flight.mission.line if self.flight is not None else None
        out.append(StateChange(now, state, self.state, reason, battery, line))
        self.state = state


# State -> what a reading with a heartbeat does in it (h11-style: the machine is this table).
_ON_TELEMETRY: Mapping[DockState, Callable[[Dock, list[Output], Telemetry], None]] = {
    DockState.DOCKED: Dock._on_pad,
    DockState.CHARGING: Dock._charging,
    DockState.READY: Dock._ready,
    DockState.LAUNCHING: Dock._launching,
    DockState.ON_MISSION: Dock._on_mission,
    DockState.RETURNING: Dock._returning,
    DockState.LANDED: Dock._on_pad,
    DockState.FAULT: Dock._recover,
}
