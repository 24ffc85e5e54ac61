"""The simulated drone's autopilot: its flight model told to the world in MAVLink 2.

`Autopilot` steps a `FlightModel` (simulators/flight.py) and says what happens the way an
ArduCopter-class autopilot does (HEARTBEAT, GLOBAL_POSITION_INT, GPS_RAW_INT, SYS_STATUS,
BATTERY_STATUS, MISSION_CURRENT, MISSION_ITEM_REACHED), encoded by pymavlink's common
dialect, so the dock's decoder meets real frames. It answers a ground station too
(`handle`): the mission upload and the commands a dock sends. Bytes in, frames out, time
passed in: the sockets are simulators/drone.py's, which keeps this testable without them.

Each message is stamped with the physics substep it is due in (the model runs in fixed
50 ms substeps, and the streams are looked at after each), so the telemetry looks the same
whether the caller steps at 10 Hz or at 1 Hz. A waypoint reached goes out as
MISSION_ITEM_REACHED in the substep it was reached, before that substep's streams.

Mission numbering (what MISSION_CURRENT and MISSION_ITEM_REACHED carry): item i is
waypoint i (0-based); item n (n waypoints) is the return to launch. A mission uploaded over
MAVLink is numbered as uploaded, as an autopilot numbers it: with a take-off item first
(agent/dock/mission.py), waypoint i is item i + 1 and the return n + 1 (`item_offset`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from pymavlink.dialects.v20 import common as mavlink2

from agent.checkin.geo import offset
from simulators.airframe import CELLS
from simulators.flight import AIRBORNE, DroneState, FlightModel, MissionState

# Periods of the streams, ms (GLOBAL_POSITION_INT at 5 Hz, the rest at 1 Hz)
HEARTBEAT_MS = 1000
POSITION_MS = 200
GPS_RAW_MS = 1000
SYS_STATUS_MS = 1000
BATTERY_MS = 1000
MISSION_CURRENT_MS = 1000

# ArduCopter's flight mode numbers, as HEARTBEAT custom_mode
MODE_AUTO, MODE_LOITER, MODE_RTL, MODE_LAND = 3, 5, 6, 9
_ARMED_FLAG: Final = int(mavlink2.MAV_MODE_FLAG_SAFETY_ARMED)
_BASE_FLAGS: Final = int(mavlink2.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED) | int(
    mavlink2.MAV_MODE_FLAG_STABILIZE_ENABLED
)
_AUTO_FLAGS: Final = int(mavlink2.MAV_MODE_FLAG_GUIDED_ENABLED) | int(
    mavlink2.MAV_MODE_FLAG_AUTO_ENABLED
)
_MODES: Final = {
    DroneState.RETURNING: MODE_RTL,
    DroneState.LANDING: MODE_LAND,
    DroneState.TAKING_OFF: MODE_AUTO,
    DroneState.EN_ROUTE: MODE_AUTO,
    DroneState.HOVERING: MODE_AUTO,
}
_MISSION_STATES: Final = {
    MissionState.NO_MISSION: int(mavlink2.MISSION_STATE_NO_MISSION),
    MissionState.ACTIVE: int(mavlink2.MISSION_STATE_ACTIVE),
    MissionState.PAUSED: int(mavlink2.MISSION_STATE_PAUSED),
    MissionState.COMPLETE: int(mavlink2.MISSION_STATE_COMPLETE),
}
_CMD_NAV_WAYPOINT: Final = int(mavlink2.MAV_CMD_NAV_WAYPOINT)


def _item_reached(mav: Any, *, seq: int) -> None:
    mav.mission_item_reached_send(seq)


class _Frames:
    """The `file` pymavlink's MAVLink writes each packed frame to."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(bytes(data))


