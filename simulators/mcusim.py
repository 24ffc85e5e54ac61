"""The radio MCU, simulated: the real firmware logic behind a real pseudo-terminal.

`McuSim` is the driver around `Board` (simulators/mcuboard.py: `firmware.logic.Mcu` and
`firmware.boot`, the same code the board runs, on a simulated HAL, with time passed in).
It adds what a board has and a pure core must not: a thread of its own, the real clock,
and a pty. The host opens the pty's slave exactly as it opens /dev/ttyACM0 (termios and
all), through a stable symlink (`McuSim.link`) that plays the part of
/dev/serial/by-id/…: `unplug()` closes the pty and removes the link, `replug()` makes a
new pty and points the link at it, so a host that reopens the same path finds the device
again.

Why a thread and real time: the host's timeouts, heartbeats and backoffs are real-time
behaviour, and the MCU must keep running (its watchdog, its button, its radio) whatever
the host's event loop is doing, as the hardware does. The thread is the MCU's main loop
(main.py's `read, feed, tick`), driven by `select` so it answers at once; while the board
is stalled it reads nothing, so the host's bytes wait in the driver.

Faults (the board's, simulators/mcuboard.py, plus `unplug()`/`replug()`) are asked for
from any thread, but other threads talk to the simulator only through methods that hand
work to its thread, so the firmware logic, like the MCU's, runs on one thread only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from firmware_bridge import messages as m
from firmware_bridge.firmware import boot
from firmware_bridge.firmware.logic import Mcu
from simulators.mcuboard import Board, ImageBehaviour, Medium, SimStats, Version
from simulators.serialline import SerialLine

__all__ = ["McuSim"]

TICK_S = 0.005  # the main loop runs at least this often (the board: 2 ms sleep + work)


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
        self.link = link or folder / "ttyMCU"
        self.board = Board(
            folder,
            version=version,
            to_host=SerialLine(ber if ber_to_host is None else ber_to_host, random.Random(seed)),
            to_mcu=SerialLine(
                ber if ber_to_mcu is None else ber_to_mcu, random.Random(seed * 7919 + 1)
            ),
            battery_mv=battery_mv,
            charging=charging,
            medium=medium,
            on_send=on_send,
            watchdog_ms=watchdog_ms,
            confirm_after_ms=confirm_after_ms,
            duty_cycle=duty_cycle,
            protocol=protocol,
            behaviour_of=self._behaviour,
        )
        self._t0 = time.monotonic()
        self._master = -1
        self._slave = -1
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

    # -- what tests and the CLI read ------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    @property
    def mcu(self) -> Mcu | None:
        return self.board.mcu

    @property
    def version(self) -> Version:
        return self.board.version

    @property
    def boot_count(self) -> int:
        return self.board.boot_count

    @property
    def boot_state(self) -> boot.State:
        return self.board.boot_state

    @property
    def stats(self) -> SimStats:
        return self.board.stats

    @property
    def to_host(self) -> SerialLine:
        return self.board.to_host

    @property
    def to_mcu(self) -> SerialLine:
        return self.board.to_mcu

    @property
    def radio_configs(self) -> list[tuple[int, int, int, int, int, int, int]]:
        return self.board.radio_configs

    @property
    def sent_packets(self) -> list[tuple[int, bytes]]:
        return self.board.sent_packets

    @property
    def indications(self) -> list[tuple[int, bool, int]]:
        """(ms, buzzer, led) of every change of the indicator, oldest first."""
        return self.board.indications

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    # -- what tests and the CLI do to it (from any thread) --------------------------------

    def press_sos(self, held_ms: int = 300, presses: int = 1, gap_ms: int = 300) -> None:
        """Press the SOS button `presses` times, each held `held_ms`, from now."""
        self._call(lambda: self.board.press_sos(held_ms, presses, gap_ms))

    def set_battery(self, millivolts: int, charging: bool = False) -> None:
        self._call(lambda: self.board.set_battery(millivolts, charging))

    def deliver(self, packet: bytes, rssi_dbm: int = -90, snr_db: float = 7.5) -> None:
        """A LoRa packet heard by the radio (RADIO_RX at the next tick)."""
        self._call(lambda: self.board.deliver(packet, rssi_dbm, snr_db))

    def set_ber(
        self, ber: float, *, to_host: float | None = None, to_mcu: float | None = None
    ) -> None:
        """Change the bit error rate of both directions, or of each."""

        def apply() -> None:
            self.board.to_host.set_ber(ber if to_host is None else to_host)
            self.board.to_mcu.set_ber(ber if to_mcu is None else to_mcu)

        self._call(apply)

    def reset(self, *, mid_frame: bool = False, cause: int = m.RESET_POWER_ON) -> None:
        """Restart the MCU now, or with `mid_frame` halfway through the next frame it writes."""
        self._call(lambda: self.board.reset(mid_frame=mid_frame, cause=cause))

    def stall(self, seconds: float) -> None:
        """Answer nothing for `seconds`: what the host sends waits in the driver meanwhile."""
        self._call(lambda: self.board.stall(seconds))

    def unplug(self) -> None:
        """Pull the cable: the pty goes away (the host reads EIO/EOF), the link vanishes."""
        self._call(self._unplug)

    def replug(self) -> None:
        """A new pty behind the same link, as udev makes a by-id link to a new ttyACM."""
        self._call(self._plug)

    def _behaviour(self, slot: str) -> ImageBehaviour:
        """How the image in `slot` behaves (the board's say); a subclass may overrule it."""
        return self.board.slot_behaviour(slot)

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
            self.board.now = self.now_ms
            self.board.power_on(m.RESET_POWER_ON)
            while not self._stop.is_set():
                self._step()
        except BaseException as exc:
            self._error = exc
            raise

    def _step(self) -> None:
        board = self.board
        fds = [self._wake_r]
        if self._master >= 0 and not board.stalled:
            fds.append(self._master)
        wants_write = self._master >= 0 and bool(board.out)
        readable, writable, _ = select.select(
            fds, [self._master] if wants_write else [], [], TICK_S
        )
        board.now = self.now_ms
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        self._run_calls()
        if board.stalled:
            board.hold()
            return
        data = b""
        if self._master >= 0 and self._master in readable:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # no slave open (should not happen: we hold one)
                data = b""
        board.step(data)
        if self._master >= 0 and (writable or board.out):
            self._flush()

    def _run_calls(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            call()

    def _flush(self) -> None:
        out = self.board.out
        while out:
            try:
                n = os.write(self._master, out)
            except BlockingIOError:
                return
            except OSError:
                self.board.drop_output()
                return
            del out[:n]

    def _plug(self) -> None:
        if self._master >= 0:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing before the host configures it
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.board.plugged = True
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)

    def _unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.board.drop_output()
        self.board.plugged = False
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
