"""The device's entry point: pick the image (boot.py), build the board, run the loop.

MicroPython runs /main.py at every start. This file and boot.py are the fixed first
stage; everything else comes from the image the boot decision chose: the factory files at
the root, or an updated image in /fw/a or /fw/b. So the first stage imports the root's
board_rp2 only to read the reset cause and to unpack a staged image, then forgets every
image module and imports them again from the chosen slot.

A plain loop, no asyncio: read what the UART has, `feed` it, `tick`, sleep a little. The
logic feeds the watchdog from `tick`; if anything raises out of the loop the exception is
printed, the watchdog is no longer fed and resets the MCU, and an image on its one try
is rolled back at that next start.
"""

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from firmware_bridge.firmware import board_rp2, boot
else:
    try:
        from firmware_bridge.firmware import board_rp2, boot
    except ImportError:  # flat on the board
        import board_rp2
        import boot

FACTORY_VERSION = (1, 0, 0)  # the version of the files flashed at the root
LOOP_SLEEP_MS = 2
# the modules an image brings; main.py and boot.py stay the root's
IMAGE_MODULES = ("board_rp2", "sx126x", "hal", "logic", "frame", "messages", "lora")


class Clock:
    """Milliseconds since start that never wrap (time.ticks_ms wraps after ~12 days)."""

    def __init__(self) -> None:
        self.last = time.ticks_ms()
        self.ms = 0

    def now(self) -> int:
        t = time.ticks_ms()
        self.ms += time.ticks_diff(t, self.last)
        self.last = t
        return self.ms


def image_module(slot: str, name: str) -> "Any":
    """`name` as the chosen image has it (its slot folder first on sys.path)."""
    folder = board_rp2.slot_dir(slot)
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)
    return __import__(name)


def run() -> None:
    board_rp2.ensure_folders()
    state = boot.Boot(boot.FileStore(board_rp2.STATE_PATH), FACTORY_VERSION)
    decision = state.start(board_rp2.reset_cause())
    if decision.install:
        try:
            board_rp2.install_staged(decision.slot)
        except (OSError, ValueError) as exc:
            sys.print_exception(exc)
            decision = state.install_failed()
    for name in IMAGE_MODULES:
        if name in sys.modules:
            del sys.modules[name]
    board = image_module(decision.slot, "board_rp2")
    logic = image_module(decision.slot, "logic")
    parts, uart = board.build(state)
    mcu = logic.Mcu(
        parts,
        version=decision.version,
        boot_count=decision.boot_count,
        reset_cause=decision.reset_cause,
        trial=decision.trial,
        on_healthy=state.confirm,
    )
    clock = Clock()
    mcu.start(clock.now())
    while True:
        data = uart.read()
        now = clock.now()
        if data:
            mcu.feed(data, now)
        mcu.tick(now)
        time.sleep_ms(LOOP_SLEEP_MS)


if __name__ == "__main__":
    run()