class Autopilot:
    """`model` as system `sysid`, component `compid` reports it, booted at `boot_ms`.

    `heartbeat_period_ms` shortens the 1 Hz heartbeat so loss tests can be quick.
    """

    def __init__(
        self,
        model: FlightModel,
        *,
        boot_ms: int,
        sysid: int = 1,
        compid: int = 1,
        heartbeat_period_ms: int = HEARTBEAT_MS,
    ) -> None:
        self.model = model
        self.sysid, self.compid = sysid, compid
        self.item_offset = 0  # the reported item number of waypoint 0 (module docstring)
        self.fix_type = int(mavlink2.GPS_FIX_TYPE_3D_FIX)  # tests may degrade it
        self.sent_messages = 0
        self._boot_ms = boot_ms
        self._out = _Frames()
        self._mav: Any = mavlink2.MAVLink(self._out, srcSystem=sysid, srcComponent=compid)
        self._heartbeat_ms = heartbeat_period_ms
        # streams: next due time of each
        now_ms = model.now_ms
        self._due = dict.fromkeys(
            ("heartbeat", "position", "gps", "sys", "battery", "mission"), now_ms
        )
        self._silent_until = now_ms
        self._control: _MissionServer | None = None  # made at the first `handle`

    # --- controls -------------------------------------------------------------------------

    def advance(self, now_ms: int) -> None:
        """Fly to `now_ms`, queueing what fell due in each substep (`take_frames`)."""
        while self.model.now_ms < now_ms:
            self.model.substep(now_ms)
            self._emit()

    def start_mission(
        self, waypoints: Sequence[tuple[float, float, float, float]], now_ms: int
    ) -> None:
        """Arm, take off and fly `waypoints` [(lat, lon, rel_alt_m, hover_s)], then return."""
        wps = self.model.check_mission(waypoints)
        self.advance(now_ms)
        self.item_offset = 0
        self.model.start_mission(wps)

    def abort(self, now_ms: int) -> None:
        """Return to home now (RTL); nothing happens on the ground."""
        self.advance(now_ms)
        self.model.abort()

    def silence(self, seconds: float) -> None:
        """Send nothing at all (no heartbeat, no telemetry) for `seconds` from now."""
        self._silent_until = self.model.now_ms + round(seconds * 1000)

    def take_frames(self) -> list[bytes]:
        """The frames queued since the last call, in order."""
        frames, self._out.frames = self._out.frames, []
        return frames

    def handle(self, data: bytes, now_ms: int) -> list[bytes]:
        """A datagram from a ground station (`_MissionServer`); the reply frames."""
        if self._control is None:
            self._control = _MissionServer(self)
        return self._control.feed(data, now_ms)

    @property
    def time_boot_ms(self) -> int:
        return self.model.now_ms - self._boot_ms

    @property
    def uploaded_mission(self) -> list[tuple[int, float, float, float, float]]:
        return [] if self._control is None else list(self._control.mission)

    @property
    def commands_answered(self) -> list[tuple[int, int]]:
        return [] if self._control is None else list(self._control.commands)

    # --- telemetry ------------------------------------------------------------------------

    def _due_now(self, stream: str, period_ms: int) -> bool:
        t = self.model.now_ms
        if t < self._due[stream]:
            return False
        self._due[stream] = max(self._due[stream] + period_ms, t + 1)
        return True

    def _send_now(self, send: Callable[[Any], None]) -> None:
        if self.model.now_ms < self._silent_until:
            return
        send(self._mav)
        self.sent_messages += 1

    def _emit(self) -> None:
        model = self.model
        silent = model.now_ms < self._silent_until
        reached, moved = model.take_events()
        for leg in reached:
            self._send_now(functools.partial(_item_reached, seq=leg + self.item_offset))
        if self._due_now("heartbeat", self._heartbeat_ms):
            self._send_now(self._heartbeat)
        if self._due_now("position", POSITION_MS):
            model.gnss_epoch(POSITION_MS / 1000, time_boot_ms=self.time_boot_ms, sent=not silent)
            self._send_now(self._position)
        if self._due_now("gps", GPS_RAW_MS):
            self._send_now(self._gps_raw)
        if self._due_now("sys", SYS_STATUS_MS):
            self._send_now(self._sys_status)
        if self._due_now("battery", BATTERY_MS):
            self._send_now(self._battery_status)
        if moved or self._due_now("mission", MISSION_CURRENT_MS):
            if moved:
                self._due["mission"] = model.now_ms + MISSION_CURRENT_MS
            self._send_now(self._mission_current)

    def _heartbeat(self, mav: Any) -> None:
        model = self.model
        mode = _MODES.get(model.state, MODE_LOITER)
        base = _BASE_FLAGS | (_AUTO_FLAGS if mode == MODE_AUTO else 0)
        base |= _ARMED_FLAG if model.armed else 0
        status = mavlink2.MAV_STATE_ACTIVE if model.armed else mavlink2.MAV_STATE_STANDBY
        mav.heartbeat_send(
            mavlink2.MAV_TYPE_QUADROTOR, mavlink2.MAV_AUTOPILOT_ARDUPILOTMEGA, base, mode, status
        )

    def _reported_latlon(self) -> tuple[float, float]:
        m = self.model
        return offset(m.dock[0], m.dock[1], m.pos[0] + m.err[0], m.pos[1] + m.err[1])

    def _position(self, mav: Any) -> None:
        m = self.model
        lat, lon = self._reported_latlon()
        rel = m.up + m.err_up

        def clip16(v: float) -> int:
            return max(-32768, min(32767, round(v)))

        mav.global_position_int_send(
            self.time_boot_ms & 0xFFFFFFFF,
            round(lat * 1e7),
            round(lon * 1e7),
            round((m.dock[2] + rel) * 1000),
            round(rel * 1000),
            clip16(m.vel[0] * 100),
            clip16(m.vel[1] * 100),
            clip16(-m.vup * 100),
            round(m.yaw * 100) % 36000,
        )

    def _gps_raw(self, mav: Any) -> None:
        m = self.model
        lat, lon = self._reported_latlon()
        speed = math.hypot(*m.vel)
        cog = math.degrees(math.atan2(m.vel[1], m.vel[0])) % 360 if speed > 0.5 else 0
        mav.gps_raw_int_send(
            self.time_boot_ms * 1000,  # no UTC in this simulation: time since boot, µs
            self.fix_type,
            round(lat * 1e7),
            round(lon * 1e7),
            round((m.dock[2] + m.up + m.err_up) * 1000),
            round(m.hdop * 100),
            round(m.hdop * 150),
            round(speed * 100),
            round(cog * 100) % 36000,
            m.sats,
            h_acc=round(m.hdop * 0.8 * 1000),  # mm, 1 sigma
            v_acc=round(m.hdop * 1.2 * 1000),
        )

    def _sys_status(self, mav: Any) -> None:
        m = self.model
        sensors = 0x3FFFFF  # the usual gyro/accel/mag/baro/GPS/... bits: present, on, healthy
        mav.sys_status_send(
            sensors,
            sensors,
            sensors,
            350,
            m.battery_mv,
            round(m.current_a * 100),
            m.battery_pct,
            0,
            0,
            0,
            0,
            0,
            0,
        )

    def _battery_status(self, mav: Any) -> None:
        m = self.model
        mv = m.battery_mv
        cells = [round(mv / CELLS + b) for b in m.cell_bias_mv]
        cells[-1] += mv - sum(cells)  # the cells add up to the pack
        mav.battery_status_send(
            0,
            mavlink2.MAV_BATTERY_FUNCTION_ALL,
            mavlink2.MAV_BATTERY_TYPE_LIPO,
            2500,  # cdegC
            cells + [0xFFFF] * (10 - CELLS),
            round(m.current_a * 100),
            round(m.consumed_mah),
            round(m.consumed_hj),
            m.battery_pct,
            time_remaining=min(m.time_remaining_s, 2**31 - 1),
        )

    def _mission_current(self, mav: Any) -> None:
        m = self.model
        total = m.waypoint_count + 1 + self.item_offset if m.waypoint_count else 0
        mode = 1 if m.state in AIRBORNE and m.state is not DroneState.RETURNING else 0
        mav.mission_current_send(
            m.mission_seq + self.item_offset, total, _MISSION_STATES[m.mission_state], mode
        )


