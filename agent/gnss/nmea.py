"""NMEA 0183 (up to 4.11) bytes in, `Fix` values out: a pure, incremental parser.

Fed whatever the transport delivers (split lines, merged lines, garbage between them), it
keeps a bounded line buffer (agent/gnss/lines.py), checks checksums (a sentence with a
wrong checksum is refused; one with none at all, as some old receivers send, is accepted
and counted), and assembles the sentences of one receiver cycle into one `Fix`. A cycle is
the run of sentences that share a time of day; sentences without one (GSA, GSV, VTG) join
the cycle in progress. A cycle is complete when the next one starts, or earlier, once the
parser has learnt which sentence type this receiver ends its cycles with (gpsd's trick):
that keeps latency low without guessing. It never reads a clock: dates come from RMC or
ZDA, the time of day from the sentences; a date before `not_before` by whole multiples of
1024 weeks is the GPS week-number rollover bug and is corrected (time source
GNSS_ROLLOVER) when a correction lands after `not_before`, or the time is distrusted
(None) when none does.

pynmea2 tokenises and checks the checksum; fields are converted here (agent/gnss/fields.py),
since one unreadable field must cost that field, not the sentence.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field

import pynmea2

from agent.gnss import fields as f
from agent.gnss.lines import LineSplitter
from contract.fix import Constellation, Fix, FixMode, Quality, TimeSource

UERE_M = 3.0  # user-equivalent range error: accuracy = HDOP × UERE_M when no GST is sent
MAX_LINE = 128  # NMEA caps a sentence at 82 characters; allow proprietary slack
ROLLOVER_DAYS = 1024 * 7
MAX_ROLLOVERS = 3

POSITION_RANK = {"GGA": 3, "GNS": 3, "RMC": 2, "GLL": 1}  # who wins when several give one
TIMED = frozenset({"GGA", "RMC", "GNS", "GLL", "GST", "ZDA", "GBS", "GRS"})
UNTIMED = frozenset({"GSA", "GSV", "VTG"})

MODE_INDICATOR = {
    "A": Quality.GPS,
    "D": Quality.DGPS,
    "P": Quality.PPS,
    "R": Quality.RTK,
    "F": Quality.FLOAT_RTK,
    "E": Quality.ESTIMATED,
    "M": Quality.MANUAL,
    "S": Quality.SIMULATION,
}


@dataclass(slots=True)
class NmeaStats:
    lines: int = 0
    sentences: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    bad_checksum: int = 0
    no_checksum: int = 0
    malformed: int = 0
    unsupported: int = 0
    fixes: int = 0
    no_fix_cycles: int = 0
    rollover_corrected: int = 0
    time_distrusted: int = 0
    no_time: int = 0
    late: int = 0

    @property
    def rejected(self) -> int:
        return self.bad_checksum + self.malformed


@dataclass(slots=True)
class Sky:
    """Satellites in view per constellation, from the latest complete GSV groups."""

    in_view: dict[Constellation, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Cycle:
    tod: int | None = None
    last_type: str = ""
    lat: float | None = None
    lon: float | None = None
    rank: int = 0
    quality: Quality | None = None
    no_fix_seen: bool = False
    alt: float | None = None
    hdop: float | None = None
    pdop: float | None = None
    mode: FixMode = FixMode.UNKNOWN
    sats: int | None = None
    used: dict[Constellation, set[int]] = field(default_factory=dict)
    speed: float | None = None
    course: float | None = None
    date: dt.date | None = None
    gst: float | None = None


class NmeaParser:
    def __init__(self, *, not_before: dt.date | None = None) -> None:
        self.not_before = not_before
        self.stats = NmeaStats()
        self.sky = Sky()
        self._lines = LineSplitter(MAX_LINE, resync=b"$")  # keeps a sentence that has begun
        self._cycle = _Cycle()
        self._ender: str | None = None  # the sentence type that ends this receiver's cycles
        self._ender_seen: str | None = None  # candidate, seen ending one cycle so far
        self._closed_tod: int | None = None
        self._date: dt.date | None = None
        self._date_tod: int | None = None

    # -- bytes ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Fix]:
        lines, overflows = self._lines.feed(data)
        out: list[Fix] = []
        for line in lines:
            out.extend(self.feed_line(line))
        self.stats.malformed += overflows  # garbage with no line end, dropped
        return out

    def flush(self) -> list[Fix]:
        """End of input: complete the cycle in progress."""
        return self._close()

    def feed_line(self, line: bytes) -> list[Fix]:
        self.stats.lines += 1
        start = line.rfind(b"$")  # garbage before the sentence start is dropped
        if len(line) - max(start, 0) > MAX_LINE:
            self.stats.malformed += 1  # as when it arrives in pieces: too long to be NMEA
            return []
        if start < 0:
            if line.startswith(b"!"):  # AIS and other encapsulated sentences: valid, not ours
                self.stats.unsupported += 1
            else:
                self.stats.malformed += 1
            return []
        try:
            text = line[start:].decode("ascii")
            msg = pynmea2.parse(text, check=False)
        except pynmea2.ChecksumError:
            self.stats.bad_checksum += 1
            return []
        except pynmea2.SentenceTypeError:
            self.stats.unsupported += 1
            return []
        except Exception:
            self.stats.malformed += 1
            return []
        if "*" not in text:
            self.stats.no_checksum += 1
        kind = getattr(msg, "sentence_type", None)
        if not isinstance(kind, str):
            self.stats.unsupported += 1  # proprietary ($P...)
            return []
        self.stats.sentences += 1
        self.stats.by_type[kind] += 1
        return self._sentence(kind, str(getattr(msg, "talker", "")), list(msg.data))

    # -- cycles --------------------------------------------------------------------------

    def _sentence(self, kind: str, talker: str, d: list[str]) -> list[Fix]:
        out: list[Fix] = []
        if kind in TIMED:
            has_field = len(d) > _TIME_FIELD[kind]
            tod = f.time_of_day_ms(d[_TIME_FIELD[kind]]) if has_field else None
            if tod is None and kind in _MUST_HAVE_TIME:
                self.stats.no_time += 1  # cannot be placed in a cycle: its position is unusable
                return out
            if tod is not None:
                if tod == self._closed_tod:
                    self._ender = self._ender_seen = None  # closed too early: learn again
                    self.stats.late += 1
                    return out
                if self._cycle.tod is not None and tod != self._cycle.tod:
                    self._learn_ender(self._cycle.last_type)
                    out.extend(self._close())
                self._cycle.tod = tod
        elif kind not in UNTIMED:
            self.stats.unsupported += 1
            return out
        handler = _HANDLERS.get(kind)
        if handler is not None:
            try:
                handler(self, talker, d)
            except IndexError:
                self.stats.malformed += 1
                return out
        self._cycle.last_type = kind
        if kind == self._ender and self._cycle.tod is not None:
            out.extend(self._close())
        return out

    def _learn_ender(self, last: str) -> None:
        """A cycle ended at a time change: was it the ender we know, or a new candidate?

        Only timed sentence types can end cycles early (an untimed GSA or VTG cannot tell
        which cycle it belongs to), and a candidate must end two cycles in a row.
        """
        if last not in TIMED:
            self._ender = self._ender_seen = None
        elif last == self._ender_seen:
            self._ender = last
        else:
            self._ender, self._ender_seen = None, last

    def _close(self) -> list[Fix]:
        c, self._cycle = self._cycle, _Cycle()
        self._closed_tod = c.tod
        if c.tod is None and c.lat is None:
            return []
        date = self._cycle_date(c)
        if c.lat is None or c.lon is None:
            if c.no_fix_seen:
                self.stats.no_fix_cycles += 1
            return []
        time_ms, source = self._time(date, c.tod)
        accuracy = c.gst if c.gst is not None else (None if c.hdop is None else c.hdop * UERE_M)
        mode = c.mode
        if mode == FixMode.UNKNOWN:
            mode = FixMode.FIX_3D if c.alt is not None else FixMode.FIX_2D
        used = tuple(sorted((k, len(v)) for k, v in c.used.items() if v))
        self.stats.fixes += 1
        return [
            Fix(
                time_ms=time_ms,
                lat=c.lat,
                lon=c.lon,
                accuracy_m=accuracy,
                hdop=c.hdop,
                pdop=c.pdop,
                alt_m=c.alt,
                mode=mode,
                quality=c.quality if c.quality is not None else Quality.GPS,
                satellites=sum(n for _, n in used) if used else (c.sats or 0),
                sats_used=used,
                speed_mps=c.speed,
                course_deg=c.course,
                time_source=source,
                accuracy_from_gst=c.gst is not None,
            )
        ]

    def _cycle_date(self, c: _Cycle) -> dt.date | None:
        """The cycle's date: its own (RMC/ZDA), or the last one carried over midnight."""
        if c.date is not None:
            self._date, self._date_tod = c.date, c.tod
            return c.date
        if self._date is None or c.tod is None or self._date_tod is None:
            return None
        if c.tod < self._date_tod - 43_200_000:  # the time of day wrapped: a new day
            if self._date == dt.date.max:  # a receiver at 9999-12-31: no day after it
                self._date = None
                return None
            self._date += dt.timedelta(days=1)
        self._date_tod = c.tod
        return self._date

    def _time(self, date: dt.date | None, tod: int | None) -> tuple[int | None, TimeSource]:
        if date is None or tod is None:
            return None, TimeSource.NONE
        if self.not_before is None or date >= self.not_before:
            return f.epoch_ms(date, tod), TimeSource.GNSS
        behind = (self.not_before - date).days
        k = math.ceil(behind / ROLLOVER_DAYS)
        if k <= MAX_ROLLOVERS and date <= dt.date.max - dt.timedelta(days=k * ROLLOVER_DAYS):
            self.stats.rollover_corrected += 1
            return f.epoch_ms(
                date + dt.timedelta(days=k * ROLLOVER_DAYS), tod
            ), TimeSource.GNSS_ROLLOVER
        self.stats.time_distrusted += 1
        return None, TimeSource.NONE

    # -- sentences -----------------------------------------------------------------------

    def _position(self, lat: float | None, lon: float | None, rank: int, q: Quality) -> None:
        c = self._cycle
        if lat is None or lon is None:
            return
        if rank > c.rank:
            c.lat, c.lon, c.rank = lat, lon, rank
        if c.quality is None or rank >= 3:
            c.quality = q

    def _gga(self, _talker: str, d: list[str]) -> None:
        c = self._cycle
        q = f.integer(d[5])
        sats = f.integer(d[6]) if len(d) > 6 else None
        if (q is None and d[5]) or (q is not None and not 0 <= q <= 8):
            c.no_fix_seen = True  # a quality that is not one: no position from this GGA
            return
        if q is None or q == 0:
            # Some receivers (MTK, MyGuide, TR737) send quality 0 or nothing with a real
            # position from 3+ satellites; gpsd reports it, so do we, as INVALID: never
            # usable as evidence, but visible to a technician.
            if sats is None or sats < 3:
                c.no_fix_seen = True
                return
            q = Quality.INVALID
            c.mode = max(c.mode, FixMode.FIX_2D if sats == 3 else FixMode.FIX_3D)
        self._position(f.coordinate(d[1], d[2], 2), f.coordinate(d[3], d[4], 3), 3, Quality(q))
        c.sats = sats
        c.hdop = f.dop(d[7]) if len(d) > 7 else c.hdop
        c.alt = f.num(d[8]) if len(d) > 8 else None

    def _rmc(self, _talker: str, d: list[str]) -> None:
        c = self._cycle
        c.date = f.date_ddmmyy(d[8]) if len(d) > 8 else None
        q = MODE_INDICATOR.get(d[11][:1], Quality.GPS) if len(d) > 11 and d[11] else Quality.GPS
        if d[1] != "A" or (len(d) > 11 and d[11][:1] == "N"):
            c.no_fix_seen = True
            return
        self._position(f.coordinate(d[2], d[3], 2), f.coordinate(d[4], d[5], 3), 2, q)
        knots = f.num(d[6])
        c.speed = None if knots is None else knots * f.KNOT_MPS
        c.course = f.num(d[7])

    def _gns(self, _talker: str, d: list[str]) -> None:
        c = self._cycle
        modes = d[5]
        valid = [m for m in modes if m not in ("N", " ")]
        if not valid:
            c.no_fix_seen = True
            return
        q = max((MODE_INDICATOR.get(m, Quality.GPS) for m in valid), key=_quality_order)
        self._position(f.coordinate(d[1], d[2], 2), f.coordinate(d[3], d[4], 3), 3, q)
        c.sats = f.integer(d[6])
        c.hdop = f.dop(d[7]) if len(d) > 7 else c.hdop
        c.alt = f.num(d[8]) if len(d) > 8 else None

    def _gll(self, _talker: str, d: list[str]) -> None:
        status = d[5] if len(d) > 5 else ""
        mode = d[6][:1] if len(d) > 6 else ""
        if status != "A" or mode == "N":
            self._cycle.no_fix_seen = True
            return
        q = MODE_INDICATOR.get(mode, Quality.GPS)
        self._position(f.coordinate(d[0], d[1], 2), f.coordinate(d[2], d[3], 3), 1, q)

    def _gsa(self, talker: str, d: list[str]) -> None:
        c = self._cycle
        m = f.integer(d[1])
        if m in (1, 2, 3):
            c.mode = max(c.mode, FixMode(m))
        system = f.integer(d[17]) if len(d) > 17 else None
        for text in d[2:14]:
            prn = f.integer(text)
            if prn is None or prn <= 0:
                continue
            if system in f.SYSTEM_IDS:
                which = f.SYSTEM_IDS[system]
            elif talker in f.TALKERS:
                which = f.TALKERS[talker]
            else:
                which = f.constellation_of_prn(prn)
            c.used.setdefault(which, set()).add(prn)
        if len(d) > 16:
            c.pdop = f.dop(d[14]) or c.pdop
            c.hdop = f.dop(d[15]) or c.hdop

    def _gst(self, _talker: str, d: list[str]) -> None:
        lat_err, lon_err = f.error_m(d[5]), f.error_m(d[6])
        if lat_err is not None and lon_err is not None:
            self._cycle.gst = math.hypot(lat_err, lon_err)

    def _vtg(self, _talker: str, d: list[str]) -> None:
        c = self._cycle
        if c.course is None:
            c.course = f.num(d[0])
        if c.speed is None:
            kmh = f.num(d[6]) if len(d) > 6 else None
            knots = f.num(d[4]) if len(d) > 4 else None
            if kmh is not None:
                c.speed = kmh / 3.6
            elif knots is not None:
                c.speed = knots * f.KNOT_MPS

    def _zda(self, _talker: str, d: list[str]) -> None:
        date = f.date_zda(d[1], d[2], d[3])
        if date is not None:
            self._cycle.date = date

    def _gsv(self, talker: str, d: list[str]) -> None:
        total, number, in_view = f.integer(d[0]), f.integer(d[1]), f.integer(d[2])
        if total is None or number is None or in_view is None:
            return
        which = f.TALKERS.get(talker)
        if which is None:
            prn = f.integer(d[3]) if len(d) > 3 else None
            which = f.constellation_of_prn(prn) if prn else Constellation.UNKNOWN
        if number == total:
            self.sky.in_view[which] = in_view


def _quality_order(q: Quality) -> int:
    return {Quality.ESTIMATED: -3, Quality.MANUAL: -2, Quality.SIMULATION: -1}.get(q, int(q))


_MUST_HAVE_TIME = frozenset({"GGA", "RMC", "GNS"})
_TIME_FIELD = {"GGA": 0, "RMC": 0, "GNS": 0, "GLL": 4, "GST": 0, "ZDA": 0, "GBS": 0, "GRS": 0}
_HANDLERS = {
    "GGA": NmeaParser._gga,
    "RMC": NmeaParser._rmc,
    "GNS": NmeaParser._gns,
    "GLL": NmeaParser._gll,
    "GSA": NmeaParser._gsa,
    "GST": NmeaParser._gst,
    "VTG": NmeaParser._vtg,
    "ZDA": NmeaParser._zda,
    "GSV": NmeaParser._gsv,
}
