"""`picket sim dock`: one drone dock, end to end, on a virtual clock.

Everything on the path of a dock's records and commands is the real part: a fleet with its CA
and keys, a TLS Mosquitto with the configuration `picket provision broker-config` writes, the
center (in this process) verifying and storing, the dock provisioned like any device, its
outbox and uplink, the command executor, and the drone's telemetry as MAVLink 2 datagrams
over a real UDP socket, decoded by agent/dock/mavlink.py. Only the sky is simulated: the drone
(simulators/drone.py), the wind, and the operator at the center who sends FLY_LINE commands.

**Lockstep.** Virtual time moves in 1 s steps, as fast as the machine allows, but never ahead
of the parts it drives: after each step the loop waits (in real time) until the dock has
decoded every datagram the drone sent in it, and after each command until the dock has
answered it. So the dock's decisions, the receipts' reasons and the report are the same on
a fast or a loaded machine, for a seed; only `wall_seconds` differs. Records go to the center
in real time meanwhile, and the run ends by waiting for the outbox to drain.

**The work.** The district's aerial plan (simulators/bigdistrict.py) gives the dock its line
(dock k flies line k) and the dock's points; `sortie_plan` adds one short line per point
("sorties": AL01.1 is AL01's first point alone), because the pad recharges the drone
slowly (CHARGER_W: about 40 minutes for an empty pack): after the long line only short
flights fit the battery. Every `every_s` the operator sends a FLY_LINE for a line drawn
from the seed, with a priority; the dock flies it, or refuses it with a reason (busy,
battery, wind). The wind is a seeded random walk, read by the dock once a minute.

**Ground truth** is the drone's own track (`SimDrone.track`, without GNSS error): a point's
check-in is expected for every stay inside its radius and altitude band lasting its dwell.
The report compares that with the check-ins verified at the center that name the drone;
how it judges is simulators/dockreport.py's, which reads no clock and drives no peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.checkin.plan import Line, Plan
from agent.config import load_config
from agent.dock.executor import DockAgent, DockExecutor
from agent.dock.machine import Dock
from agent.dock.mavsource import MavlinkSource
from agent.dock.outputs import MissionOutcome
from agent.dock.planning import DockConfig
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from agent.uplink.sync import SyncCore
from center.audit import audit
from center.commands import CommandSigner, DispatchError, Receipt, publish, receipts
from center.service import CenterService
from contract.commands import CommandType, CommandVerifier, FlyLine, Priority
from contract.fix import TimeSource
from contract.protocol import MAX_BATCH
from contract.tls import BrokerTls
from provisioning.brokerconf import write_broker_config
from provisioning.device import provision_device, registry_path
from provisioning.fleet import Fleet
from simulators.bigdistrict import District, generate
from simulators.bigdistrict import Dock as DockSite
from simulators.broker import Mosquitto
from simulators.dockreport import (
    Stay,
    aerial_checkins,
    expected_checkins,
    match_checkins,
    record_types,
    refusals_by_kind,
)
from simulators.drone import SimDrone
from simulators.progress import ProgressSink
from simulators.simerror import SimulatorError
from simulators.workdir import run_folder

__all__ = [
    "DockSimError",
    "DockSimOptions",
    "DockSimOptionsError",
    "Infra",
    "run_dock_sim",
    "sortie_plan",
]

CHARGER_W = 400.0  # the dock's charger: an empty 266 Wh pack full in about 40 minutes
START_MS = 1_772_330_400_000  # 2026-03-01 10:00 in the district (UTC+8): AL01's window
STEP_MS = 1000
COMMAND_TTL_S = 120
FIRST_COMMAND_MS = 60_000  # the first FLY_LINE (the dock's whole line) a minute in
AFTER_S = 1800  # after the last command, at most this long for the mission in flight to land
ANSWER_TIMEOUT_S = 15.0  # real seconds for the dock to answer a command
DATAGRAM_TIMEOUT_S = 2.0  # real seconds for a step's datagrams to reach the dock
DRAIN_TIMEOUT_S = 60.0
WIND_MIN_MPS, WIND_MAX_MPS = 1.0, 15.0
UPLINK = UplinkOptions(
    keepalive_s=4, connect_timeout_s=3.0, publish_timeout_s=5.0, backoff_max_s=2.0
)
PRIORITY_WEIGHTS = {Priority.ROUTINE: 6, Priority.CROWD: 3, Priority.FIRE: 1}


class DockSimError(SimulatorError):
    """The run could not be carried out (a peer did not start or answer)."""


class DockSimOptionsError(DockSimError):
    """The options cannot describe a run (a dock the district does not have)."""


@dataclass(frozen=True, slots=True)
class DockSimOptions:
    minutes: float = 30.0  # commands are sent for this long; a mission in flight then lands
    seed: int = 3
    dock: int = 1  # which of the district's docks (1-based: d01 is 1)
    every_s: int = 240  # the operator sends a FLY_LINE this often (virtual seconds)
    wind_limit_mps: float = 10.0
    workdir: Path | None = None


@dataclass(slots=True)
class _Clock:
    now_ms: int = START_MS

    def stamp(self) -> Stamp:
        return Stamp(self.now_ms, TimeSource.GNSS)


@dataclass(slots=True)
class _Run:
    """What the loop did, for the report."""

    sent: list[tuple[int, str, Priority]] = field(default_factory=list)  # number, line, prio
    datagrams: int = 0
    late_datagrams: int = 0  # steps whose datagrams did not all arrive in time
    wind: list[float] = field(default_factory=list)
    unsent: int = 0  # in a fleet run (lenient): commands the broker did not take
    unanswered: int = 0  # in a fleet run (lenient): commands not answered in time


@dataclass(frozen=True, slots=True)
class _CenterLink:
    """The operator's side: sign a command at the center and publish it over TLS."""

    signer: CommandSigner
    host: str
    port: int
    tls: ssl.SSLContext

    async def fly(self, device: str, body: FlyLine, now_ms: int) -> int:
        signed = self.signer.build(device, body, now_ms=now_ms, ttl_s=COMMAND_TTL_S)
        await publish(self.host, self.port, device, signed.raw, tls=self.tls)
        return signed.number