class _MissionServer:
    """The autopilot's side of the mission protocol and commands."""

    def __init__(self, autopilot: Autopilot) -> None:
        self.autopilot = autopilot
        self.out = _Frames()
        self.mav: Any = mavlink2.MAVLink(
            self.out, srcSystem=autopilot.sysid, srcComponent=autopilot.compid
        )
        self.parser: Any = mavlink2.MAVLink(None)
        self.parser.robust_parsing = True
        self.receiving: list[Any] | None = None  # items of an upload in progress
        self.peer = (255, 0)
        self.mission: list[tuple[int, float, float, float, float]] = []  # the last upload
        self.commands: list[tuple[int, int]] = []  # (command, result) answered, for tests

    def feed(self, data: bytes, now_ms: int) -> list[bytes]:
        try:
            messages: list[Any] = self.parser.parse_buffer(data) or []
        except Exception:
            return []
        for m in messages:
            if getattr(m, "target_system", None) not in (None, 0, self.mav.srcSystem):
                continue
            self.peer = (int(m.get_srcSystem()), int(m.get_srcComponent()))
            handler = {
                "MISSION_COUNT": self._count,
                "MISSION_ITEM_INT": self._item,
                "MISSION_ITEM": self._item,
                "COMMAND_LONG": self._command,
            }.get(str(m.get_type()))
            if handler is not None:
                handler(m, now_ms)
        frames, self.out.frames = self.out.frames, []
        return frames

    def _count(self, m: Any, _now_ms: int) -> None:
        count = int(m.count)
        if count == 0:
            self.receiving = None
            self.mission = []
            self.mav.mission_ack_send(*self.peer, mavlink2.MAV_MISSION_ACCEPTED)
            return
        self.receiving = [None] * count
        self.mav.mission_request_int_send(*self.peer, 0)

    def _item(self, m: Any, _now_ms: int) -> None:
        seq = int(m.seq)
        items = self.receiving
        if items is None:  # a repeat after the upload ended: its ACK was lost
            if self.mission and seq == len(self.mission) - 1:
                self.mav.mission_ack_send(*self.peer, mavlink2.MAV_MISSION_ACCEPTED)
            return
        if not 0 <= seq < len(items):
            self.mav.mission_ack_send(*self.peer, mavlink2.MAV_MISSION_INVALID_SEQUENCE)
            return
        if str(m.get_type()) == "MISSION_ITEM":
            lat, lon = float(m.x), float(m.y)
        else:
            lat, lon = int(m.x) / 1e7, int(m.y) / 1e7
        items[seq] = (int(m.command), lat, lon, float(m.z), float(m.param1))
        missing = [i for i, it in enumerate(items) if it is None]
        if missing:
            self.mav.mission_request_int_send(*self.peer, missing[0])
            return
        self.mission, self.receiving = list(items), None
        self.mav.mission_ack_send(*self.peer, mavlink2.MAV_MISSION_ACCEPTED)

    def _command(self, m: Any, now_ms: int) -> None:
        autopilot, command = self.autopilot, int(m.command)
        drone = autopilot.model
        on_ground = drone.state in (DroneState.DOCKED, DroneState.LANDED)
        result = int(mavlink2.MAV_RESULT_UNSUPPORTED)
        waypoints = [
            (lat, lon, alt, hover)
            for cmd, lat, lon, alt, hover in self.mission
            if cmd == _CMD_NAV_WAYPOINT
        ]
        if command == int(mavlink2.MAV_CMD_COMPONENT_ARM_DISARM):
            arm = float(m.param1) >= 0.5
            if arm and not on_ground and drone.armed:
                result = int(mavlink2.MAV_RESULT_ACCEPTED)  # already flying: nothing to do
            elif not on_ground:
                result = int(mavlink2.MAV_RESULT_TEMPORARILY_REJECTED)
            else:
                autopilot.advance(now_ms)
                drone.set_armed(arm)
                result = int(mavlink2.MAV_RESULT_ACCEPTED)
        elif command == int(mavlink2.MAV_CMD_MISSION_START):
            if not waypoints:
                result = int(mavlink2.MAV_RESULT_FAILED)
            elif not on_ground or not drone.armed:
                result = int(mavlink2.MAV_RESULT_TEMPORARILY_REJECTED)
            else:
                try:
                    autopilot.start_mission(waypoints, now_ms)
                    autopilot.item_offset = next(
                        i for i, item in enumerate(self.mission) if item[0] == _CMD_NAV_WAYPOINT
                    )
                    result = int(mavlink2.MAV_RESULT_ACCEPTED)
                except (RuntimeError, ValueError):
                    result = int(mavlink2.MAV_RESULT_FAILED)
        elif command == int(mavlink2.MAV_CMD_NAV_RETURN_TO_LAUNCH):
            autopilot.abort(now_ms)
            result = int(mavlink2.MAV_RESULT_ACCEPTED)
        self.commands.append((command, result))
        self.mav.command_ack_send(command, result)
