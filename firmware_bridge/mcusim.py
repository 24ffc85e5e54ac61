"""The radio MCU, simulated: the real firmware logic behind a real pseudo-terminal.

`McuSim` runs `firmware.logic.Mcu` and `firmware.boot` (the same code the board runs) on a
thread of its own, in real time, with a simulated HAL in place of the board's. The host
opens the pty's slave exactly as it opens /dev/ttyACM0 (termios and all), through a
stable symlink (`McuSim.link`) that plays the part of /dev/serial/by-id/…: `unplug()`
closes the pty and removes the link, `replug()` makes a new pty and points the link at
it, so a host that reopens the same path finds the device again.

Why a thread and real time: the host's timeouts, heartbeats and backoffs are real-time
behaviour, and the MCU must keep running (its watchdog, its button, its radio) whatever
the host's event loop is doing, as the hardware does. The thread is the MCU's main loop
(main.py's `read, feed, tick`), driven by `select` so it answers at once.

What persists is kept in `folder`, as on the board's flash: the boot state (boot.py's
FileStore), the staged image and the image slots. An update, the boot decision after
FW_COMMIT and a rollback therefore survive `reset()` as they survive a power cut on the
board. The image format is boot.py's; a simulated image carries a `sim.json` saying how
it behaves (`sim_image`): whether it comes up healthy or hangs before confirming itself.

Faults, all seeded: a bit error rate on each direction of the line (`SerialLine` flips
bits and counts the frames it touched, so a soak test knows what it corrupted); `reset()`,
which restarts the MCU wherever it is, optionally in the middle of writing a frame (the
frame is cut where the power went); `stall(seconds)`, in which it answers nothing and the
host's bytes wait in the driver; `unplug()`/`replug()`. Other threads talk to the
simulator only through methods that hand work to its thread, so the firmware logic,
like the MCU's, runs on one thread only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import random
import select
import shutil
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from firmware_bridge import frame, lora
from firmware_bridge import messages as m
from firmware_bridge.firmware import boot, hal
from firmware_bridge.firmware.logic import Mcu

T = TypeVar("T")
Version = tuple[int, int, int]

TICK_S = 0.005  # the main loop runs at least this often (the board: 2 ms sleep + work)
OUT_LIMIT = 64 * 1024  # bytes the UART keeps for a host that is not reading; then drops
SIM_FILE = "sim.json"


class Medium(Protocol):
    def send(self, packet: bytes, now_ms: int) -> None: ...


class _PowerCut(BaseException):
    """Raised out of the HAL to stop the firmware where it stands (not an Exception, so
    no `except Exception` in the logic can catch it)."""


# --- the serial line ------------------------------------------------------------------------


class SerialLine:
    """One direction of the line: flips bits at `ber`, and counts the frames it touched.

    Errors are drawn as gaps between flipped bits (geometric), so 1e-6 costs nothing per
    byte. Frames are followed on the original bytes: a frame runs from its leading 0x00
    through its trailing one, and a frame with any flipped bit in that span is corrupted.
    """

    def __init__(self, ber: float, rng: random.Random) -> None:
        self.rng = rng
        self.ber = 0.0
        self._gap = 0
        self.set_ber(ber)
        self.bytes = 0
        self.bits_flipped = 0
        self.frames = 0  # whole frames that went through (original stream)
        self.corrupted = 0  # of which touched by an injected error
        self.cut = 0  # frames left unfinished by a reset
        self._in = False
        self._body = False
        self._touched = False

    def set_ber(self, ber: float) -> None:
        if not 0.0 <= ber < 1.0:
            raise ValueError("bit error rate must be in [0, 1)")
        self.ber = ber
        self._gap = self._draw()

    def _draw(self) -> int:
        if self.ber <= 0.0:
            return 1 << 62
        u = 1.0 - self.rng.random()  # (0, 1]
        return int(math.log(u) / math.log1p(-self.ber))

    def carry(self, data: bytes) -> bytes:
        """`data` as it arrives at the other end."""
        out = bytearray(data)
        flips: set[int] = set()
        bits = 8 * len(out)
        pos = self._gap
        while pos < bits:
            out[pos // 8] ^= 1 << (pos % 8)
            flips.add(pos // 8)
            self.bits_flipped += 1
            pos += 1 + self._draw()
        self._gap = pos - bits
        self._follow(data, flips)
        self.bytes += len(data)
        return bytes(out)

    def _follow(self, data: bytes, flips: set[int]) -> None:
        for i, b in enumerate(data):
            hit = i in flips
            if b == 0:
                if self._in and self._body:  # the trailing delimiter
                    self._end(self._touched or hit)
                else:  # a leading one
                    self._in, self._body, self._touched = True, False, hit
            else:
                if not self._in:
                    self._in, self._touched = True, False
                self._body = True
                self._touched = self._touched or hit

    def _end(self, touched: bool) -> None:
        self.frames += 1
        if touched:
            self.corrupted += 1
        self._in = self._body = self._touched = False

    def interrupt(self) -> None:
        """The sender reset: the frame in progress will never be finished."""
        if self._in and self._body:
            self.cut += 1
        self._in = self._body = self._touched = False


# --- the simulated board --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageBehaviour:
    """What a simulated image does; `sim.json` in its slot."""

    confirms: bool = True  # False: it hangs `hang_after_ms` after starting, never confirming
    hang_after_ms: int = 300
    protocol: int | None = None  # speak another bridge protocol (HELLO, BOOT)


def sim_image(version: Version, *, confirms: bool = True, size: int = 48_000) -> bytes:
    """A firmware image in boot.py's format, about `size` bytes, for the simulator."""
    rng = random.Random(hash(version) ^ size)
    behaviour = json.dumps({"confirms": confirms, "version": list(version)}).encode()
    body = rng.randbytes(max(0, size - len(behaviour) - 40))
    return boot.pack_image([(SIM_FILE, behaviour), ("logic.mpy", body)])


