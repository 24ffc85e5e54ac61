"""`picket agent run` as a drone dock: a provisioned device with a `[dock]` section, the
simulated drone over real UDP sockets (telemetry to the dock, mission upload back), the
center over TLS.

The mission test runs the daemon in-process on a clock running SPEEDUP times faster than
real time (the daemon's monotonic and system clocks are both injected, and the drone is
stepped on the same clock), so a 90-second sortie takes about 20 s; the process test runs
`picket agent run` itself in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from dockchild import fast_clock
from peers import TlsFleet, running_center, wait_for

from agent.checkin.planfile import load_plan
from agent.config import load_config
from agent.daemon import AgentRun
from agent.dock.outputs import DockState, MissionOutcome
from center.commands import CommandSigner, publish, receipts
from contract.commands import Command, FlyLine, Priority
from contract.records import (
    CheckinKey,
    DockStateKey,
    MissionKey,
    Outcome,
    Record,
    RecordType,
    open_record,
)
from provisioning.registry import Registry
from simulators.dockreport import expected_checkins
from simulators.drone import SimDrone

pytestmark = pytest.mark.integration

HOME = (29.2840, 106.2375, 321.0)  # the pad: lat, lon, metres above sea level
NORTH_40M = 40 / 111_320
SPEEDUP = 4


def plan_json() -> dict[str, object]:
    """One aerial point 40 m north of the pad, 15-45 m above it, on line S1."""
    lat, lon, alt = HOME
    return {
        "type": "FeatureCollection",
        "picket": {"version": 1, "utc_offset": "+08:00"},
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [lon, lat + NORTH_40M]},
                "properties": {
                    "id": "X1",
                    "radius_m": 15,
                    "dwell_s": 5,
                    "tier": "aerial",
                    "alt_min_m": alt + 15,
                    "alt_max_m": alt + 45,
                },
            },
            {
                "type": "Feature",
                "geometry": None,
                "properties": {"kind": "line", "id": "S1", "points": ["X1"], "tier": "aerial"},
            },
        ],
    }


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dock_device(fleet: TlsFleet, port: int, drone_address: tuple[str, int]) -> Path:
    """Provision d01 and make it a dock hearing its drone on UDP `port`; its config."""
    files = fleet.provision("d01")
    folder = files.config.parent
    (folder / "aerial.geojson").write_text(json.dumps(plan_json()), encoding="utf-8")
    with files.config.open("a", encoding="utf-8") as f:
        f.write(
            "\n[dock]\n"
            f'mavlink = "udp://127.0.0.1:{port}"\n'
            f'drone_address = "{drone_address[0]}:{drone_address[1]}"\n'
            'drone = "u07"\n'
            f"home = [{HOME[0]}, {HOME[1]}, {HOME[2]}]\n"
            "wind = 3.5\n"
            'plan = "aerial.geojson"\n'
        )
    return files.config


def center_records(db: Path, registry: Path) -> list[Record]:
    """The dock's records at the center, verified with its key, oldest first."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = con.execute("SELECT raw FROM records WHERE device = 'd01' ORDER BY seq").fetchall()
        con.close()
    except sqlite3.OperationalError:
        return []
    reg = Registry(registry, readonly=True)
    key = reg.public_key("d01")
    reg.close()
    assert key is not None
    return [open_record(raw, key) for (raw,) in rows]


def of_type(records: list[Record], rtype: RecordType) -> list[Record]:
    return [r for r in records if r.header.type is rtype]


def states(records: list[Record]) -> list[DockState]:
    return [DockState(r.body[DockStateKey.STATE]) for r in of_type(records, RecordType.DOCK_STATE)]


@dataclass
class World:
    """A dock d01 provisioned in `fleet`, its simulated drone, the center over TLS."""

    fleet: TlsFleet
    drone: SimDrone
    config: Path
    db: Path
    clock: Callable[[], int]

    def records(self) -> list[Record]:
        return center_records(self.db, self.fleet.registry)

    def states(self) -> list[DockState]:
        return states(self.records())

    async def fly(self, line: str, priority: Priority = Priority.ROUTINE) -> Command:
        """The operator sends FLY_LINE `line` to d01; the signed command."""
        tls = self.fleet.center_context()
        with CommandSigner(self.fleet.fleet.center_key, self.db) as signer:
            fly = signer.build("d01", FlyLine(line, priority), now_ms=self.clock(), ttl_s=600)
        await publish(self.fleet.broker.host, self.fleet.broker.port, "d01", fly.raw, tls=tls)
        return fly


@contextlib.asynccontextmanager
async def dock_world(
    tmp_path: Path, fleet: TlsFleet, seed: int, clock: Callable[[], int]
) -> AsyncIterator[World]:
    """`World` with the center running; the drone lives on `clock` (stepped, its telemetry
    sent, and served, commands answered) every 10 ms of real time, until `flying` ends."""
    port = free_udp_port()
    with SimDrone(HOME, rng=random.Random(seed), now_ms=clock(), target=("127.0.0.1", port)) as d:
        config = dock_device(fleet, port, d.listen())
        world = World(fleet, d, config, tmp_path / "center.db", clock)
        async with running_center(
            tmp_path, fleet.registry, fleet.broker, tls=fleet.center_context()
        ):
            yield world


