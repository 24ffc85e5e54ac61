"""The one value every position source produces and the check-in engine consumes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TimeSource(enum.IntEnum):
    """Where a time came from; carried in every record (key 7, see docs/records.md)."""

    NONE = 0
    GNSS = 1
    NTP = 2
    PERSISTED = 3


@dataclass(frozen=True, slots=True)
class Fix:
    """One receiver cycle with a valid position.

    `time_ms` is UTC milliseconds since the Unix epoch as the receiver reported it;
    `accuracy_m` is the estimated horizontal error (1 sigma) in metres.
    """

    time_ms: int
    lat: float
    lon: float
    accuracy_m: float
    hdop: float
    satellites: int
    speed_mps: float
    time_source: TimeSource = TimeSource.GNSS
