"""MAVLink telemetry from a real link: the asyncio driver around the pure `MavlinkDecoder`.

The rules (which drone, whose time, when a heartbeat is lost) are the decoder's
(agent/dock/mavlink.py), tested with bytes; this module only moves bytes and time to it, as
agent/gnss/sources.py does for NMEA, so it stays small and replaceable:

- **UDP** (`udp://HOST:PORT`): a DatagramProtocol queues each datagram with its arrival time
  on the dock's clock, because the arrival, not the reading, maps the drone's time; each
  datagram is fed whole. A full queue drops datagrams (counted in `stats.dropped`).
- **Serial** (`serial:///dev/X?baud=N`): a `SerialLink` read as a stream; a partial frame is
  dropped when the port goes away, and the port is reopened after a backoff with jitter.
- **Silence** is a tick: every tenth of the heartbeat timeout (0.02-0.25 s) the decoder is
  told the time, so a drone that stops talking is reported lost without a byte arriving.
- **Status** (`SourceStatus`, as `GnssSource` reports it) goes to `on_status` on every
  change; a noisy link's refused input is logged once at WARNING, then at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from agent.dock.mavlink import DroneTelemetry, MavlinkDecoder, MavlinkStats
from agent.dock.mavurl import parse_mavlink_url
from agent.gnss.sources import SourceState, SourceStatus
from agent.gnss.transports import SerialLink
from contract.fix import TimeSource
from contract.serialport import describe

log = logging.getLogger(__name__)

__all__ = ["MavlinkSource"]

MAX_QUEUED_DATAGRAMS = 4096
BACKOFF_BASE_S = 0.25


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Datagrams(asyncio.DatagramProtocol):
    """Queues each datagram with its arrival time on the dock's clock (the consumer may be
    busy elsewhere; the arrival, not the reading, is what maps the drone's time)."""

    def __init__(
        self,
        queue: asyncio.Queue[tuple[bytes, Any, int]],
        stats: MavlinkStats,
        clock: Callable[[], int],
    ) -> None:
        self._queue = queue
        self._stats = stats
        self._clock = clock

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._queue.put_nowait((data, addr, self._clock()))
        except asyncio.QueueFull:
            self._stats.dropped += 1

    def error_received(self, exc: Exception) -> None:  # ICMP errors of a listening socket
        log.debug("MAVLink UDP: %s", exc)


