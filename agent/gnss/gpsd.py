"""gpsd's JSON protocol bytes in, `Fix` values out: a pure, incremental decoder.

gpsd already did the receiver-specific work (binary protocols, cycle detection, week
rollover), so this module only translates its reports into our `Fix`. It is built like the
NMEA parser, sans-IO: fed whatever the socket delivers, it keeps the same bounded line
buffer (agent/gnss/lines.py) and decodes one JSON object per line. Only two classes
matter: a SKY report carries the dilution of precision and the satellites (used and in
view), and each TPV report with a 2D/3D position becomes one `Fix`, completed with the
latest SKY's figures (gpsd sends SKY less often than TPV). VERSION, DEVICES, WATCH and
every other class are counted and ignored; a line that is not a JSON object, or a TPV with
impossible values, is counted as malformed and never raised: a bad line costs that line,
not the stream.

Accuracy: gpsd's `epx`/`epy`/`eph` are 95 % confidence figures, ours (`Fix.accuracy_m`)
is a 1-sigma horizontal error, the same quantity NMEA GST gives. For a normal
distribution the 95 % bound of one axis is about 2 sigma, so sigma_x ≈ epx/2 and the
horizontal error is hypot(sigma_x, sigma_y) = hypot(epx, epy)/2; gpsd's `eph` (already
horizontal) is halved the same way. Without either, HDOP × UERE_M as for NMEA.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from agent.gnss import fields as f
from agent.gnss.lines import LineSplitter
from agent.gnss.nmea import UERE_M, Sky
from contract.fix import Constellation, Fix, FixMode, Quality, TimeSource

MAX_LINE = 32_768  # gpsd caps a report at 10240 bytes (GPS_JSON_RESPONSE_MAX); allow slack
_START = b'{"class"'  # how every gpsd report begins: where to resynchronise after garbage
MAX_RESYNC = 4  # later starts tried on a line that does not parse as a whole

# TPV "status" (gpsd 3.22's STATUS_*) to our quality. Absent means a plain fix.
STATUS_QUALITY = {
    0: Quality.GPS,  # unknown: gpsd reports it with a valid mode, so a plain fix
    1: Quality.GPS,
    2: Quality.DGPS,
    3: Quality.RTK,  # RTK fixed
    4: Quality.FLOAT_RTK,
    5: Quality.ESTIMATED,  # dead reckoning only
    6: Quality.GPS,  # GNSS + dead reckoning
    7: Quality.INVALID,  # time only (surveyed-in timing receivers): not a measured position
    8: Quality.SIMULATION,
    9: Quality.PPS,  # P(Y) code fix, newer gpsd
}

# SKY satellite "gnssid" (u-blox numbering, which gpsd uses for every receiver).
GNSS_IDS = {
    0: Constellation.GPS,
    1: Constellation.SBAS,
    2: Constellation.GALILEO,
    3: Constellation.BEIDOU,
    5: Constellation.QZSS,
    6: Constellation.GLONASS,
    7: Constellation.NAVIC,
}

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z", re.ASCII)


@dataclass(slots=True)
class GpsdStats:
    lines: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    malformed: int = 0  # not a JSON object with a class, or a TPV with impossible values
    overlong: int = 0  # no line end within MAX_LINE bytes: dropped up to the next one
    resynced: int = 0  # garbage before a report on the same line, dropped
    fixes: int = 0
    no_fix: int = 0  # TPV without a 2D/3D position

    @property
    def rejected(self) -> int:
        return self.malformed + self.overlong


@dataclass(slots=True)
class _SkyFigures:
    hdop: float | None = None
    pdop: float | None = None
    used: tuple[tuple[Constellation, int], ...] = ()
    used_count: int = 0


class GpsdDecoder:
    def __init__(self) -> None:
        self.stats = GpsdStats()
        self.sky = Sky()
        self._lines = LineSplitter(MAX_LINE)  # an overlong line is dropped to its end
        self._figures = _SkyFigures()

    def feed(self, data: bytes) -> list[Fix]:
        lines, overflows = self._lines.feed(data)
        out: list[Fix] = []
        for line in lines:
            out.extend(self.feed_line(line))
        self.stats.overlong += overflows
        return out

    def flush(self) -> list[Fix]:
        """End of input: decode a last report that came without its line end."""
        line = self._lines.flush()
        return self.feed_line(line) if line else []

    def feed_line(self, line: bytes) -> list[Fix]:
        self.stats.lines += 1
        report, skipped = _report(line)
        self.stats.resynced += skipped
        if not isinstance(report, dict) or not isinstance(report.get("class"), str):
            self.stats.malformed += 1
            return []
        kind = report["class"]
        self.stats.by_class[kind] += 1
        if kind == "SKY":
            self._sky(report)
        elif kind == "TPV":
            return self._tpv(report)
        return []

    def _sky(self, r: dict[str, object]) -> None:
        fig = self._figures
        hdop, pdop = (f.within(_num(r.get(k)), f.MAX_DOP) for k in ("hdop", "pdop"))
        fig.hdop = fig.hdop if hdop is None else hdop  # absent or impossible: the last holds
        fig.pdop = fig.pdop if pdop is None else pdop
        sats = r.get("satellites")
        if not isinstance(sats, list):
            return  # a DOP-only SKY: the satellites of the last full one still hold
        used: Counter[Constellation] = Counter()
        seen: Counter[Constellation] = Counter()
        for s in sats:
            if not isinstance(s, dict):
                continue
            gnss = s.get("gnssid")
            which = GNSS_IDS.get(gnss if isinstance(gnss, int) else -1, Constellation.UNKNOWN)
            seen[which] += 1
            if s.get("used") is True:
                used[which] += 1
        fig.used = tuple(sorted(used.items()))
        fig.used_count = sum(used.values())
        self.sky.in_view = dict(seen)

    def _tpv(self, r: dict[str, object]) -> list[Fix]:
        mode = r.get("mode")
        lat, lon = _num(r.get("lat")), _num(r.get("lon"))
        if not isinstance(mode, int) or mode < 2 or lat is None or lon is None:
            self.stats.no_fix += 1
            return []
        if mode > 3 or abs(lat) > 90 or abs(lon) > 180:
            self.stats.malformed += 1
            return []
        fig = self._figures
        epx, epy, eph = (f.within(_num(r.get(k)), f.MAX_ERROR_M) for k in ("epx", "epy", "eph"))
        if epx is not None and epy is not None:
            accuracy: float | None = math.hypot(epx, epy) / 2  # 95 % per axis → 1 sigma
        elif eph is not None:
            accuracy = eph / 2
        else:
            accuracy = None if fig.hdop is None else fig.hdop * UERE_M
        time_ms = _time_ms(r.get("time"))
        status = r.get("status", 1)
        quality = STATUS_QUALITY.get(status, Quality.GPS) if isinstance(status, int) else None
        self.stats.fixes += 1
        return [
            Fix(
                time_ms=time_ms,
                lat=lat,
                lon=lon,
                accuracy_m=accuracy,
                hdop=fig.hdop,
                pdop=fig.pdop,
                alt_m=_num(r.get("altMSL"), _num(r.get("alt"))),
                mode=FixMode(mode),
                quality=Quality.GPS if quality is None else quality,
                satellites=fig.used_count,
                sats_used=fig.used,
                speed_mps=_num(r.get("speed")),
                course_deg=_num(r.get("track")),
                time_source=TimeSource.NONE if time_ms is None else TimeSource.GNSS,
            )
        ]


def _report(line: bytes) -> tuple[object, bool]:
    """The line's JSON value, or after garbage (the cut head of a report) the report that
    follows it, with whether garbage was skipped; None if neither parses. Reports nest
    objects with a class (DEVICES lists DEVICE objects), so the whole line is tried
    first, then a few later starts, first to last."""
    start = 0
    for _ in range(MAX_RESYNC + 1):
        try:
            return json.loads(line[start:].decode("utf-8")), start > 0
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            start = line.find(_START, start + 1)
            if start < 0:
                break
    return None, False


def _num(value: object, default: float | None = None) -> float | None:
    """A finite JSON number, else `default` (bool is an int in Python, but not a number here;
    an integer of 400 digits is one for JSON, but too large for a float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return default
    try:
        v = float(value)
    except OverflowError:
        return default
    return v if math.isfinite(v) else default


def _time_ms(value: object) -> int | None:
    """gpsd's ISO 8601 UTC ("2019-04-07T00:02:31.420Z") to Unix milliseconds, else None."""
    if not isinstance(value, str):
        return None
    m = _TIME.fullmatch(value)
    if m is None:
        return None
    year, month, day, hh, mm, ss = (int(g) for g in m.groups()[:6])
    try:
        date = dt.date(year, month, day)
    except ValueError:
        return None
    if hh > 23 or mm > 59 or ss > 60:
        return None
    frac = m.group(7) or "0"
    ms = round(int(frac) * 1000 / 10 ** len(frac))
    return f.epoch_ms(date, ((hh * 60 + mm) * 60 + ss) * 1000 + ms)
