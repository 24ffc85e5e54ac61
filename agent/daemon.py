"""`picket agent run`: the agent on a real device, in real time.

One TaskGroup with named tasks: the GNSS reader (source → time keeper → check-in engine
→ outbox), the uplink, and a keeper of time that writes the last known good time to the
outbox every PERSIST_S so that time never goes backwards across a reboot. A stop request
(SIGTERM, SIGINT) closes open visits that met their dwell, writes the time down, and
lets the uplink finish its current step; nothing stored is ever at risk from stopping.

With `center_key` in the config, signed commands from the center arrive through the
uplink and are carried out by a `CommandExecutor` (docs/commands.md); what earlier
commands set (a task bundle's agenda, settings) is restored from the outbox at start.
A key rotation a kill interrupted is finished (or undone) before the agent starts
(agent/rotation.py); after a rotation the agent signs with the new key and the uplink
presents the new certificate from its next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import rotation
from agent.bridgelink import BridgeLink
from agent.cmdexec import CommandExecutor
from agent.commands import CommandVerifier
from agent.config import AgentConfig
from agent.device import DeviceAgent
from agent.gnss.sources import GnssSource, SourceStatus, parse_source_url
from agent.health import health_snapshot, store_health
from agent.lorafallback import LoraFallback
from agent.outbox import Outbox, Stored
from agent.plan import Plan
from agent.planfile import load_plan
from agent.timekeeper import TimeKeeper
from agent.uplink import BrokerAddress, Uplink, UplinkOptions

log = logging.getLogger(__name__)
PERSIST_S = 30.0
HEALTH_INTERVAL_S = 300.0  # default report interval; a config change command may set it
TICK_S = 5.0


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def _chain(
    first: Callable[[Stored], None], then: Callable[[Stored], None]
) -> Callable[[Stored], None]:
    def both(stored: Stored) -> None:
        first(stored)
        then(stored)

    return both


@dataclass(slots=True)
class AgentRun:
    config: AgentConfig
    mono_ms: Callable[[], int] = monotonic_ms
    stop_event: asyncio.Event | None = None

    def stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    async def run(self) -> DeviceAgent:
        cfg = self.config
        self.stop_event = self.stop_event or asyncio.Event()
        spec = parse_source_url(cfg.gnss_source)  # bad URL: refuse before touching anything
        plan = load_plan(cfg.plan_path) if cfg.plan_path else Plan(0, (), ())
        key = cfg.load_key()
        center_key = cfg.load_center_key()
        outbox = Outbox(cfg.outbox_path, cfg.device)
        try:
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
            agent = DeviceAgent(cfg.device, key, plan, outbox, on_stored=uplink.on_stored)
            bridge: BridgeLink | None = None
            fallback: LoraFallback | None = None
            if cfg.bridge is not None:  # wraps agent.on_stored: SOS alerts, check-in beeps
                bridge = BridgeLink(cfg.bridge, agent, clock=lambda: keeper.now(self.mono_ms()))
                fallback = LoraFallback(bridge.bridge, uplink.connected.is_set)
                agent.on_stored = _chain(agent.on_stored, fallback.on_stored)
            executor: CommandExecutor | None = None
            if center_key is not None:
                executor = CommandExecutor(
                    agent,
                    CommandVerifier(center_key, cfg.device),
                    lambda: keeper.now(self.mono_ms()),
                    team=cfg.team,
                    identity=identity,
                    on_rotated=uplink.reload_tls,
                )
                executor.restore()
                uplink.on_command = executor.on_command  # read when the uplink subscribes
            source = GnssSource(spec, not_before=cfg.not_before, on_status=self._status)
            log.info("%s: boot %d, %d points, GNSS %s", cfg.device, boot, len(plan.points), spec)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(uplink.run(), name="uplink")
                reader = tg.create_task(self._read(source, keeper, agent), name="gnss")
                clock = tg.create_task(self._persist(keeper, outbox), name="time")
                ticker = tg.create_task(self._tick(keeper, agent, cfg, executor), name="tick")
                health = tg.create_task(
                    self._health(keeper, agent, uplink, executor), name="health"
                )
                radio = (
                    []
                    if bridge is None or fallback is None
                    else [
                        tg.create_task(bridge.run(), name="bridge"),
                        tg.create_task(fallback.run(), name="lora-fallback"),
                    ]
                )
                await self.stop_event.wait()
                reader.cancel()
                clock.cancel()
                ticker.cancel()
                health.cancel()
                for task in radio:
                    task.cancel()
                agent.finish(keeper.now(self.mono_ms()).time_ms)
                self._write_time(keeper, outbox)
                uplink.stop()
            return agent
        finally:
            outbox.close()

    def _status(self, status: SourceStatus) -> None:
        log.info("GNSS %s: %s", status.state.name.lower(), status.detail)

    async def _read(self, source: GnssSource, keeper: TimeKeeper, agent: DeviceAgent) -> None:
        async for fix in source.fixes():
            agent.on_fix(keeper.observe(fix, self.mono_ms()))

    async def _tick(
        self,
        keeper: TimeKeeper,
        agent: DeviceAgent,
        cfg: AgentConfig,
        executor: CommandExecutor | None = None,
    ) -> None:
        """Windows close and silent visits end even when no fix comes; a new day, a new agenda."""
        day: dt.date | None = None
        while True:
            now = keeper.now(self.mono_ms()).time_ms
            if now is not None:
                offset = dt.timedelta(minutes=agent.plan.utc_offset_min)
                today = (dt.datetime.fromtimestamp(now / 1000, dt.UTC) + offset).date()
                if today != day:
                    day = today
                    agenda = (
                        executor.agenda(today)  # a task bundle for today, if one came
                        if executor is not None
                        else agent.plan.agenda(today, cfg.device, cfg.team)
                    )
                    agent.engine.set_agenda(agenda)
                    log.info("%s: agenda for %s: %d points", cfg.device, today, len(agenda))
                agent.tick(now)
            await asyncio.sleep(TICK_S)

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
