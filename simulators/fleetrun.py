"""`picket sim fleet`: a whole district's devices through a shift, on every core.

The parent holds what must be one: the fleet's roots of trust, the TLS broker, the center
(its own process), the virtual clock and the scenario. Devices are dealt round-robin to
worker processes (simulators/fleetworker.py), which provision them through the real
enrollment path and run the real agent code. The clock moves in steps: every worker runs
its devices up to the step's end, then the parent applies the faults due and moves on, so
a fault lands at the same virtual moment for all. After the shift the workers finish open
visits, their outboxes drain, and the center's database is audited against what every
device created (simulators/fleetreport.py turns all of it into the report). What parent
and workers say to each other is typed in simulators/fleetwire.py; the report knows
nothing of this module, so the import runs one way: runner → report → wire.

With `shard=(i, n)` only every n-th device from the i-th is run, against a broker and a
center someone else started (`broker=` and the fleet folder they share): several machines
then run one district (docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from agent.checkin.geo import point_in_ring
from agent.checkin.planfile import load_plan
from center.audit import audit
from provisioning.brokerconf import write_broker_config
from provisioning.fleet import Fleet
from simulators.bigdistrict import members as district_members
from simulators.broker import Mosquitto
from simulators.fieldevents import DEFAULT_EVENTS_PER_HOUR
from simulators.fleetdocks import FleetDocks
from simulators.fleetevents import FleetDesk, events_report
from simulators.fleetreport import build_report, write_html
from simulators.fleetwire import (
    Advance,
    Answer,
    AskPositions,
    AskQueued,
    At,
    Backlog,
    Command,
    DeviceCommand,
    Done,
    Duplicate,
    Failed,
    Final,
    Finish,
    Gnss,
    Kill,
    Link,
    MemberSpec,
    Positions,
    Ready,
    Restart,
    Spoof,
    Stop,
    WorkerSpec,
    decode_answer,
    encode,
)
from simulators.progress import ProgressSink
from simulators.scenario import COLD_START_S, Fault, Scenario, load_scenario
from simulators.simerror import SimulatorError
from simulators.workdir import run_folder

START_MS = 1_772_323_200_000  # 2026-03-01 00:00 UTC (08:00 in Chongqing): the shift begins
STEP_MS = 30_000  # virtual time between two looks at positions while a zone fault lasts
# Otherwise workers run this far between barriers (and never past a fault's moment): every
# barrier waits for the slowest worker, so fewer barriers keep both cores busy.
LONG_STEP_MS = 120_000
# After the shift a member finishes the point they are at (as in the demo), for at most this.
OVERTIME_MS = 20 * 60_000
DRAIN_TIMEOUT_S = 300.0


class FleetError(SimulatorError):
    """The run cannot go on: bad options, a used folder, or a worker or the center failed."""


A = TypeVar("A", Ready, At, Done, Positions, Backlog, Final)  # what a command is answered with


@dataclass(frozen=True, slots=True)
class FleetOptions:
    plan_dir: Path
    devices: int | None = None  # None: all
    hours: float = 1.0
    seed: int = 5
    workers: int = 0  # 0: one per core
    scenario: Path | None = None
    workdir: Path | None = None
    shard: tuple[int, int] = (0, 1)
    broker: tuple[str, int] | None = None  # an external broker (shards); None: start one
    html: Path | None = None
    nmea_every: int = 10  # every n-th device's receiver speaks NMEA to the parser (1: all)
    docks: bool = True  # the district's drone docks fly too (not in a shard: no own center)
    events_per_hour: float = DEFAULT_EVENTS_PER_HOUR  # field events per member-hour


@dataclass(slots=True)
class _Proc:
    index: int
    proc: asyncio.subprocess.Process
    devices: list[str]

    async def ask(self, cmd: Command, expect: type[A], timeout_s: float = 3600) -> A:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((encode(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(expect, timeout_s)

    async def read(self, expect: type[A], timeout_s: float) -> A:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise FleetError(f"worker {self.index} exited (code {await self.proc.wait()})")
        answer: Answer = decode_answer(line)
        if isinstance(answer, Failed):
            raise FleetError(f"worker {self.index}: {answer.error}")
        if not isinstance(answer, expect):
            raise FleetError(f"worker {self.index}: {expect.OP!r} expected, not {answer}")
        return answer


@dataclass(slots=True)
class _Run:
    opts: FleetOptions
    workdir: Path
    members: list[MemberSpec]
    scenario: Scenario
    zones: dict[str, tuple[tuple[float, float], ...]]
    broker: Mosquitto | None = None
    host: str = "127.0.0.1"
    port: int = 0
    center: asyncio.subprocess.Process | None = None
    workers: list[_Proc] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    active: dict[int, set[str]] = field(default_factory=dict)  # zone fault → devices inside
    simulated_ms: int = 0
    trust: Fleet | None = None
    docks: FleetDocks | None = None
    desk: FleetDesk | None = None  # the center's operator on its database (not in a shard)

    def owner(self, device: str) -> list[_Proc]:
        return [w for w in self.workers if device in w.devices]

    async def tell(self, cmd: DeviceCommand) -> None:
        """`cmd` to the workers that run some of its devices, each naming only its own."""
        wanted = set(cmd.devices)
        await asyncio.gather(
            *(
                w.ask(replace(cmd, devices=tuple(d for d in w.devices if d in wanted)), Done)
                for w in self.workers
                if wanted.intersection(w.devices)
            )
        )


def _raise_fd_limit() -> None:
    """Thousands of TLS connections and SQLite files: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _start_center(run: _Run) -> None:
    workdir = run.workdir
    with (workdir / "center.log").open("ab") as log:
        run.center = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "picket", "center", "run",
            "--db", str(workdir / "center.db"),
            "--registry", str(workdir / "fleet" / "registry.db"),
            "--broker", f"{run.host}:{run.port}",
            "--tls", str(workdir / "center-tls"),
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    assert run.center.stdout is not None
    line = await asyncio.wait_for(run.center.stdout.readline(), 60)
    if not line.startswith(b"ready"):
        raise FleetError(f"the center did not start; see {workdir / 'center.log'}")


