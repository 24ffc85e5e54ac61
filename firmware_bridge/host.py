"""The Pi's side of the serial bridge to the radio MCU: one asyncio driver, `Bridge`.

The frames are frame.py's and the messages messages.py's; this module decides what the
protocol leaves to the host, and docs/bridge.md states the same rules for people:

* **One request at a time.** Requests carry ids 1-255 (wrapping; 0 is the MCU's events)
  and wait for the response with the same id and type. One outstanding request keeps
  the MCU's receive buffer small and makes "which request did this answer belong to"
  trivial after a retry, a reset or a reconnect. A response nobody waits for any more
  (late, duplicated) is counted and dropped.
* **Retries.** An attempt waits `timeout_s`. Idempotent requests (HELLO, PING, RADIO_CONFIG,
  FEEDBACK, BATTERY, STATUS, FW_BEGIN, and FW_CHUNK, which the firmware acknowledges
  again when it already wrote that chunk) are sent again with the *same id* after a
  timeout, or at once when a garbled frame arrives while the answer is due (most likely
  the answer itself: no point waiting out the timeout). Because the id is the same, a
  late answer to the first attempt satisfies the second one. RADIO_SEND is not
  idempotent (each copy costs airtime and duty cycle): it is retried, with the same id,
  only when nothing at all came back, i.e. the request most likely never reached the
  MCU; if a garbled frame came instead of the answer, the packet may be on the air and
  the caller gets `SendUncertain`. The same id lets a firmware that remembers its last
  RADIO_SEND answer a repeat from memory instead of transmitting twice.
* **Heartbeat.** When no frame has come for `heartbeat_s`, a PING goes out; a heartbeat
  that fails takes the link down (`on_link`, counted), and the heartbeat goes on
  until the MCU answers again, when a HELLO checks whether it restarted meanwhile.
* **Reconnects.** A port that fails (EIO, end of stream: unplugged, or a pty whose master
  closed) or cannot be opened (ENOENT while unplugged) is closed, the request in flight
  fails with `LinkDown`, and the same path is opened again after a backoff with jitter
  (agent/serialport.py), so a by-id symlink that now points elsewhere is followed.
  Input that waited in the driver is flushed on opening.
* **Resynchronisation.** A BOOT event, or a HELLO showing another boot_count than the one
  known, means the MCU restarted: the request in flight fails with `McuReset` (the MCU
  forgot it), requests wait while a HELLO and the radio configuration (the last one
  given to `configure_radio`) go out again, then carry on.
* **Versions.** HELLO's protocol byte is the bridge protocol's major version; an MCU that
  speaks another one is refused with `VersionMismatch`, naming both and the firmware
  version, and no other request is sent to it.
* **Firmware updates** (`update_firmware`): FW_BEGIN, FW_CHUNKs of at most 256 bytes,
  FW_COMMIT, then the BOOT that follows. The new version coming up, answering a HELLO and
  not rolling back within `confirm_s` is success; a BOOT with reset cause ROLLBACK is
  `UpdateFailed("the MCU rolled back to x.y.z …")`. The trust boundary (who checks what
  about an image) is in fwbundle.py.

Everything runs on the caller's event loop; `on_event` and `on_link` are called from it
and must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import hashlib
import logging
import struct
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.serialport import Backoff, SerialPort, describe
from firmware_bridge import frame
from firmware_bridge import messages as m

log = logging.getLogger(__name__)

Version = tuple[int, int, int]

NAMES = {
    m.HELLO: "HELLO",
    m.PING: "PING",
    m.RADIO_CONFIG: "RADIO_CONFIG",
    m.RADIO_SEND: "RADIO_SEND",
    m.FEEDBACK: "FEEDBACK",
    m.BATTERY: "BATTERY",
    m.FW_BEGIN: "FW_BEGIN",
    m.FW_CHUNK: "FW_CHUNK",
    m.FW_COMMIT: "FW_COMMIT",
    m.STATUS: "STATUS",
    m.BOOT: "BOOT",
    m.RADIO_RX: "RADIO_RX",
    m.SOS: "SOS",
    m.LOG: "LOG",
}
RESET_CAUSES = {
    m.RESET_POWER_ON: "power-on",
    m.RESET_WATCHDOG: "watchdog",
    m.RESET_SOFT: "soft reset",
    m.RESET_ROLLBACK: "rollback",
}
DEFAULT_BAUD = 115200


def version_text(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


# --- errors ---------------------------------------------------------------------------------


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class LinkDown(BridgeError):
    """The port is closed, missing or failed, or the MCU did not come up in time."""


class BridgeTimeout(BridgeError):
    """The MCU did not answer a request, retries included."""


class McuReset(BridgeError):
    """The MCU restarted while a request was in flight; it forgot the request."""


class VersionMismatch(BridgeError):
    """The MCU speaks another major version of the bridge protocol."""

    def __init__(self, text: str, mcu_protocol: int, mcu_firmware: Version) -> None:
        super().__init__(text)
        self.mcu_protocol = mcu_protocol
        self.mcu_firmware = mcu_firmware


class StatusError(BridgeError):
    """The MCU answered with a status other than OK."""

    def __init__(self, request: int, status: int) -> None:
        name = m.STATUS_NAMES.get(status, f"status {status}")
        super().__init__(f"{NAMES.get(request, hex(request))} refused by the MCU: {name}")
        self.request = request
        self.status = status
        self.status_name = name


class DutyCycleExceeded(StatusError):
    """RADIO_SEND refused: sending now would exceed the regulatory duty cycle."""


class SendUncertain(BridgeError):
    """RADIO_SEND's answer arrived garbled: the packet may or may not be on the air."""


