"""A line of the aerial plan turned into a flight: waypoints, duration and energy.

Pure arithmetic over the plan and the dock's fixed facts (`DockConfig`): no state, no time,
so the state machine (agent/dock/machine.py) asks it when it judges a FLY_LINE ("battery
23 % below 40 % needed") and again when it flies one, and a test can price a line without
a dock. Each waypoint sits over its point in the middle of the point's altitude band
(above sea level, as the drone's fixes state altitude), never lower than the drone's safe
height, hovering the point's dwell plus a margin. The energy is a planning estimate
(distance at cruise speed, climbs, hovers, take-off and landing, at one drain rate): it
decides whether a flight starts; in flight, the drone's own battery reading decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.checkin.geo import distance_m
from agent.checkin.plan import Plan, Point

__all__ = ["DockConfig", "Mission", "Waypoint", "plan_mission"]

BAND_MARGIN_M = 10.0  # a waypoint at least this far inside its band (GNSS height wanders)


@dataclass(frozen=True, slots=True)
class DockConfig:
    """A dock's fixed facts and limits (the energy model is a planning estimate)."""

    drone: str  # the drone's id: every aerial check-in names it
    home_lat: float
    home_lon: float
    home_alt_m: float  # the pad, metres above sea level (bands are above sea level)
    wind_limit_mps: float = 10.0
    wind_mps: float | None = None  # assumed without a sensor; None: a reading is needed
    reserve_pct: float = 20.0  # battery a mission must leave on landing
    drain_pct_per_min: float = 3.6  # flying or hovering (hover is the costlier)
    cruise_mps: float = 10.0
    climb_mps: float = 3.0
    overhead_s: float = 30.0  # take-off and landing
    ready_pct: float = 95.0  # charged: CHARGING -> READY
    return_pct: float = 15.0  # in flight at or below this: come home
    hover_margin_s: float = 5.0  # hover a point's dwell plus this
    default_rel_alt_m: float = 60.0  # a point without a band
    min_rel_alt_m: float = 20.0  # never lower than this above the pad
    heartbeat_timeout_ms: int = 5_000
    launch_timeout_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class Waypoint:
    """What the drone flies to: `rel_alt_m` above the pad, hovering `hover_s` there."""

    lat: float
    lon: float
    rel_alt_m: float
    hover_s: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.lat, self.lon, self.rel_alt_m, self.hover_s)


@dataclass(frozen=True, slots=True)
class Mission:
    """A line turned into a flight: its waypoints and what it is expected to cost."""

    line: str
    points: tuple[str, ...]
    waypoints: tuple[Waypoint, ...]
    estimated_s: float
    energy_pct: int  # estimated, without the reserve


def plan_mission(plan: Plan, line_id: str, config: DockConfig) -> Mission | str:
    """The flight over `line_id`, or why there is none (a receipt's reason)."""
    try:
        line = plan.line(line_id)
    except KeyError:
        return f"line {line_id} not in aerial plan version {plan.version}"
    if not line.point_ids:
        return f"line {line_id} has no points"
    planned = [_waypoint(plan.point(pid), config) for pid in line.point_ids]
    problems = [w for w in planned if isinstance(w, str)]
    if problems:
        return problems[0]
    waypoints = tuple(w for w in planned if isinstance(w, Waypoint))
    here = (config.home_lat, config.home_lon, 0.0)
    horizontal = vertical = hover = 0.0
    for w in waypoints:
        horizontal += distance_m(here[0], here[1], w.lat, w.lon)
        vertical += abs(w.rel_alt_m - here[2])
        hover += w.hover_s
        here = (w.lat, w.lon, w.rel_alt_m)
    horizontal += distance_m(here[0], here[1], config.home_lat, config.home_lon)
    vertical += abs(here[2])
    seconds = (
        horizontal / config.cruise_mps + vertical / config.climb_mps + hover + config.overhead_s
    )
    energy = math.ceil(seconds / 60 * config.drain_pct_per_min)
    return Mission(line_id, line.point_ids, waypoints, round(seconds, 1), energy)


def _waypoint(p: Point, config: DockConfig) -> Waypoint | str:
    """Over the point, in the middle of its band (as far as the lowest safe height allows),
    hovering its dwell plus the margin; or why the band cannot be flown."""
    rel = config.default_rel_alt_m
    if p.alt_min_m is not None:
        low = p.alt_min_m - config.home_alt_m
        high = low + 2 * config.default_rel_alt_m
        if p.alt_max_m is not None:
            high = p.alt_max_m - config.home_alt_m
        if high < config.min_rel_alt_m + BAND_MARGIN_M:
            return (
                f"point {p.id}: its band ends {high:.0f} m above the dock, "
                f"too low for the {config.min_rel_alt_m:.0f} m the drone keeps"
            )
        rel = max((low + high) / 2, config.min_rel_alt_m)
    return Waypoint(p.lat, p.lon, round(rel, 1), p.dwell_s + config.hover_margin_s)
