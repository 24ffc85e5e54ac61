"""Patrol plans: the points a device must visit and the lines that order them.

Plain frozen values so the engine, the simulators and the center share one definition.
The full plan format (zones, windows, assignments, GeoJSON import) grows here; the
spine needs points and lines only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Point:
    id: str
    lat: float
    lon: float
    radius_m: float
    dwell_s: float


@dataclass(frozen=True, slots=True)
class Line:
    id: str
    point_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    version: int
    points: tuple[Point, ...]
    lines: tuple[Line, ...]

    def point(self, point_id: str) -> Point:
        for p in self.points:
            if p.id == point_id:
                return p
        raise KeyError(point_id)