@contextlib.asynccontextmanager
async def flying(world: World) -> AsyncIterator[None]:
    drone, clock = world.drone, world.clock

    async def live() -> None:
        while True:
            now = clock()
            drone.step(now)
            drone.serve(now)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(live(), name="drone")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_line_commanded_from_the_center_is_uploaded_over_mavlink_flown_and_verified(
    tmp_path: Path, tls_fleet: TlsFleet
) -> None:
    m0, w0 = time.monotonic(), int(time.time() * 1000)

    def mono_ms() -> int:
        return int((time.monotonic() - m0) * 1000 * SPEEDUP)

    def wall_ms() -> int:
        return w0 + mono_ms()

    async with dock_world(tmp_path, tls_fleet, 3, wall_ms) as world:
        run = AgentRun(load_config(world.config), mono_ms=mono_ms, wall_ms=wall_ms)
        agent_task = asyncio.create_task(run.run(), name="dock")
        try:
            async with flying(world):
                await wait_for(
                    lambda: run.dock is not None and run.dock.dock.state is DockState.READY,
                    20,
                    "the dock to see its charged drone",
                )
                fly = await world.fly("S1", Priority.FIRE)
                await wait_for(
                    lambda: of_type(world.records(), RecordType.MISSION),
                    90,
                    "the mission's summary at the center",
                )
        finally:
            run.stop()
            await asyncio.wait_for(agent_task, timeout=20)
    records, drone = world.records(), world.drone
    # the mission went over MAVLink as an autopilot takes it: take-off, the point, return
    assert [item[0] for item in drone.uploaded_mission] == [22, 16, 20]  # TAKEOFF, WAYPOINT, RTL
    [receipt] = receipts(world.db, ["d01"])
    assert (receipt.number, receipt.outcome) == (fly.number, Outcome.DONE)
    assert states(records)[:5] == [
        DockState.READY,  # charged on the pad
        DockState.LAUNCHING,
        DockState.ON_MISSION,
        DockState.RETURNING,
        DockState.LANDED,
    ]
    truth = expected_checkins(
        drone.track, load_plan(world.config.parent / "aerial.geojson"), ["X1"]
    )
    [checkin] = of_type(records, RecordType.CHECKIN)
    assert (checkin.body[CheckinKey.POINT], checkin.body[CheckinKey.DRONE]) == ("X1", "u07")
    assert len(truth) == 1
    assert truth[0].start_ms - 1000 <= checkin.header.time_ms <= truth[0].end_ms
    [mission] = of_type(records, RecordType.MISSION)
    assert mission.body[MissionKey.LINE] == "S1"
    assert mission.body[MissionKey.OUTCOME] == MissionOutcome.COMPLETED
    assert (mission.body[MissionKey.REACHED], mission.body[MissionKey.MISSED]) == (1, [])
    assert mission.body[MissionKey.PRIORITY] == Priority.FIRE
    seqs = [r.header.seq for r in records]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost on the way


async def test_picket_agent_run_as_a_dock_reports_its_drone_and_a_lost_heartbeat(
    tmp_path: Path, tls_fleet: TlsFleet
) -> None:
    def wall_ms() -> int:
        return int(time.time() * 1000)

    async with dock_world(tmp_path, tls_fleet, 4, wall_ms) as world:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "picket", "-v", "agent", "run", "--config", str(world.config),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with flying(world):
                await wait_for(lambda: DockState.READY in world.states(), 30, "READY")
            # the drone falls silent: the dock says so
            await wait_for(lambda: DockState.FAULT in world.states(), 30, "FAULT")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    log = err.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    assert "dock of drone u07" in log and "GNSS none" in log
    [fault] = [
        r
        for r in of_type(world.records(), RecordType.DOCK_STATE)
        if r.body[DockStateKey.STATE] == DockState.FAULT
    ]
    assert fault.body[DockStateKey.REASON] == "heartbeat lost"


async def test_a_dock_killed_mid_flight_takes_the_mission_up_brings_the_drone_home_and_says_so(
    tmp_path: Path, tls_fleet: TlsFleet
) -> None:
    """kill -9 while the drone climbs: the restarted dock finds the mission it was flying
    (a DONE receipt, no mission record), calls the drone home, and ends the mission as a
    fault; nothing the first run stored is lost."""
    epoch = int(time.time() * 1000)

    def clock() -> int:
        return fast_clock(epoch, SPEEDUP)

    async def start(config: Path) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("dockchild.py")), str(config),
            str(epoch), str(SPEEDUP), stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async with dock_world(tmp_path, tls_fleet, 6, clock) as world:
        drone = world.drone
        first = await start(world.config)
        second: asyncio.subprocess.Process | None = None
        try:
            async with flying(world):
                await wait_for(lambda: DockState.READY in world.states(), 30, "READY")
                fly = await world.fly("S1")
                await wait_for(lambda: DockState.ON_MISSION in world.states(), 30, "ON_MISSION")
                first.kill()
                await first.wait()
                assert drone.armed  # flying on, its dock dead
                before = world.records()
                second = await start(world.config)
                await wait_for(
                    lambda: of_type(world.records(), RecordType.MISSION), 90, "the mission record"
                )
        finally:
            for proc in (first, second):
                if proc is not None and proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(proc.communicate(), timeout=20)
    assert second is not None and second.returncode == 0
    after = world.records()
    assert [r.raw for r in before] == [r.raw for r in after[: len(before)]]  # nothing lost
    assert len({(r.header.boot, r.header.seq) for r in after}) == len(after)  # nor doubled
    [mission] = of_type(after, RecordType.MISSION)
    assert (mission.body[MissionKey.COMMAND], mission.body[MissionKey.OUTCOME]) == (
        fly.number,
        MissionOutcome.FAULT,
    )
    reasons = [r.body.get(DockStateKey.REASON) for r in of_type(after, RecordType.DOCK_STATE)]
    assert "restarted during a mission" in reasons
    assert (20, 0) in drone.commands_answered  # NAV_RETURN_TO_LAUNCH accepted: called home
    assert not drone.armed  # and it landed
