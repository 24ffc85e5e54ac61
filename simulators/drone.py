"""A dock's multirotor on a virtual clock, speaking MAVLink 2 over UDP as an autopilot does.

`SimDrone` is the drone for dock tests: it takes off from the dock, flies a mission's
waypoints, hovers where asked, returns and lands, and tells the world about it the way an
ArduCopter-class autopilot does (HEARTBEAT, GLOBAL_POSITION_INT, GPS_RAW_INT, SYS_STATUS,
BATTERY_STATUS, MISSION_CURRENT, MISSION_ITEM_REACHED), encoded by pymavlink's common
dialect, so the dock's decoder meets real frames.

Shaped like the walker (simulators/walker.py): time passes only through `step(now_ms)` and
the control methods, and all randomness comes from the caller's `random.Random`, so a seed
replays exactly and a test can fly a 10-minute mission in a fraction of a second. Physics
runs in fixed 50 ms substeps whatever the caller's step, and each message is stamped with
the substep it is due in, so the telemetry looks the same stepped at 10 Hz or at 1 Hz.
Ground truth (`track`, `visits`, `reached`) is kept apart from what is reported (which adds
seeded GNSS noise: a Gauss-Markov wander clipped below 1 m horizontally, 0.5 m vertically).

Kinematics: horizontal and vertical controllers with speed and acceleration limits (cruise
10 m/s at 2.5 m/s², climb 3 m/s, descend 2 m/s and 0.5 m/s for the last 10 m, 1 m/s²
vertically), braking so as to stop at each target. A waypoint counts as reached, and its
hover begins, when the drone is within WP_RADIUS_M of it in 3D (as ArduCopter's
WPNAV_RADIUS); MISSION_ITEM_REACHED goes out then. Power: momentum theory for induced
power in forward flight plus profile and parasitic power (hover 560 W, about 450 W at
10 m/s), climbing costs m·g·v/η; a 6S 12 Ah pack gives about 28 minutes of hover. Battery
voltage follows a LiPo open-circuit curve minus the sag of the current drawn. On the pad,
disarmed, a dock's charger (`charger_w`, off by default) fills the pack: 400 W, the docks'
figure (simulators/docksim.py), takes an empty pack to full in about 40 minutes.

Mission numbering (what MISSION_CURRENT and MISSION_ITEM_REACHED carry): item i is
waypoint i (0-based); item n (n waypoints) is the return to launch. A mission uploaded over
MAVLink is numbered as uploaded, as an autopilot numbers it: with a take-off item first
(agent/mavmission.py), waypoint i is item i + 1 and the return n + 1 (`item_offset`).
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pymavlink.dialects.v20 import common as mavlink2

from agent.geo import offset, to_local

WP_RADIUS_M = 2.0
CRUISE_MPS = 10.0
ACCEL_H = 2.5
CLIMB_MPS = 3.0
DESCEND_MPS = 2.0
LAND_FINAL_MPS = 0.5
LAND_FINAL_ALT_M = 10.0
ACCEL_V = 1.0
RTL_ALT_M = 30.0
SPOOL_UP_S = 1.0  # armed on the pad, motors spinning up, before the climb
DISARM_DELAY_S = 2.0  # after touchdown
LOW_BATTERY_PCT = 20  # battery failsafe: return to launch
PHYS_DT_MS = 50
MAX_DATAGRAM = 1200

# Airframe and pack
MASS_KG = 5.5
G = 9.81
AIR_DENSITY = 1.225
ROTOR_AREA_M2 = 0.5  # four 16-inch props
DRAG_AREA_M2 = 0.08
P_HOVER_W = 560.0  # ideal induced power 357 W at a figure of merit of 0.64
PROFILE_SHARE = 0.25  # of hover power: blade drag, constant with speed
CLIMB_EFFICIENCY = 0.7
P_AVIONICS_W = 8.0
P_IDLE_W = 60.0  # armed on the ground, props at idle
CELLS = 6
CAPACITY_AH = 12.0
PACK_RESISTANCE_OHM = 0.018
ENERGY_WH = CELLS * 3.7 * CAPACITY_AH  # 266 Wh
# LiPo open-circuit voltage per cell by state of charge.
OCV_CURVE: Final = (
    (0.0, 3.30),
    (0.05, 3.55),
    (0.1, 3.68),
    (0.2, 3.74),
    (0.3, 3.77),
    (0.4, 3.80),
    (0.5, 3.84),
    (0.6, 3.87),
    (0.7, 3.92),
    (0.8, 3.98),
    (0.9, 4.06),
    (1.0, 4.20),
)

# GNSS error model
NOISE_TAU_S = 20.0
NOISE_SIGMA_H_M = 0.35
NOISE_CLIP_H_M = 0.9
NOISE_SIGMA_V_M = 0.15
NOISE_CLIP_V_M = 0.45

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


class DroneState(enum.StrEnum):
    DOCKED = "docked"  # on the pad, no mission flown yet
    TAKING_OFF = "taking_off"
    EN_ROUTE = "en_route"
    HOVERING = "hovering"
    RETURNING = "returning"
    LANDING = "landing"
    LANDED = "landed"  # back on the pad (disarms DISARM_DELAY_S after touchdown)


AIRBORNE: Final = frozenset(
    {
        DroneState.TAKING_OFF,
        DroneState.EN_ROUTE,
        DroneState.HOVERING,
        DroneState.RETURNING,
        DroneState.LANDING,
    }
)


@dataclass(frozen=True, slots=True)
class Waypoint:
    lat: float
    lon: float
    rel_alt_m: float  # above the dock
    hover_s: float


@dataclass(frozen=True, slots=True)
class WaypointVisit:
    """Ground truth of one waypoint: when the drone came within `truth_radius_m` of it (3D),
    when it left that sphere (None: still inside), and how long it hovered there."""

    index: int
    entered_ms: int
    left_ms: int | None
    hovered_s: float


@dataclass(frozen=True, slots=True)
class TruthSample:
    """Where the drone really was when a GLOBAL_POSITION_INT went out (or would have)."""

    time_ms: int
    time_boot_ms: int
    lat: float
    lon: float
    alt_m: float  # AMSL
    rel_alt_m: float
    speed_mps: float
    sent: bool  # False while silenced


class _Frames:
    """The `file` pymavlink's MAVLink writes each packed frame to."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(bytes(data))


