"""Real peers for tests, shared by several test modules: the center in-process, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import AgentConfig, load_config
from agent.store.outbox import Builder, Built
from center.service import CenterService
from contract.fix import TimeSource
from contract.records import ChainPosition, RecordType, build
from picket.argtypes import center_tls
from provisioning.brokerconf import write_broker_config
from provisioning.device import DeviceFiles, provision_device
from provisioning.fleet import Fleet
from simulators.broker import Mosquitto


@contextlib.asynccontextmanager
async def running_center(
    where: Path | str, registry: Path, broker: Mosquitto, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[CenterService]:
    """A center worker, ready, stopped after. `where`: a folder for its center.db (a Path),
    or the database itself (a str: a SQLite path or a PostgreSQL URL)."""
    db = where / "center.db" if isinstance(where, Path) else where
    service = CenterService(db, registry, broker.host, broker.port, tls=tls)
    task = asyncio.create_task(service.run(), name="center")
    try:
        await asyncio.wait_for(service.ready.wait(), timeout=10)
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, timeout=10)


# How long a test waits for something that must happen. It only bounds a failure (a test
# that passes never waits it out), so it is generous: CI runs on a loaded 2-core machine.
DEADLINE_S = 30.0


async def wait_for(cond: Callable[[], object], within_s: float, what: str) -> None:
    """Poll `cond` until it holds; fail after `within_s` seconds (docs/testing.md, Timing)."""
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


def kill_child_at(
    code: str, path: Path, phase: str, raw: bytes | None = None, *, timeout: float = 30
) -> None:
    """Run `code` (a script that prints `ready`, then `phase` when it gets there) in a real
    process on `path` (and the command `raw`, if any), and kill -9 it at that moment."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), phase, *([] if raw is None else [raw.hex()])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines == [b"ready\n", phase.encode() + b"\n"], (lines, proc.stderr)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=timeout)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    assert proc.returncode == -signal.SIGKILL


def signed(
    key: Ed25519PrivateKey,
    device: str,
    rtype: RecordType,
    body: Mapping[int, object],
    time_ms: int | None = None,
) -> Builder:
    """An outbox builder for one record of `rtype` (GNSS time: `time_ms`, default now)."""
    t = now_ms() if time_ms is None else time_ms

    def make(pos: ChainPosition) -> Built:
        raw = build(
            key,
            device=device,
            chain=pos,
            rtype=rtype,
            time_ms=t,
            time_source=TimeSource.GNSS,
            body=body,
        )
        return Built(rtype, t, raw)

    return make


def _open_fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


@contextlib.contextmanager
def no_fds_left(ignore: str | None = None) -> Iterator[None]:
    """Fail if the block leaves file descriptors open (ptys, pipes, sockets, log files);
    targets containing `ignore` (an event loop's "eventpoll") are not counted."""
    before = _open_fds()
    yield
    left = {
        fd: target
        for fd, target in _open_fds().items()
        if before.get(fd) != target and (ignore is None or ignore not in target)
    }
    assert not left, f"file descriptors left open: {left}"


REPO = Path(__file__).resolve().parents[1]


async def picket_json(*args: object) -> dict[str, Any]:
    """`python -m picket ARGS` in the repository: it must exit 0; its JSON output, a map."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "picket", *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE_S)
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc
