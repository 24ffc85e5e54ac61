"""Real peers for tests, shared by several test modules: the center in-process, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig, load_config
from center.service import CenterService
from picket.argtypes import center_tls
from provisioning.brokerconf import write_broker_config
from provisioning.device import DeviceFiles, provision_device
from provisioning.fleet import Fleet
from simulators.broker import Mosquitto


@contextlib.asynccontextmanager
async def running_center(
    tmp_path: Path, registry: Path, broker: Mosquitto, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[CenterService]:
    service = CenterService(tmp_path / "center.db", registry, broker.host, broker.port, tls=tls)
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


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class TlsFleet:
    """A fleet as a technician sets it up: its CA and keys, its TLS broker (the configuration
    `picket provision broker-config` writes), and the center's certificate."""

    root: Path
    fleet: Fleet
    broker: Mosquitto
    center_tls: Path

    @property
    def registry(self) -> Path:
        return self.fleet.dir / "registry.db"

    def provision(self, device: str, *, fleet: Fleet | None = None) -> DeviceFiles:
        """Enroll, approve and install `device` (certificates valid from now, real time)."""
        return provision_device(
            fleet or self.fleet,
            device,
            self.root / "devices" / device,
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            now_ms=now_ms(),
        )

    def device(self, device: str, *, fleet: Fleet | None = None) -> AgentConfig:
        return load_config(self.provision(device, fleet=fleet).config)

    def center_context(self) -> ssl.SSLContext:
        ctx = center_tls(self.center_tls)
        assert ctx is not None
        return ctx


@contextlib.contextmanager
def tls_fleet_in(root: Path) -> Iterator[TlsFleet]:
    fleet = Fleet.init(root / "fleet", now_ms(), name="test")
    broker = Mosquitto(root / "broker", tls_dir=root / "broker-tls")
    write_broker_config(fleet, root / "broker-tls", broker.port, now_ms())
    fleet.issue_center(root / "center-tls", now_ms())
    try:
        with broker:
            yield TlsFleet(root, fleet, broker, root / "center-tls")
    finally:
        fleet.close()
