"""Reports offered for merging: the same thing, reported twice.

Two members who pass the same rubbish pile both report it; the operator should see the
second as a likely duplicate of the first and merge it, so that one handler goes and both
reporters hear how it ends (center/events/lifecycle.py keeps both informed). A candidate is
another event of the same category, whose place is known, within `RADIUS_M` of this one's
and reported within `WINDOW_MS` of it (before or after), that is still live: not closed,
rejected or already merged. `candidates` is the pure test over rows; `find` reads the rows
that may pass it (a box around the place, center/events/store.py `nearby`) and applies it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from center.events.store import EventRow, nearby
from center.tables import Sql
from contract.eventcommands import EventStatusCode

__all__ = ["RADIUS_M", "WINDOW_MS", "candidates", "distance_m", "find"]

RADIUS_M = 50.0
WINDOW_MS = 24 * 3600 * 1000
EARTH_RADIUS_M = 6_371_008.8  # the mean radius (IUGG)
_DONE = (EventStatusCode.CLOSED, EventStatusCode.REJECTED, EventStatusCode.MERGED)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance (haversine), metres: exact enough at tens of metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def candidates(event: EventRow, rows: Iterable[EventRow]) -> list[tuple[EventRow, float]]:
    """The rows `event` may be a duplicate of, nearest first, with their distance (m)."""
    lat, lon = event.lat, event.lon
    if lat is None or lon is None:
        return []
    found: list[tuple[EventRow, float]] = []
    for row in rows:
        if row.number == event.number or row.category != event.category:
            continue
        if row.status in _DONE or row.lat is None or row.lon is None:
            continue
        if abs(row.reported_ms - event.reported_ms) > WINDOW_MS:
            continue
        d = distance_m(lat, lon, row.lat, row.lon)
        if d <= RADIUS_M:
            found.append((row, d))
    found.sort(key=lambda x: (x[1], x[0].number))
    return found


def find(sql: Sql, event: EventRow) -> list[tuple[EventRow, float]]:
    """`candidates` among the stored events."""
    # 50 m is 4,500 units of 1e-7 degree of latitude; the box is wider, the test exact.
    box_e7 = math.ceil(RADIUS_M / 111_000 * 1e7 * 1.5)
    return candidates(event, nearby(sql, event, radius_e7=box_e7, window_ms=WINDOW_MS))