async def _stop_center(run: _Run, *, kill: bool = False) -> dict[str, Any]:
    proc, run.center = run.center, None
    if proc is None or proc.returncode is not None:
        return {}
    if kill:
        proc.kill()
        await proc.wait()
        return {}
    proc.terminate()
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    with contextlib.suppress(ValueError, IndexError):
        stats = json.loads(out.decode().strip().splitlines()[-1])
        return stats if isinstance(stats, dict) else {}
    return {}


async def _start_workers(run: _Run, count: int) -> None:
    slices: list[list[MemberSpec]] = [[] for _ in range(count)]
    for i, m in enumerate(run.members):
        slices[i % count].append(m)
    end_ms = START_MS + int(run.opts.hours * 3_600_000)
    for i, chunk in enumerate(slices):
        if not chunk:
            continue
        spec = WorkerSpec(
            worker=i,
            workdir=run.workdir,
            plan=run.opts.plan_dir / "plan.geojson",
            fleet=run.workdir / "fleet",
            seed=run.opts.seed,
            start_ms=START_MS,
            end_ms=end_ms,
            broker_host=run.host,
            broker_port=run.port,
            devices=tuple(chunk),
            nmea_every=run.opts.nmea_every,
            events_per_hour=run.opts.events_per_hour,
        )
        path = run.workdir / f"worker-{i}.json"
        path.write_text(spec.to_json(), encoding="utf-8")
        with (run.workdir / f"worker-{i}.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "simulators.fleetworker", str(path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                limit=1 << 26,
            )  # fmt: skip
        run.workers.append(_Proc(i, proc, [m.id for m in chunk]))
    await asyncio.gather(*(w.read(Ready, 900) for w in run.workers))


