"""Real peers for tests, shared by several test modules: the center in-process, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from center.service import CenterService
from simulators.broker import Mosquitto


@contextlib.asynccontextmanager
async def running_center(
    tmp_path: Path, registry: Path, broker: Mosquitto
) -> AsyncIterator[CenterService]:
    service = CenterService(tmp_path / "center.db", registry, broker.host, broker.port)
    task = asyncio.create_task(service.run(), name="center")
    try:
        await asyncio.wait_for(service.ready.wait(), timeout=10)
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, timeout=10)


async def wait_for(cond: Callable[[], object], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