class UpdateFailed(BridgeError):
    """A firmware update did not end with the new image running."""

    def __init__(self, text: str, *, rolled_back_to: Version | None = None) -> None:
        super().__init__(text)
        self.rolled_back_to = rolled_back_to


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RadioConfig:
    """RADIO_CONFIG's fields; the defaults are the firmware's own start-up settings."""

    freq_hz: int = 470_300_000
    sf: int = 9
    bw_hz: int = 125_000
    cr: int = 5  # 5-8 for 4/5-4/8
    power_dbm: int = 14
    preamble: int = 8
    sync: int = 0x12

    def payload(self) -> bytes:
        return m.pack(
            m.RADIO_CONFIG_FMT,
            self.freq_hz,
            self.sf,
            self.bw_hz,
            self.cr,
            self.power_dbm,
            self.preamble,
            self.sync,
        )


@dataclass(frozen=True, slots=True)
class McuInfo:
    """What HELLO (or a BOOT event) says about the MCU."""

    protocol: int
    version: Version
    boot_count: int
    reset_cause: int
    caps: int = 0

    @property
    def reset_cause_name(self) -> str:
        return RESET_CAUSES.get(self.reset_cause, f"cause {self.reset_cause}")


class BatteryReading(NamedTuple):
    millivolts: int
    percent: int
    charging: bool


@dataclass(frozen=True, slots=True)
class McuStatus:
    version: Version
    uptime_s: int
    update_pending: bool
    radio_busy: bool
    tx_budget_ms: int


@dataclass(frozen=True, slots=True)
class UpdateResult:
    previous: Version
    version: Version
    boot_count: int
    size: int
    chunks: int
    seconds: float


# Events, as `on_event` receives them.
@dataclass(frozen=True, slots=True)
class BootEvent:
    info: McuInfo


@dataclass(frozen=True, slots=True)
class RadioRx:
    packet: bytes
    rssi_dbm: int
    snr_db: float


@dataclass(frozen=True, slots=True)
class SosEvent:
    presses: int
    held_ms: int


@dataclass(frozen=True, slots=True)
class LogEvent:
    level: int
    text: str


Event = BootEvent | RadioRx | SosEvent | LogEvent


