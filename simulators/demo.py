"""`picket demo`: the whole spine on one machine, on a virtual clock.

Provisions N devices, starts a private Mosquitto and the center (as its own process, the
way a site runs it), then runs one real agent per device in this process: walkers emit
NMEA second by second of virtual time, as fast as the CPU allows, while each device's
uplink syncs over real MQTT in real time. When every walker has finished its shift the
demo waits for every outbox to drain, stops everything, and audits the center database
against what the devices created. Nothing here is faked: only the GNSS sky is simulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config import load_config
from agent.device import DeviceAgent
from agent.outbox import Outbox
from agent.plan import Plan
from agent.records import RecordType
from agent.uplink import BrokerAddress, Uplink
from center.audit import audit
from picket.progress import Progress
from provisioning.device import provision_device, registry_path
from simulators.broker import Mosquitto
from simulators.district import generate_district
from simulators.walker import Walker

SHIFT_START_MS = 1_772_323_200_000  # 2026-03-01 00:00 UTC (08:00 in Chongqing)
DRAIN_TIMEOUT_S = 60.0


class DemoError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class DemoOptions:
    devices: int = 20
    minutes: float = 60.0
    seed: int = 7
    workdir: Path | None = None


@dataclass(slots=True)
class _Device:
    agent: DeviceAgent
    uplink: Uplink
    walker: Walker


def device_id(i: int) -> str:
    return f"h{i + 1:04d}"


async def _start_center(workdir: Path, broker: Mosquitto) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "picket",
        "center",
        "run",
        "--db",
        str(workdir / "center.db"),
        "--registry",
        str(registry_path(workdir / "fleet")),
        "--broker",
        f"{broker.host}:{broker.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=(workdir / "center.log").open("ab"),
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    except TimeoutError:
        line = b""
    if not line.startswith(b"ready"):
        proc.kill()
        raise DemoError(f"the center did not start; see {workdir / 'center.log'}")
    return proc


async def _stop_center(proc: asyncio.subprocess.Process) -> dict[str, object]:
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
    try:
        stats = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return stats if isinstance(stats, dict) else {}


def _make_devices(opts: DemoOptions, workdir: Path, plan: Plan, broker: Mosquitto) -> list[_Device]:
    fleet = workdir / "fleet"
    shift_end = SHIFT_START_MS + int(opts.minutes * 60_000)
    devices = []
    for i in range(opts.devices):
        dev = device_id(i)
        files = provision_device(
            fleet,
            dev,
            workdir / "devices" / dev,
            broker_host=broker.host,
            broker_port=broker.port,
            now_ms=SHIFT_START_MS,
        )
        cfg = load_config(files.config)
        outbox = Outbox(cfg.outbox_path, cfg.device)
        outbox.begin_boot()
        uplink = Uplink(outbox, BrokerAddress(cfg.broker_host, cfg.broker_port))
        agent = DeviceAgent(cfg.device, cfg.load_key(), plan, outbox, on_stored=uplink.on_stored)
        rng = random.Random(opts.seed * 1_000_003 + i)
        line = plan.lines[i % len(plan.lines)]
        walker = Walker(dev, plan, line, rng, SHIFT_START_MS + i * 1000, shift_end)
        devices.append(_Device(agent, uplink, walker))
    return devices


def _summary_line(t_ms: int, devices: list[_Device], phase: str) -> str:
    minute = (t_ms - SHIFT_START_MS) / 60_000
    made = sum(d.agent.created[RecordType.CHECKIN] for d in devices)
    queued = sum(d.agent.outbox.depth() for d in devices)
    return f"{phase}: minute {minute:5.1f} · check-ins {made} · queued on devices {queued}"


async def _simulate(devices: list[_Device], progress: Progress) -> int:
    t = SHIFT_START_MS
    while True:
        active = [d for d in devices if not d.walker.done]
        if not active:
            break
        for d in active:
            data = d.walker.tick(t)
            if data:
                d.agent.on_nmea(data)
        t += 1000
        await asyncio.sleep(0)  # let the uplinks and acknowledgements run
        progress.update(_summary_line(t, devices, "shift"))
    for d in devices:
        d.agent.finish()
    return t


async def _drain(devices: list[_Device], t: int, progress: Progress) -> bool:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(d.agent.outbox.depth() == 0 for d in devices):
            return True
        progress.update(_summary_line(t, devices, "draining"))
        await asyncio.sleep(0.05)
    return False


async def run_demo(opts: DemoOptions, progress: Progress) -> dict[str, object]:
    if opts.devices < 1 or opts.minutes <= 0:
        raise DemoError("--devices must be at least 1 and --minutes above 0")
    wall0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        if opts.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="picket-demo-")))
        else:
            workdir = opts.workdir
            workdir.mkdir(parents=True, exist_ok=True)
            if (workdir / "center.db").exists():
                raise DemoError(f"{workdir} already holds a demo run (center.db); use a new folder")
        plan = generate_district(opts.seed)
        broker = Mosquitto(workdir / "broker")
        await asyncio.to_thread(broker.start)
        stack.callback(broker.stop)
        devices = _make_devices(opts, workdir, plan, broker)
        center = await _start_center(workdir, broker)
        try:
            async with asyncio.TaskGroup() as tg:
                for d in devices:
                    tg.create_task(d.uplink.run(), name=f"uplink-{d.agent.device}")
                t_end = await _simulate(devices, progress)
                drained = await _drain(devices, t_end, progress)
                for d in devices:
                    d.uplink.stop()
            progress.done(_summary_line(t_end, devices, "done"))
            created = {d.agent.device: d.agent.outbox.last_seq for d in devices}
        finally:
            center_stats = await _stop_center(center)
            for d in devices:
                d.agent.outbox.close()
        found = audit(workdir / "center.db", registry_path(workdir / "fleet"))
        wall = time.monotonic() - wall0
        sim_s = (t_end - SHIFT_START_MS) / 1000
        return {
            "devices": opts.devices,
            "minutes": opts.minutes,
            "seed": opts.seed,
            "points": len(plan.points),
            "lines": len(plan.lines),
            "checkins_expected": sum(len(d.walker.visits) for d in devices),
            "checkins_recorded": sum(d.agent.created[RecordType.CHECKIN] for d in devices),
            "records_created": sum(created.values()),
            "records_delivered": found.delivered,
            "records_verified": found.verified,
            "records_lost": found.lost(created),
            "records_duplicated": found.duplicated,
            "records_refused": found.refused,
            "duplicates_suppressed": center_stats.get("duplicates", 0),
            "nmea_errors": sum(
                d.agent.parser.stats.bad_checksum + d.agent.parser.stats.malformed for d in devices
            ),
            "drained": drained,
            "simulated_seconds": sim_s,
            "wall_seconds": round(wall, 2),
            "speedup": round(sim_s / wall, 1) if wall > 0 else None,
            "workdir": str(workdir) if opts.workdir else None,
        }
