"""One worker process of `picket sim fleet`: a slice of the district's devices.

The parent (simulators/fleetrun.py) owns the virtual clock and the scenario; a worker
runs the real agent code for its devices (provisioned here through the real enrollment
path, then NMEA from a walker → parser → engine → signed records → SQLite outbox → TLS
MQTT uplink) and moves their time forward only when told to, so every worker and every
fault sees the same virtual moment. The conversation is JSON lines: commands on stdin,
one answer per command on stdout (docs/fleet.md lists them), spoken here and in the parent
as the typed messages of simulators/fleetwire.py. Everything a device does is a function
of the seed and its index, never of which worker runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiomqtt

from agent.checkin.device import DeviceAgent
from agent.checkin.planfile import load_plan
from agent.config import AgentConfig, load_config
from agent.health import store_agent_health
from agent.store.outbox import Outbox, Stored
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from agent.uplink.sync import SyncCore
from center.events.catalogue import load as load_catalogue
from contract.protocol import MAX_BATCH, Batch, records_topic
from contract.records import RecordType
from provisioning.device import provision_device
from provisioning.fleet import Fleet
from simulators.fieldevents import MemberReports
from simulators.fleetevents import DeviceEvents
from simulators.fleetwire import (
    Advance,
    Answer,
    AskPositions,
    AskQueued,
    At,
    Backlog,
    Command,
    DeviceCommand,
    DeviceFinal,
    Done,
    Duplicate,
    Failed,
    Final,
    Finish,
    Gnss,
    Kill,
    Link,
    Positions,
    Ready,
    Restart,
    Spoof,
    Stop,
    WorkerSpec,
    decode_command,
    encode,
)
from simulators.walker import Walker

HEALTH_EVERY_MS = 300_000
# Real-time settings for thousands of uplinks on one loaded machine: TLS handshakes and
# acknowledgements queue behind the simulation, so timeouts are generous and backoff short.
# The sender wakes for every new record anyway; its poll only expires unanswered batches,
# and thousands of uplinks polling every second cost a worker a tenth of a core.
UPLINK = UplinkOptions(
    keepalive_s=20, connect_timeout_s=20.0, publish_timeout_s=20.0, backoff_max_s=4.0, poll_s=5.0
)
ACK_TIMEOUT_MS = 20_000
RECENT = 16  # records kept per device for duplicate-delivery faults


@dataclass(slots=True)
class SimDevice:
    id: str
    index: int
    tier: str
    config: AgentConfig
    walker: Walker
    agent: DeviceAgent | None = None
    uplink: Uplink | None = None
    task: asyncio.Task[None] | None = None
    alive: bool = True
    link_up: bool = True
    started_ms: int = 0
    created: Counter[RecordType] = field(default_factory=Counter)  # by agents before this one
    nmea_errors: int = 0
    abandoned: list[Outbox] = field(default_factory=list)
    recent: list[bytes] = field(default_factory=list)
    cold_until_ms: int = 0  # no GNSS until then (a restart with the clock reset)
    nmea: bool = True  # through the NMEA text and the parser, or the parsed fix directly
    events: DeviceEvents | None = None  # the member's field events (set at provisioning)

    def checkins(self) -> int:
        now = self.agent.created[RecordType.CHECKIN] if self.agent else 0
        return self.created[RecordType.CHECKIN] + now


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.workdir = spec.workdir
        self.plan = load_plan(spec.plan)
        self.start_ms = spec.start_ms
        self.end_ms = spec.end_ms
        self.now_ms = self.start_ms
        self.broker = BrokerAddress(spec.broker_host, spec.broker_port)
        self.devices: list[SimDevice] = []
        self.latency: list[tuple[str, int, int]] = []  # (device, seq, wall ms stored)
        self.tg: asyncio.TaskGroup | None = None
        self.catalogue = load_catalogue()  # the categories the center distributes

    # -- setting up -----------------------------------------------------------------------

    def provision(self) -> None:
        lines = {ln.id: ln for ln in self.plan.lines}
        seed = self.spec.seed
        issued = int(time.time() * 1000)  # certificates meet the real broker's clock
        with Fleet(self.spec.fleet) as fleet:
            for m in self.spec.devices:
                files = provision_device(
                    fleet,
                    m.id,
                    self.workdir / "devices" / m.id,
                    broker_host=self.broker.host,
                    broker_port=self.broker.port,
                    now_ms=issued,
                    tier=m.tier,
                    team=m.team,
                )
                cfg = load_config(files.config)
                rng = random.Random(seed * 1_000_003 + m.index)
                # members set off over the first ten minutes, as a shift does
                start = self.start_ms + rng.randrange(0, 600) * 1000
                walker = Walker(m.id, self.plan, lines[m.line], rng, start, self.end_ms)
                d = SimDevice(m.id, m.index, m.tier, cfg, walker)
                reports = MemberReports.of(
                    m.id,
                    m.index,
                    seed=seed,
                    rate_per_hour=self.spec.events_per_hour,
                    start_ms=start,
                    end_ms=self.end_ms,
                    catalogue=self.catalogue,
                )
                d.events = DeviceEvents(reports, cfg)
                every = self.spec.nmea_every
                d.nmea = every > 0 and m.index % every == 0
                self.devices.append(d)

    def _uplink(self, d: SimDevice, outbox: Outbox) -> Uplink:
        core = SyncCore(
            batch_size=32,
            max_batch_size=MAX_BATCH,
            ack_timeout_ms=ACK_TIMEOUT_MS,
            first_batch_id=random.getrandbits(31),
        )
        uplink = Uplink(outbox, self.broker, core=core, options=replace(UPLINK, tls=d.config.tls))
        if d.events is not None:
            d.events.attach(uplink)  # the attachments go over every connection the device makes
        return uplink

    def _hook(self, d: SimDevice, uplink: Uplink) -> Callable[[Stored], None]:
        """What happens to each stored record: it wakes the uplink, a check-in's wall time
        is noted (latency), and the newest are kept for duplicate deliveries."""

        def stored(s: Stored) -> None:
            uplink.on_stored(s)
            if s.type is RecordType.CHECKIN:
                self.latency.append((d.id, s.seq, int(time.time() * 1000)))
            d.recent = [*d.recent[-(RECENT - 1) :], s.raw]

        return stored

    def boot(self, d: SimDevice) -> None:
        """What the daemon does at start: open the outbox, count a boot, make the agent."""
        outbox = Outbox(d.config.outbox_path, d.id)
        outbox.begin_boot()
        if d.events is not None:
            d.events.boot(outbox, self.now_ms)
        d.uplink = self._uplink(d, outbox)
        hook = self._hook(d, d.uplink)
        d.agent = DeviceAgent(d.id, d.config.load_key(), self.plan, outbox, on_stored=hook)
        d.started_ms = self.now_ms
        d.alive = True

    def spawn(self, d: SimDevice) -> None:
        assert self.tg is not None and d.uplink is not None
        if d.link_up:
            d.task = self.tg.create_task(d.uplink.run(), name=f"uplink-{d.id}")

    # -- the simulation -------------------------------------------------------------------

    async def advance(self, to_ms: int) -> None:
        t = self.now_ms
        while t < to_ms:
            t += 1000
            for d in self.devices:
                if not d.nmea:  # the fix the parser would make, without the text
                    fix = d.walker.fix(t)
                    if d.alive and d.agent is not None and fix and t >= d.cold_until_ms:
                        d.agent.on_fix(fix)
                else:
                    data = d.walker.tick(t)
                    if d.alive and d.agent is not None and data and t >= d.cold_until_ms:
                        d.agent.on_nmea(data)
                if not d.alive or d.agent is None:
                    continue
                if (t - d.started_ms) % HEALTH_EVERY_MS == 0 and t >= d.cold_until_ms:
                    self.store_health(d, t)
                if d.events is not None and d.uplink is not None:
                    d.events.due(t, d.agent, d.uplink, self.catalogue)
            self.now_ms = t
            await asyncio.sleep(0)  # the uplinks and their acknowledgements run between seconds

    def store_health(self, d: SimDevice, t_ms: int) -> None:
        assert d.agent is not None
        store_agent_health(d.agent, t_ms, d.started_ms)

    # -- faults ---------------------------------------------------------------------------

    def _pick(self, ids: tuple[str, ...]) -> list[SimDevice]:
        wanted = set(ids)
        return [d for d in self.devices if d.id in wanted]

    def kill(self, d: SimDevice) -> None:
        """kill -9 of the daemon: the uplink dies, the open visit is forgotten, the outbox
        connection is dropped without a close."""
        if not d.alive or d.agent is None:
            return
        d.alive = False
        if d.task is not None:
            d.task.cancel()
        d.created.update(d.agent.created)
        d.nmea_errors += d.agent.parser.stats.bad_checksum + d.agent.parser.stats.malformed
        d.abandoned.append(d.agent.outbox)
        if d.events is not None:
            d.events.abandon()
        d.agent = None

    def restart(self, d: SimDevice, cold_s: int) -> None:
        if d.alive:
            return
        self.boot(d)
        d.cold_until_ms = self.now_ms + cold_s * 1000
        self.spawn(d)

    async def set_link(self, d: SimDevice, up: bool) -> None:
        if d.link_up == up:
            return
        d.link_up = up
        if not up:
            if d.uplink is not None:
                d.uplink.stop()
            if d.task is not None:
                await asyncio.wait_for(d.task, 30)
                d.task = None
        elif d.alive and d.agent is not None:
            # a new connection, as after coverage returns; the outbox is the same
            d.uplink = self._uplink(d, d.agent.outbox)
            d.agent.on_stored = self._hook(d, d.uplink)
            self.spawn(d)

    async def duplicate(self, d: SimDevice) -> int:
        """Deliver the device's recent records again (a gateway or broker repeating itself)."""
        if not d.recent or d.config.tls is None:
            return 0
        batch = Batch(random.getrandbits(31), tuple(d.recent)).encode()
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=f"dup-{d.id}-{random.getrandbits(16)}",
            tls_context=d.config.tls.context(),
            timeout=20,
        ) as client:
            await client.publish(records_topic(d.id), batch, qos=1)
        return len(d.recent)

    def gnss(self, d: SimDevice, *, outage: bool | None, noise: float | None) -> None:
        if outage is not None:
            d.walker.outage = outage
        if noise is not None:
            d.walker.noise_scale = noise

    # -- reports --------------------------------------------------------------------------

    def queued(self) -> int:
        return sum(d.agent.outbox.depth() for d in self.devices if d.agent is not None)

    def checkins(self) -> int:
        return sum(d.checkins() for d in self.devices)

    def attachments_waiting(self) -> int:
        return sum(d.events.waiting() for d in self.devices if d.events is not None)

    def final(self) -> Final:
        out = []
        for d in self.devices:
            made = Counter(d.created)
            if d.agent is not None:
                made.update(d.agent.created)
            out.append(
                DeviceFinal(
                    id=d.id,
                    tier=d.tier,
                    last_seq=d.agent.outbox.last_seq if d.agent is not None else 0,
                    checkins=made[RecordType.CHECKIN],
                    missed=made[RecordType.MISSED],
                    suspicions=made[RecordType.SUSPICION],
                    visits=tuple((v.point_id, v.arrival_ms) for v in d.walker.visits),
                    line=self.walker_line(d),
                    nmea=d.nmea,
                    nmea_errors=d.nmea_errors
                    + (
                        d.agent.parser.stats.bad_checksum + d.agent.parser.stats.malformed
                        if d.agent is not None
                        else 0
                    ),
                    events=d.events.final() if d.events is not None else (),
                )
            )
        path = self.workdir / f"latency-{self.spec.worker}.json"
        path.write_text(json.dumps(self.latency), encoding="utf-8")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Final(
            devices=tuple(out),
            latency_file=str(path),
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_rss_kib=usage.ru_maxrss,
        )

    def walker_line(self, d: SimDevice) -> str:
        for m in self.spec.devices:
            if m.id == d.id:
                return m.line
        return ""

    # -- the conversation with the parent ---------------------------------------------------

    async def handle(self, cmd: Command) -> Answer:
        """One command's answer (`Stop` is the caller's: it ends the conversation)."""
        match cmd:
            case Advance(to_ms=to_ms):
                await self.advance(to_ms)
                walking = sum(1 for d in self.devices if not d.walker.done)
                return At(self.now_ms, self.checkins(), self.queued(), walking)
            case AskPositions():
                return Positions({d.id: d.walker.true_position for d in self.devices})
            case AskQueued():
                down = sum(1 for d in self.devices if not d.alive or not d.link_up)
                return Backlog(self.queued(), down, self.attachments_waiting())
            case Finish():
                for d in self.devices:
                    if d.agent is not None:
                        d.agent.finish()
                return Done(checkins=self.checkins(), queued=self.queued())
            case Stop():
                return await self.stop()
            case _:
                return await self.on_devices(cmd)

    async def on_devices(self, cmd: DeviceCommand) -> Done:
        """A fault's command to some of this worker's devices."""
        picked = self._pick(cmd.devices)
        match cmd:
            case Duplicate():
                return Done(sent=sum([await self.duplicate(d) for d in picked]))
            case Link(up=up):
                for d in picked:
                    await self.set_link(d, up)
            case Kill():
                for d in picked:
                    self.kill(d)
            case Restart(cold_s=cold_s):
                for d in picked:
                    self.restart(d, cold_s)
            case Gnss(outage=outage, noise=noise):
                for d in picked:
                    self.gnss(d, outage=outage, noise=noise)
            case Spoof(north_m=north_m, east_m=east_m):
                for d in picked:
                    d.walker.spoof_m = (north_m, east_m)
        return Done()

    async def stop(self) -> Final:
        for d in self.devices:
            if d.uplink is not None:
                d.uplink.stop()
        tasks = [d.task for d in self.devices if d.task is not None]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        final = self.final()
        for d in self.devices:
            if d.agent is not None:
                d.agent.outbox.close()
            for box in d.abandoned:
                box.close()
            if d.events is not None:
                d.events.close()
        return final


async def serve(spec: WorkerSpec) -> None:
    w = Worker(spec)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(answer: Answer) -> None:
        sys.stdout.write(encode(answer) + "\n")
        sys.stdout.flush()

    await asyncio.to_thread(w.provision)
    async with asyncio.TaskGroup() as tg:
        w.tg = tg
        for d in w.devices:
            w.boot(d)
            w.spawn(d)
        say(Ready(len(w.devices)))
        while line := await reader.readline():
            cmd = decode_command(line)
            say(cmd if isinstance(cmd, Failed) else await w.handle(cmd))
            if isinstance(cmd, Stop):
                break


def main() -> None:
    spec = WorkerSpec.from_json(Path(sys.argv[1]).read_text(encoding="utf-8"))
    profile = os.environ.get("PICKET_FLEET_PROFILE")  # a folder: write one profile per worker
    if not profile:
        asyncio.run(serve(spec))
        return
    import cProfile

    cProfile.runctx(
        "asyncio.run(serve(spec))",
        globals(),
        {"spec": spec, "asyncio": asyncio, "serve": serve},
        str(Path(profile) / f"worker-{spec.worker}.prof"),
    )


if __name__ == "__main__":
    main()