def _approach(
    pos: float, vel: float, target: float, *, up: float, down: float, accel: float, dt: float
) -> tuple[float, float]:
    """One axis toward `target`: speed limited, braking to stop there, acceleration limited."""
    d = target - pos
    if abs(d) < 0.02 and abs(vel) <= accel * dt:  # close and slow: stopping is one substep
        return target, 0.0
    vmax = up if d > 0 else down
    want = math.copysign(min(vmax, math.sqrt(2 * 0.8 * accel * abs(d))), d)
    new_vel = vel + max(-accel * dt, min(accel * dt, want - vel))
    new = pos + new_vel * dt
    if (target - new) * d < 0 and abs(vel) <= accel * dt:
        return target, 0.0  # would pass the target at a crawl: settle on it
    return new, new_vel


def _approach_2d(
    pos: tuple[float, float],
    vel: tuple[float, float],
    target: tuple[float, float],
    dt: float,
) -> tuple[tuple[float, float], tuple[float, float]]:
    dn, de = target[0] - pos[0], target[1] - pos[1]
    dist = math.hypot(dn, de)
    if dist < 0.05 and math.hypot(*vel) <= ACCEL_H * dt:  # close, and one substep stops it
        return target, (0.0, 0.0)
    want_speed = min(CRUISE_MPS, math.sqrt(2 * 0.8 * ACCEL_H * dist))
    want = (dn / dist * want_speed, de / dist * want_speed) if dist > 0 else (0.0, 0.0)
    wn, we = want[0] - vel[0], want[1] - vel[1]
    norm = math.hypot(wn, we)
    limit = ACCEL_H * dt
    if norm > limit:
        wn, we = wn * limit / norm, we * limit / norm
    vel = (vel[0] + wn, vel[1] + we)
    return (pos[0] + vel[0] * dt, pos[1] + vel[1] * dt), vel


def _ocv_per_cell(soc: float) -> float:
    soc = max(0.0, min(1.0, soc))
    for (s0, v0), (s1, v1) in itertools.pairwise(OCV_CURVE):
        if soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return OCV_CURVE[-1][1]


