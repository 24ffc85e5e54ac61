"""`picket agent run`: the agent on a real device, in real time.

One TaskGroup with named tasks: the GNSS reader (source → time keeper → check-in engine
→ outbox), the uplink, and a keeper of time that writes the last known good time to the
outbox every PERSIST_S so that time never goes backwards across a reboot. A stop request
(SIGTERM, SIGINT) closes open visits that met their dwell, writes the time down, and
lets the uplink finish its current step; nothing stored is ever at risk from stopping.
A local day's agenda is set before its first fix is judged (or by the tick, when no fix
comes), with the items this device already settled marked done (agent/checkin/device.py):
a restart, however abrupt, reports no window missed twice and no visited point as missed.

With `center_key` in the config, signed commands from the center arrive through the
uplink and are carried out by a `CommandExecutor` (docs/commands.md); what earlier
commands set (a task bundle's agenda, settings) is restored from the outbox at start.
A key rotation a kill interrupted is finished (or undone) before the agent starts
(agent/identity/rotation.py); after a rotation the agent signs with the new key and the uplink
presents the new certificate from its next connection.

With a `[dock]` section the device is a drone dock (agent/dock/run.py): its check-ins come
from the drone's telemetry instead of a GNSS receiver, its commands include flying lines,
and its tick (every second) also reads the wind and watches the drone's heartbeat. It reads
GNSS only when `[gnss]` is configured, and then for time alone.

While it runs, the member's screen reports field events through it (`report_event`, with
the running agent's outbox, attachment store, key, time and last fix; the photos leave at
once) and reads the device's own events (`my_events`), docs/events.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Plan
from agent.checkin.planfile import load_plan
from agent.commands.executor import CommandExecutor
from agent.config import AgentConfig
from agent.dock.executor import DockAgent
from agent.dock.run import TICK_S as DOCK_TICK_S
from agent.dock.run import DockRole
from agent.errors import AgentError
from agent.events.attachstore import AttachmentStore
from agent.events.mine import MyEvent, MyEvents, attachments_path
from agent.events.report import Picked, Reported, current_place, reconcile, report_event
from agent.events.uploader import Uploader
from agent.gnss.sources import GnssSource, SourceStatus, parse_source_url
from agent.gnss.timekeeper import TimeKeeper
from agent.health import health_snapshot, store_health, store_salvage_report
from agent.identity import rotation
from agent.radio.bridgelink import BridgeLink
from agent.store.cmdfloor import FLOOR_NAME
from agent.store.outbox import Outbox, Stored
from agent.uplink.lorafallback import LoraFallback
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from contract.commands import CommandVerifier

log = logging.getLogger(__name__)
PERSIST_S = 30.0
HEALTH_INTERVAL_S = 300.0  # default report interval; a config change command may set it
TICK_S = 5.0
DAY_MS = 86_400_000
EPOCH_DAY = dt.date(1970, 1, 1)


class NotRunning(AgentError):
    """An operation of the running agent was asked of one not running (yet, or any more)."""


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def wall_ms() -> int:
    return int(time.time() * 1000)


def _chain(
    first: Callable[[Stored], None], then: Callable[[Stored], None]
) -> Callable[[Stored], None]:
    def both(stored: Stored) -> None:
        first(stored)
        then(stored)

    return both


@dataclass(slots=True)
class _Parts:
    agent: DeviceAgent
    keeper: TimeKeeper
    uplink: Uplink
    boot: int
    store: AttachmentStore
    mine: MyEvents
    executor: CommandExecutor | None = None
    dock: DockRole | None = None
    bridge: BridgeLink | None = None
    fallback: LoraFallback | None = None


@dataclass(slots=True)
class AgentRun:
    config: AgentConfig
    mono_ms: Callable[[], int] = monotonic_ms
    stop_event: asyncio.Event | None = None
    wall_ms: Callable[[], int] = wall_ms  # a dock's system clock (agent/dock/run.py)
    dock: DockRole | None = None  # set while a dock runs
    agenda_day: int | None = None  # the local day (since 1970) whose agenda is set
    running: _Parts | None = field(default=None, init=False, repr=False)  # while `run` runs

    def stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    # -- the member's operations on the running agent (the screen calls these) ------------

    async def report_event(
        self,
        *,
        category: int,
        note: str | None = None,
        photos: Sequence[bytes] = (),
        picked: Picked | None = None,
        answers: int | None = None,
    ) -> Reported:
        """Report an event (agent/events/report.py does it all): stamped with the time
        keeper's time and its source, placed where the member picked or else at the last
        fix if it is fresh (`current_place`; else unknown), its record and photos sent at
        once. When this returns, the report is saved. ReportError, PhotoError, QuotaFull
        and StorageError come as raised; NotRunning while the agent is not running."""
        p = self._parts()
        stamp = p.keeper.now(self.mono_ms())
        done = report_event(
            p.agent.outbox,
            p.store,
            p.agent.key,
            self.config.device,
            category=category,
            stamp=stamp,
            settings=self.config.events,
            catalogue=p.mine.catalogue(),
            note=note,
            photos=photos,
            place=current_place(picked, p.agent.last_fix, stamp.time_ms),
            answers=answers,
            mine=p.mine,
            on_stored=p.agent.on_stored,  # the uplink, and the LoRa fallback if any
        )
        p.agent.created[done.stored.type] += 1
        if p.uplink.attachments is not None:
            p.uplink.attachments.notify()
        return done

    def my_events(self) -> list[MyEvent]:
        """The device's own events, newest first: its reports and what it was sent to
        handle, each with its current status (agent/events/mine.py)."""
        return self._parts().mine.listed()

    def _parts(self) -> _Parts:
        if self.running is None:
            raise NotRunning(f"{self.config.device}: the agent is not running")
        return self.running

    async def run(self) -> DeviceAgent:
        cfg = self.config
        self.stop_event = self.stop_event or asyncio.Event()
        spec = parse_source_url(cfg.gnss_source)  # bad URL: refuse before touching anything
        plan = load_plan(cfg.plan_path) if cfg.plan_path else Plan(0, (), ())
        key = cfg.load_key()  # a bad key or center key: refuse before touching anything
        cfg.load_center_key()
        # the record key proves what a damaged outbox still holds (agent/store/salvage.py)
        outbox = Outbox(cfg.outbox_path, cfg.device, keys=[key.public_key()])
        store: AttachmentStore | None = None
        mine: MyEvents | None = None
        try:  # attachments and the device's own events (docs/events.md), beside the outbox
            store = AttachmentStore(attachments_path(cfg.outbox_path), cfg.events.quota_bytes)
            mine = MyEvents(store.path, cfg.device)
            parts = self.running = self._assemble(plan, outbox, store, mine)
            reads_gnss = parts.dock is None or cfg.gnss_given
            log.info(
                "%s: boot %d, %d points, GNSS %s",
                cfg.device,
                parts.boot,
                len(plan.points),
                spec if reads_gnss else "none",
            )
            source = (
                GnssSource(spec, not_before=cfg.not_before, on_status=self._status)
                if reads_gnss
                else None
            )
            await self._serve(parts, source)
            return parts.agent
        finally:
            self.running = None
            for db in (mine, store):
                if db is not None:
                    db.close()
            outbox.close()

    def _assemble(
        self, plan: Plan, outbox: Outbox, store: AttachmentStore, mine: MyEvents
    ) -> _Parts:
        """The agent, its uplink and clock, and what the config adds (commands, radio, dock)."""
        cfg = self.config
        key = cfg.load_key()
        center_key = cfg.load_center_key()
        identity = rotation.identity_folder(cfg.key_path)
        if identity is not None and rotation.recover(identity, rotation.committed(outbox)):
            key = cfg.load_key()  # the interrupted rotation was finished or undone
        boot = outbox.begin_boot()
        keeper = TimeKeeper(persisted_ms=outbox.stored_time(), mono_ms=self.mono_ms())
        uplink = Uplink(
            outbox,
            BrokerAddress(cfg.broker_host, cfg.broker_port),
            options=UplinkOptions(tls=cfg.tls),
        )
        reconcile(outbox, store, keeper.now(self.mono_ms()).time_ms or 0, mine)
        uplink.attachments = Uploader(store, cfg.device, chunk_bytes=cfg.events.chunk_bytes)
        agent = (
            DeviceAgent(cfg.device, key, plan, outbox, on_stored=uplink.on_stored)
            if cfg.dock is None
            else DockAgent(
                cfg.device, key, plan, outbox, on_stored=uplink.on_stored, drone=cfg.dock.drone
            )
        )
        parts = _Parts(agent, keeper, uplink, boot, store, mine)
        if cfg.bridge is not None:  # wraps agent.on_stored: SOS alerts, check-in beeps
            parts.bridge = BridgeLink(cfg.bridge, agent, clock=lambda: keeper.now(self.mono_ms()))
            parts.fallback = LoraFallback(parts.bridge.bridge, uplink.connected.is_set)
            agent.on_stored = _chain(agent.on_stored, parts.fallback.on_stored)
        if center_key is None:
            return parts
        verifier = CommandVerifier(center_key, cfg.device)
        if cfg.dock is not None and isinstance(agent, DockAgent):
            parts.dock = self.dock = DockRole.build(
                cfg.dock,
                agent,
                verifier,
                keeper,
                mono_ms=self.mono_ms,
                wall_ms=self.wall_ms,
                identity=identity,
                on_rotated=uplink.reload_tls,
            )
            parts.executor = parts.dock.executor
        else:
            parts.executor = CommandExecutor(
                agent,
                verifier,
                lambda: keeper.now(self.mono_ms()),
                team=cfg.team,
                identity=identity,
                on_rotated=uplink.reload_tls,
            )
        parts.executor.keep_floor(cfg.key_path.parent / FLOOR_NAME)  # survives the outbox
        parts.executor.events = mine  # catalogue and event status commands
        parts.executor.restore()
        uplink.on_command = parts.executor.on_command  # read when the uplink subscribes
        return parts

    async def _serve(self, parts: _Parts, source: GnssSource | None) -> None:
        """Every task until a stop request; then close visits and write the time down."""
        assert self.stop_event is not None
        agent, keeper, uplink, dock = parts.agent, parts.keeper, parts.uplink, parts.dock
        async with asyncio.TaskGroup() as tg:
            tg.create_task(uplink.run(), name="uplink")
            tasks = []
            if dock is not None:
                log.info("%s: dock of drone %s, %s", agent.device, dock.section.drone,
                         dock.source.spec)  # fmt: skip
                tasks.append(tg.create_task(dock.run(), name="drone"))
            if source is not None:
                feed = agent if dock is None else None  # a dock's GNSS gives time only
                reader = self._read(source, keeper, feed, parts.executor)
                tasks.append(tg.create_task(reader, name="gnss"))
            tasks.append(tg.create_task(self._persist(keeper, agent.outbox), name="time"))
            tasks.append(
                tg.create_task(self._tick(keeper, agent, parts.executor, dock), name="tick")
            )
            tasks.append(
                tg.create_task(self._health(keeper, agent, uplink, parts.executor), name="health")
            )
            if parts.bridge is not None and parts.fallback is not None:
                tasks.append(tg.create_task(parts.bridge.run(), name="bridge"))
                tasks.append(tg.create_task(parts.fallback.run(), name="lora-fallback"))
            await self.stop_event.wait()
            for task in tasks:
                task.cancel()
            agent.finish(keeper.now(self.mono_ms()).time_ms)
            self._write_time(keeper, agent.outbox)
            uplink.stop()

    def _status(self, status: SourceStatus) -> None:
        log.info("GNSS %s: %s", status.state.name.lower(), status.detail)

    async def _read(
        self,
        source: GnssSource,
        keeper: TimeKeeper,
        agent: DeviceAgent | None,
        executor: CommandExecutor | None = None,
    ) -> None:
        """Fixes to the time keeper, and to the check-in engine of `agent` (if any), each
        judged against the agenda of its own day."""
        async for raw in source.fixes():
            fix = keeper.observe(raw, self.mono_ms())
            if agent is not None:
                if fix.time_ms is not None:
                    self._keep_agenda(agent, executor, fix.time_ms)
                agent.on_fix(fix)

    def _keep_agenda(
        self, agent: DeviceAgent, executor: CommandExecutor | None, now_ms: int
    ) -> None:
        """At the first known time of a local day, that day's agenda, with what this device
        already settled of it (agent/checkin/device.py); never back to an earlier day."""
        day = (now_ms + agent.plan.utc_offset_min * 60_000) // DAY_MS  # days since 1970
        if self.agenda_day is not None and day <= self.agenda_day:
            return
        self.agenda_day = day
        today = EPOCH_DAY + dt.timedelta(days=day)
        cfg = self.config
        agenda = (
            executor.agenda(today)  # a task bundle for today, if one came
            if executor is not None
            else agent.plan.agenda(today, cfg.device, cfg.team)
        )
        agent.set_agenda(today, agenda)
        log.info("%s: agenda for %s: %d points", cfg.device, today, len(agenda))

    async def _tick(
        self,
        keeper: TimeKeeper,
        agent: DeviceAgent,
        executor: CommandExecutor | None = None,
        dock: DockRole | None = None,
    ) -> None:
        """Windows close and silent visits end even when no fix comes; a new day, a new agenda.
        A dock's tick is its own (wind, heartbeat, launch timeout) and comes every second."""
        while True:
            if dock is not None:
                dock.observe_clock()
            self._report_salvage(keeper, agent)
            now = keeper.now(self.mono_ms()).time_ms
            if now is not None:
                self._keep_agenda(agent, executor, now)
                if dock is None:
                    agent.tick(now)
                else:
                    dock.tick(now)  # the dock ticks the engine itself
            await asyncio.sleep(TICK_S if dock is None else DOCK_TICK_S)

    def _report_salvage(self, keeper: TimeKeeper, agent: DeviceAgent) -> None:
        """Once the time is known, state what a damaged outbox lost (agent/health.py)."""
        stamp = keeper.now(self.mono_ms())
        if agent.outbox.salvage is None or stamp.time_ms is None:
            return
        stored = store_salvage_report(
            agent.outbox, agent.key, time_ms=stamp.time_ms, time_source=stamp.source
        )
        if stored is not None:
            agent.created[stored.type] += 1
            agent.on_stored(stored)

    async def _health(
        self,
        keeper: TimeKeeper,
        agent: DeviceAgent,
        uplink: Uplink,
        executor: CommandExecutor | None,
    ) -> None:
        """A HEALTH record every report interval (config change `report_interval_s`)."""
        started = self.mono_ms()
        while True:
            interval = HEALTH_INTERVAL_S
            if executor is not None and executor.settings.report_interval_s is not None:
                interval = executor.settings.report_interval_s
            now = keeper.now(self.mono_ms())
            if now.time_ms is not None:
                body = health_snapshot(
                    now_ms=now.time_ms,
                    outbox_depth=agent.outbox.depth(),
                    clock_source=now.source,
                    fix=agent.last_fix,
                    now_mono_ms=self.mono_ms(),
                    started_mono_ms=started,
                )
                uplink.on_stored(
                    store_health(
                        agent.outbox, agent.key, body, time_ms=now.time_ms, time_source=now.source
                    )
                )
            await asyncio.sleep(interval)

    async def _persist(self, keeper: TimeKeeper, outbox: Outbox) -> None:
        while True:
            await asyncio.sleep(PERSIST_S)
            self._write_time(keeper, outbox)

    def _write_time(self, keeper: TimeKeeper, outbox: Outbox) -> None:
        t = keeper.to_persist(self.mono_ms())
        if t is not None:
            outbox.store_time(t)


async def run_until_signalled(cfg: AgentConfig) -> DeviceAgent:
    run = AgentRun(cfg, stop_event=asyncio.Event())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, run.stop)
    return await run.run()
