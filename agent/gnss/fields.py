"""Field conversions for NMEA 0183: text fields in, typed values or None out.

Receivers leave fields empty, pad them, or put garbage in them (the corpus has a date of
"2208-1"); every function here returns None for anything it cannot read instead of
raising, so one bad field costs that field, never the sentence or the stream. That
includes numbers out of any sense: a day of 11111111111 (which `datetime` refuses with an
OverflowError), an integer too long for `int()`, a negative or astronomical dilution of
precision or error estimate (which would make a negative or infinite accuracy).
"""

from __future__ import annotations

import datetime as dt
import math
import re

from contract.fix import Constellation

KNOT_MPS = 1852.0 / 3600.0
MS_PER_DAY = 86_400_000
MAX_INT_TEXT = 20  # characters of an integer field: more is garbage (and int() may refuse it)
MAX_DOP = 1000.0  # receivers cap a DOP at 99.99 ("unknown"); past this it is garbage
MAX_ERROR_M = 10_000_000.0  # an error estimate in metres: past a quarter of the Earth, garbage


def num(text: str) -> float | None:
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


_INT = re.compile(r"\s*-?[0-9]+\s*")


def digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '²' and other Unicode digits)."""
    return text.isascii() and text.isdigit()


def integer(text: str) -> int | None:
    if len(text) > MAX_INT_TEXT or not _INT.fullmatch(text):
        return None
    return int(text)


def within(value: float | None, high: float) -> float | None:
    """`value` if it is 0..`high`, else None: a negative, NaN or huge figure is no figure."""
    return value if value is not None and 0.0 <= value <= high else None


def dop(text: str) -> float | None:
    """A dilution of precision: 0..MAX_DOP, else None."""
    return within(num(text), MAX_DOP)


def error_m(text: str) -> float | None:
    """An error estimate in metres (GST): 0..MAX_ERROR_M, else None."""
    return within(num(text), MAX_ERROR_M)


def coordinate(value: str, hemi: str, degree_digits: int) -> float | None:
    """ddmm.mmmm (latitude, 2 degree digits) or dddmm.mmmm (longitude, 3) to degrees."""
    if not value or hemi not in ("N", "S", "E", "W"):
        return None
    dot = value.find(".")
    head = value if dot < 0 else value[:dot]
    if len(head) < 3 or not digits(head):
        return None
    try:
        degrees = int(head[:-2])
        minutes = float(value[len(head) - 2 :])
    except ValueError:
        return None
    limit = 90 if degree_digits == 2 else 180
    if minutes >= 60 or degrees > limit:
        return None
    out = degrees + minutes / 60.0
    if out > limit:
        return None
    return -out if hemi in ("S", "W") else out


def time_of_day_ms(text: str) -> int | None:
    """hhmmss[.sss] to milliseconds since midnight."""
    if len(text) < 6 or not digits(text[:6]):
        return None
    h, m = int(text[0:2]), int(text[2:4])
    try:
        s = float(text[4:])
    except ValueError:
        return None
    if h > 23 or m > 59 or not 0 <= s < 61:
        return None
    return (h * 3600 + m * 60) * 1000 + round(s * 1000)


def date_ddmmyy(text: str) -> dt.date | None:
    """RMC's ddmmyy; two-digit years are 1980–2079 (GPS time begins in 1980)."""
    if len(text) != 6 or not digits(text):
        return None
    d, m, y = int(text[0:2]), int(text[2:4]), int(text[4:6])
    year = 2000 + y if y < 80 else 1900 + y
    try:
        return dt.date(year, m, d)
    except ValueError:
        return None


def date_zda(day: str, month: str, year: str) -> dt.date | None:
    if not (digits(day) and digits(month) and digits(year) and len(year) == 4):
        return None
    if len(day) > 2 or len(month) > 2:  # a day of 11111111111 overflows datetime's C int
        return None
    try:
        return dt.date(int(year), int(month), int(day))
    except (ValueError, OverflowError):
        return None


def epoch_ms(date: dt.date, tod_ms: int) -> int:
    days = (date - dt.date(1970, 1, 1)).days
    return days * MS_PER_DAY + tod_ms


TALKERS = {
    "GP": Constellation.GPS,
    "GL": Constellation.GLONASS,
    "GA": Constellation.GALILEO,
    "GB": Constellation.BEIDOU,
    "BD": Constellation.BEIDOU,
    "GQ": Constellation.QZSS,
    "QZ": Constellation.QZSS,
    "GI": Constellation.NAVIC,
}

# NMEA 4.10+ GSA/GSV system id
SYSTEM_IDS = {
    1: Constellation.GPS,
    2: Constellation.GLONASS,
    3: Constellation.GALILEO,
    4: Constellation.BEIDOU,
    5: Constellation.QZSS,
    6: Constellation.NAVIC,
}


PRN_RANGES = (
    (1, 32, Constellation.GPS),
    (33, 64, Constellation.SBAS),
    (65, 96, Constellation.GLONASS),
    (120, 158, Constellation.SBAS),
    (193, 200, Constellation.QZSS),
    (201, 263, Constellation.BEIDOU),
    (301, 336, Constellation.GALILEO),
    (401, 437, Constellation.BEIDOU),
)


def constellation_of_prn(prn: int) -> Constellation:
    """For GN talkers without a system id: the PRN ranges receivers use in practice."""
    for low, high, which in PRN_RANGES:
        if low <= prn <= high:
            return which
    return Constellation.UNKNOWN
