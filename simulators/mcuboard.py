"""The radio MCU's board, simulated: the real firmware logic on a HAL of plain Python objects.

`Board` runs `firmware.logic.Mcu` and `firmware.boot` (the same code the board runs) on the
simulated HAL below, with time passed in: `now` is set by its driver (simulators/mcusim.py,
which adds the thread, the real clock and the pseudo-terminal), and `step(data)` is one
pass of main.py's loop, `read, feed, tick`, then the reboot and the watchdog. No thread, no
file descriptor: what the firmware writes to its UART waits in `out` for the driver.

What persists is kept in `folder`, as on the board's flash: the boot state (boot.py's
FileStore), the staged image and the image slots. An update, the boot decision after
FW_COMMIT and a rollback therefore survive a reset as they survive a power cut on the
board. The image format is boot.py's; a simulated image carries a `sim.json` saying how
it behaves (`sim_image`): whether it comes up healthy or hangs before confirming itself.

Faults, all seeded or asked for: a bit error rate on each direction of the line (one
`SerialLine` each way); `reset()`, which restarts the MCU wherever it is, optionally in the
middle of writing a frame (the frame is cut where the power went, by raising `_PowerCut`
out of the UART); `stall(seconds)`, in which it answers nothing.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from firmware_bridge import frame, lora
from firmware_bridge import messages as m
from firmware_bridge.firmware import boot, hal
from firmware_bridge.firmware.logic import Mcu
from simulators.serialline import SerialLine

__all__ = ["SIM_FILE", "Board", "ImageBehaviour", "Medium", "SimStats", "Version", "sim_image"]

Version = tuple[int, int, int]

OUT_LIMIT = 64 * 1024  # bytes the UART keeps for a host that is not reading; then drops
SIM_FILE = "sim.json"


class Medium(Protocol):
    def send(self, packet: bytes, now_ms: int) -> None: ...


class _PowerCut(BaseException):
    """Raised out of the HAL to stop the firmware where it stands (not an Exception, so
    no `except Exception` in the logic can catch it)."""


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


class Board:
    """The MCU on its board, at `now` ms; `power_on` starts it, `step` runs its loop once.

    `behaviour_of(slot)` says how the image in a slot behaves (default: its sim.json, and
    the factory image `protocol` says); the driver may put a hook of its own there.
    """

    def __init__(
        self,
        folder: Path,
        *,
        version: Version,
        to_host: SerialLine,
        to_mcu: SerialLine,
        battery_mv: int,
        charging: bool,
        medium: Medium | None,
        on_send: Callable[[bytes, int], None] | None,
        watchdog_ms: int,
        confirm_after_ms: int,
        duty_cycle: float,
        protocol: int | None,
        behaviour_of: Callable[[str], ImageBehaviour] | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.factory = version
        self.medium = medium
        self.on_send = on_send
        self.watchdog_ms = watchdog_ms
        self.confirm_after_ms = confirm_after_ms
        self.duty_cycle = duty_cycle
        self.factory_behaviour = ImageBehaviour(protocol=protocol)
        self.behaviour_of = behaviour_of or self.slot_behaviour
        self.to_host = to_host
        self.to_mcu = to_mcu
        self.stats = SimStats()
        self.radio_configs: list[tuple[int, int, int, int, int, int, int]] = []
        self.sent_packets: list[tuple[int, bytes]] = []
        self.indications: list[tuple[int, bool, int]] = []  # (ms, buzzer, led)
        self.mcu: Mcu | None = None
        self.behaviour = self.factory_behaviour
        self.now = 0
        self.plugged = False  # a host on the line: otherwise what the UART writes is lost
        self.out = bytearray()  # what the UART holds for the host (the driver takes it away)
        self._boot = boot.Boot(boot.FileStore(str(folder / "boot.json")), version)
        self._battery_mv = battery_mv
        self._charging = charging
        self._heard: deque[tuple[bytes, int, float]] = deque()
        self._presses: list[tuple[int, int]] = []
        self._fed = 0
        self._started_ms = 0
        self._stall_until = 0
        self._reboot_cause: int | None = None
        self._cut_next_write = False
        self._cut_cause = m.RESET_POWER_ON

    # -- what it is running ---------------------------------------------------------------

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

    # -- what is done to it (at `now`) ----------------------------------------------------

    def press_sos(self, held_ms: int, presses: int, gap_ms: int) -> None:
        """Press the SOS button `presses` times, each held `held_ms`, from now."""
        t = self.now + 1
        for _ in range(presses):
            self._presses.append((t, t + held_ms))
            t += held_ms + gap_ms

    def set_battery(self, millivolts: int, charging: bool) -> None:
        self._battery_mv, self._charging = millivolts, charging

    def deliver(self, packet: bytes, rssi_dbm: int, snr_db: float) -> None:
        """A LoRa packet heard by the radio (RADIO_RX at the next tick)."""
        self._heard.append((bytes(packet), rssi_dbm, snr_db))

    def reset(self, *, mid_frame: bool, cause: int) -> None:
        """Restart the MCU now, or with `mid_frame` halfway through the next frame it writes."""
        self.stats.resets += 1
        if mid_frame:
            self._cut_next_write = True
            self._cut_cause = cause
        else:
            self._reboot(cause)

    def stall(self, seconds: float) -> None:
        """Answer nothing for `seconds`."""
        self._stall_until = self.now + int(seconds * 1000)

    def drop_output(self) -> None:
        """What the UART held is lost (the cable pulled, the host gone)."""
        self.stats.dropped_bytes += len(self.out)
        self.out.clear()

    # -- its main loop --------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return self.now < self._stall_until

    def hold(self) -> None:
        """A stalled pass: a stall is not a hang, so the watchdog does not bite."""
        self._fed = self.now

    def step(self, data: bytes) -> None:
        """One pass of main.py's loop at `now`, `data` being what the host sent meanwhile."""
        mcu = self.mcu
        hung = self._hung()
        if mcu is not None and not hung:
            if data:
                self._run(lambda: mcu.feed(self.to_mcu.carry(data), self.now))
            if self.mcu is mcu:
                self._run(lambda: mcu.tick(self.now))
        if self._reboot_cause is not None:
            cause, self._reboot_cause = self._reboot_cause, None
            self._reboot(cause)
        elif self.now - self._fed > self.watchdog_ms:
            self.stats.watchdog_resets += 1
            self._reboot(m.RESET_WATCHDOG)

    def power_on(self, cause: int) -> None:
        """main.py's start: the boot decision, installing a staged image, the logic."""
        decision = self._boot.start(cause)
        if decision.install:
            try:
                self._install(decision.slot)
            except (OSError, ValueError):
                decision = self._boot.install_failed()
        self.behaviour = self.behaviour_of(decision.slot)
        self.stats.boots += 1
        self._started_ms = self._fed = self.now
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
        self._run(lambda: mcu.start(self.now))

    def _hung(self) -> bool:
        b = self.behaviour
        return not b.confirms and self.now - self._started_ms >= b.hang_after_ms

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except _PowerCut:
            self._reboot(self._cut_cause)

    def _reboot(self, cause: int) -> None:
        self.to_host.interrupt()
        self.mcu = None
        self.power_on(cause)

    # -- its flash ------------------------------------------------------------------------

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

    def slot_behaviour(self, slot: str) -> ImageBehaviour:
        """How the image in `slot` behaves: the factory's, or its sim.json's."""
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

    # -- its UART -------------------------------------------------------------------------

    def _uart_write(self, data: bytes) -> None:
        if self.behaviour.protocol is not None:
            data = _speak_protocol(data, self.behaviour.protocol)
        if self._cut_next_write:
            self._cut_next_write = False
            self._send(data[: max(2, len(data) // 2)])
            raise _PowerCut
        self._send(data)

    def _send(self, data: bytes) -> None:
        if not self.plugged:
            self.stats.dropped_bytes += len(data)
            return
        self.out += self.to_host.carry(data)
        if len(self.out) > OUT_LIMIT:
            drop = len(self.out) - OUT_LIMIT
            del self.out[:drop]
            self.stats.dropped_bytes += drop


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


# --- the simulated HAL ----------------------------------------------------------------------


class _Uart(hal.Uart):
    def __init__(self, board: Board) -> None:
        self.board = board

    def write(self, data: bytes) -> None:
        self.board._uart_write(bytes(data))


class _Radio(hal.Radio):
    def __init__(self, board: Board) -> None:
        self.board = board
        self.config: tuple[int, int, int, int, int, int, int] | None = None
        self.busy_until = 0

    def configure(  # noqa: PLR0917 - hal.Radio's signature, as the board implements it
        self, freq_hz: int, sf: int, bw_hz: int, cr: int, power_dbm: int, preamble: int, sync: int
    ) -> bool:
        if not lora.MIN_SF <= sf <= lora.MAX_SF or not 5 <= cr <= 8:
            return False
        self.config = (freq_hz, sf, bw_hz, cr, power_dbm, preamble, sync)
        self.board.radio_configs.append(self.config)
        return True

    def send(self, packet: bytes, now_ms: int) -> bool:
        if self.config is None or self.busy(now_ms):
            return False
        _f, sf, bw, cr, _p, preamble, _s = self.config
        self.busy_until = now_ms + lora.time_on_air_ms(len(packet), sf, bw, cr, preamble)
        self.board.sent_packets.append((now_ms, bytes(packet)))
        if self.board.medium is not None:
            self.board.medium.send(bytes(packet), now_ms)
        if self.board.on_send is not None:
            self.board.on_send(bytes(packet), now_ms)
        return True

    def busy(self, now_ms: int) -> bool:
        return now_ms < self.busy_until

    def receive(self, now_ms: int) -> tuple[bytes, int, float] | None:
        try:
            return self.board._heard.popleft()
        except IndexError:
            return None


class _Button(hal.Button):
    def __init__(self, board: Board) -> None:
        self.board = board

    def pressed(self) -> bool:
        now = self.board.now
        return any(start <= now < end for start, end in self.board._presses)


class _Indicator(hal.Indicator):
    def __init__(self, board: Board) -> None:
        self.board = board

    def set(self, buzzer: bool, led: int) -> None:
        self.board.indications.append((self.board.now, buzzer, led))


class _Battery(hal.Battery):
    def __init__(self, board: Board) -> None:
        self.board = board

    def millivolts(self) -> int:
        return self.board._battery_mv

    def charging(self) -> bool:
        return self.board._charging


class _Watchdog(hal.Watchdog):
    def __init__(self, board: Board) -> None:
        self.board = board

    def feed(self) -> None:
        self.board._fed = self.board.now


class _Storage(hal.Storage):
    """As board_rp2.Storage: the staged image in a file, switching through the boot state."""

    def __init__(self, board: Board) -> None:
        self.board = board

    @property
    def _staged(self) -> Path:
        return self.board.folder / "staged.bin"

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
        self.board._boot.request_switch(version)

    def reset(self) -> None:
        self.board._boot.note_soft_reset()
        self.board._reboot_cause = m.RESET_WATCHDOG  # machine.reset() reads as the watchdog
