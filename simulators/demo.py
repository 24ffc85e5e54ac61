"""`picket demo`: the whole spine on one machine, on a virtual clock.

Provisions N devices, starts a private Mosquitto and the center (as its own process, the
way a site runs it), then runs one real agent per device in this process: walkers emit
NMEA second by second of virtual time, as fast as the CPU allows, while each device's
uplink syncs over real MQTT in real time. Every HEALTH_INTERVAL_S of virtual time each
agent also stores a health record. When every walker has finished its shift the demo
waits for every outbox to drain, stops everything, and audits the center database
against what the devices created. Nothing here is faked: only the GNSS sky is simulated.

Members also report field events (simulators/fieldevents.py) at `events_per_hour` per
member-hour through the device's own `report_event`, each agent's uplink uploads their
photos and notes in chunks, and a desk on the center's database accepts, dispatches and
closes them; the drain waits for every attachment too, and the audit counts events and
attachments at the center.

With `faults`, the fleet suffers them while it works (simulators/faults.py plans when;
`_Fleet` is what they act on). Killing an agent is what kill -9 does to the daemon: its
uplink task is cancelled, its engine (and any visit in progress) forgotten, and its
outbox connection dropped without a close; after a pause a new agent starts from the same
config and outbox file, at the next boot. A device with a link fault talks to the broker
through its own LinkProxy (simulators/proxy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Plan
from agent.config import AgentConfig, load_config
from agent.events.attachstore import AttachmentStore
from agent.events.mine import attachments_path
from agent.events.report import reconcile
from agent.health import store_agent_health
from agent.store.outbox import Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from agent.uplink.sync import SyncCore
from center.audit import audit
from center.events.catalogue import load as load_catalogue
from contract.eventcommands import Catalogue
from contract.protocol import MAX_BATCH
from contract.records import RecordType
from provisioning.brokerconf import write_broker_config
from provisioning.device import provision_device, registry_path
from provisioning.fleet import Fleet
from simulators.broker import Mosquitto
from simulators.district import generate_district
from simulators.faults import (
    FaultKind,
    FaultPlan,
    VirtualClock,
    plan_faults,
    run_faults,
)
from simulators.fieldevents import (
    DEFAULT_EVENTS_PER_HOUR,
    MAX_EVENTS_PER_HOUR,
    Desk,
    MemberReports,
    attach_uploader,
    audit_events,
)
from simulators.progress import ProgressSink
from simulators.proxy import LinkProxy
from simulators.simerror import SimulatorError
from simulators.walker import Walker
from simulators.workdir import run_folder

SHIFT_START_MS = 1_772_323_200_000  # 2026-03-01 00:00 UTC (08:00 in Chongqing)
DRAIN_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 30.0  # after the drain, for the desk to close the last events
HEALTH_INTERVAL_S = 300  # virtual seconds between a device's health records
# Real-time settings of the demo's uplinks: a keepalive short enough that a half-open link
# is noticed in seconds, and backoff and resend times that fit a run of a minute or two. A
# connection reset before the CONNACK (a refused link-flap) costs aiomqtt the whole connect
# timeout, hence a short one on this loopback broker.
UPLINK = UplinkOptions(
    keepalive_s=4, connect_timeout_s=3.0, publish_timeout_s=5.0, backoff_max_s=2.0
)
ACK_TIMEOUT_MS = 5_000
MAX_DEVICES = 2_747  # the full district's members (docs/district.md): `sim fleet` beyond
MAX_MINUTES = 24 * 60
# Open files the demo's process holds: a base (Python, the fleet, the center's pipe) and per
# device its outbox and its attachment store (SQLite: database, WAL, shared memory each) and
# its MQTT client (a socket and paho's wake-up socket pair); a device behind a link-fault
# proxy holds three more.
FILES_BASE, FILES_PER_DEVICE, FILES_PER_PROXY = 64, 9, 3


class DemoError(SimulatorError):
    """The demo cannot run: bad options, a used folder, or the center did not start."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    devices: int = 20
    minutes: float = 60.0
    seed: int = 7
    workdir: Path | None = None
    faults: tuple[FaultKind, ...] = ()
    events_per_hour: float = DEFAULT_EVENTS_PER_HOUR  # field events, per member-hour


@dataclass(slots=True)
class _Device:
    index: int
    config: AgentConfig
    walker: Walker
    agent: DeviceAgent
    uplink: Uplink
    store: AttachmentStore
    reports: MemberReports
    proxy: LinkProxy | None = None
    task: asyncio.Task[None] | None = None
    alive: bool = True
    started_ms: int = SHIFT_START_MS  # virtual time of this agent's start
    created: Counter[RecordType] = field(default_factory=Counter)  # by agents before this one
    nmea_errors: int = 0  # likewise
    abandoned: list[Outbox | AttachmentStore] = field(default_factory=list)  # a kill dropped

    @property
    def device(self) -> str:
        return self.config.device

    def checkins(self) -> int:
        return self.created[RecordType.CHECKIN] + self.agent.created[RecordType.CHECKIN]

    def parse_errors(self) -> int:
        stats = self.agent.parser.stats
        return self.nmea_errors + stats.bad_checksum + stats.malformed


