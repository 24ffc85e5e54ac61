"""GNSS position sources behind one interface, chosen by URL.

    serial:///dev/ttyUSB0?baud=9600   NMEA from a receiver on a serial port (baud default 9600)
    tcp://host:port                   NMEA over TCP (a network receiver, ser2net, a simulator)
    gpsd://host[:port]                gpsd's JSON reports (port default 2947)
    file://path, file:///abs/path     an NMEA log, replayed once; ?pace=realtime keeps its timing
    path                              the same as file://path

A `GnssSource` holds one decoder (the pure `NmeaParser`, or `GpsdDecoder` for gpsd) and one
transport at a time (transports.py); it is the supervisor between them. Its `fixes()`
yields positions forever: when a receiver is unplugged, a connection drops or gpsd
restarts, it reports DISCONNECTED with the reason and reopens the link with exponential
backoff and jitter, so a field device heals without a restart. The decoder is kept across
reconnects (its counters, satellites in view and receiver cycle state carry over), but it is
fed whole lines only: the line a drop cut in half is discarded with its link, never glued to
the next link's first bytes, where a truncated sentence without a checksum could pass.
State changes go to `on_status` as they happen, so a handset can show "GNSS: no data"
without polling; bad input is counted by the decoder and logged once at WARNING, then at
DEBUG. A file replay is the same loop without reconnects: it ends at end of file.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from agent.gnss.gpsd import GpsdDecoder, GpsdStats
from agent.gnss.nmea import NmeaParser, NmeaStats, Sky
from agent.gnss.transports import (
    FileLink,
    Link,
    SerialLink,
    StreamLink,
)
from agent.gnss.urls import (
    Pace,
    Scheme,
    SourceError,
    SourceSpec,
    parse_source_url,
)
from contract.fix import Fix
from contract.serialport import describe

log = logging.getLogger(__name__)

GPSD_WATCH = b'?WATCH={"enable":true,"json":true};\n'
BACKOFF_BASE_S = 0.25
MAX_PACE_GAP_S = 10.0  # realtime replay never waits longer than this for a time jump
FAST_YIELD_EVERY = 64  # fast replay lets the loop run once per this many fixes
MAX_TAIL = 65_536  # longest partial line held per link (gpsd reports reach 10 KiB)

__all__ = [
    "GnssSource",
    "Pace",
    "Scheme",
    "SourceError",
    "SourceSpec",
    "SourceState",
    "SourceStatus",
    "parse_source_url",
]


# What end of stream means: a tty reads 0 bytes only once hung up (unplugged, or its pty
# master closed); a socket, once the peer closed it.
_END = {Scheme.SERIAL: "hung up", Scheme.TCP: "closed by peer", Scheme.GPSD: "closed by gpsd"}


class SourceState(enum.Enum):
    CONNECTING = "connecting"
    RECEIVING = "receiving"
    STALE = "stale"  # connected, but no bytes for stale_after_s
    DISCONNECTED = "disconnected"  # waiting to retry; the detail says why
    FINISHED = "finished"  # a replayed file ended (or could not be read)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    state: SourceState
    detail: str
    reconnects: int  # links opened again after the first one


class GnssSource:
    """Fixes from one source, for one consumer at a time (`fixes()`).

    `not_before` goes to the NMEA parser (week-rollover correction; gpsd does its own).
    `on_status` is called on every change of `status`, from the consumer's task.
    """

    def __init__(
        self,
        spec: SourceSpec,
        *,
        not_before: dt.date | None = None,
        on_status: Callable[[SourceStatus], None] | None = None,
        backoff_max_s: float = 30.0,
        stale_after_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self._decoder: NmeaParser | GpsdDecoder = (
            GpsdDecoder() if spec.scheme is Scheme.GPSD else NmeaParser(not_before=not_before)
        )
        self._on_status = on_status
        self._backoff_max_s = backoff_max_s
        self._stale_after_s = stale_after_s
        self._rng = rng or random.Random()
        self._status = SourceStatus(SourceState.CONNECTING, "not started", 0)
        self._opened = 0
        self._rejected = 0
        self._tail = b""  # the current link's line in progress
        self._last_down = ""

    @property
    def status(self) -> SourceStatus:
        return self._status

    @property
    def stats(self) -> NmeaStats | GpsdStats:
        return self._decoder.stats

    @property
    def sky(self) -> Sky:
        return self._decoder.sky

    async def fixes(self) -> AsyncGenerator[Fix, None]:
        """Fixes as they come; forever for a device or a server, until end for a file."""
        if self.spec.scheme is Scheme.FILE:
            async with contextlib.aclosing(self._replay()) as replay:
                async for fix in replay:
                    yield fix
            return
        failures = 0
        while True:
            link, failures = await self._connect(failures)
            why = f"{link.where}: {_END[self.spec.scheme]}"
            try:
                while data := await self._read(link):
                    failures = 0
                    for fix in self._decode(data):
                        yield fix
            except OSError as exc:
                why = describe(link.where, exc)
            finally:
                link.close()
                if self._tail:  # a line cut by the drop: never half of it glued to the next
                    log.debug("GNSS source %s: dropped a cut line %r", self.spec, self._tail)
                    self._tail = b""
            failures += 1
            self._set(SourceState.DISCONNECTED, why)
            await self._backoff(failures)

    async def _connect(self, failures: int) -> tuple[Link, int]:
        while True:
            self._set(SourceState.CONNECTING, f"opening {self.spec.where}")
            try:
                link = await self._open()
            except OSError as exc:
                failures += 1
                self._set(SourceState.DISCONNECTED, describe(self.spec.where, exc))
                await self._backoff(failures)
                continue
            self._opened += 1
            return link, failures

    async def _open(self) -> Link:
        spec = self.spec
        if spec.scheme is Scheme.SERIAL:
            return SerialLink.open(spec.path, spec.baud)
        hello = GPSD_WATCH if spec.scheme is Scheme.GPSD else b""
        return await StreamLink.connect(spec.host, spec.port, hello)

    async def _read(self, link: Link) -> bytes:
        """The next bytes (b"" at end of stream), reporting STALE while none come."""
        while True:
            deadline = asyncio.timeout(self._stale_after_s)
            try:
                async with deadline:
                    data = await link.read()
            except TimeoutError:
                if not deadline.expired():
                    raise  # the link's own timeout (ETIMEDOUT), not silence
                self._set(SourceState.STALE, f"{link.where}: no data for {self._stale_after_s:g} s")
                continue
            if data:
                self._set(SourceState.RECEIVING, link.where)
            return data

    async def _backoff(self, failures: int) -> None:
        ceiling = min(self._backoff_max_s, BACKOFF_BASE_S * 2 ** min(failures, 16))
        await asyncio.sleep(ceiling * self._rng.uniform(0.5, 1.0))

    def _decode(self, data: bytes) -> list[Fix]:
        """Feed the decoder whole lines only, so a link's last partial line can be dropped."""
        data = self._tail + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > MAX_TAIL:  # no line end at all: the decoder bounds and
            cut = len(data)  # counts such garbage, so hand it over
        self._tail = data[cut:]
        if not cut:
            return []
        fixes = self._decoder.feed(data[:cut])
        stats = self._decoder.stats
        if stats.rejected > self._rejected:
            first = self._rejected == 0
            self._rejected = stats.rejected
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "GNSS source %s: refused unreadable input (%s so far)%s",
                self.spec,
                _refusals(stats),
                "; further refusals are logged at DEBUG" if first else "",
            )
        return fixes

    async def _replay(self) -> AsyncGenerator[Fix, None]:
        path = self.spec.path
        self._set(SourceState.CONNECTING, f"opening {path}")
        pacer = Pacer() if self.spec.pace is Pace.REALTIME else None
        count = 0
        try:
            link = await FileLink.open(path)
        except OSError as exc:
            self._set(SourceState.FINISHED, describe(path, exc))
            raise SourceError(f"GNSS source {self.spec}: {describe(path, exc)}") from exc
        self._opened = 1
        try:
            while True:
                try:
                    data = await link.read()
                except OSError as exc:
                    self._set(SourceState.FINISHED, describe(path, exc))
                    raise SourceError(f"GNSS source {self.spec}: {describe(path, exc)}") from exc
                if data:
                    self._set(SourceState.RECEIVING, path)
                for fix in self._decode(data) if data else self._decoder.flush():
                    count += 1
                    if pacer is not None:
                        await asyncio.sleep(pacer.wait_s(fix, asyncio.get_running_loop().time()))
                    elif count % FAST_YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    yield fix
                if not data:
                    break
        finally:
            link.close()
        self._set(SourceState.FINISHED, f"{path}: end of file after {count} fixes")

    def _set(self, state: SourceState, detail: str) -> None:
        status = SourceStatus(state, detail, max(0, self._opened - 1))
        if status == self._status:
            return
        if state is SourceState.DISCONNECTED:
            level = logging.DEBUG if detail == self._last_down else logging.WARNING
            log.log(level, "GNSS source disconnected: %s", detail)
            self._last_down = detail
        elif state is not self._status.state:
            level = logging.DEBUG if state is SourceState.CONNECTING else logging.INFO
            log.log(level, "GNSS source %s: %s", state.value, detail)
        self._status = status
        if self._on_status is not None:
            self._on_status(status)


class Pacer:
    """Realtime replay: a fix is due one GNSS-time gap after the previous one went out.

    Unknown or backward times count as 1 s; a forward jump waits at most MAX_PACE_GAP_S.
    A consumer slower than the log delays the schedule instead of causing a burst after.
    """

    def __init__(self) -> None:
        self._due: float | None = None
        self._time_ms: int | None = None

    def wait_s(self, fix: Fix, now: float) -> float:
        if self._due is None:
            self._due = now
        else:
            if fix.time_ms is None or self._time_ms is None or fix.time_ms < self._time_ms:
                gap = 1.0
            else:
                gap = min(MAX_PACE_GAP_S, (fix.time_ms - self._time_ms) / 1000)
            self._due = max(self._due + gap, now)
        self._time_ms = fix.time_ms
        return self._due - now


def _refusals(stats: NmeaStats | GpsdStats) -> str:
    if isinstance(stats, NmeaStats):
        return f"{stats.bad_checksum} with a bad checksum, {stats.malformed} malformed"
    return f"{stats.malformed} not gpsd JSON, {stats.overlong} overlong lines"
