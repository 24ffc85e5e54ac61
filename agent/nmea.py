"""NMEA 0183 bytes in, `Fix` values out: a pure, incremental parser.

Fed whatever the transport delivers (split lines, merged lines, garbage between them),
it keeps a small line buffer, checks every checksum, and assembles the GGA and RMC of one
receiver cycle (same time of day) into one `Fix`. It never reads a clock: the date comes
from RMC, the time of day from the sentences themselves. Bad input is counted, never raised.

Gates: pynmea2 reports latitude 0.0 for a no-fix GGA, so a cycle yields a position only
when GGA quality > 0 and RMC status is 'A'. Horizontal accuracy is HDOP × UERE_M, a
documented user-equivalent range error (GST-based accuracy arrives with the GNSS issue).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pynmea2

from agent.fix import Fix, TimeSource

UERE_M = 3.0
MAX_LINE = 128  # NMEA 0183 caps a sentence at 82 characters; allow proprietary slack
KNOT_MPS = 0.514444


@dataclass(slots=True)
class NmeaStats:
    sentences: int = 0
    bad_checksum: int = 0
    malformed: int = 0
    fixes: int = 0
    no_fix_cycles: int = 0


@dataclass(slots=True)
class _Cycle:
    stamp: dt.time
    gga: pynmea2.GGA | None = None
    rmc: pynmea2.RMC | None = None


@dataclass(slots=True)
class NmeaParser:
    stats: NmeaStats = field(default_factory=NmeaStats)
    _buf: bytearray = field(default_factory=bytearray)
    _cycle: _Cycle | None = None

    def feed(self, data: bytes) -> list[Fix]:
        self._buf += data
        out: list[Fix] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    # garbage with no line end: drop it, but keep a sentence that has begun
                    start = self._buf.rfind(b"$")
                    self.stats.malformed += 1
                    del self._buf[
                        : start if start >= 0 and len(self._buf) - start <= MAX_LINE else None
                    ]
                return out
            line = bytes(self._buf[:nl]).strip()
            del self._buf[: nl + 1]
            if line:
                fix = self._line(line)
                if fix is not None:
                    out.append(fix)

    def _line(self, line: bytes) -> Fix | None:
        start = line.rfind(b"$")  # garbage before the sentence start is dropped
        if start < 0 or len(line) - start > MAX_LINE:
            self.stats.malformed += 1
            return None
        try:
            text = line[start:].decode("ascii")
            msg = pynmea2.parse(text, check=True)
        except pynmea2.ChecksumError:
            self.stats.bad_checksum += 1
            return None
        except (pynmea2.ParseError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
            self.stats.malformed += 1
            return None
        self.stats.sentences += 1
        if isinstance(msg, pynmea2.GGA | pynmea2.RMC):
            return self._cycle_sentence(msg)
        return None

    def _cycle_sentence(self, msg: pynmea2.GGA | pynmea2.RMC) -> Fix | None:
        stamp = msg.timestamp
        if not isinstance(stamp, dt.time):
            self.stats.malformed += 1
            return None
        if self._cycle is None or self._cycle.stamp != stamp:
            self._cycle = _Cycle(stamp)
        if isinstance(msg, pynmea2.GGA):
            self._cycle.gga = msg
        else:
            self._cycle.rmc = msg
        gga, rmc = self._cycle.gga, self._cycle.rmc
        if gga is None or rmc is None:
            return None
        self._cycle = None
        return self._assemble(gga, rmc)

    def _assemble(self, gga: pynmea2.GGA, rmc: pynmea2.RMC) -> Fix | None:
        try:
            quality = int(gga.gps_qual or 0)
            valid = rmc.status == "A"
            date = rmc.datestamp
            hdop = float(gga.horizontal_dil or 99.0)
            sats = int(gga.num_sats or 0)
            speed = float(rmc.spd_over_grnd or 0.0) * KNOT_MPS
            lat, lon = float(gga.latitude), float(gga.longitude)
        except (ValueError, TypeError, AttributeError):
            self.stats.malformed += 1
            return None
        if quality <= 0 or not valid or not isinstance(date, dt.date):
            self.stats.no_fix_cycles += 1
            return None
        when = dt.datetime.combine(date, gga.timestamp, tzinfo=dt.UTC)
        self.stats.fixes += 1
        return Fix(
            time_ms=round(when.timestamp() * 1000),
            lat=lat,
            lon=lon,
            accuracy_m=hdop * UERE_M,
            hdop=hdop,
            satellites=sats,
            speed_mps=speed,
            time_source=TimeSource.GNSS,
        )