@dataclass(frozen=True, slots=True)
class Infra:
    """What a dock needs around it: the fleet, a broker, the center's database and TLS.

    `picket sim dock` makes its own (`_Sim._standalone`); a fleet run hands in the fleet's
    (simulators/fleetdocks.py), so the dock's records land in the fleet's center."""

    trust: Fleet
    host: str
    port: int
    center_tls: ssl.SSLContext
    db: Path
    registry: Path


@dataclass(frozen=True, slots=True)
class _Parts:
    """What `_Sim._build` made: the dock's own parts, and the infrastructure it uses."""

    infra: Infra
    agent: DockAgent
    uplink: Uplink
    dock: Dock
    verifier: CommandVerifier
    source: MavlinkSource


def _reads_reach(source: MavlinkSource, n: int) -> Callable[[], bool]:
    return lambda: source.stats.reads >= n


def sortie_plan(district: District) -> Plan:
    """The aerial plan with a one-point line for every point of every aerial line."""
    return _with_sorties(district.aerial)


def _with_sorties(plan: Plan) -> Plan:
    extra = tuple(
        Line(f"{ln.id}.{i}", (pid,), ln.windows[i : i + 1], tier=ln.tier)
        for ln in plan.lines
        for i, pid in enumerate(ln.point_ids, start=1)
        if len(ln.point_ids) > 1
    )
    return replace(plan, lines=plan.lines + extra)


def _wind(rng: random.Random) -> Iterator[float]:
    """A gusty random walk, one reading a minute (as many as are read)."""
    w = rng.uniform(3.0, 7.0)
    while True:
        yield round(w, 1)
        w = min(WIND_MAX_MPS, max(WIND_MIN_MPS, w + rng.gauss(0.0, 1.6)))


def _dock_lines(plan: Plan, line: str) -> list[str]:
    return [ln.id for ln in plan.lines if ln.id == line or ln.id.startswith(f"{line}.")]


async def _wait(cond: Callable[[], bool], within_s: float) -> bool:
    """Real time: until `cond()` holds (True) or `within_s` passed (False)."""
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0)
    return True


