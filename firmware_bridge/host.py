"""The Pi's side of the serial bridge to the radio MCU: one asyncio driver, `Bridge`.

The frames are frame.py's and the messages messages.py's; this module decides what the
protocol leaves to the host, and docs/bridge.md states the same rules for people. It is the
thin part that owns the port and the tasks; what can be decided without them is beside it:
retry.py (when to send again, when to give up; exchange.py runs it on the loop),
payloads.py (what a payload says) and update.py (the firmware update procedure). The values
and errors are values.py's and errors.py's, and importable from here, the driver's API.

* **One request at a time.** Requests carry ids 1-255 (wrapping; 0 is the MCU's events)
  and wait for the response with the same id and type. One outstanding request keeps
  the MCU's receive buffer small and makes "which request did this answer belong to"
  trivial after a retry, a reset or a reconnect. A response nobody waits for any more
  (late, duplicated) is counted and dropped.
* **Retries** (retry.py has the table). An attempt waits `timeout_s`; idempotent requests
  are sent again with the *same id* after a timeout, or at once after a garbled answer;
  RADIO_SEND and FW_COMMIT only when nothing at all came back (a garbled answer is
  `SendUncertain`); after 1 + `retries` attempts, `BridgeTimeout`, and a HELLO before the
  MCU is trusted again. A RADIO_SEND never takes the previous RADIO_SEND's id.
* **Heartbeat.** When no frame has come for `heartbeat_s`, a PING goes out; a heartbeat
  that fails takes the link down (`on_link`, counted), and the heartbeat goes on
  until the MCU answers again, when a HELLO checks whether it restarted meanwhile.
* **Reconnects.** A port that fails (EIO, end of stream: unplugged, or a pty whose master
  closed) or cannot be opened (ENOENT while unplugged) is closed, the request in flight
  fails with `LinkDown`, and the same path is opened again after a backoff with jitter
  (contract/serialport.py), so a by-id symlink that now points elsewhere is followed.
  Input that waited in the driver is flushed on opening.
* **Resynchronisation.** A BOOT event, or a HELLO showing another boot_count than the one
  known, means the MCU restarted: the request in flight fails with `McuReset` (the MCU
  forgot it), requests wait while a HELLO and the radio configuration (the last one
  given to `configure_radio`) go out again, then carry on.
* **Versions.** HELLO's protocol byte is the bridge protocol's major version; an MCU that
  speaks another one is refused with `VersionMismatch`, naming both and the firmware
  version, and no other request is sent to it.
* **Firmware updates** (`update_firmware`, update.py): FW_BEGIN, FW_CHUNKs, FW_COMMIT, then
  the BOOT that follows; the new version must come up and not roll back within `confirm_s`.

Everything runs on the caller's event loop; `on_event` and `on_link` are called from it
and must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import struct
import time
from collections.abc import Callable, Iterator

from contract.serialport import Backoff, SerialPort, describe
from firmware_bridge import exchange, frame, payloads, update
from firmware_bridge import messages as m
from firmware_bridge.errors import (
    BridgeError,
    BridgeTimeout,
    DutyCycleExceeded,
    LinkDown,
    McuReset,
    SendUncertain,
    StatusError,
    UpdateFailed,
    VersionMismatch,
)
from firmware_bridge.exchange import Pending
from firmware_bridge.retry import Action, Attempts, Ids, retry_class
from firmware_bridge.values import (
    DEFAULT_BAUD,
    NAMES,
    BatteryReading,
    BootEvent,
    BridgeOptions,
    BridgeStats,
    Event,
    LinkStatus,
    LogEvent,
    McuInfo,
    McuStatus,
    RadioConfig,
    RadioRx,
    SosEvent,
    UpdateResult,
    Version,
    parse_port,
    version_text,
)

__all__ = [
    "DEFAULT_BAUD",
    "BatteryReading",
    "BootEvent",
    "Bridge",
    "BridgeError",
    "BridgeOptions",
    "BridgeStats",
    "BridgeTimeout",
    "DutyCycleExceeded",
    "Event",
    "LinkDown",
    "LinkStatus",
    "LogEvent",
    "McuInfo",
    "McuReset",
    "McuStatus",
    "RadioConfig",
    "RadioRx",
    "SendUncertain",
    "SosEvent",
    "StatusError",
    "UpdateFailed",
    "UpdateResult",
    "Version",
    "VersionMismatch",
    "parse_port",
    "version_text",
]

log = logging.getLogger(__name__)


class Bridge:
    """The MCU behind one serial port; `async with Bridge(...)` or `start()`/`close()`."""

    def __init__(
        self,
        port: str,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_link: Callable[[LinkStatus], None] | None = None,
        options: BridgeOptions | None = None,
    ) -> None:
        self.options = options or BridgeOptions()
        self.path, baud = parse_port(port)
        self.baud = baud or self.options.baud
        self.on_event = on_event
        self.on_link = on_link
        self.stats = BridgeStats()
        self.info: McuInfo | None = None
        self.radio: RadioConfig | None = None
        self.link = LinkStatus(False, "not started")
        self._decoder = frame.Decoder()
        self._port: SerialPort | None = None
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._refused: VersionMismatch | None = None
        self._wake = asyncio.Event()  # the keeper has something to do (resync, check)
        self._resync = False
        self._check = False  # after a timeout: HELLO before trusting the MCU's state again
        self._pending: Pending | None = None
        self._ids = Ids()
        self._last_rx = 0.0
        self._opened = 0
        self._task: asyncio.Task[None] | None = None
        self._boot_waiters: list[asyncio.Future[McuInfo]] = []
        self._rng_backoff = Backoff(max_s=self.options.backoff_max_s)

    # -- life cycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Bridge:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="bridge")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop_port(LinkDown(f"{self.path}: bridge closed"))

    async def wait_ready(self, timeout_s: float | None = None) -> McuInfo:
        """Until the MCU answered HELLO (and got its radio settings): its info."""
        wait = self.options.ready_wait_s if timeout_s is None else timeout_s
        if not self._ready.is_set():
            try:
                async with asyncio.timeout(wait):
                    while not self._ready.is_set():
                        refused = self._refused
                        if refused is not None:
                            raise VersionMismatch(
                                str(refused), refused.mcu_protocol, refused.mcu_firmware
                            )
                        await self._state_changed()
            except TimeoutError:
                raise LinkDown(
                    f"{self.path}: MCU not ready after {wait:g} s ({self.link.detail})"
                ) from None
        assert self.info is not None
        return self.info

    async def _state_changed(self) -> None:
        """Wake on ready, or every 50 ms to look at `_refused` again."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await self._ready.wait()

    async def run(self) -> None:
        """Open, talk, reopen: forever, until cancelled."""
        failures = 0
        try:
            while True:
                try:
                    port = SerialPort.open(self.path, self.baud, flush=True)
                except OSError as exc:
                    failures += 1
                    self._set_link(False, describe(self.path, exc))
                    await self._rng_backoff.wait(failures)
                    continue
                self._opened += 1
                if self._opened > 1:
                    self.stats.reconnects += 1
                self._port = port
                why, refused = await self._session(port)
                self._drop_port(LinkDown(why))
                self._set_link(False, why)
                failures = failures + 1 if refused else 0
                await self._rng_backoff.wait(max(failures, 1))
        finally:
            self._drop_port(LinkDown(f"{self.path}: bridge stopped"))

    async def _session(self, port: SerialPort) -> tuple[str, bool]:
        """Talk over one open port until it fails: (why it ended, whether we refused)."""
        self._decoder.reset()
        self._last_rx = _now()
        reader = asyncio.create_task(self._read_loop(port), name="bridge-read")
        keeper = asyncio.create_task(self._keep(), name="bridge-keep")
        try:
            await asyncio.wait((reader, keeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, keeper):
                task.cancel()
            await asyncio.wait((reader, keeper))  # never raises: results are read below
        if reader.done() and not reader.cancelled():
            return reader.result(), False
        if keeper.done() and not keeper.cancelled():
            exc = keeper.exception()
            if isinstance(exc, BridgeError):  # refused, or the port failed under a write
                return str(exc), isinstance(exc, VersionMismatch)
            if exc is not None:
                raise exc
        return f"{self.path}: session ended", False

    def _drop_port(self, error: BridgeError) -> None:
        self._ready.clear()
        port, self._port = self._port, None
        if port is not None:
            port.close()
        self._fail_pending(error)

    # -- the keeper: handshake, resynchronisation, heartbeat --------------------------------

    async def _keep(self) -> None:
        await self._handshake()
        while True:
            idle = _now() - self._last_rx
            wait = self.options.heartbeat_s - idle if self.link.up else self.options.heartbeat_s
            if wait > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._wake.clear()
            if self._resync or self._check or not self.link.up:
                await self._handshake()
            elif _now() - self._last_rx >= self.options.heartbeat_s:
                await self._heartbeat()

    async def _heartbeat(self) -> None:
        try:
            await self._request(m.PING, b"hb", internal=True)
        except McuReset:
            return  # the resync is already on its way
        except BridgeTimeout as exc:
            self._set_link(False, f"{self.path}: MCU not answering ({exc})")

    async def _handshake(self) -> None:
        """HELLO until answered, refuse another protocol, resend the radio settings."""
        while True:
            self._resync = False
            self._check = False
            self._ready.clear()
            try:
                info = await self._hello(internal=True)
                self._resync = False  # a restart this HELLO revealed is handled right here
                if self.radio is not None:
                    await self._request(m.RADIO_CONFIG, self.radio.payload(), internal=True)
            except VersionMismatch as exc:
                self._refused = exc
                self._set_link(False, str(exc))
                raise
            except McuReset:
                continue  # restarted under our feet: again
            except (BridgeTimeout, StatusError) as exc:
                self._set_link(False, f"{self.path}: MCU not answering HELLO ({exc})")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.heartbeat_s):
                        await self._wake.wait()
                self._wake.clear()
                continue
            if self._resync:
                continue  # a BOOT came while we configured
            self._refused = None
            self._ready.set()
            self._set_link(
                True,
                f"{self.path}: MCU firmware {version_text(info.version)}, boot {info.boot_count}",
            )
            return

    def _set_link(self, up: bool, detail: str) -> None:
        if up == self.link.up and detail == self.link.detail:
            return
        if up != self.link.up:
            if up:
                self.stats.link_ups += 1
                log.info("bridge up: %s", detail)
            else:
                self.stats.link_downs += 1
                log.warning("bridge down: %s", detail)
        self.link = LinkStatus(up, detail)
        if self.on_link is not None:
            self.on_link(self.link)

    def _note_boot(self, info: McuInfo, how: str) -> None:
        """An MCU restart, seen in a BOOT event or a HELLO: resynchronise once per boot."""
        known = self.info
        self.info = info
        if known is None or known.boot_count == info.boot_count:
            return  # the first we hear of it, or the boot we know (a BOOT that came late)
        for waiter in self._boot_waiters:
            if not waiter.done():
                waiter.set_result(info)
        self.stats.resyncs += 1
        log.warning(
            "MCU restarted (%s: boot %d, %s, firmware %s); resynchronising",
            how, info.boot_count, info.reset_cause_name, version_text(info.version),
        )  # fmt: skip
        self._ready.clear()
        self._resync = True
        self._wake.set()
        self._fail_pending(
            McuReset(
                f"the MCU restarted (boot {info.boot_count}, {info.reset_cause_name}) while "
                "a request was in flight"
            )
        )

    # -- reading --------------------------------------------------------------------------

    async def _read_loop(self, port: SerialPort) -> str:
        """Deliver frames until the port fails; returns why it did."""
        while True:
            try:
                data = await port.read()
            except OSError as exc:
                if exc.errno == errno.EBADF and port.closed:
                    return f"{self.path}: closed"
                return describe(self.path, exc)
            if not data:
                return f"{self.path}: hung up"
            self._on_bytes(data)

    def _on_bytes(self, data: bytes) -> None:
        d = self._decoder
        bad_before = d.bad_frames + d.oversize
        frames = d.feed(data)
        self.stats.bad_frames = d.bad_frames
        self.stats.oversize = d.oversize
        self.stats.dropped_bytes = d.dropped_bytes
        pending = self._pending
        if pending is not None and d.bad_frames + d.oversize > bad_before:
            pending.garbled.set()
        for ftype, fid, payload in frames:
            self.stats.frames_received += 1
            self._last_rx = _now()
            if ftype & m.RESPONSE:
                self._on_response(ftype & ~m.RESPONSE, fid, payload)
            elif fid == 0:
                self._on_event(ftype, payload)
            else:
                self.stats.malformed += 1

    def _on_response(self, rtype: int, fid: int, payload: bytes) -> None:
        pending = self._pending
        if pending is None or pending.id != fid or pending.type != rtype:
            self.stats.stale_responses += 1
            return
        if not payload:
            self.stats.malformed += 1
            return
        if not pending.future.done():
            pending.future.set_result((payload[0], payload[1:]))

    def _on_event(self, etype: int, payload: bytes) -> None:
        try:
            event = payloads.parse_event(etype, payload)
        except (ValueError, struct.error, UnicodeDecodeError):
            self.stats.malformed += 1
            return
        self.stats.events += 1
        if isinstance(event, BootEvent):
            self._note_boot(event.info, "BOOT")
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("bridge event handler failed on %s", type(event).__name__)

    def _fail_pending(self, error: BridgeError) -> None:
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(error)

    # -- requests -------------------------------------------------------------------------

    async def _request(self, rtype: int, payload: bytes = b"", *, internal: bool = False) -> bytes:
        """Send one request and return its answer after the status byte (OK only)."""
        if not internal:
            await self.wait_ready()
        async with self._lock:
            status, body = await self._exchange(rtype, payload)
        if status != m.OK:
            if rtype == m.RADIO_SEND and status == m.DUTY_CYCLE:
                raise DutyCycleExceeded(rtype, status)
            raise StatusError(rtype, status)
        return body

    async def _exchange(self, rtype: int, payload: bytes) -> tuple[int, bytes]:
        """One request: retry.py decides, exchange.py waits, this sends and raises."""
        opts = self.options
        attempts = Attempts(retry_class(rtype), timeout_s=opts.timeout_s, retries=opts.retries)
        fid = self._ids.take(rtype)
        wire = frame.encode(rtype, fid, payload)
        name = f"{NAMES.get(rtype, hex(rtype))} #{fid}"
        self.stats.requests += 1
        loop = asyncio.get_running_loop()
        pending = Pending(rtype, fid, loop.create_future())
        self._pending = pending
        started = loop.time()
        try:
            decision = await exchange.run(pending, attempts, lambda: self._send(wire), self.stats)
            if decision.action is Action.DONE or decision.action is Action.RESYNC:
                return pending.future.result()  # the answer, or McuReset / LinkDown
            if decision.action is Action.UNCERTAIN:
                raise SendUncertain(
                    f"{name}: the MCU's answer arrived garbled; it may have acted "
                    "(a packet may be on the air)"
                )
            self._check = True  # GIVE_UP: did it restart with its BOOT lost? the keeper asks
            self._wake.set()
            raise BridgeTimeout(
                f"{name}: no answer from the MCU on {self.path} after {opts.retries + 1} "
                f"attempts ({loop.time() - started:.2f} s)"
            )
        finally:
            self._pending = None

    async def _send(self, wire: bytes) -> None:
        port = self._port
        if port is None:
            raise LinkDown(f"{self.path}: {self.link.detail}")
        try:
            await port.write(wire)
        except OSError as exc:
            raise LinkDown(describe(self.path, exc)) from exc
        self.stats.frames_sent += 1

    # -- the API --------------------------------------------------------------------------

    async def hello(self) -> McuInfo:
        """Ask the MCU who it is; resynchronises if it restarted unnoticed."""
        return await self._hello(internal=False)

    async def _hello(self, *, internal: bool) -> McuInfo:
        body = await self._request(m.HELLO, bytes((m.PROTOCOL,)), internal=internal)
        info = payloads.hello_info(body)
        if info.protocol != m.PROTOCOL:
            raise VersionMismatch(
                f"{self.path}: the MCU speaks bridge protocol {info.protocol} (firmware "
                f"{version_text(info.version)}), this host speaks {m.PROTOCOL}: refused; "
                "update the MCU firmware or the agent so that both match",
                info.protocol,
                info.version,
            )
        self._note_boot(info, "HELLO")
        return info

    async def ping(self, payload: bytes = b"") -> float:
        """Round-trip time in seconds of one PING that echoes `payload` (≤ 32 bytes)."""
        if len(payload) > m.MAX_ECHO:
            raise ValueError(f"a PING echoes at most {m.MAX_ECHO} bytes")
        t0 = time.perf_counter()
        echo = await self._request(m.PING, payload)
        rtt = time.perf_counter() - t0
        if echo != payload:
            raise BridgeError(f"PING echo differs: sent {payload.hex()}, got {echo.hex()}")
        return rtt

    async def echo(self, payload: bytes) -> bytes:
        """PING returning what came back (the soak test compares it itself)."""
        return await self._request(m.PING, payload)

    async def configure_radio(self, config: RadioConfig | None = None) -> None:
        """Apply LoRa settings now and again after every MCU restart."""
        config = config or RadioConfig()
        await self._request(m.RADIO_CONFIG, config.payload())
        self.radio = config

    async def send_packet(self, packet: bytes) -> int:
        """Transmit one LoRa packet; its time on air in ms. DutyCycleExceeded, StatusError."""
        if not 1 <= len(packet) <= m.MAX_PACKET:
            raise ValueError(f"a LoRa packet is 1 to {m.MAX_PACKET} bytes, not {len(packet)}")
        return payloads.time_on_air(await self._request(m.RADIO_SEND, bytes(packet)))

    async def feedback(self, pattern: int) -> None:
        await self._request(m.FEEDBACK, bytes((pattern,)))

    async def battery(self) -> BatteryReading:
        return payloads.battery_reading(await self._request(m.BATTERY))

    async def status(self) -> McuStatus:
        return payloads.mcu_status(await self._request(m.STATUS))

    async def update_firmware(
        self,
        image: bytes,
        version: Version,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> UpdateResult:
        """Send `image` as firmware `version`, switch, and see the new image come up."""
        link = update.Link(self._request, self.wait_ready, self._next_boot, self.options)
        return await update.install(link, image, version, progress=progress)

    @contextlib.contextmanager
    def _next_boot(self) -> Iterator[asyncio.Future[McuInfo]]:
        """A future that the MCU's next restart resolves (`_note_boot`), within the block."""
        boot: asyncio.Future[McuInfo] = asyncio.get_running_loop().create_future()
        self._boot_waiters.append(boot)
        try:
            yield boot
        finally:
            self._boot_waiters.remove(boot)


def _now() -> float:
    return time.monotonic()
