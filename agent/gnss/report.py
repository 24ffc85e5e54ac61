"""How a fix is shown to people and machines: the JSON of `picket gps replay --json`.

Keys (docs/gnss.md): time (ISO 8601 UTC with milliseconds, or null when unknown), lat,
lon, alt, mode (0–3 as gpsd's TPV), quality, hdop, pdop, hacc_m, hacc_from (gst|hdop|null),
sats, sats_used (per constellation), speed_mps, course_deg, time_source.
"""

from __future__ import annotations

import datetime as dt

from contract.fix import Fix


def iso_time(time_ms: int | None) -> str | None:
    if time_ms is None:
        return None
    t = dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def fix_json(fix: Fix) -> dict[str, object]:
    return {
        "time": iso_time(fix.time_ms),
        "lat": round(fix.lat, 9),
        "lon": round(fix.lon, 9),
        "alt": _round(fix.alt_m, 3),
        "mode": int(fix.mode),
        "quality": fix.quality.name.lower(),
        "hdop": fix.hdop,
        "pdop": fix.pdop,
        "hacc_m": _round(fix.accuracy_m, 2),
        "hacc_from": None
        if fix.accuracy_m is None
        else ("gst" if fix.accuracy_from_gst else "hdop"),
        "sats": fix.satellites,
        "sats_used": {str(c): n for c, n in fix.sats_used},
        "speed_mps": _round(fix.speed_mps, 3),
        "course_deg": fix.course_deg,
        "time_source": fix.time_source.name.lower(),
    }
