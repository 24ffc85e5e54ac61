"""NMEA 0183 sentence writers for the GNSS simulator.

Pure functions from numbers to one complete sentence ("$...*HH\\r\\n"), so the walker
stays about motion and these stay about the wire format. Only the two sentences the agent
consumes are written: GGA (fix quality, satellites, HDOP, altitude) and RMC (validity,
date, speed, course). Coordinates carry five decimals of minutes (a 1.9 cm step), which is
what u-blox-class receivers emit and enough for the round trip the tests demand; the time
of day is truncated, never rounded, so it cannot roll over to "60" seconds.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache, reduce
from operator import xor

KNOTS_PER_MPS = 3600.0 / 1852.0
_MIN_SCALE = 100_000  # five decimals of arc minutes


def checksum(body: str) -> str:
    """XOR of every character between '$' and '*', as two uppercase hex digits."""
    return f"{reduce(xor, body.encode('ascii'), 0):02X}"


def _sentence(body: str) -> str:
    return f"${body}*{checksum(body)}\r\n"


@lru_cache(maxsize=4)
def _hhmmss(time_ms: int) -> str:
    cs = (time_ms // 10) % 8_640_000  # centiseconds of the UTC day
    return f"{cs // 360_000:02d}{cs // 6000 % 60:02d}{cs // 100 % 60:02d}.{cs % 100:02d}"


@lru_cache(maxsize=8)
def _ddmmyy(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).strftime("%d%m%y")


def _ddmm(value: float) -> float:
    """|value| in degrees as ddmm.mmmmm, rounded once, in integer units, to 1e-5 minutes."""
    deg, units = divmod(round(abs(value) * 60 * _MIN_SCALE), 60 * _MIN_SCALE)
    return deg * 100 + units / _MIN_SCALE


@lru_cache(maxsize=4)  # GGA and RMC of one epoch share the formatted coordinates
def _lat_lon(lat: float, lon: float) -> str:
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"{_ddmm(lat):010.5f},{ns},{_ddmm(lon):011.5f},{ew}"


def gga(
    time_ms: int,
    lat: float,
    lon: float,
    *,
    quality: int = 1,
    satellites: int = 9,
    hdop: float = 0.9,
    altitude_m: float = 250.0,
    talker: str = "GN",
) -> str:
    """A GGA sentence: time, position, fix quality, satellites, HDOP, altitude (MSL)."""
    body = (
        f"{talker}GGA,{_hhmmss(time_ms)},{_lat_lon(lat, lon)},"
        f"{quality:d},{satellites:02d},{hdop:.2f},{altitude_m:.1f},M,,M,,"
    )
    return _sentence(body)


def rmc(
    time_ms: int,
    lat: float,
    lon: float,
    *,
    speed_mps: float,
    course_deg: float,
    valid: bool = True,
    talker: str = "GN",
) -> str:
    """An RMC sentence (NMEA 2.3+, with mode indicator): time, position, speed, course, date."""
    knots = abs(speed_mps) * KNOTS_PER_MPS
    course = round(course_deg, 1) % 360.0
    mode = "A" if valid else "N"
    body = (
        f"{talker}RMC,{_hhmmss(time_ms)},{'A' if valid else 'V'},"
        f"{_lat_lon(lat, lon)},"
        f"{knots:.2f},{course:.1f},{_ddmmyy(time_ms // 86_400_000)},,,{mode}"
    )
    return _sentence(body)