async def _zone_faults(run: _Run, t_ms: int, faults: Sequence[Fault]) -> None:
    """Devices entering or leaving the zones of dead-spot / GNSS faults while they last."""
    zone_faults = [
        (i, f) for i, f in enumerate(faults) if f.zones and f.at_ms <= t_ms - START_MS < f.end_ms
    ]
    ended = [i for i in list(run.active) if i not in {i for i, _ in zone_faults}]
    for i in ended:
        await _zone_apply(run, faults[i], sorted(run.active.pop(i)), on=False)
    if not zone_faults:
        return
    answers = await asyncio.gather(*(w.ask(AskPositions(), Positions) for w in run.workers))
    where: dict[str, tuple[float, float]] = {}
    for a in answers:
        where.update(a.positions)
    for i, f in zone_faults:
        rings = [run.zones[z] for z in f.zones]
        inside = {
            d for d, (lat, lon) in where.items() if any(point_in_ring(lat, lon, r) for r in rings)
        }
        before = run.active.get(i, set())
        if i not in run.active:
            run.injected[f.kind] = run.injected.get(f.kind, 0) + 1
        run.active[i] = inside
        await _zone_apply(run, f, sorted(inside - before), on=True)
        await _zone_apply(run, f, sorted(before - inside), on=False)


async def _zone_apply(run: _Run, f: Fault, devices: list[str], *, on: bool) -> None:
    if not devices:
        return
    ids = tuple(devices)
    if f.kind == "dead-spot":
        await run.tell(Link(ids, up=not on))
    elif f.kind == "gnss-outage":
        await run.tell(Gnss(ids, outage=on))
    elif f.kind == "urban-canyon":
        await run.tell(Gnss(ids, noise=f.noise if on else 1.0))


Steps = set[tuple[int, int]]  # (fault index, 0 begun / 1 ended)


async def _timed_faults(run: _Run, t_ms: int, faults: Sequence[Fault], done: Steps) -> None:
    """Start and end the faults that are not about zones, once each."""
    rel = t_ms - START_MS
    for i, f in enumerate(faults):
        if f.zones:
            continue
        if f.at_ms <= rel and (i, 0) not in done:
            done.add((i, 0))
            run.injected[f.kind] = run.injected.get(f.kind, 0) + 1
            await _begin(run, f)
        if f.for_ms and f.end_ms <= rel and (i, 1) not in done and (i, 0) in done:
            done.add((i, 1))
            await _end(run, f)


async def _begin(run: _Run, f: Fault) -> None:
    if f.kind in ("broker-outage", "broker-kill") and run.broker is not None:
        run.broker.kill()
        if f.kind == "broker-kill":
            await asyncio.sleep(1.0)
            await asyncio.to_thread(run.broker.start)
    elif f.kind == "center-restart":
        await _stop_center(run, kill=True)
    elif f.kind == "power-cut":
        await run.tell(Kill(f.devices))
    elif f.kind == "spoof":
        await run.tell(Spoof(f.devices, north_m=f.offset_m, east_m=f.offset_m / 2))
    elif f.kind == "duplicates":
        await run.tell(Duplicate(f.devices))


async def _end(run: _Run, f: Fault) -> None:
    if f.kind == "broker-outage" and run.broker is not None:
        await asyncio.to_thread(run.broker.start)
    elif f.kind == "center-restart":
        await _start_center(run)
    elif f.kind == "power-cut":
        cold = COLD_START_S if f.clock_reset else 0
        await run.tell(Restart(f.devices, cold_s=cold))
    elif f.kind == "spoof":
        await run.tell(Spoof(f.devices, north_m=0.0, east_m=0.0))


def _next_stop(t: int, end: int, faults: Sequence[Fault], *, zones_active: bool) -> int:
    """The next barrier after `t`: a fault's start or end, the shift's end, or a step."""
    if t >= end:
        return t + STEP_MS  # overtime: look often, members finish their point and stop
    rel = t - START_MS
    zone_soon = zones_active or any(
        f.zones and f.at_ms <= rel + LONG_STEP_MS and f.end_ms > rel for f in faults
    )
    stop = min(end, t + (STEP_MS if zone_soon else LONG_STEP_MS))
    moments = [START_MS + m for f in faults for m in (f.at_ms, f.end_ms) if m > rel]
    return min([stop, *moments])


