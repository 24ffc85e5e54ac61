"""The one value every position source produces and the check-in engine consumes.

A `Fix` is one receiver cycle's position with everything needed to judge it: the fix mode
and quality as the receiver stated them, dilution of precision, a horizontal accuracy
estimate, satellites used per constellation, and where its time came from. Sources
report positions even when the receiver calls them estimated or simulated (gpsd does the
same); deciding whether such a fix is evidence is the engine's job (`Fix.usable`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TimeSource(enum.IntEnum):
    """Where a time came from; carried in every record (key 7, see docs/records.md)."""

    NONE = 0
    GNSS = 1
    NTP = 2
    PERSISTED = 3
    GNSS_ROLLOVER = 4  # a GNSS date 1024 weeks in the past, corrected (week-number rollover)


class FixMode(enum.IntEnum):
    """As NMEA GSA and gpsd's TPV `mode` state it."""

    UNKNOWN = 0
    NO_FIX = 1
    FIX_2D = 2
    FIX_3D = 3


class Quality(enum.IntEnum):
    """GGA fix quality (NMEA 0183), also derived from RMC/GNS/GLL mode indicators."""

    INVALID = 0
    GPS = 1
    DGPS = 2
    PPS = 3
    RTK = 4
    FLOAT_RTK = 5
    ESTIMATED = 6
    MANUAL = 7
    SIMULATION = 8


# Qualities that come from satellites measured now; estimated, manual and simulated
# positions are reported but never count as presence at a point.
MEASURED = frozenset({Quality.GPS, Quality.DGPS, Quality.PPS, Quality.RTK, Quality.FLOAT_RTK})


class Constellation(enum.StrEnum):
    GPS = "gps"
    GLONASS = "glonass"
    GALILEO = "galileo"
    BEIDOU = "beidou"
    QZSS = "qzss"
    NAVIC = "navic"
    SBAS = "sbas"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Fix:
    """One receiver cycle with a position.

    `time_ms` is UTC milliseconds since the Unix epoch, or None when the receiver has not
    told the date yet; `accuracy_m` is the estimated horizontal error (1 sigma, metres),
    from GST when the receiver sends it, else HDOP × UERE_M, else None.
    """

    time_ms: int | None
    lat: float
    lon: float
    accuracy_m: float | None = None
    hdop: float | None = None
    pdop: float | None = None
    alt_m: float | None = None
    mode: FixMode = FixMode.UNKNOWN
    quality: Quality = Quality.GPS
    satellites: int = 0
    sats_used: tuple[tuple[Constellation, int], ...] = ()
    speed_mps: float | None = None
    course_deg: float | None = None
    time_source: TimeSource = TimeSource.GNSS
    accuracy_from_gst: bool = False

    @property
    def usable(self) -> bool:
        """A measured position with a known time and accuracy: evidence for the engine."""
        return (
            self.quality in MEASURED
            and self.time_ms is not None
            and self.accuracy_m is not None
            and self.mode != FixMode.NO_FIX
        )