@dataclass(frozen=True, slots=True)
class LinkStatus:
    up: bool
    detail: str


@dataclass(slots=True)
class BridgeStats:
    frames_sent: int = 0
    frames_received: int = 0  # well-formed frames, responses and events
    bad_frames: int = 0  # CRC, stuffing or length wrong (the decoder's count)
    oversize: int = 0
    dropped_bytes: int = 0
    requests: int = 0
    retries: int = 0
    timeouts: int = 0  # attempts that got no answer in time
    garbled: int = 0  # attempts answered by a frame that did not decode
    stale_responses: int = 0  # answers nobody waited for (late, or duplicated by a retry)
    malformed: int = 0  # frames that decoded but made no sense (no status byte, bad event)
    events: int = 0
    resyncs: int = 0  # MCU restarts noticed (BOOT, or a new boot_count in HELLO)
    reconnects: int = 0  # port opened again after the first time
    link_ups: int = 0
    link_downs: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    baud: int = DEFAULT_BAUD
    timeout_s: float = 0.5  # one attempt
    retries: int = 3  # attempts after the first
    heartbeat_s: float = 5.0
    ready_wait_s: float = 5.0  # how long a request waits for the link to come (back) up
    backoff_max_s: float = 5.0
    commit_timeout_s: float = 10.0  # FW_COMMIT until the new image's BOOT
    confirm_s: float = 12.0  # the new image must not roll back within this long
    chunk: int = m.FW_CHUNK_MAX


class Retry(enum.Enum):
    IDEMPOTENT = "idempotent"  # again on timeout or on a garbled answer
    IF_SILENT = "if-silent"  # again only when nothing at all came back
    NEVER = "never"


RETRY = {
    m.RADIO_SEND: Retry.IF_SILENT,
    m.FW_COMMIT: Retry.IF_SILENT,  # resets the MCU: once it answered, do not ask again
}


@dataclass(slots=True)
class _Pending:
    type: int
    id: int
    future: asyncio.Future[tuple[int, bytes]]
    garbled: asyncio.Event = field(default_factory=asyncio.Event)  # a broken frame came


class _Garbled(Exception):
    pass


