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
from pathlib import Path

import pytest
from dockchild import fast_clock
from peers import TlsFleet, running_center, wait_for

from agent.commands import FlyLine, Priority
from agent.config import load_config
from agent.daemon import AgentRun
from agent.dock import DockState, MissionOutcome
from agent.planfile import load_plan
from agent.records import (
    CheckinKey,
    DockStateKey,
    MissionKey,
    Outcome,
    Record,
    RecordType,
    open_record,
)
from center.commands import CommandSigner, publish, receipts
from provisioning.registry import Registry
from simulators.docksim import expected_checkins
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


@contextlib.asynccontextmanager
async def flying(drone: SimDrone, clock: Callable[[], int]) -> AsyncIterator[None]:
    """The drone lives on `clock`: stepped (its telemetry sent) and served (commands
    answered) every 10 ms of real time."""

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

    center_tls = tls_fleet.center_context()
    db = tmp_path / "center.db"
    port = free_udp_port()
    with SimDrone(
        HOME, rng=random.Random(3), now_ms=wall_ms(), target=("127.0.0.1", port)
    ) as drone:
        config = dock_device(tls_fleet, port, drone.listen())
        run = AgentRun(load_config(config), mono_ms=mono_ms, wall_ms=wall_ms)
        async with running_center(tmp_path, tls_fleet.registry, tls_fleet.broker, tls=center_tls):
            agent_task = asyncio.create_task(run.run(), name="dock")
            try:
                async with flying(drone, wall_ms):
                    await wait_for(
                        lambda: run.dock is not None and run.dock.dock.state is DockState.READY,
                        20,
                        "the dock to see its charged drone",
                    )
                    with CommandSigner(tls_fleet.fleet.center_key, db) as signer:
                        fly = signer.build(
                            "d01", FlyLine("S1", Priority.FIRE), now_ms=wall_ms(), ttl_s=600
                        )
                    await publish(
                        tls_fleet.broker.host, tls_fleet.broker.port, "d01", fly.raw,
                        tls=center_tls,
                    )  # fmt: skip
                    records: list[Record] = []

                    def landed() -> bool:
                        records[:] = center_records(db, tls_fleet.registry)
                        return bool(of_type(records, RecordType.MISSION))

                    await wait_for(landed, 90, "the mission's summary at the center")
                    track = drone.track
                    uploaded = drone.uploaded_mission
            finally:
                run.stop()
                await asyncio.wait_for(agent_task, timeout=20)

    # the mission went over MAVLink as an autopilot takes it: take-off, the point, return
    assert [item[0] for item in uploaded] == [22, 16, 20]  # NAV_TAKEOFF, NAV_WAYPOINT, RTL
    [receipt] = receipts(db, ["d01"])
    assert (receipt.number, receipt.outcome) == (fly.number, Outcome.DONE)
    assert states(records)[:5] == [
        DockState.READY,  # charged on the pad
        DockState.LAUNCHING,
        DockState.ON_MISSION,
        DockState.RETURNING,
        DockState.LANDED,
    ]
    truth = expected_checkins(track, load_plan(config.parent / "aerial.geojson"), ["X1"])
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

    center_tls = tls_fleet.center_context()
    db = tmp_path / "center.db"
    port = free_udp_port()
    with SimDrone(
        HOME, rng=random.Random(4), now_ms=wall_ms(), target=("127.0.0.1", port)
    ) as drone:
        config = dock_device(tls_fleet, port, drone.listen())
        async with running_center(tmp_path, tls_fleet.registry, tls_fleet.broker, tls=center_tls):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "picket", "-v", "agent", "run", "--config", str(config),
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                async with flying(drone, wall_ms):
                    await wait_for(
                        lambda: DockState.READY in states(center_records(db, tls_fleet.registry)),
                        30,
                        "the dock's READY at the center",
                    )
                # the drone falls silent: the dock says so
                await wait_for(
                    lambda: DockState.FAULT in states(center_records(db, tls_fleet.registry)),
                    30,
                    "the dock's FAULT at the center",
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    log = err.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    assert "dock of drone u07" in log and "GNSS none" in log
    [fault] = [
        r
        for r in of_type(center_records(db, tls_fleet.registry), RecordType.DOCK_STATE)
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

    center_tls = tls_fleet.center_context()
    db = tmp_path / "center.db"
    port = free_udp_port()

    def records() -> list[Record]:
        return center_records(db, tls_fleet.registry)

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("dockchild.py")), str(config),
            str(epoch), str(SPEEDUP), stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    with SimDrone(HOME, rng=random.Random(6), now_ms=clock(), target=("127.0.0.1", port)) as drone:
        config = dock_device(tls_fleet, port, drone.listen())
        async with running_center(tmp_path, tls_fleet.registry, tls_fleet.broker, tls=center_tls):
            first = await start()
            second: asyncio.subprocess.Process | None = None
            try:
                async with flying(drone, clock):
                    await wait_for(lambda: DockState.READY in states(records()), 30, "READY")
                    with CommandSigner(tls_fleet.fleet.center_key, db) as signer:
                        fly = signer.build("d01", FlyLine("S1"), now_ms=clock(), ttl_s=600)
                    await publish(
                        tls_fleet.broker.host, tls_fleet.broker.port, "d01", fly.raw,
                        tls=center_tls,
                    )  # fmt: skip
                    await wait_for(
                        lambda: DockState.ON_MISSION in states(records()), 30, "ON_MISSION"
                    )
                    first.kill()
                    await first.wait()
                    assert drone.armed  # flying on, its dock dead
                    before = records()
                    second = await start()
                    await wait_for(
                        lambda: of_type(records(), RecordType.MISSION), 90, "the mission record"
                    )
                    rtl = drone.commands_answered
            finally:
                for proc in (first, second):
                    if proc is not None and proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                        await asyncio.wait_for(proc.communicate(), timeout=20)
    assert second is not None and second.returncode == 0
    after = records()
    assert [r.raw for r in before] == [r.raw for r in after[: len(before)]]  # nothing lost
    assert len({(r.header.boot, r.header.seq) for r in after}) == len(after)  # nor doubled
    [mission] = of_type(after, RecordType.MISSION)
    assert (mission.body[MissionKey.COMMAND], mission.body[MissionKey.OUTCOME]) == (
        fly.number,
        MissionOutcome.FAULT,
    )
    reasons = [r.body.get(DockStateKey.REASON) for r in of_type(after, RecordType.DOCK_STATE)]
    assert "restarted during a mission" in reasons
    assert (20, 0) in rtl  # MAV_CMD_NAV_RETURN_TO_LAUNCH, accepted: the dock called it home
    assert not drone.armed  # and it landed