@dataclass(slots=True)
class SimStats:
    boots: int = 0
    resets: int = 0  # asked for from outside (reset())
    watchdog_resets: int = 0
    dropped_bytes: int = 0  # UART output nobody read (unplugged, or a host not reading)


class _Uart(hal.Uart):
    def __init__(self, sim: McuSim) -> None:
        self.sim = sim

    def write(self, data: bytes) -> None:
        self.sim._uart_write(bytes(data))


class _Radio(hal.Radio):
    def __init__(self, sim: McuSim) -> None:
        self.sim = sim
        self.config: tuple[int, int, int, int, int, int, int] | None = None
        self.busy_until = 0

    def configure(  # noqa: PLR0917 - hal.Radio's signature, as the board implements it
        self, freq_hz: int, sf: int, bw_hz: int, cr: int, power_dbm: int, preamble: int, sync: int
    ) -> bool:
        if not lora.MIN_SF <= sf <= lora.MAX_SF or not 5 <= cr <= 8:
            return False
        self.config = (freq_hz, sf, bw_hz, cr, power_dbm, preamble, sync)
        self.sim.radio_configs.append(self.config)
        return True

    def send(self, packet: bytes, now_ms: int) -> bool:
        if self.config is None or self.busy(now_ms):
            return False
        _f, sf, bw, cr, _p, preamble, _s = self.config
        self.busy_until = now_ms + lora.time_on_air_ms(len(packet), sf, bw, cr, preamble)
        self.sim.sent_packets.append((now_ms, bytes(packet)))
        if self.sim.medium is not None:
            self.sim.medium.send(bytes(packet), now_ms)
        if self.sim.on_send is not None:
            self.sim.on_send(bytes(packet), now_ms)
        return True

    def busy(self, now_ms: int) -> bool:
        return now_ms < self.busy_until

    def receive(self, now_ms: int) -> tuple[bytes, int, float] | None:
        try:
            return self.sim._heard.popleft()
        except IndexError:
            return None


class _Button(hal.Button):
    def __init__(self, sim: McuSim) -> None:
        self.sim = sim

    def pressed(self) -> bool:
        now = self.sim._now
        return any(start <= now < end for start, end in self.sim._presses)


class _Indicator(hal.Indicator):
    def __init__(self, sim: McuSim) -> None:
        self.sim = sim

    def set(self, buzzer: bool, led: int) -> None:
        self.sim.indications.append((self.sim._now, buzzer, led))


