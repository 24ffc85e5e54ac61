"""A dock's multirotor as physics: where it is, what its battery holds, what its receiver adds.

`FlightModel` is the pure core of the simulated drone (simulators/drone.py): no sockets, no
clock, no MAVLink. Time passes only through `substep(until_ms)`, which flies one fixed 50 ms
step (or less, to land on `until_ms`), and all randomness comes from the caller's
`random.Random`, so a seed replays exactly. The autopilot's side (simulators/autopilot.py)
steps it and tells the world after each substep; what it tells is read from here, and what
happened in between (a waypoint reached, the mission moved on) is left here to be taken.
Ground truth (`track`, `visits`, `reached`) is kept apart from what is reported (which adds
seeded GNSS noise: a Gauss-Markov wander clipped below 1 m horizontally, 0.5 m vertically).

Kinematics: horizontal and vertical controllers with speed and acceleration limits (cruise
10 m/s at 2.5 m/s², climb 3 m/s, descend 2 m/s and 0.5 m/s for the last 10 m, 1 m/s²
vertically), braking so as to stop at each target. A waypoint counts as reached, and its
hover begins, when the drone is within WP_RADIUS_M of it in 3D (as ArduCopter's
WPNAV_RADIUS). Power is drawn as the airframe's figures say (simulators/airframe.py: what
flight at a speed and climb costs, and the pack's voltage by charge), integrated here each
substep. On the pad, disarmed, a dock's charger (`charger_w`, off by default) fills the
pack: 400 W, the docks' figure (simulators/docksim.py), takes an empty pack to full in
about 40 minutes.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from agent.checkin.geo import offset, to_local
from simulators.airframe import (
    CELLS,
    ENERGY_WH,
    P_AVIONICS_W,
    P_IDLE_W,
    PACK_RESISTANCE_OHM,
    flight_power_w,
    ocv_per_cell,
)

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

# GNSS error model
NOISE_TAU_S = 20.0
NOISE_SIGMA_H_M = 0.35
NOISE_CLIP_H_M = 0.9
NOISE_SIGMA_V_M = 0.15
NOISE_CLIP_V_M = 0.45


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


class MissionState(enum.Enum):
    """Where the mission stands (the autopilot reports it as MAVLink's MISSION_STATE)."""

    NO_MISSION = enum.auto()
    ACTIVE = enum.auto()
    PAUSED = enum.auto()  # left early: called home, or the battery failsafe
    COMPLETE = enum.auto()


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


class FlightModel:
    """A multirotor on `dock` = (lat, lon, altitude AMSL m) at `now_ms`, disarmed on the pad.

    `truth_radius_m` is the sphere `visits` are measured with (default: the acceptance
    radius; a test of a 40 m aerial checkpoint passes 40). The local frame is centred on
    the dock: north, east, up (metres, m/s). What the autopilot reports (kinematics, the
    receiver's error and figures, the pack's counters) is in plain attributes: only the
    model writes them.
    """

    charger_w = 0.0  # the dock's charger, while the drone sits disarmed on the pad

    def __init__(
        self,
        dock: tuple[float, float, float],
        *,
        rng: random.Random,
        now_ms: int,
        battery_pct: float = 100.0,
        truth_radius_m: float = WP_RADIUS_M,
    ) -> None:
        self.dock = dock
        self._rng = rng
        self._t = now_ms
        self._truth_radius_m = truth_radius_m
        # kinematics
        self.pos = (0.0, 0.0)
        self.vel = (0.0, 0.0)
        self.up = 0.0
        self.vup = 0.0
        self.yaw = rng.uniform(0, 360)
        self._state = DroneState.DOCKED
        self._armed = False
        self._phase_ms = now_ms  # when the current state began
        self._waypoints: list[Waypoint] = []
        self._xy: list[tuple[float, float]] = []
        self._leg = 0
        self._hover_from: int | None = None
        self._rtl_alt = RTL_ALT_M
        self._touchdown_ms: int | None = None
        self._mission_state = MissionState.NO_MISSION
        self._flight_ms = 0
        # battery
        self._soc = max(0.0, min(1.0, battery_pct / 100))
        self.consumed_mah = 0.0
        self.consumed_hj = 0.0
        self._power_w = P_AVIONICS_W
        self.cell_bias_mv = [rng.uniform(-5, 5) for _ in range(CELLS)]
        self._mv = self._pack_mv()
        # receiver: its error now, and the figures it reports
        self.err = (0.0, 0.0)
        self.err_up = 0.0
        self.hdop = rng.uniform(0.6, 0.9)
        self.sats = rng.randint(14, 20)
        # what happened since the autopilot last looked (`take_events`)
        self._just_reached: list[int] = []
        self._mission_moved = False
        # truth
        self._track: list[TruthSample] = []
        self._reached: list[int] = []
        self._visits: list[WaypointVisit] = []
        self._open: dict[int, int] = {}  # waypoint index -> entered_ms, inside its sphere now
        self._watched: set[int] = set()  # waypoints whose visit was opened this mission
        self._hovered: dict[int, float] = {}

    # --- controls (the autopilot first brings the model up to the command's time) ----------

    def check_mission(
        self, waypoints: Sequence[tuple[float, float, float, float]]
    ) -> list[Waypoint]:
        """`waypoints` [(lat, lon, rel_alt_m, hover_s)] as a mission it can fly now, or raise."""
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
        return wps

    def start_mission(self, wps: list[Waypoint]) -> None:
        """Arm, take off and fly `wps` (from `check_mission`), then return."""
        self._waypoints = wps
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
        self._mission_state = MissionState.ACTIVE
        self._set_state(DroneState.TAKING_OFF)

    def abort(self) -> None:
        """Return to home now (RTL); nothing happens on the ground."""
        if self._state in AIRBORNE and self._state not in (
            DroneState.RETURNING,
            DroneState.LANDING,
        ):
            self._end_hover()
            self._mission_state = MissionState.PAUSED
            self._return()

    def set_armed(self, arm: bool) -> None:
        """Arm or disarm on the pad (a ground station's ARM_DISARM)."""
        self._armed = arm
        self._touchdown_ms = None if arm else self._touchdown_ms

    def substep(self, until_ms: int) -> None:
        """One physics step: PHYS_DT_MS, or less to land on `until_ms`."""
        t = min(until_ms, self._t + PHYS_DT_MS)
        dt_ms = t - self._t
        self._t = t
        self._physics(dt_ms / 1000)
        if self._state in AIRBORNE:
            self._flight_ms += dt_ms
        self._battery(dt_ms / 1000)
        self._watch_waypoints()

    def gnss_epoch(self, dt_s: float, *, time_boot_ms: int, sent: bool) -> None:
        """A position report is due: the receiver's error wanders on by `dt_s`, and where the
        drone really is goes on the track (`sent`: the report went out)."""
        self._update_receiver(dt_s)
        lat, lon, alt, rel = self.true_position
        self._track.append(
            TruthSample(self._t, time_boot_ms, lat, lon, alt, rel, math.hypot(*self.vel), sent)
        )

    def take_events(self) -> tuple[list[int], bool]:
        """Waypoints reached since the last call, in order, and whether the mission moved on
        (a new leg, or the return) meanwhile."""
        reached, self._just_reached = self._just_reached, []
        moved, self._mission_moved = self._mission_moved, False
        return reached, moved

    # --- what the autopilot reports and tests read ------------------------------------------

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
    def mission_state(self) -> MissionState:
        return self._mission_state

    @property
    def mission_seq(self) -> int:
        """The leg flown: waypoint i, or len(waypoints) for the return."""
        return self._leg

    @property
    def waypoint_count(self) -> int:
        return len(self._waypoints)

    @property
    def reached(self) -> list[int]:
        """Waypoints reached, in order."""
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
    def current_a(self) -> float:
        return self._power_w / (CELLS * ocv_per_cell(self._soc))

    @property
    def time_remaining_s(self) -> int:
        """What is left in the pack at the power drawn now."""
        return round(self._soc * ENERGY_WH * 3600 / max(self._power_w, 1.0))

    @property
    def true_position(self) -> tuple[float, float, float, float]:
        """(lat, lon, altitude AMSL, height above the dock), without GNSS error."""
        lat, lon = offset(self.dock[0], self.dock[1], *self.pos)
        return lat, lon, self.dock[2] + self.up, self.up

    # --- physics --------------------------------------------------------------------------

    def _set_state(self, state: DroneState) -> None:
        self._state = state
        self._phase_ms = self._t

    def _physics(self, dt: float) -> None:
        step: Callable[[float], None] | None = {
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
        if math.hypot(*self.vel) > 1.0:
            self.yaw = math.degrees(math.atan2(self.vel[1], self.vel[0])) % 360

    def _take_off(self, dt: float) -> None:
        if self._t - self._phase_ms < SPOOL_UP_S * 1000:
            return
        climb_to = max(5.0, self._waypoints[0].rel_alt_m)
        self._vertical(climb_to, dt)
        if self.up == climb_to:
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
            self._mission_state = MissionState.COMPLETE
            self._return()

    def _fly_home(self, dt: float) -> None:
        self._horizontal((0.0, 0.0), dt)
        self._vertical(self._rtl_alt, dt)
        if math.hypot(*self.pos) < 0.5 and math.hypot(*self.vel) < 0.3:
            self._set_state(DroneState.LANDING)

    def _land(self, dt: float) -> None:
        self._horizontal((0.0, 0.0), dt)
        down = DESCEND_MPS if self.up > LAND_FINAL_ALT_M else LAND_FINAL_MPS
        self.up, self.vup = _approach(
            self.up, self.vup, 0.0, up=CLIMB_MPS, down=down, accel=ACCEL_V, dt=dt
        )
        if self.up <= 0.02:
            self.up, self.vup = 0.0, 0.0
            self._touchdown_ms = self._t
            self._set_state(DroneState.LANDED)

    def _horizontal(self, target: tuple[float, float], dt: float) -> None:
        self.pos, self.vel = _approach_2d(self.pos, self.vel, target, dt)

    def _vertical(self, target: float, dt: float) -> None:
        self.up, self.vup = _approach(
            self.up, self.vup, target, up=CLIMB_MPS, down=DESCEND_MPS, accel=ACCEL_V, dt=dt
        )

    def _distance_3d(self, index: int) -> float:
        n, e = self._xy[index]
        return math.dist(
            (self.pos[0], self.pos[1], self.up), (n, e, self._waypoints[index].rel_alt_m)
        )

    def _set_leg(self, leg: int) -> None:
        self._leg = leg
        self._hover_from = None
        self._mission_moved = True
        self._set_state(DroneState.EN_ROUTE)

    def _reach(self) -> None:
        self._reached.append(self._leg)
        self._hover_from = self._t
        self._set_state(DroneState.HOVERING)
        self._just_reached.append(self._leg)

    def _hover_so_far(self, index: int) -> float:
        if index == self._leg and self._hover_from is not None:
            return (self._t - self._hover_from) / 1000
        return 0.0

    def _end_hover(self) -> None:
        if self._hover_from is not None:
            self._hovered[self._leg] = (self._t - self._hover_from) / 1000
            self._hover_from = None

    def _return(self) -> None:
        self._rtl_alt = max(self.up, RTL_ALT_M)
        self._leg = len(self._waypoints)
        self._mission_moved = True
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
            self._state is DroneState.TAKING_OFF and self.up == 0.0
        ):
            power = flight_power_w(math.hypot(*self.vel), self.vup) + P_AVIONICS_W
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
            self.consumed_mah += self.current_a * dt / 3.6
            self.consumed_hj += joules / 100
        if (
            self._state in (DroneState.EN_ROUTE, DroneState.HOVERING, DroneState.TAKING_OFF)
            and self.battery_pct < LOW_BATTERY_PCT
        ):
            self._end_hover()
            self._mission_state = MissionState.PAUSED
            self._return()

    def _pack_mv(self) -> float:
        return (CELLS * ocv_per_cell(self._soc) - self.current_a * PACK_RESISTANCE_OHM) * 1000

    # --- receiver -------------------------------------------------------------------------

    def _update_receiver(self, dt: float) -> None:
        rng = self._rng
        a = math.exp(-dt / NOISE_TAU_S)
        s_h = NOISE_SIGMA_H_M * math.sqrt(1 - a * a)
        en, ee = a * self.err[0] + s_h * rng.gauss(0, 1), a * self.err[1] + s_h * rng.gauss(0, 1)
        norm = math.hypot(en, ee)
        if norm > NOISE_CLIP_H_M:
            en, ee = en * NOISE_CLIP_H_M / norm, ee * NOISE_CLIP_H_M / norm
        self.err = (en, ee)
        s_v = NOISE_SIGMA_V_M * math.sqrt(1 - a * a)
        up = a * self.err_up + s_v * rng.gauss(0, 1)
        self.err_up = max(-NOISE_CLIP_V_M, min(NOISE_CLIP_V_M, up))