def device_id(i: int) -> str:
    return f"h{i + 1:04d}"


async def _start_center(workdir: Path, broker: Mosquitto) -> asyncio.subprocess.Process:
    tls_args = [] if broker.tls_dir is None else ["--tls", str(workdir / "center-tls")]
    with (workdir / "center.log").open("ab") as log:  # the process keeps its own copy
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
            *tls_args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    except TimeoutError:
        line = b""
    if not line.startswith(b"ready"):
        proc.kill()
        await proc.wait()
        raise DemoError(f"the center did not start; see {workdir / 'center.log'}")
    return proc


async def _stop_center(proc: asyncio.subprocess.Process) -> dict[str, object]:
    if proc.returncode is not None:
        return {}
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
    try:
        stats = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return stats if isinstance(stats, dict) else {}


class _Fleet:
    """The devices, the broker and the center: what the demo runs and faults act on."""

    def __init__(
        self, workdir: Path, plan: Plan, broker: Mosquitto, clock: VirtualClock, trust: Fleet
    ) -> None:
        self.trust = trust  # the fleet's CA and keys: devices enroll against it
        # Certificates are checked by a real broker against the real clock, not the virtual one.
        self.issued_ms = int(time.time() * 1000)
        self.workdir = workdir
        self.plan = plan
        self.broker = broker
        self.clock = clock
        self.devices: list[_Device] = []
        self.center: asyncio.subprocess.Process | None = None
        self.center_stats: Counter[str] = Counter()
        self.tg: asyncio.TaskGroup | None = None
        self.catalogue: Catalogue = load_catalogue()  # what the center distributes

    # -- building -------------------------------------------------------------------------

    def provision(self, opts: DemoOptions, proxies: dict[int, LinkProxy]) -> None:
        shift_end = SHIFT_START_MS + int(opts.minutes * 60_000)
        for i in range(opts.devices):
            dev = device_id(i)
            files = provision_device(
                self.trust,
                dev,
                self.workdir / "devices" / dev,
                broker_host=self.broker.host,
                broker_port=self.broker.port,
                now_ms=self.issued_ms,
                tls=self.broker.tls_dir is not None,
            )
            cfg = load_config(files.config)
            rng = random.Random(opts.seed * 1_000_003 + i)
            line = self.plan.lines[i % len(self.plan.lines)]
            walker = Walker(dev, self.plan, line, rng, SHIFT_START_MS + i * 1000, shift_end)
            reports = MemberReports.of(
                dev,
                i,
                seed=opts.seed,
                rate_per_hour=opts.events_per_hour,
                start_ms=SHIFT_START_MS,
                end_ms=shift_end,
                catalogue=self.catalogue,
            )
            agent, uplink, store = self._boot(cfg, proxies.get(i))
            self.devices.append(
                _Device(i, cfg, walker, agent, uplink, store, reports, proxies.get(i))
            )

    def _boot(
        self, cfg: AgentConfig, proxy: LinkProxy | None
    ) -> tuple[DeviceAgent, Uplink, AttachmentStore]:
        """What the daemon does at start: open the outbox and the attachment store, count a
        boot, make the agent, its uplink and the uploader."""
        outbox = Outbox(cfg.outbox_path, cfg.device)
        outbox.begin_boot()
        store = AttachmentStore(attachments_path(cfg.outbox_path), cfg.events.quota_bytes)
        reconcile(outbox, store, SHIFT_START_MS + self.clock.now_ms)
        address = (
            BrokerAddress(cfg.broker_host, cfg.broker_port)
            if proxy is None
            else BrokerAddress(proxy.host, proxy.port)
        )
        core = SyncCore(
            batch_size=32,
            max_batch_size=MAX_BATCH,
            ack_timeout_ms=ACK_TIMEOUT_MS,
            first_batch_id=random.getrandbits(31),
        )
        uplink = Uplink(outbox, address, core=core, options=replace(UPLINK, tls=cfg.tls))
        attach_uploader(uplink, store, cfg.events.chunk_bytes, poll_s=1.0)
        agent = DeviceAgent(
            cfg.device, cfg.load_key(), self.plan, outbox, on_stored=uplink.on_stored
        )
        return agent, uplink, store

    def spawn(self, d: _Device) -> None:
        assert self.tg is not None
        d.task = self.tg.create_task(d.uplink.run(), name=f"uplink-{d.device}")

    # -- running --------------------------------------------------------------------------

    def store_health(self, d: _Device, t_ms: int) -> None:
        store_agent_health(d.agent, t_ms, d.started_ms)

    def report_events(self, d: _Device, t_ms: int) -> None:
        if not d.reports.planned or d.reports.planned[0].at_ms > t_ms:
            return  # the common case, every device-second
        d.reports.due(
            t_ms,
            outbox=d.agent.outbox,
            store=d.store,
            key=d.agent.key,
            settings=d.config.events,
            catalogue=self.catalogue,
            fix=d.agent.last_fix,
            uplink=d.uplink,
        )

    async def stop_uplinks(self) -> None:
        for d in self.devices:
            d.uplink.stop()
        tasks = [d.task for d in self.devices if d.task is not None]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)

    def close(self) -> None:
        for d in self.devices:
            d.agent.outbox.close()
            d.store.close()
            for box in d.abandoned:
                box.close()

    # -- faults (simulators.faults.FaultTarget) ---------------------------------------------

    async def kill_broker(self) -> None:
        self.broker.kill()

    async def start_broker(self) -> None:
        await asyncio.to_thread(self.broker.start)

    async def kill_center(self) -> None:
        if self.center is not None and self.center.returncode is None:
            self.center.kill()  # SIGKILL: no goodbye, no stats
            await self.center.wait()

    async def start_center(self) -> None:
        self.center = await _start_center(self.workdir, self.broker)

    def kill_agent(self, device: int) -> bool:
        d = self.devices[device]
        if not d.alive:
            return False
        d.alive = False
        if d.task is not None:
            d.task.cancel()
        d.created.update(d.agent.created)
        stats = d.agent.parser.stats
        d.nmea_errors += stats.bad_checksum + stats.malformed
        d.abandoned.append(d.agent.outbox)  # never closed while the demo runs, as after kill -9
        d.abandoned.append(d.store)
        return True

    def start_agent(self, device: int) -> None:
        d = self.devices[device]
        d.agent, d.uplink, d.store = self._boot(d.config, d.proxy)
        d.started_ms = SHIFT_START_MS + self.clock.now_ms
        d.alive = True
        self.spawn(d)

    def proxy(self, device: int) -> LinkProxy:
        proxy = self.devices[device].proxy
        assert proxy is not None, f"device {device} is not routed through a proxy"
        return proxy


