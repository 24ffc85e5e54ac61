"""Patrol plans: zones, the points a device must visit, the lines that order them with time
windows, and who walks which lines on which day.

Plain frozen values shared by the engine, the simulators, the center and the plan tools.
Windows are minutes after local midnight in the plan's UTC offset (a district keeps one
clock), and `agenda` turns a device's assignments for a date into absolute windows in UTC
milliseconds, the only form the engine sees: it never does calendar arithmetic itself.
The GeoJSON form is read and checked by agent/checkin/planfile.py (docs/plans.md).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

DEFAULT_RADIUS_M = 30.0
DEFAULT_DWELL_S = 60.0


class Tier(enum.StrEnum):
    """The district's three patrol forces (and the drones)."""

    STREET = "street"
    COMMUNITY = "community"
    GRID = "grid"
    AERIAL = "aerial"


@dataclass(frozen=True, slots=True)
class Point:
    id: str
    lat: float
    lon: float
    radius_m: float = DEFAULT_RADIUS_M
    dwell_s: float = DEFAULT_DWELL_S
    max_speed_mps: float | None = None  # None: no speed gate at this point
    tier: Tier | None = None
    zone: str | None = None
    alt_min_m: float | None = None  # aerial points: the altitude band a pass must be in
    alt_max_m: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """Minutes after local midnight; end may pass 1440 for a window across midnight."""

    start_min: int
    end_min: int


@dataclass(frozen=True, slots=True)
class Line:
    id: str
    point_ids: tuple[str, ...]
    windows: tuple[Window | None, ...] = ()  # per point; empty: no windows on this line
    zone: str | None = None
    tier: Tier | None = None

    def window(self, index: int) -> Window | None:
        return self.windows[index] if index < len(self.windows) else None


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    name: str = ""
    ring: tuple[tuple[float, float], ...] = ()  # (lon, lat) outer ring, as in GeoJSON


@dataclass(frozen=True, slots=True)
class Assignment:
    lines: tuple[str, ...]
    date: dt.date
    device: str | None = None
    team: str | None = None


@dataclass(frozen=True, slots=True)
class AgendaItem:
    """One point to visit on one line, between two instants (UTC ms; None: any time)."""

    line: str
    point: str
    order: int
    start_ms: int | None
    end_ms: int | None


@dataclass(frozen=True, slots=True)
class Plan:
    version: int
    points: tuple[Point, ...]
    lines: tuple[Line, ...] = ()
    zones: tuple[Zone, ...] = ()
    assignments: tuple[Assignment, ...] = ()
    utc_offset_min: int = 0
    _index: dict[str, Point] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {p.id: p for p in self.points})

    def point(self, point_id: str) -> Point:
        return self._index[point_id]

    def has_point(self, point_id: str) -> bool:
        return point_id in self._index

    def line(self, line_id: str) -> Line:
        for ln in self.lines:
            if ln.id == line_id:
                return ln
        raise KeyError(line_id)

    def agenda(self, date: dt.date, device: str, team: str | None = None) -> list[AgendaItem]:
        """The points `device` (or its team) must visit on `date`, with windows in UTC ms."""
        midnight = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC)
        base_ms = int(midnight.timestamp() * 1000) - self.utc_offset_min * 60_000
        items: list[AgendaItem] = []
        for a in self.assignments:
            if a.date != date or not (a.device == device or (team and a.team == team)):
                continue
            for line_id in a.lines:
                line = self.line(line_id)
                for i, pid in enumerate(line.point_ids):
                    w = line.window(i)
                    items.append(
                        AgendaItem(
                            line_id,
                            pid,
                            i,
                            None if w is None else base_ms + w.start_min * 60_000,
                            None if w is None else base_ms + w.end_min * 60_000,
                        )
                    )
        return items