class _Battery(hal.Battery):
    def __init__(self, sim: McuSim) -> None:
        self.sim = sim

    def millivolts(self) -> int:
        return self.sim._battery_mv

    def charging(self) -> bool:
        return self.sim._charging


class _Watchdog(hal.Watchdog):
    def __init__(self, sim: McuSim) -> None:
        self.sim = sim

    def feed(self) -> None:
        self.sim._fed = self.sim._now


class _Storage(hal.Storage):
    """As board_rp2.Storage: the staged image in a file, switching through the boot state."""

    def __init__(self, sim: McuSim) -> None:
        self.sim = sim

    @property
    def _staged(self) -> Path:
        return self.sim.folder / "staged.bin"

    def write_staged(self, offset: int, data: bytes) -> None:
        with self._staged.open("r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_staged(self, offset: int, size: int) -> bytes:
        with self._staged.open("rb") as f:
            f.seek(offset)
            return f.read(size)

    def clear_staged(self) -> None:
        self._staged.write_bytes(b"")

    def request_switch(self, version: tuple[int, int, int]) -> None:
        self.sim._boot.request_switch(version)

    def reset(self) -> None:
        self.sim._boot.note_soft_reset()
        self.sim._reboot_cause = m.RESET_WATCHDOG  # machine.reset() reads as the watchdog


# --- the simulator --------------------------------------------------------------------------


class McuSim:
    """The MCU on a pty; `start()` (or `with McuSim(...)`) runs it, `stop()` ends it."""

    def __init__(
        self,
        folder: Path,
        *,
        version: Version = (1, 0, 0),
        ber: float = 0.0,
        ber_to_host: float | None = None,
        ber_to_mcu: float | None = None,
        seed: int = 1,
        battery_mv: int = 3900,
        charging: bool = False,
        medium: Medium | None = None,
        on_send: Callable[[bytes, int], None] | None = None,
        watchdog_ms: int = 2000,
        confirm_after_ms: int = 10_000,
        duty_cycle: float = 0.01,
        protocol: int | None = None,
        link: Path | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.link = link or folder / "ttyMCU"
        self.factory = version
        self.medium = medium
        self.on_send = on_send
        self.watchdog_ms = watchdog_ms
        self.confirm_after_ms = confirm_after_ms
        self.duty_cycle = duty_cycle
        self.factory_behaviour = ImageBehaviour(protocol=protocol)
        self.to_host = SerialLine(ber if ber_to_host is None else ber_to_host, random.Random(seed))
        self.to_mcu = SerialLine(
            ber if ber_to_mcu is None else ber_to_mcu, random.Random(seed * 7919 + 1)
        )
        self.stats = SimStats()
        self.radio_configs: list[tuple[int, int, int, int, int, int, int]] = []
        self.sent_packets: list[tuple[int, bytes]] = []
        self.indications: list[tuple[int, bool, int]] = []  # (ms, buzzer, led)
        self.mcu: Mcu | None = None
        self.behaviour = self.factory_behaviour
        self._boot = boot.Boot(boot.FileStore(str(folder / "boot.json")), version)
        self._battery_mv = battery_mv
        self._charging = charging
        self._heard: deque[tuple[bytes, int, float]] = deque()
        self._presses: list[tuple[int, int]] = []
        self._now = 0
        self._fed = 0
        self._started_ms = 0
        self._t0 = time.monotonic()
        self._stall_until = 0
        self._reboot_cause: int | None = None
        self._cut_next_write = False
        self._cut_cause = m.RESET_POWER_ON
        self._master = -1
        self._slave = -1
        self._out = bytearray()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> McuSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._plug()
        self._thread = threading.Thread(target=self._main, name="mcusim", daemon=True)
        self._thread.start()
        self._call(self._flush)  # returns once the MCU has started and its BOOT is out

    def stop(self) -> None:
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._unplug()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._error is not None:
            raise RuntimeError("the simulated MCU failed") from self._error

    # -- what tests and the CLI do to it (from any thread) --------------------------------

    @property
    def now_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    @property
    def version(self) -> Version:
        mcu = self.mcu
        return self.factory if mcu is None else mcu.version

    @property
    def boot_count(self) -> int:
        mcu = self.mcu
        return 0 if mcu is None else mcu.boot_count

    @property
    def boot_state(self) -> boot.State:
        return self._boot.state

    def press_sos(self, held_ms: int = 300, presses: int = 1, gap_ms: int = 300) -> None:
        """Press the SOS button `presses` times, each held `held_ms`, from now."""

        def press() -> None:
            t = self._now + 1
            for _ in range(presses):
                self._presses.append((t, t + held_ms))
                t += held_ms + gap_ms

        self._call(press)

    def set_battery(self, millivolts: int, charging: bool = False) -> None:
        def apply() -> None:
            self._battery_mv, self._charging = millivolts, charging

        self._call(apply)

    def deliver(self, packet: bytes, rssi_dbm: int = -90, snr_db: float = 7.5) -> None:
        """A LoRa packet heard by the radio (RADIO_RX at the next tick)."""
        self._call(lambda: self._heard.append((bytes(packet), rssi_dbm, snr_db)))

    def set_ber(
        self, ber: float, *, to_host: float | None = None, to_mcu: float | None = None
    ) -> None:
        """Change the bit error rate of both directions, or of each."""

        def apply() -> None:
            self.to_host.set_ber(ber if to_host is None else to_host)
            self.to_mcu.set_ber(ber if to_mcu is None else to_mcu)

        self._call(apply)

    def reset(self, *, mid_frame: bool = False, cause: int = m.RESET_POWER_ON) -> None:
        """Restart the MCU now, or with `mid_frame` halfway through the next frame it writes."""

        def arm() -> None:
            self.stats.resets += 1
            if mid_frame:
                self._cut_next_write = True
                self._cut_cause = cause
            else:
                self._reboot(cause)

        self._call(arm)

    def stall(self, seconds: float) -> None:
        """Answer nothing for `seconds`: what the host sends waits in the driver meanwhile."""

        def arm() -> None:
            self._stall_until = self._now + int(seconds * 1000)

        self._call(arm)

    def unplug(self) -> None:
        """Pull the cable: the pty goes away (the host reads EIO/EOF), the link vanishes."""
        self._call(self._unplug)

    def replug(self) -> None:
        """A new pty behind the same link, as udev makes a by-id link to a new ttyACM."""
        self._call(self._plug)

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    # -- the thread's side ----------------------------------------------------------------

    def _call(self, fn: Callable[[], None], timeout_s: float = 5.0) -> None:
        if self._thread is None or threading.current_thread() is self._thread:
            fn()
            return
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

        self._calls.put(run)
        self._poke()
        if not done.wait(timeout_s):
            raise TimeoutError("the simulated MCU did not respond")
        if failure:
            raise failure[0]

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def _main(self) -> None:
        try:
            self._now = self.now_ms
            self._power_on(m.RESET_POWER_ON)
            while not self._stop.is_set():
                self._step()
        except BaseException as exc:
            self._error = exc
            raise

    def _step(self) -> None:
        fds = [self._wake_r]
        stalled = self._now < self._stall_until
        if self._master >= 0 and not stalled:
            fds.append(self._master)
        wants_write = self._master >= 0 and bool(self._out)
        readable, writable, _ = select.select(
            fds, [self._master] if wants_write else [], [], TICK_S
        )
        self._now = self.now_ms
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        self._run_calls()
        if self._now < self._stall_until:
            self._fed = self._now  # a stall is not a hang: the watchdog does not bite
            return
        data = b""
        if self._master >= 0 and self._master in readable:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # no slave open (should not happen: we hold one)
                data = b""
        mcu = self.mcu
        hung = self._hung()
        if mcu is not None and not hung:
            if data:
                self._run(lambda: mcu.feed(self.to_mcu.carry(data), self._now))
            if self.mcu is mcu:
                self._run(lambda: mcu.tick(self._now))
        if self._reboot_cause is not None:
            cause, self._reboot_cause = self._reboot_cause, None
            self._reboot(cause)
        elif self._now - self._fed > self.watchdog_ms:
            self.stats.watchdog_resets += 1
            self._reboot(m.RESET_WATCHDOG)
        if self._master >= 0 and (writable or self._out):
            self._flush()

    def _run_calls(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            call()

    def _hung(self) -> bool:
        b = self.behaviour
        return not b.confirms and self._now - self._started_ms >= b.hang_after_ms

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except _PowerCut:
            self._reboot(self._cut_cause)

    def _reboot(self, cause: int) -> None:
        self.to_host.interrupt()
        self.mcu = None
        self._power_on(cause)

    def _power_on(self, cause: int) -> None:
        """main.py's start: the boot decision, installing a staged image, the logic."""
        decision = self._boot.start(cause)
        if decision.install:
            try:
                self._install(decision.slot)
            except (OSError, ValueError):
                decision = self._boot.install_failed()
        self.behaviour = self._behaviour(decision.slot)
        self.stats.boots += 1
        self._started_ms = self._fed = self._now
        self._stall_until = 0
        self.mcu = Mcu(
            hal.Hal(
                _Uart(self),
                _Radio(self),
                _Button(self),
                _Indicator(self),
                _Battery(self),
                _Watchdog(self),
                _Storage(self),
            ),
            version=decision.version,
            boot_count=decision.boot_count,
            reset_cause=decision.reset_cause,
            duty_cycle=self.duty_cycle,
            trial=decision.trial,
            confirm_after_ms=self.confirm_after_ms,
            on_healthy=self._boot.confirm,
        )
        mcu = self.mcu
        self._run(lambda: mcu.start(self._now))

    def _slot_dir(self, slot: str) -> Path:
        return self.folder / "fw" / slot

    def _install(self, slot: str) -> None:
        """As board_rp2.install_staged: unpack the staged image into its slot's folder."""
        staged = self.folder / "staged.bin"
        raw = staged.read_bytes()

        def read(offset: int, n: int) -> bytes:
            got = raw[offset : offset + n]
            if len(got) != n:
                raise ValueError("staged image shorter than it says")
            return got

        entries = boot.image_entries(read, len(raw))
        folder = self._slot_dir(slot)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, offset, length in entries:
            (folder / name).write_bytes(raw[offset : offset + length])
        staged.unlink()

    def _behaviour(self, slot: str) -> ImageBehaviour:
        if slot == boot.FACTORY_SLOT:
            return self.factory_behaviour
        try:
            doc = json.loads((self._slot_dir(slot) / SIM_FILE).read_text())
        except (OSError, ValueError):
            return ImageBehaviour()
        return ImageBehaviour(
            confirms=bool(doc.get("confirms", True)),
            hang_after_ms=int(doc.get("hang_after_ms", 300)),
            protocol=doc.get("protocol"),
        )

    def _uart_write(self, data: bytes) -> None:
        if self.behaviour.protocol is not None:
            data = _speak_protocol(data, self.behaviour.protocol)
        if self._cut_next_write:
            self._cut_next_write = False
            self._send(data[: max(2, len(data) // 2)])
            raise _PowerCut
        self._send(data)

    def _send(self, data: bytes) -> None:
        if self._master < 0:
            self.stats.dropped_bytes += len(data)
            return
        self._out += self.to_host.carry(data)
        if len(self._out) > OUT_LIMIT:
            drop = len(self._out) - OUT_LIMIT
            del self._out[:drop]
            self.stats.dropped_bytes += drop

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except BlockingIOError:
                return
            except OSError:
                self.stats.dropped_bytes += len(self._out)
                self._out.clear()
                return
            del self._out[:n]

    def _plug(self) -> None:
        if self._master >= 0:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing before the host configures it
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)

    def _unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.stats.dropped_bytes += len(self._out)
        self._out.clear()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1


def _speak_protocol(wire: bytes, protocol: int) -> bytes:
    """Rewrite the protocol byte of a BOOT event or HELLO answer: firmware from elsewhere."""
    try:
        ftype, fid, payload = frame.decode_body(wire.strip(b"\x00"))
    except ValueError:
        return wire
    if ftype == m.BOOT and payload:
        payload = bytes((protocol,)) + payload[1:]
    elif ftype == m.response(m.HELLO) and len(payload) > 1 and payload[0] == m.OK:
        payload = payload[:1] + bytes((protocol,)) + payload[2:]
    else:
        return wire
    return frame.encode(ftype, fid, payload)


__all__ = [
    "ImageBehaviour",
    "McuSim",
    "Medium",
    "SerialLine",
    "SimStats",
    "sim_image",
]