def flight_power_w(speed_mps: float, climb_mps: float) -> float:
    """Electrical power of level flight at `speed_mps` plus climbing (momentum theory)."""
    v_hover = math.sqrt(MASS_KG * G / (2 * AIR_DENSITY * ROTOR_AREA_M2))
    mu = (speed_mps / v_hover) ** 2
    induced_ratio = math.sqrt(math.sqrt(mu * mu / 4 + 1) - mu / 2)
    level = P_HOVER_W * (PROFILE_SHARE + (1 - PROFILE_SHARE) * induced_ratio)
    level += 0.5 * AIR_DENSITY * DRAG_AREA_M2 * speed_mps**3
    if climb_mps > 0:
        return level + MASS_KG * G * climb_mps / CLIMB_EFFICIENCY
    return max(0.7 * level, level + 0.3 * MASS_KG * G * climb_mps)  # descending saves a little


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)  # a full buffer drops (and counts) a datagram, never blocks
    return sock


class SimDrone:
    """A multirotor on `dock` = (lat, lon, altitude AMSL m) at `now_ms`, talking to `target`.

    With `target` None nothing is sent; `step` still returns the datagrams it would send.
    `boot_ms`: when the autopilot booted (time_boot_ms counts from it; default: 20-60 s
    before `now_ms`, seeded). `truth_radius_m` is the sphere `visits` are measured with
    (default: the acceptance radius; a test of a 40 m aerial checkpoint passes 40).
    `heartbeat_period_ms` shortens the 1 Hz heartbeat so loss tests can be quick.
    """

    item_offset = 0  # the reported item number of waypoint 0 (module docstring)
    charger_w = 0.0  # the dock's charger, while the drone sits disarmed on the pad

    def __init__(
        self,
        dock: tuple[float, float, float],
        *,
        rng: random.Random,
        now_ms: int,
        target: tuple[str, int] | None = None,
        sysid: int = 1,
        compid: int = 1,
        boot_ms: int | None = None,
        battery_pct: float = 100.0,
        truth_radius_m: float = WP_RADIUS_M,
        heartbeat_period_ms: int = HEARTBEAT_MS,
    ) -> None:
        self.dock = dock
        self._rng = rng
        self._t = now_ms
        self._boot_ms = now_ms - rng.randint(20_000, 60_000) if boot_ms is None else boot_ms
        self._target = target
        self._sock = _udp_socket() if target is not None else None
        self._out = _Frames()
        self._mav: Any = mavlink2.MAVLink(self._out, srcSystem=sysid, srcComponent=compid)
        self._truth_radius_m = truth_radius_m
        self._heartbeat_ms = heartbeat_period_ms
        # kinematics in a local frame at the dock: north, east, up (metres, m/s)
        self._pos = (0.0, 0.0)
        self._vel = (0.0, 0.0)
        self._up = 0.0
        self._vup = 0.0
        self._yaw = rng.uniform(0, 360)
        self._state = DroneState.DOCKED
        self._armed = False
        self._phase_ms = now_ms  # when the current state began
        self._waypoints: list[Waypoint] = []
        self._xy: list[tuple[float, float]] = []
        self._leg = 0
        self._hover_from: int | None = None
        self._rtl_alt = RTL_ALT_M
        self._touchdown_ms: int | None = None
        self._mission_state = int(mavlink2.MISSION_STATE_NO_MISSION)
        self._flight_ms = 0
        # battery
        self._soc = max(0.0, min(1.0, battery_pct / 100))
        self._consumed_mah = 0.0
        self._consumed_hj = 0.0
        self._power_w = P_AVIONICS_W
        self._cell_bias_mv = [rng.uniform(-5, 5) for _ in range(CELLS)]
        self._mv = self._pack_mv()
        # receiver
        self._err = (0.0, 0.0)
        self._err_up = 0.0
        self._hdop = rng.uniform(0.6, 0.9)
        self._sats = rng.randint(14, 20)
        self.fix_type = int(mavlink2.GPS_FIX_TYPE_3D_FIX)  # tests may degrade it
        # streams: next due time of each
        self._due = dict.fromkeys(
            ("heartbeat", "position", "gps", "sys", "battery", "mission"), now_ms
        )
        self._silent_until = now_ms
        self._mission_dirty = False
        # truth
        self._track: list[TruthSample] = []
        self._reached: list[int] = []
        self._visits: list[WaypointVisit] = []
        self._open: dict[int, int] = {}  # waypoint index -> entered_ms, inside its sphere now
        self._watched: set[int] = set()  # waypoints whose visit was opened this mission
        self._hovered: dict[int, float] = {}
        self.sent_messages = 0
        self.send_errors = 0
        self._control: _MissionServer | None = None  # opt-in: `listen` / `handle_mavlink`
        self._listen_sock: socket.socket | None = None

    # --- controls -------------------------------------------------------------------------

    def start_mission(
        self, waypoints: Sequence[tuple[float, float, float, float]], now_ms: int
    ) -> None:
        """Arm, take off and fly `waypoints` [(lat, lon, rel_alt_m, hover_s)], then return."""
        if self._state not in (DroneState.DOCKED, DroneState.LANDED):
            raise RuntimeError(f"cannot start a mission while {self._state}")
        if not waypoints:
            raise ValueError("a mission needs at least one waypoint")
        wps = [Waypoint(*map(float, w)) for w in waypoints]
        for w in wps:
            if (
                not (-90 <= w.lat <= 90 and -180 <= w.lon <= 180)
                or w.rel_alt_m < 2
                or w.hover_s < 0
            ):
                raise ValueError(f"bad waypoint {w}")
        self._advance(now_ms)
        self._waypoints = wps
        self.item_offset = 0
        self._xy = [to_local(self.dock[0], self.dock[1], w.lat, w.lon) for w in wps]
        self._leg = 0
        self._hover_from = None
        self._open.clear()
        self._watched.clear()
        self._visits.clear()
        self._reached.clear()
        self._hovered.clear()
        self._armed = True
        self._touchdown_ms = None
        self._mission_state = int(mavlink2.MISSION_STATE_ACTIVE)
        self._set_state(DroneState.TAKING_OFF)

    def abort(self, now_ms: int) -> None:
        """Return to home now (RTL); nothing happens on the ground."""
        self._advance(now_ms)
        if self._state in AIRBORNE and self._state not in (
            DroneState.RETURNING,
            DroneState.LANDING,
        ):
            self._end_hover()
            self._mission_state = int(mavlink2.MISSION_STATE_PAUSED)
            self._return()

    def silence(self, seconds: float) -> None:
        """Send nothing at all (no heartbeat, no telemetry) for `seconds` from the last step."""
        self._silent_until = self._t + round(seconds * 1000)

    def step(self, now_ms: int) -> list[bytes]:
        """Fly to `now_ms` and send what fell due; the datagrams sent (in order)."""
        self._advance(now_ms)
        frames, self._out.frames = self._out.frames, []
        datagrams: list[bytes] = []
        for frame in frames:
            if datagrams and len(datagrams[-1]) + len(frame) <= MAX_DATAGRAM:
                datagrams[-1] += frame
            else:
                datagrams.append(frame)
        if self._sock is not None and self._target is not None:
            for datagram in datagrams:
                try:
                    self._sock.sendto(datagram, self._target)
                except OSError:  # a full buffer, or ICMP unreachable from a previous send
                    self.send_errors += 1
        return datagrams

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._listen_sock is not None:
            self._listen_sock.close()
            self._listen_sock = None

    # --- MAVLink control (opt-in) ---------------------------------------------------------

    def handle_mavlink(self, data: bytes, now_ms: int) -> list[bytes]:
        """A datagram from a ground station: the mission upload (MISSION_COUNT, then
        MISSION_ITEM_INT answered with MISSION_REQUEST_INT, MISSION_ACK at the end) and
        COMMAND_LONG arm, MISSION_START (flies the uploaded mission as `start_mission` does)
        and NAV_RETURN_TO_LAUNCH (`abort`). Returns the reply frames."""
        if self._control is None:
            self._control = _MissionServer(self)
        return self._control.feed(data, now_ms)

    def listen(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Take commands on a UDP socket of its own; `serve` answers what arrived."""
        if self._listen_sock is None:
            sock = _udp_socket()
            sock.bind((host, port))
            self._listen_sock = sock
        name = self._listen_sock.getsockname()
        return str(name[0]), int(name[1])

    def serve(self, now_ms: int) -> int:
        """Handle every datagram waiting on the `listen` socket, replying to its sender."""
        sock, handled = self._listen_sock, 0
        while sock is not None:
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            handled += 1
            for frame in self.handle_mavlink(data, now_ms):
                try:
                    sock.sendto(frame, addr)
                except OSError:
                    self.send_errors += 1
        return handled

    def __enter__(self) -> SimDrone:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- what tests read ------------------------------------------------------------------

    @property
    def state(self) -> DroneState:
        return self._state

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def now_ms(self) -> int:
        return self._t

    @property
    def time_boot_ms(self) -> int:
        return self._t - self._boot_ms

    @property
    def reached(self) -> list[int]:
        """Mission items reached, in order (each also went out as MISSION_ITEM_REACHED)."""
        return list(self._reached)

    @property
    def visits(self) -> list[WaypointVisit]:
        """Ground truth per waypoint of the current mission (`start_mission` clears it, as it
        does `reached`): closed visits, then any the drone is inside now."""
        open_ = [
            WaypointVisit(i, t, None, self._hovered.get(i, self._hover_so_far(i)))
            for i, t in sorted(self._open.items())
        ]
        return [*self._visits, *open_]

    @property
    def track(self) -> list[TruthSample]:
        return list(self._track)

    @property
    def flight_time_s(self) -> float:
        """Time from arming for take-off to touchdown, summed over flights."""
        return self._flight_ms / 1000

    @property
    def battery_pct(self) -> int:
        return max(0, min(100, round(self._soc * 100)))

    @property
    def battery_mv(self) -> int:
        return round(self._mv)

    @property
    def power_w(self) -> float:
        return self._power_w

    @property
    def uploaded_mission(self) -> list[tuple[int, float, float, float, float]]:
        """The last mission uploaded over MAVLink: (command, lat, lon, z, param1) per item."""
        return [] if self._control is None else list(self._control.mission)

    @property
    def commands_answered(self) -> list[tuple[int, int]]:
        """(MAV_CMD, MAV_RESULT) of every COMMAND_LONG answered over MAVLink, oldest first."""
        return [] if self._control is None else list(self._control.commands)

    @property
    def mission_seq(self) -> int:
        return self._leg

    @property
    def true_position(self) -> tuple[float, float, float, float]:
        """(lat, lon, altitude AMSL, height above the dock), without GNSS error."""
        lat, lon = offset(self.dock[0], self.dock[1], *self._pos)
        return lat, lon, self.dock[2] + self._up, self._up

    # --- physics --------------------------------------------------------------------------

    def _advance(self, now_ms: int) -> None:
        while self._t < now_ms:
            t = min(now_ms, self._t + PHYS_DT_MS)
            dt_ms = t - self._t
            self._t = t
            self._physics(dt_ms / 1000)
            if self._state in AIRBORNE:
                self._flight_ms += dt_ms
            self._battery(dt_ms / 1000)
            self._watch_waypoints()
            self._emit()

    def _set_state(self, state: DroneState) -> None:
        self._state = state
        self._phase_ms = self._t

    def _physics(self, dt: float) -> None:
        step = {
            DroneState.TAKING_OFF: self._take_off,
            DroneState.EN_ROUTE: self._fly_leg,
            DroneState.HOVERING: self._fly_leg,
            DroneState.RETURNING: self._fly_home,
            DroneState.LANDING: self._land,
        }.get(self._state)
        if step is not None:
            step(dt)
        elif (
            self._state is DroneState.LANDED
            and self._armed
            and self._touchdown_ms is not None
            and self._t - self._touchdown_ms >= DISARM_DELAY_S * 1000
        ):
            self._armed = False
        if math.hypot(*self._vel) > 1.0:
            self._yaw = math.degrees(math.atan2(self._vel[1], self._vel[0])) % 360

    def _take_off(self, dt: float) -> None:
        if self._t - self._phase_ms < SPOOL_UP_S * 1000:
            return
        climb_to = max(5.0, self._waypoints[0].rel_alt_m)
        self._vertical(climb_to, dt)
        if self._up == climb_to:
            self._set_leg(0)

    def _fly_leg(self, dt: float) -> None:
        wp, xy = self._waypoints[self._leg], self._xy[self._leg]
        self._horizontal(xy, dt)
        self._vertical(wp.rel_alt_m, dt)
        if self._state is DroneState.EN_ROUTE and self._distance_3d(self._leg) <= WP_RADIUS_M:
            self._reach()
        hover_from = self._hover_from
        if hover_from is None or self._t - hover_from < wp.hover_s * 1000:
            return
        self._end_hover()
        if self._leg + 1 < len(self._waypoints):
            self._set_leg(self._leg + 1)
        else:
            self._mission_state = int(mavlink2.MISSION_STATE_COMPLETE)
            self._return()

    def _fly_home(self, dt: float) -> None:
        self._horizontal((0.0, 0.0), dt)
        self._vertical(self._rtl_alt, dt)
        if math.hypot(*self._pos) < 0.5 and math.hypot(*self._vel) < 0.3:
            self._set_state(DroneState.LANDING)

    def _land(self, dt: float) -> None:
        self._horizontal((0.0, 0.0), dt)
        down = DESCEND_MPS if self._up > LAND_FINAL_ALT_M else LAND_FINAL_MPS
        self._up, self._vup = _approach(
            self._up, self._vup, 0.0, up=CLIMB_MPS, down=down, accel=ACCEL_V, dt=dt
        )
        if self._up <= 0.02:
            self._up, self._vup = 0.0, 0.0
            self._touchdown_ms = self._t
            self._set_state(DroneState.LANDED)

    def _horizontal(self, target: tuple[float, float], dt: float) -> None:
        self._pos, self._vel = _approach_2d(self._pos, self._vel, target, dt)

    def _vertical(self, target: float, dt: float) -> None:
        self._up, self._vup = _approach(
            self._up, self._vup, target, up=CLIMB_MPS, down=DESCEND_MPS, accel=ACCEL_V, dt=dt
        )

    def _distance_3d(self, index: int) -> float:
        n, e = self._xy[index]
        return math.dist(
            (self._pos[0], self._pos[1], self._up), (n, e, self._waypoints[index].rel_alt_m)
        )

    def _set_leg(self, leg: int) -> None:
        self._leg = leg
        self._hover_from = None
        self._mission_dirty = True
        self._set_state(DroneState.EN_ROUTE)

    def _reach(self) -> None:
        self._reached.append(self._leg)
        self._hover_from = self._t
        self._set_state(DroneState.HOVERING)
        self._send_now(lambda mav: mav.mission_item_reached_send(self._leg + self.item_offset))

    def _hover_so_far(self, index: int) -> float:
        if index == self._leg and self._hover_from is not None:
            return (self._t - self._hover_from) / 1000
        return 0.0

    def _end_hover(self) -> None:
        if self._hover_from is not None:
            self._hovered[self._leg] = (self._t - self._hover_from) / 1000
            self._hover_from = None

    def _return(self) -> None:
        self._rtl_alt = max(self._up, RTL_ALT_M)
        self._leg = len(self._waypoints)
        self._mission_dirty = True
        self._set_state(DroneState.RETURNING)

    def _watch_waypoints(self) -> None:
        """Open and close ground-truth visits: the current leg's waypoint and the one just
        left (a waypoint without hover is left in the substep it is reached)."""
        if not self._waypoints:
            return
        for i in list(self._open):
            if self._distance_3d(i) > self._truth_radius_m:
                entered = self._open.pop(i)
                self._visits.append(WaypointVisit(i, entered, self._t, self._hovered.get(i, 0.0)))
        if self._state not in (DroneState.EN_ROUTE, DroneState.HOVERING, DroneState.RETURNING):
            return
        for i in (self._leg - 1, self._leg):
            if (
                0 <= i < len(self._waypoints)
                and i not in self._open
                and i not in self._watched
                and self._distance_3d(i) <= self._truth_radius_m
            ):
                self._open[i] = self._t
                self._watched.add(i)

    # --- battery --------------------------------------------------------------------------

    def _battery(self, dt: float) -> None:
        if self._state in AIRBORNE and not (
            self._state is DroneState.TAKING_OFF and self._up == 0.0
        ):
            power = flight_power_w(math.hypot(*self._vel), self._vup) + P_AVIONICS_W
        elif self._armed:
            power = P_IDLE_W + P_AVIONICS_W
        elif self._state in (DroneState.DOCKED, DroneState.LANDED) and self._soc < 1.0:
            power = P_AVIONICS_W - self.charger_w  # on the pad: the dock's charger
        else:
            power = P_AVIONICS_W
        self._power_w = power
        joules = power * dt
        self._soc = min(1.0, max(0.0, self._soc - joules / (ENERGY_WH * 3600)))
        self._mv = self._pack_mv()
        if power > 0:  # (the autopilot counts what was drawn, not what was charged)
            self._consumed_mah += self._current_a() * dt / 3.6
            self._consumed_hj += joules / 100
        if (
            self._state in (DroneState.EN_ROUTE, DroneState.HOVERING, DroneState.TAKING_OFF)
            and self.battery_pct < LOW_BATTERY_PCT
        ):
            self._end_hover()
            self._mission_state = int(mavlink2.MISSION_STATE_PAUSED)
            self._return()

    def _current_a(self) -> float:
        return self._power_w / (CELLS * _ocv_per_cell(self._soc))

    def _pack_mv(self) -> float:
        return (CELLS * _ocv_per_cell(self._soc) - self._current_a() * PACK_RESISTANCE_OHM) * 1000

    # --- receiver and telemetry -----------------------------------------------------------

    def _update_receiver(self, dt: float) -> None:
        rng = self._rng
        a = math.exp(-dt / NOISE_TAU_S)
        s_h = NOISE_SIGMA_H_M * math.sqrt(1 - a * a)
        en, ee = a * self._err[0] + s_h * rng.gauss(0, 1), a * self._err[1] + s_h * rng.gauss(0, 1)
        norm = math.hypot(en, ee)
        if norm > NOISE_CLIP_H_M:
            en, ee = en * NOISE_CLIP_H_M / norm, ee * NOISE_CLIP_H_M / norm
        self._err = (en, ee)
        s_v = NOISE_SIGMA_V_M * math.sqrt(1 - a * a)
        up = a * self._err_up + s_v * rng.gauss(0, 1)
        self._err_up = max(-NOISE_CLIP_V_M, min(NOISE_CLIP_V_M, up))

    def _due_now(self, stream: str, period_ms: int) -> bool:
        if self._t < self._due[stream]:
            return False
        self._due[stream] = max(self._due[stream] + period_ms, self._t + 1)
        return True

    def _send_now(self, send: Any) -> None:
        if self._t < self._silent_until:
            return
        send(self._mav)
        self.sent_messages += 1

    def _emit(self) -> None:
        silent = self._t < self._silent_until
        if self._due_now("heartbeat", self._heartbeat_ms):
            self._send_now(self._heartbeat)
        if self._due_now("position", POSITION_MS):
            self._update_receiver(POSITION_MS / 1000)
            lat, lon, alt, rel = self.true_position
            self._track.append(
                TruthSample(
                    self._t,
                    self.time_boot_ms,
                    lat,
                    lon,
                    alt,
                    rel,
                    math.hypot(*self._vel),
                    not silent,
                )
            )
            self._send_now(self._position)
        if self._due_now("gps", GPS_RAW_MS):
            self._send_now(self._gps_raw)
        if self._due_now("sys", SYS_STATUS_MS):
            self._send_now(self._sys_status)
        if self._due_now("battery", BATTERY_MS):
            self._send_now(self._battery_status)
        if self._mission_dirty or self._due_now("mission", MISSION_CURRENT_MS):
            if self._mission_dirty:
                self._due["mission"] = self._t + MISSION_CURRENT_MS
            self._mission_dirty = False
            self._send_now(self._mission_current)

    def _heartbeat(self, mav: Any) -> None:
        mode = {
            DroneState.RETURNING: MODE_RTL,
            DroneState.LANDING: MODE_LAND,
            DroneState.TAKING_OFF: MODE_AUTO,
            DroneState.EN_ROUTE: MODE_AUTO,
            DroneState.HOVERING: MODE_AUTO,
        }.get(self._state, MODE_LOITER)
        base = _BASE_FLAGS | (_AUTO_FLAGS if mode == MODE_AUTO else 0)
        base |= _ARMED_FLAG if self._armed else 0
        status = mavlink2.MAV_STATE_ACTIVE if self._armed else mavlink2.MAV_STATE_STANDBY
        mav.heartbeat_send(
            mavlink2.MAV_TYPE_QUADROTOR, mavlink2.MAV_AUTOPILOT_ARDUPILOTMEGA, base, mode, status
        )

    def _position(self, mav: Any) -> None:
        lat, lon = offset(
            self.dock[0], self.dock[1], self._pos[0] + self._err[0], self._pos[1] + self._err[1]
        )
        rel = self._up + self._err_up

        def clip16(v: float) -> int:
            return max(-32768, min(32767, round(v)))

        mav.global_position_int_send(
            self.time_boot_ms & 0xFFFFFFFF,
            round(lat * 1e7),
            round(lon * 1e7),
            round((self.dock[2] + rel) * 1000),
            round(rel * 1000),
            clip16(self._vel[0] * 100),
            clip16(self._vel[1] * 100),
            clip16(-self._vup * 100),
            round(self._yaw * 100) % 36000,
        )

    def _gps_raw(self, mav: Any) -> None:
        lat, lon = offset(
            self.dock[0], self.dock[1], self._pos[0] + self._err[0], self._pos[1] + self._err[1]
        )
        speed = math.hypot(*self._vel)
        cog = math.degrees(math.atan2(self._vel[1], self._vel[0])) % 360 if speed > 0.5 else 0
        mav.gps_raw_int_send(
            self.time_boot_ms * 1000,  # no UTC in this simulation: time since boot, µs
            self.fix_type,
            round(lat * 1e7),
            round(lon * 1e7),
            round((self.dock[2] + self._up + self._err_up) * 1000),
            round(self._hdop * 100),
            round(self._hdop * 150),
            round(speed * 100),
            round(cog * 100) % 36000,
            self._sats,
            h_acc=round(self._hdop * 0.8 * 1000),  # mm, 1 sigma
            v_acc=round(self._hdop * 1.2 * 1000),
        )

    def _sys_status(self, mav: Any) -> None:
        sensors = 0x3FFFFF  # the usual gyro/accel/mag/baro/GPS/... bits: present, on, healthy
        mav.sys_status_send(
            sensors,
            sensors,
            sensors,
            350,
            self.battery_mv,
            round(self._current_a() * 100),
            self.battery_pct,
            0,
            0,
            0,
            0,
            0,
            0,
        )

    def _battery_status(self, mav: Any) -> None:
        mv = self.battery_mv
        cells = [round(mv / CELLS + b) for b in self._cell_bias_mv]
        cells[-1] += mv - sum(cells)  # the cells add up to the pack
        remaining_s = round(self._soc * ENERGY_WH * 3600 / max(self._power_w, 1.0))
        mav.battery_status_send(
            0,
            mavlink2.MAV_BATTERY_FUNCTION_ALL,
            mavlink2.MAV_BATTERY_TYPE_LIPO,
            2500,  # cdegC
            cells + [0xFFFF] * (10 - CELLS),
            round(self._current_a() * 100),
            round(self._consumed_mah),
            round(self._consumed_hj),
            self.battery_pct,
            time_remaining=min(remaining_s, 2**31 - 1),
        )

    def _mission_current(self, mav: Any) -> None:
        total = len(self._waypoints) + 1 + self.item_offset if self._waypoints else 0
        mode = 1 if self._state in AIRBORNE and self._state is not DroneState.RETURNING else 0
        mav.mission_current_send(self._leg + self.item_offset, total, self._mission_state, mode)


_CMD_NAV_WAYPOINT: Final = int(mavlink2.MAV_CMD_NAV_WAYPOINT)


class _MissionServer:
    """The autopilot's side of the mission protocol and commands, for `SimDrone`."""

    def __init__(self, drone: SimDrone) -> None:
        self.drone = drone
        self.out = _Frames()
        self.mav: Any = mavlink2.MAVLink(
            self.out, srcSystem=drone._mav.srcSystem, srcComponent=drone._mav.srcComponent
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
        drone, command = self.drone, int(m.command)
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
                drone._advance(now_ms)
                drone._armed = arm
                drone._touchdown_ms = None if arm else drone._touchdown_ms
                result = int(mavlink2.MAV_RESULT_ACCEPTED)
        elif command == int(mavlink2.MAV_CMD_MISSION_START):
            if not waypoints:
                result = int(mavlink2.MAV_RESULT_FAILED)
            elif not on_ground or not drone.armed:
                result = int(mavlink2.MAV_RESULT_TEMPORARILY_REJECTED)
            else:
                try:
                    drone.start_mission(waypoints, now_ms)
                    drone.item_offset = next(
                        i for i, item in enumerate(self.mission) if item[0] == _CMD_NAV_WAYPOINT
                    )
                    result = int(mavlink2.MAV_RESULT_ACCEPTED)
                except (RuntimeError, ValueError):
                    result = int(mavlink2.MAV_RESULT_FAILED)
        elif command == int(mavlink2.MAV_CMD_NAV_RETURN_TO_LAUNCH):
            drone.abort(now_ms)
            result = int(mavlink2.MAV_RESULT_ACCEPTED)
        self.commands.append((command, result))
        self.mav.command_ack_send(command, result)
