"""Small-distance geodesy for geofences.

Patrol points are tens of metres across and lines a few kilometres long, so a local
equirectangular projection around a reference latitude is accurate to well under a
centimetre per hundred metres; it is cheap enough to run on every fix on a Pi Zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The position `north_m` metres north and `east_m` metres east of (lat, lon)."""
    dlat = north_m / M_PER_DEG_LAT
    dlon = east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def to_local(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """(north, east) in metres of (lat, lon) relative to (lat0, lon0)."""
    north = (lat - lat0) * M_PER_DEG_LAT
    east = (lon - lon0) * M_PER_DEG_LAT * math.cos(math.radians(lat0))
    return north, east


def point_in_ring(lat: float, lon: float, ring: Sequence[tuple[float, float]]) -> bool:
    """Whether (lat, lon) is inside a polygon ring of (lon, lat) pairs (as GeoJSON orders
    them), by ray casting; fine for zones of a district, where the earth is flat enough."""
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > lat) != (y2 > lat):
            x = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x:
                inside = not inside
    return inside
