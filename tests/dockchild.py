"""A dock's `picket agent run` as a child process on a fast clock, for kill -9 tests.

    python tests/dockchild.py CONFIG EPOCH_MS SPEEDUP

The daemon's clocks (monotonic and system) both read EPOCH_MS + (real ms since EPOCH_MS) x
SPEEDUP, the formula the test steps its simulated drone with, so the two processes share
one fast clock and a killed dock can be started again on the same timeline. SIGTERM stops
it as `picket agent run` stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from agent.config import load_config
from agent.daemon import AgentRun


def fast_clock(epoch_ms: int, speedup: float) -> int:
    return epoch_ms + int((time.time() * 1000 - epoch_ms) * speedup)


async def main(config: Path, epoch_ms: int, speedup: float) -> None:
    def clock() -> int:
        return fast_clock(epoch_ms, speedup)

    run = AgentRun(load_config(config), mono_ms=clock, wall_ms=clock, stop_event=asyncio.Event())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, run.stop)
    await run.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