async def _shift(run: _Run, progress: ProgressSink) -> int:
    end = START_MS + int(run.opts.hours * 3_600_000)
    faults = run.scenario.faults
    done: Steps = set()
    t = START_MS
    wall0 = time.monotonic()
    walking = 1
    overtime = end + OVERTIME_MS
    while t < end or (walking and t < overtime):
        await _timed_faults(run, t, faults, done)
        await _zone_faults(run, t, faults)
        t = _next_stop(t, end, faults, zones_active=bool(run.active))
        answers, _ = await asyncio.gather(
            asyncio.gather(*(w.ask(Advance(t), At) for w in run.workers)),
            run.docks.advance(t) if run.docks is not None else asyncio.sleep(0),
        )
        made = sum(a.checkins for a in answers)
        walking = sum(a.walking for a in answers)
        queued = sum(a.queued for a in answers)
        sim_s = (t - START_MS) / 1000
        speed = sim_s / max(1e-6, time.monotonic() - wall0)
        progress.update(
            f"shift: {sim_s / 60:5.1f} of {run.opts.hours * 60:.0f} min · {speed:4.1f}× real time"
            f" · check-ins {made} · queued on devices {queued}"
        )
    # faults still open end with the shift (a broker must be back for the drain)
    for i, f in enumerate(faults):
        if f.for_ms and (i, 0) in done and (i, 1) not in done:
            done.add((i, 1))
            await _end(run, f)
    for i in list(run.active):
        await _zone_apply(run, faults[i], sorted(run.active.pop(i)), on=False)
    run.simulated_ms = t - START_MS
    return t


async def _drain(run: _Run, progress: ProgressSink) -> bool:
    await asyncio.gather(*(w.ask(Finish(), Done) for w in run.workers))
    if run.docks is not None:
        await run.docks.finish()  # a mission in flight lands
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        answers = await asyncio.gather(*(w.ask(AskQueued(), Backlog) for w in run.workers))
        queued = sum(a.queued for a in answers)
        queued += run.docks.queued() if run.docks is not None else 0
        waiting = sum(a.attachments for a in answers)
        progress.update(
            f"draining: {queued} records and {waiting} attachments still on devices", force=False
        )
        if queued == 0 and waiting == 0:
            return True
        await asyncio.sleep(0.5)
    return False