class MavlinkSource:
    """Telemetry of one drone from one link, for one consumer at a time (`telemetry()`).

    `clock` gives the dock's time in UTC ms (default: the wall clock) and `time_source` says
    where that time comes from; both go into every fix. `on_status` is called on every change
    of `status` (CONNECTING, RECEIVING, STALE when nothing at all came for
    `heartbeat_timeout_s`, DISCONNECTED while a port is gone or cannot be bound).
    """

    def __init__(
        self,
        url: str,
        *,
        system_id: int | None = None,
        heartbeat_timeout_s: float = 3.0,
        on_status: Callable[[SourceStatus], None] | None = None,
        clock: Callable[[], int] = _wall_ms,
        time_source: TimeSource = TimeSource.NTP,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = parse_mavlink_url(url)
        self.decoder = MavlinkDecoder(
            system_id=system_id, heartbeat_timeout_s=heartbeat_timeout_s, time_source=time_source
        )
        self._timeout_s = heartbeat_timeout_s
        self._tick_s = max(0.02, min(0.25, heartbeat_timeout_s / 10))
        self._on_status = on_status
        self._clock = clock
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._status = SourceStatus(SourceState.CONNECTING, "not started", 0)
        self._opened = 0
        self._address: tuple[str, int] | None = None
        self._peer: Any = None

    @property
    def stats(self) -> MavlinkStats:
        return self.decoder.stats

    @property
    def status(self) -> SourceStatus:
        return self._status

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) the UDP socket is bound to, once it is (port 0 picks a free one)."""
        return self._address

    @property
    def peer(self) -> Any:
        """The UDP address the drone's messages last came from (where replies would go)."""
        return self._peer

    async def telemetry(self) -> AsyncGenerator[DroneTelemetry, None]:
        """Telemetry as it changes, forever; reopens the link when it fails."""
        inner = self._udp() if self.spec.scheme == "udp" else self._serial()
        async with contextlib.aclosing(inner) as items:
            async for item in items:
                yield item

    async def _udp(self) -> AsyncGenerator[DroneTelemetry, None]:
        loop = asyncio.get_running_loop()
        failures = 0
        where = str(self.spec)
        while True:
            self._set(SourceState.CONNECTING, f"binding {where}")
            queue: asyncio.Queue[tuple[bytes, Any, int]] = asyncio.Queue(MAX_QUEUED_DATAGRAMS)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Datagrams, queue, self.stats, self._clock),
                    local_addr=(self.spec.host, self.spec.port),
                )
            except OSError as exc:
                failures += 1
                self._set(SourceState.DISCONNECTED, describe(where, exc))
                await self._backoff(failures)
                continue
            self._opened += 1
            try:
                sockname = transport.get_extra_info("sockname")
                self._address = (str(sockname[0]), int(sockname[1]))
                here = f"{self._address[0]}:{self._address[1]}"
                self._set(SourceState.STALE, f"{here}: listening, nothing heard yet")
                quiet_since = loop.time()
                while True:
                    try:
                        async with asyncio.timeout(self._tick_s):
                            data, addr, arrived_ms = await queue.get()
                    except TimeoutError:
                        if loop.time() - quiet_since >= self._timeout_s:
                            self._set(
                                SourceState.STALE, f"{here}: nothing for {self._timeout_s:g} s"
                            )
                        for item in self.decoder.tick(self._clock()):
                            yield item
                        continue
                    quiet_since = loop.time()
                    self._set(SourceState.RECEIVING, here)
                    accepted = self.stats.accepted
                    out = self._feed(data, arrived_ms, stream=False)
                    if self.stats.accepted > accepted:
                        self._peer = addr
                    for item in out:
                        yield item
            finally:
                transport.close()
                self._address = None

    async def _serial(self) -> AsyncGenerator[DroneTelemetry, None]:
        failures = 0
        path = self.spec.path
        while True:
            self._set(SourceState.CONNECTING, f"opening {path}")
            try:
                link = SerialLink.open(path, self.spec.baud)
            except OSError as exc:
                failures += 1
                self._set(SourceState.DISCONNECTED, describe(path, exc))
                await self._backoff(failures)
                continue
            self._opened += 1
            self._set(SourceState.STALE, f"{path}: open, nothing heard yet")
            why = f"{path}: hung up"
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            try:
                while True:
                    try:
                        async with asyncio.timeout(self._tick_s):
                            data = await link.read()
                    except TimeoutError:
                        if loop.time() - quiet_since >= self._timeout_s:
                            self._set(
                                SourceState.STALE, f"{path}: nothing for {self._timeout_s:g} s"
                            )
                        for item in self.decoder.tick(self._clock()):
                            yield item
                        continue
                    if not data:
                        break
                    failures = 0
                    quiet_since = loop.time()
                    self._set(SourceState.RECEIVING, path)
                    for item in self._feed(data, self._clock(), stream=True):
                        yield item
            except OSError as exc:
                why = describe(path, exc)
            finally:
                link.close()
                self.decoder.reset_stream()
            failures += 1
            self._set(SourceState.DISCONNECTED, why)
            await self._backoff(failures)

    def _feed(self, data: bytes, now_ms: int, *, stream: bool) -> list[DroneTelemetry]:
        """The decoder's telemetry; the first refused input is logged at WARNING, the rest
        at DEBUG (a noisy radio link must not flood the log)."""
        bad = self.stats.bad
        out = self.decoder.feed(data, now_ms, stream=stream)
        if self.stats.bad > bad:
            log.log(
                logging.WARNING if bad == 0 else logging.DEBUG,
                "MAVLink source %s: refused unreadable input (%d so far)%s",
                self.spec,
                self.stats.bad,
                "; further refusals are logged at DEBUG" if bad == 0 else "",
            )
        return out

    async def _backoff(self, failures: int) -> None:
        ceiling = min(self._backoff_max_s, BACKOFF_BASE_S * 2 ** min(failures, 16))
        await asyncio.sleep(ceiling * self._rng.uniform(0.5, 1.0))

    def _set(self, state: SourceState, detail: str) -> None:
        status = SourceStatus(state, detail, max(0, self._opened - 1))
        if status == self._status:
            return
        if state is not self._status.state:
            level = logging.WARNING if state is SourceState.DISCONNECTED else logging.INFO
            log.log(level, "MAVLink source %s: %s", state.value, detail)
        self._status = status
        if self._on_status is not None:
            self._on_status(status)