def _summary_line(t_ms: int, fleet: _Fleet, phase: str) -> str:
    minute = (t_ms - SHIFT_START_MS) / 60_000
    made = sum(d.checkins() for d in fleet.devices)
    queued = sum(d.agent.outbox.depth() for d in fleet.devices if d.alive)
    return f"{phase}: minute {minute:5.1f} · check-ins {made} · queued on devices {queued}"


async def _simulate(fleet: _Fleet, progress: ProgressSink) -> int:
    t = SHIFT_START_MS
    health_every = HEALTH_INTERVAL_S * 1000
    while True:
        active = [d for d in fleet.devices if not d.walker.done]
        if not active:
            break
        for d in active:
            data = d.walker.tick(t)  # the walker walks on while its device is off
            if data and d.alive:
                d.agent.on_nmea(data)
                if (t - d.started_ms) % health_every == health_every - 1000:
                    fleet.store_health(d, t)
            if d.alive:  # a member whose handset is off reports once it is back
                fleet.report_events(d, t)
        t += 1000
        fleet.clock.advance(t - SHIFT_START_MS)
        await asyncio.sleep(0)  # let the uplinks and acknowledgements run
        progress.update(_summary_line(t, fleet, "shift"))
    for d in fleet.devices:
        if d.alive:
            d.agent.finish()
    fleet.clock.finish()
    return t


async def _drain(fleet: _Fleet, t: int, progress: ProgressSink) -> bool:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(
            d.alive and d.agent.outbox.depth() == 0 and d.store.usage().waiting == 0
            for d in fleet.devices
        ):
            return True
        progress.update(_summary_line(t, fleet, "draining"))
        await asyncio.sleep(0.05)
    return False


async def _start_proxies(
    plan: FaultPlan, broker: Mosquitto, stack: contextlib.AsyncExitStack
) -> dict[int, LinkProxy]:
    proxies = {}
    for i in sorted(plan.routed):
        proxies[i] = await stack.enter_async_context(LinkProxy(broker.host, broker.port))
    return proxies


def open_files_needed(devices: int, proxied: int = 0) -> int:
    return FILES_BASE + FILES_PER_DEVICE * devices + FILES_PER_PROXY * proxied