def _members(opts: FleetOptions) -> list[MemberSpec]:
    found = district_members(opts.plan_dir)
    if opts.devices is not None and opts.devices > len(found):
        raise FleetError(f"--devices {opts.devices}: the district has {len(found)} members")
    # fewer than all: spread evenly over the member list, so every tier is in the sample
    n = len(found) if opts.devices is None else opts.devices
    chosen = [found[i * len(found) // n] for i in range(n)]
    i, n = opts.shard
    return [
        MemberSpec(m.device, k, str(m.tier), m.team, m.line)
        for k, m in enumerate(chosen)
        if k % n == i
    ]


def _workdir(stack: contextlib.ExitStack, opts: FleetOptions) -> Path:
    # In RAM where there is a tmpfs: thousands of simulated devices' flash is not what this
    # measures (bench/outbox.py measures real fsyncs); --workdir puts it on disk.
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp inside it: private, unpredictable
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return run_folder(
        stack,
        opts.workdir,
        "picket-fleet-",
        FleetError,
        temp_parent=where,
        reuse=opts.broker is not None,  # shards of one run share the center's folder
    )


async def _prepare(stack: contextlib.ExitStack, run: _Run) -> None:
    """The fleet's roots of trust, and the broker unless an external one is given."""
    now = int(time.time() * 1000)
    trust = stack.enter_context(Fleet.init(run.workdir / "fleet", now))
    run.trust = trust
    if run.opts.broker is not None:
        run.host, run.port = run.opts.broker
        return
    run.broker = Mosquitto(run.workdir / "broker", tls_dir=run.workdir / "broker-tls")
    write_broker_config(trust, run.workdir / "broker-tls", run.broker.port, now)
    trust.issue_center(run.workdir / "center-tls", now)
    await asyncio.to_thread(run.broker.start)
    stack.callback(run.broker.stop)
    run.host, run.port = run.broker.host, run.broker.port


@dataclass(slots=True)
class _Outcome:
    finals: list[Final]
    center_stats: dict[str, Any]
    drained: bool
    setup_s: float
    shift_s: float
    workers: int


async def _execute(run: _Run, progress: ProgressSink, wall0: float) -> _Outcome:
    count = run.opts.workers or os.cpu_count() or 1
    progress.update(f"provisioning {len(run.members)} devices in {count} workers", force=True)
    center_stats: dict[str, Any] = {}
    try:
        await _start_workers(run, count)
        setup_s = time.monotonic() - wall0
        if run.opts.broker is None:
            await _start_center(run)
            run.desk = FleetDesk(run.workdir / "center.db")
            run.desk.start()
        if run.docks is not None and run.trust is not None:
            await run.docks.start(run.trust, run.host, run.port)
        shift0 = time.monotonic()
        await _shift(run, progress)
        drained = await _drain(run, progress)
        if run.desk is not None:
            await run.desk.finish()  # the last events arrived: the desk closes them
        shift_s = time.monotonic() - shift0
        finals = await asyncio.gather(*(w.ask(Stop(), Final, 120) for w in run.workers))
        if run.docks is not None:  # audited like any device (fleetreport skips them as walkers)
            finals.append(Final(tuple(await run.docks.stop())))
    finally:
        if run.desk is not None:
            await run.desk.close()
        if run.docks is not None:
            await run.docks.stop()  # after a failure: the uplinks and drones still go
        if run.opts.broker is None:
            center_stats = await _stop_center(run)
        for w in run.workers:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
    progress.done(f"done: {len(run.members)} devices, drained: {drained}")
    return _Outcome(list(finals), center_stats, drained, setup_s, shift_s, count)


async def run_fleet(opts: FleetOptions, progress: ProgressSink) -> dict[str, Any]:
    if not (opts.plan_dir / "plan.geojson").is_file():
        raise FleetError(
            f"{opts.plan_dir} has no plan.geojson: make one with `picket sim district --out DIR`"
        )
    _raise_fd_limit()
    plan = load_plan(opts.plan_dir / "plan.geojson")
    members = _members(opts)
    scenario = Scenario("none", ())
    if opts.scenario is not None:
        scenario = load_scenario(
            opts.scenario,
            fleet=[(m.id, m.tier) for m in members],
            zones=[z.id for z in plan.zones],
            seed=opts.seed,
            run_ms=int(opts.hours * 3_600_000),
        )
    wall0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = _workdir(stack, opts)
        run = _Run(opts, workdir, members, scenario, {z.id: z.ring for z in plan.zones})
        if opts.docks and opts.broker is None:
            end_ms = START_MS + int(opts.hours * 3_600_000)
            run.docks = FleetDocks(
                opts.plan_dir, workdir, seed=opts.seed, start_ms=START_MS, end_ms=end_ms
            )
        await _prepare(stack, run)
        done = await _execute(run, progress, wall0)
        shard = opts.broker is not None  # the shared center is audited where it runs
        center_db = None if shard else workdir / "center.db"
        found = None if shard else audit(workdir / "center.db", workdir / "fleet" / "registry.db")
        report = build_report(
            hours=opts.hours,
            seed=opts.seed,
            shard=opts.shard,
            plan=plan,
            finals=done.finals,
            found=found,
            center_db=center_db,
            center_stats=done.center_stats,
            injected=run.injected,
            drained=done.drained,
            wall_s=time.monotonic() - wall0,
            setup_s=done.setup_s,
            shift_s=done.shift_s,
            workers=done.workers,
            simulated_s=run.simulated_ms / 1000,
            docks=run.docks.report() if run.docks is not None and not shard else None,
        )
        report["events_per_hour"] = opts.events_per_hour
        report.update(events_report(done.finals, center_db))
        if opts.html is not None:
            write_html(report, plan, done.finals, opts.plan_dir, opts.html)
        report["workdir"] = str(workdir) if opts.workdir else None
        return report