def parse_port(port: str) -> tuple[str, int]:
    """ "/dev/ttyACM0" or "serial:///dev/ttyACM0?baud=115200" → (path, baud or 0)."""
    if "://" not in port:
        return port, 0
    url = urllib.parse.urlsplit(port)
    if url.scheme != "serial" or url.netloc or not url.path:
        raise ValueError(f"{port!r}: expected a device path or serial:///dev/…?baud=N")
    query = urllib.parse.parse_qs(url.query)
    baud = query.pop("baud", ["0"])[-1]
    if query or not baud.isdigit():
        raise ValueError(f"{port!r}: the only parameter is baud=N")
    return urllib.parse.unquote(url.path), int(baud)


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
        self._pending: _Pending | None = None
        self._next_id = 1
        self._last_send_id = 0
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
            event = _parse_event(etype, payload)
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

    def _take_id(self, rtype: int) -> int:
        fid = self._next_id
        if rtype == m.RADIO_SEND and fid == self._last_send_id:
            fid = fid % 255 + 1  # never the previous RADIO_SEND's id: it may be remembered
        self._next_id = fid % 255 + 1
        if rtype == m.RADIO_SEND:
            self._last_send_id = fid
        return fid

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
        opts = self.options
        policy = RETRY.get(rtype, Retry.IDEMPOTENT)
        fid = self._take_id(rtype)
        wire = frame.encode(rtype, fid, payload)
        name = f"{NAMES.get(rtype, hex(rtype))} #{fid}"
        self.stats.requests += 1
        loop = asyncio.get_running_loop()
        pending = _Pending(rtype, fid, loop.create_future())
        self._pending = pending
        started = _now()
        try:
            for attempt in range(opts.retries + 1):
                pending.garbled.clear()
                port = self._port
                if port is None:
                    raise LinkDown(f"{self.path}: {self.link.detail}")
                try:
                    await port.write(wire)
                except OSError as exc:
                    raise LinkDown(describe(self.path, exc)) from exc
                self.stats.frames_sent += 1
                try:
                    return await self._answer(pending)
                except TimeoutError:  # silence: the request most likely never arrived
                    self.stats.timeouts += 1
                    if policy is Retry.NEVER:
                        break
                except _Garbled:  # most likely the answer itself, broken
                    self.stats.garbled += 1
                    if policy is not Retry.IDEMPOTENT:
                        raise SendUncertain(
                            f"{name}: the MCU's answer arrived garbled; it may have acted "
                            "(a packet may be on the air)"
                        ) from None
                if attempt < opts.retries:
                    self.stats.retries += 1
            self._check = True  # did it restart with its BOOT lost? the keeper asks
            self._wake.set()
            raise BridgeTimeout(
                f"{name}: no answer from the MCU on {self.path} after {opts.retries + 1} "
                f"attempts ({_now() - started:.2f} s)"
            )
        finally:
            self._pending = None

    async def _answer(self, pending: _Pending) -> tuple[int, bytes]:
        """The answer within one attempt's time; _Garbled when a broken frame came first."""
        garbled = asyncio.ensure_future(pending.garbled.wait())
        try:
            async with asyncio.timeout(self.options.timeout_s):
                done, _ = await asyncio.wait(
                    (pending.future, garbled), return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            garbled.cancel()
        if pending.future in done:
            return pending.future.result()
        # A broken frame: give a whole answer that follows right behind it a moment.
        await asyncio.sleep(0)
        if pending.future.done():
            return pending.future.result()
        raise _Garbled

    # -- the API --------------------------------------------------------------------------

    async def hello(self) -> McuInfo:
        """Ask the MCU who it is; resynchronises if it restarted unnoticed."""
        return await self._hello(internal=False)

    async def _hello(self, *, internal: bool) -> McuInfo:
        body = await self._request(m.HELLO, bytes((m.PROTOCOL,)), internal=internal)
        proto, a, b, c, boot, cause, caps = _ints(m.unpack(m.HELLO_RESPONSE, body))
        info = McuInfo(proto, (a, b, c), boot, cause, caps)
        if proto != m.PROTOCOL:
            raise VersionMismatch(
                f"{self.path}: the MCU speaks bridge protocol {proto} (firmware "
                f"{version_text(info.version)}), this host speaks {m.PROTOCOL}: refused; "
                "update the MCU firmware or the agent so that both match",
                proto,
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
        body = await self._request(m.RADIO_SEND, bytes(packet))
        (toa,) = _ints(m.unpack("<I", body))
        return toa

    async def feedback(self, pattern: int) -> None:
        await self._request(m.FEEDBACK, bytes((pattern,)))

    async def battery(self) -> BatteryReading:
        mv, pct, charging = _ints(m.unpack(m.BATTERY_RESPONSE, await self._request(m.BATTERY)))
        return BatteryReading(mv, pct, bool(charging))

    async def status(self) -> McuStatus:
        a, b, c, uptime, pending, busy, budget = _ints(
            m.unpack(m.STATUS_RESPONSE, await self._request(m.STATUS))
        )
        return McuStatus((a, b, c), uptime, bool(pending), bool(busy), budget)

    async def update_firmware(
        self,
        image: bytes,
        version: Version,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> UpdateResult:
        """Send `image` as firmware `version`, switch, and see the new image come up."""
        opts = self.options
        started = _now()
        info = await self.wait_ready()
        if not info.caps & m.CAP_UPDATE:
            raise UpdateFailed(
                f"MCU firmware {version_text(info.version)} does not take firmware updates"
            )
        previous = info.version
        digest = hashlib.sha256(image).digest()
        try:
            await self._request(m.FW_BEGIN, m.pack(m.FW_BEGIN_FMT, *version, len(image), digest))
        except StatusError as exc:
            raise UpdateFailed(
                f"the MCU refused to begin the update ({exc.status_name}): the image is too "
                "big, or the running image has not confirmed itself yet"
            ) from exc
        chunks = 0
        size = max(1, min(opts.chunk, m.FW_CHUNK_MAX))
        for offset in range(0, len(image), size):
            piece = image[offset : offset + size]
            try:
                await self._request(m.FW_CHUNK, struct.pack("<I", offset) + piece)
            except StatusError as exc:
                raise UpdateFailed(
                    f"the MCU refused the chunk at offset {offset} ({exc.status_name})"
                ) from exc
            chunks += 1
            if progress is not None:
                progress(offset + len(piece), len(image))
        loop = asyncio.get_running_loop()
        boot: asyncio.Future[McuInfo] = loop.create_future()
        self._boot_waiters.append(boot)
        try:
            try:
                await self._request(m.FW_COMMIT)
            except (McuReset, SendUncertain, BridgeTimeout):
                pass  # the BOOT overtook the answer, or the answer was lost: the BOOT tells
            except StatusError as exc:
                raise UpdateFailed(
                    f"the MCU refused to switch ({exc.status_name}): the staged image does not "
                    "match its SHA-256"
                ) from exc
            try:
                async with asyncio.timeout(opts.commit_timeout_s):
                    new = await boot
            except TimeoutError:
                raise UpdateFailed(
                    f"the MCU did not restart within {opts.commit_timeout_s:g} s of FW_COMMIT"
                ) from None
            new = await self._settle(new, version)
        finally:
            self._boot_waiters.remove(boot)
        await self.wait_ready()
        return UpdateResult(previous, version, new.boot_count, len(image), chunks, _now() - started)

    async def _settle(self, info: McuInfo, version: Version) -> McuInfo:
        """The image that came up after FW_COMMIT: the new one, staying up for confirm_s?"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.confirm_s
        while True:
            if info.reset_cause == m.RESET_ROLLBACK:
                raise UpdateFailed(
                    f"the MCU rolled back to {version_text(info.version)}: firmware "
                    f"{version_text(version)} did not confirm itself",
                    rolled_back_to=info.version,
                )
            if info.version != version:
                raise UpdateFailed(
                    f"the MCU restarted with firmware {version_text(info.version)}, not "
                    f"{version_text(version)}"
                )
            left = deadline - loop.time()
            if left <= 0:
                return info
            later: asyncio.Future[McuInfo] = loop.create_future()
            self._boot_waiters.append(later)
            try:
                async with asyncio.timeout(left):
                    info = await later  # only a restart resolves it
            except TimeoutError:
                return info
            finally:
                self._boot_waiters.remove(later)


def _ints(values: tuple[object, ...]) -> tuple[int, ...]:
    out = tuple(v for v in values if isinstance(v, int))
    if len(out) != len(values):
        raise BridgeError("unexpected field types")
    return out


def _parse_event(etype: int, payload: bytes) -> Event:
    if etype == m.BOOT:
        proto, a, b, c, boot, cause = _ints(m.unpack(m.BOOT_EVENT, payload))
        return BootEvent(McuInfo(proto, (a, b, c), boot, cause))
    if etype == m.RADIO_RX:
        head = struct.calcsize(m.RX_HEAD)
        rssi, snr_q = _ints(m.unpack(m.RX_HEAD, payload[:head]))
        return RadioRx(payload[head:], rssi, snr_q / 4)
    if etype == m.SOS:
        presses, held = _ints(m.unpack(m.SOS_EVENT, payload))
        return SosEvent(presses, held)
    if etype == m.LOG:
        if not payload:
            raise ValueError("empty LOG event")
        return LogEvent(payload[0], payload[1:].decode("utf-8", "replace"))
    raise ValueError(f"unknown event type {etype:#x}")


def _now() -> float:
    return time.monotonic()