class _Sim:
    """The dock, its drone and the center, wired; `step` moves them one second."""

    def __init__(
        self,
        opts: DockSimOptions,
        workdir: Path,
        docks: Sequence[DockSite],
        aerial: Plan,
        *,
        start_ms: int = START_MS,
    ) -> None:
        if not 1 <= opts.dock <= min(len(docks), len(aerial.lines)):
            raise DockSimOptionsError(f"--dock {opts.dock}: the district has {len(docks)} docks")
        self.opts = opts
        self.workdir = workdir
        self.site = docks[opts.dock - 1]
        self.device = self.site.id
        self.drone_id = f"u{opts.dock:02d}"
        self.plan = _with_sorties(aerial)
        self.line = aerial.lines[opts.dock - 1].id
        self.lines = _dock_lines(self.plan, self.line)
        self.start_ms = start_ms
        self.clock = _Clock(start_ms)
        self.run = _Run()
        self.executor: DockExecutor | None = None
        self.rng = random.Random(f"picket-docksim:{opts.seed}:{opts.dock}")
        self.winds = _wind(self.rng)  # lazy: draws from `rng` only when read
        # In a fleet run faults may hold a command up: count it and fly on, never stop.
        self.lenient = False

    def _standalone(
        self, stack: contextlib.ExitStack, real_ms: int
    ) -> tuple[Infra, Mosquitto, CenterService]:
        """The fleet, the broker and the center of `picket sim dock`, all its own."""
        work = self.workdir
        trust = stack.enter_context(Fleet.init(work / "fleet", real_ms))
        broker = Mosquitto(work / "broker", tls_dir=work / "broker-tls")
        write_broker_config(trust, work / "broker-tls", broker.port, real_ms)
        trust.issue_center(work / "center-tls", real_ms)
        tls = work / "center-tls"
        center_tls = BrokerTls(tls / "ca.crt", tls / "center.crt", tls / "center.key").context()
        db = work / "center.db"
        registry = registry_path(work / "fleet")
        center = CenterService(db, registry, broker.host, broker.port, tls=center_tls)
        infra = Infra(trust, broker.host, broker.port, center_tls, db, registry)
        return infra, broker, center

    def _build(self, stack: contextlib.ExitStack, infra: Infra, real_ms: int) -> _Parts:
        """The dock provisioned like any device in `infra`'s fleet, its uplink to its broker."""
        work, site = self.workdir, self.site
        files = provision_device(
            infra.trust,
            self.device,
            work / "devices" / self.device,
            broker_host=infra.host,
            broker_port=infra.port,
            now_ms=real_ms,
        )
        cfg = load_config(files.config)
        center_key = cfg.load_center_key()
        assert center_key is not None  # the bundle always carries it
        box = Outbox(cfg.outbox_path, self.device)
        stack.callback(box.close)
        box.begin_boot()
        core = SyncCore(
            batch_size=32, max_batch_size=MAX_BATCH, ack_timeout_ms=5_000, first_batch_id=1
        )
        uplink = Uplink(
            box,
            BrokerAddress(infra.host, infra.port),
            core=core,
            options=replace(UPLINK, tls=cfg.tls),
            rng=random.Random(self.opts.seed),
            on_command=self._on_command,  # subscribes only with a hook, at connect
        )
        key = cfg.load_key()
        agent = DockAgent(
            self.device, key, self.plan, box, on_stored=uplink.on_stored, drone=self.drone_id
        )
        config = DockConfig(
            self.drone_id, site.lat, site.lon, site.alt_m, wind_limit_mps=self.opts.wind_limit_mps
        )
        source = MavlinkSource(
            "udp://127.0.0.1:0",
            clock=lambda: self.clock.now_ms,
            time_source=TimeSource.GNSS,
            rng=random.Random(self.opts.seed),
        )
        return _Parts(
            infra=infra,
            agent=agent,
            uplink=uplink,
            dock=Dock(config, self.plan, engine=agent.engine),
            verifier=CommandVerifier(center_key, self.device),
            source=source,
        )

    async def main(self, progress: ProgressSink) -> dict[str, object]:
        wall0 = time.monotonic()
        real_ms = int(time.time() * 1000)  # certificates are checked against the real clock
        with contextlib.ExitStack() as stack:
            infra, broker, center = self._standalone(stack, real_ms)
            parts = self._build(stack, infra, real_ms)
            await asyncio.to_thread(broker.start)
            stack.callback(broker.stop)
            async with asyncio.TaskGroup() as tg:
                center_task = tg.create_task(center.run(), name="center")
                await asyncio.wait_for(center.ready.wait(), timeout=20)
                uplink_task = tg.create_task(parts.uplink.run(), name="uplink")
                mavlink_task = tg.create_task(self._telemetry(parts.source), name="mavlink")
                try:
                    await asyncio.wait_for(parts.uplink.connected.wait(), timeout=20)
                    truth, battery = await self._fly(progress, parts)
                    box = parts.agent.outbox
                    drained = await _wait(lambda: box.depth() == 0, DRAIN_TIMEOUT_S)
                finally:
                    mavlink_task.cancel()
                    parts.uplink.stop()
                    await asyncio.wait_for(uplink_task, timeout=20)
                    center.stop()
                    await asyncio.wait_for(center_task, timeout=20)
            progress.done(self._line("done", parts.dock))
            return self._report(
                parts,
                truth=truth,
                drained=drained,
                drone_battery=battery,
                wall_s=time.monotonic() - wall0,
            )

    async def _fly(self, progress: ProgressSink, parts: _Parts) -> tuple[list[Stay], int]:
        """The drone on the dock's UDP port, the executor, and the simulated time."""
        source = parts.source
        if not await _wait(lambda: source.address is not None, 10):
            raise DockSimError("the MAVLink socket did not open")
        assert source.address is not None
        with self._drone(source) as drone:
            executor = DockExecutor(
                parts.agent, parts.verifier, self.clock.stamp, parts.dock, drone
            )
            self.executor = executor
            infra = parts.infra
            with CommandSigner(infra.trust.center_key, infra.db) as signer:
                center = _CenterLink(signer, infra.host, infra.port, infra.center_tls)
                await self._simulate(progress, parts, drone, center)
            return self.truth(drone), drone.battery_pct

    def _drone(self, source: MavlinkSource) -> SimDrone:
        """The simulated drone on the dock's pad, sending to the dock's MAVLink socket."""
        site = self.site
        assert source.address is not None
        drone = SimDrone(
            (site.lat, site.lon, site.alt_m),
            rng=random.Random(f"picket-docksim-drone:{self.opts.seed}"),
            now_ms=self.start_ms,
            target=source.address,
        )
        drone.charger_w = CHARGER_W  # the dock charges its drone between flights
        return drone

    def truth(self, drone: SimDrone) -> list[Stay]:
        """The check-ins the drone's true track calls for, at the points of the dock's line."""
        points = list(self.plan.line(self.line).point_ids)
        return expected_checkins(drone.track, self.plan, points)

    def _on_command(self, raw: bytes) -> None:
        if self.executor is not None:  # none is sent before the drone is up
            self.executor.on_command(raw)

    async def _telemetry(self, source: MavlinkSource) -> None:
        async for t in source.telemetry():
            if self.executor is not None:
                self.executor.on_telemetry(t)

    async def _simulate(
        self, progress: ProgressSink, parts: _Parts, drone: SimDrone, center: _CenterLink
    ) -> None:
        dock = parts.dock
        end = self.start_ms + int(self.opts.minutes * 60_000)
        hard_end = end + AFTER_S * 1000
        t = self.start_ms
        while t < end or (dock.flight is not None and t < hard_end):
            await self.second(parts, drone, center, t, end)
            progress.update(self._line("flying", dock))
            t += STEP_MS
        self.clock.now_ms = t

    async def second(
        self, parts: _Parts, drone: SimDrone, center: _CenterLink, t: int, end: int
    ) -> None:
        """Virtual second `t`: the wind, the operator's command (before `end`), the drone's
        datagrams decoded by the dock (waited for), the dock's tick."""
        dock, source, executor = parts.dock, parts.source, self.executor
        assert executor is not None
        self.clock.now_ms = t
        if (t - self.start_ms) % 60_000 == 0:
            w = next(self.winds)
            self.run.wind.append(w)
            dock.observe_wind(w)
        every_ms = self.opts.every_s * 1000
        if t < end and (t - self.start_ms) % every_ms == FIRST_COMMAND_MS:
            await self._command(center, executor, t)
        self.run.datagrams += len(drone.step(t))
        if not await _wait(_reads_reach(source, self.run.datagrams), DATAGRAM_TIMEOUT_S):
            self.run.late_datagrams += 1
        executor.tick(t)

    async def _command(self, center: _CenterLink, executor: DockExecutor, t: int) -> None:
        """The operator sends a FLY_LINE; the clock waits until the dock has answered it."""
        line = self.rng.choice(self.lines) if self.run.sent else self.line
        priority = self.rng.choices(list(PRIORITY_WEIGHTS), list(PRIORITY_WEIGHTS.values()))[0]
        try:
            number = await center.fly(self.device, FlyLine(line, priority), t)
        except DispatchError:
            if not self.lenient:
                raise
            self.run.unsent += 1  # a fleet's broker outage: the operator could not send it
            return
        self.run.sent.append((number, line, priority))
        box = executor.agent.outbox
        if not await _wait(lambda: box.last_command() >= number, ANSWER_TIMEOUT_S):
            if not self.lenient:
                raise DockSimError(f"the dock did not answer command {number}")
            self.run.unanswered += 1  # not yet: it may still come through, and is audited

    def _line(self, phase: str, dock: Dock) -> str:
        minute = (self.clock.now_ms - self.start_ms) / 60_000
        flown = len(self.executor.missions) if self.executor is not None else 0
        return f"{phase}: minute {minute:5.1f} · dock {dock.state.name.lower()} · missions {flown}"

    def _report(
        self,
        parts: _Parts,
        *,
        truth: list[Stay],
        drained: bool,
        drone_battery: int,
        wall_s: float,
    ) -> dict[str, object]:
        executor, db, registry = self.executor, parts.infra.db, parts.infra.registry
        assert executor is not None
        created = {self.device: parts.agent.outbox.last_seq}
        found = audit(db, registry)
        recorded = aerial_checkins(db, registry, self.drone_id)
        matched = match_checkins(truth, recorded, slack_ms=STEP_MS)
        answers = self.answers(db)
        sent = {number: (line, priority) for number, line, priority in self.run.sent}
        refusals = self.refusals(answers)
        missions = executor.missions
        flown = [m for m in missions if m.flight_s > 0]
        sim_s = (self.clock.now_ms - self.start_ms) / 1000
        return {
            "seed": self.opts.seed,
            "minutes": self.opts.minutes,
            "dock": self.device,
            "drone": self.drone_id,
            "lines": self.lines,
            "commands_sent": len(self.run.sent),
            "commands_answered": len(answers),
            "commands": [
                {
                    "number": r.number,
                    "line": sent[r.number][0],
                    "priority": sent[r.number][1].name.lower(),
                    "outcome": r.outcome.name.lower(),
                    "reason": r.reason,
                }
                for r in answers
                if r.number in sent
            ],
            "missions_flown": len(flown),
            "missions_refused": sum(refusals.values()),
            "refusals": dict(sorted(refusals.items())),
            "missions": [
                {
                    "line": m.line,
                    "command": m.command,
                    "priority": m.priority.name.lower(),
                    "outcome": MissionOutcome(m.outcome).name.lower(),
                    "reached": len(m.reached),
                    "missed": list(m.missed),
                    "flight_s": m.flight_s,
                    "battery_used_pct": m.battery_used_pct,
                }
                for m in missions
            ],
            "aerial_checkins_expected": len(truth),
            "aerial_checkins_recorded": len(recorded),
            "aerial_checkins_matched": matched,
            "records_created": sum(created.values()),
            "records_delivered": found.delivered,
            "records_verified": found.verified,
            "records_lost": found.lost(created),
            "records_duplicated": found.duplicated,
            "duplicates_by_kind": dict(found.duplicates_by_kind),
            "batches_redelivered": found.batches_redelivered,
            "records_refused": found.refused,
            "records_by_type": record_types(db),
            "datagrams": self.run.datagrams,
            "late_datagrams": self.run.late_datagrams,
            "drone_battery_pct": drone_battery,
            "wind_max_mps": max(self.run.wind, default=0.0),
            "drained": drained,
            "simulated_seconds": sim_s,
            "wall_seconds": round(wall_s, 2),
            "workdir": str(self.workdir) if self.opts.workdir else None,
        }

    def answers(self, db: Path) -> list[Receipt]:
        """The dock's receipts for FLY_LINE commands, from the center's database."""
        return [r for r in receipts(db, [self.device]) if r.type == int(CommandType.FLY_LINE)]

    @staticmethod
    def refusals(answers: Sequence[Receipt]) -> Counter[str]:
        return refusals_by_kind(answers)


async def run_dock_sim(opts: DockSimOptions, progress: ProgressSink) -> dict[str, object]:
    if opts.minutes <= 0 or opts.every_s <= 0:
        raise DockSimOptionsError("--minutes and --every must be above 0")
    district = generate(opts.seed)
    with contextlib.ExitStack() as stack:
        workdir = run_folder(stack, opts.workdir, "picket-dock-", DockSimOptionsError)
        try:
            return await _Sim(opts, workdir, district.docks, district.aerial).main(progress)
        except ExceptionGroup as eg:  # from the TaskGroup: say what went wrong, plainly
            failed = eg.subgroup(lambda e: isinstance(e, DockSimError))
            if failed is None:
                raise
            raise _first(failed) from eg


def _first(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    e = eg.exceptions[0]
    return _first(e) if isinstance(e, BaseExceptionGroup) else e