def ensure_open_files(devices: int, proxied: int = 0) -> None:
    """Refuse a run the open-file limit cannot hold, before anything is made, instead of
    failing later with "unable to open database file". The soft limit is raised up to the
    hard one when that is enough; beyond it, the message says what to raise."""
    need = open_files_needed(devices, proxied)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    if hard == resource.RLIM_INFINITY or need <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return
    raise DemoError(
        f"--devices {devices} needs about {need:,} open files and this shell allows {hard:,}: "
        f"raise the limit (`ulimit -n {need}`, as root or in /etc/security/limits.conf) "
        "or run fewer devices"
    )


async def run_demo(opts: DemoOptions, progress: ProgressSink) -> dict[str, object]:
    if not 1 <= opts.devices <= MAX_DEVICES or not 0 < opts.minutes <= MAX_MINUTES:
        raise DemoError(
            f"--devices must be 1 to {MAX_DEVICES:,} and --minutes above 0 and at most "
            f"{MAX_MINUTES:,}"
        )
    if not 0 <= opts.events_per_hour <= MAX_EVENTS_PER_HOUR:
        raise DemoError(f"--events-per-hour must be 0 to {MAX_EVENTS_PER_HOUR:g}")
    wall0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = run_folder(stack, opts.workdir, "picket-demo-", DemoError)
        plan = generate_district(opts.seed)
        faults = plan_faults(
            opts.faults, devices=opts.devices, shift_ms=int(opts.minutes * 60_000), seed=opts.seed
        )
        ensure_open_files(opts.devices, len(faults.routed))
        trust = stack.enter_context(Fleet.init(workdir / "fleet", int(time.time() * 1000)))
        broker = Mosquitto(workdir / "broker", tls_dir=workdir / "broker-tls")
        write_broker_config(trust, workdir / "broker-tls", broker.port, int(time.time() * 1000))
        trust.issue_center(workdir / "center-tls", int(time.time() * 1000))
        await asyncio.to_thread(broker.start)
        stack.callback(broker.stop)
        fleet = _Fleet(workdir, plan, broker, VirtualClock(), trust)
        async with contextlib.AsyncExitStack() as astack:
            proxies = await _start_proxies(faults, broker, astack)
            fleet.provision(opts, proxies)
            await fleet.start_center()
            desk = Desk(workdir / "center.db")  # the center's operator: accept … close
            try:
                async with asyncio.TaskGroup() as tg:
                    fleet.tg = tg
                    for d in fleet.devices:
                        fleet.spawn(d)
                    desk_task = tg.create_task(desk.run(), name="desk")
                    injector = tg.create_task(run_faults(faults, fleet, fleet.clock), name="faults")
                    t_end = await _simulate(fleet, progress)
                    injected = await injector  # every fault restored, every agent back
                    drained = await _drain(fleet, t_end, progress)
                    desk.stop()
                    await desk_task
                    await desk.settle(SETTLE_TIMEOUT_S)
                    await fleet.stop_uplinks()
                progress.done(_summary_line(t_end, fleet, "done"))
                created = {d.device: d.agent.outbox.last_seq for d in fleet.devices}
            finally:
                desk.close()
                if fleet.center is not None:
                    fleet.center_stats.update(await _stop_center(fleet.center))
                fleet.close()
        found = audit(workdir / "center.db", registry_path(workdir / "fleet"))
        reported = {d.device: d.reports.reported for d in fleet.devices}
        field_events = audit_events(workdir / "center.db", reported)
        wall = time.monotonic() - wall0
        sim_s = (t_end - SHIFT_START_MS) / 1000
        devices = fleet.devices
        return {
            "devices": opts.devices,
            "minutes": opts.minutes,
            "seed": opts.seed,
            "points": len(plan.points),
            "lines": len(plan.lines),
            "checkins_expected": sum(len(d.walker.visits) for d in devices),
            "checkins_recorded": sum(d.checkins() for d in devices),
            "records_created": sum(created.values()),
            "records_delivered": found.delivered,
            "records_verified": found.verified,
            "records_lost": found.lost(created),
            "records_duplicated": found.duplicated,
            "duplicates_by_kind": dict(found.duplicates_by_kind),
            "batches_redelivered": found.batches_redelivered,
            "records_refused": found.refused,
            "duplicates_suppressed": fleet.center_stats.get("duplicates", 0),
            "nmea_errors": sum(d.parse_errors() for d in devices),
            "drained": drained,
            "simulated_seconds": sim_s,
            "wall_seconds": round(wall, 2),
            "speedup": round(sim_s / wall, 1) if wall > 0 else None,
            "workdir": str(workdir) if opts.workdir else None,
            "faults_injected": dict(sorted(injected.items())),
            "events_per_hour": opts.events_per_hour,
            **field_events,
        }
