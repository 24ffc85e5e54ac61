"""A restart mid-shift changes nothing a patrol member or the center sees.

One shift, walked at 1 Hz along a line of five points with windows: A and C are visited in
their windows and B is missed before the restart; after it D is missed and E visited. The
agent is restarted between the two halves: a fresh outbox and pipeline on the same files,
after a clean stop or as after kill -9 (the old outbox never closed, nothing finished), and
once as a real `picket agent run` process killed with SIGKILL and started again. What is
checked is what the device recorded, read back from its outbox and verified with its key:
a missed record for B and D only, once each (no second one for B, none for A or C that
were visited before the restart, and D's, made after it, proves the missed path was live),
check-ins for A, C and E, the same records as a run never interrupted, and no duplicate
by content (center/duplicates.py) among them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import wait_for

from agent.checkin.device import DeviceAgent
from agent.checkin.geo import offset
from agent.checkin.plan import Assignment, Line, Plan, Point, Window
from agent.checkin.planfile import plan_to_geojson
from agent.store.outbox import Outbox
from center.duplicates import Finder
from contract.fix import Fix, FixMode
from contract.keyfiles import write_private
from contract.records import CheckinKey, MissedKey, Record, RecordType, open_record
from simulators.broker import free_port
from simulators.nmea import gga, rmc

DEVICE = "h0001"
DAY = dt.date(2026, 3, 1)
MIDNIGHT = 1_772_323_200_000  # 2026-03-01T00:00Z; the plan's clock is UTC
LAT0, LON0 = 29.265, 106.255
WALK_MPS = 1.4


def hm(hours: int, minutes: int, seconds: int = 0) -> int:
    return MIDNIGHT + ((hours * 60 + minutes) * 60 + seconds) * 1000


# The walk goes north along one street; B and D are 400 m off it and never approached.
SPOTS = {"A": (0.0, 0.0), "B": (200.0, 400.0), "C": (400.0, 0.0), "D": (600.0, 400.0),
         "E": (800.0, 0.0)}  # fmt: skip
WINDOWS = {"A": (480, 490), "B": (490, 500), "C": (500, 530), "D": (530, 540), "E": (540, 550)}
PLAN = Plan(
    version=4,
    points=tuple(
        Point(pid, *offset(LAT0, LON0, n, e), radius_m=25.0, dwell_s=60.0)
        for pid, (n, e) in SPOTS.items()
    ),
    lines=(Line("L1", tuple(SPOTS), tuple(Window(*WINDOWS[p]) for p in SPOTS)),),
    assignments=(Assignment(("L1",), DAY, device=DEVICE),),
)
VISITED = {"A", "C", "E"}  # stood at for minutes inside their windows
MISSED = ["B", "D"]  # never approached: one missed record each, B's before the restart
# (metres north, until): walk there at WALK_MPS, then stand until the time given
BEFORE = [(-100.0, hm(7, 59, 30)), (0.0, hm(8, 3, 30)), (200.0, hm(8, 20)), (400.0, hm(8, 25)),
          (200.0, hm(8, 30))]  # fmt: skip
AFTER = [(200.0, hm(8, 59)), (800.0, hm(9, 8)), (900.0, hm(9, 13))]
RESUME_MS = hm(8, 31)  # the first fix after the restart
END_MS = hm(9, 13, 30)


@dataclass(frozen=True, slots=True)
class Sample:
    time_ms: int
    lat: float
    lon: float
    speed_mps: float


def walk(start_ms: int, north: float, legs: list[tuple[float, int]]) -> Iterator[Sample]:
    """1 Hz samples along the street: to each leg's spot at walking pace, then standing."""
    t = start_ms
    for target, until in legs:
        while t <= until:
            step = max(-WALK_MPS, min(WALK_MPS, target - north))
            north += step
            yield Sample(t, *offset(LAT0, LON0, north, 0.0), abs(step))
            t += 1000


def shift() -> tuple[list[Sample], list[Sample]]:
    before = list(walk(hm(7, 58), -100.0, BEFORE))
    return before, list(walk(RESUME_MS, 200.0, AFTER))


def fix(s: Sample) -> Fix:
    return Fix(s.time_ms, s.lat, s.lon, accuracy_m=2.7, hdop=0.9, mode=FixMode.FIX_3D,
               satellites=9, speed_mps=s.speed_mps)  # fmt: skip


def nmea(samples: list[Sample]) -> bytes:
    return "".join(
        gga(s.time_ms, s.lat, s.lon)
        + rmc(s.time_ms, s.lat, s.lon, speed_mps=s.speed_mps, course_deg=0.0)
        for s in samples
    ).encode()


# --- what the device recorded -------------------------------------------------------------------


def recorded(db: Path, key: Ed25519PrivateKey) -> list[Record]:
    """Every record in the outbox (nothing was acknowledged), verified with the device's key."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.OperationalError:  # not created yet
        return []
    try:
        rows = con.execute("SELECT raw FROM outbox ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # no table yet
        rows = []
    finally:
        con.close()
    return [open_record(raw, key.public_key()) for (raw,) in rows]


def points(records: list[Record], rtype: RecordType) -> list[str]:
    k = CheckinKey.POINT if rtype is RecordType.CHECKIN else MissedKey.POINT
    return sorted(str(r.body[k]) for r in records if r.header.type is rtype)


def events(records: list[Record]) -> list[tuple[int, int, dict[int, object]]]:
    """What the engine stated: check-ins and missed points with their times and bodies."""
    kinds = (RecordType.CHECKIN, RecordType.MISSED)
    return [(r.header.type, r.header.time_ms, dict(r.body)) for r in records
            if r.header.type in kinds]  # fmt: skip


def assert_nothing_twice(records: list[Record]) -> None:
    assert points(records, RecordType.CHECKIN) == sorted(VISITED)
    assert points(records, RecordType.MISSED) == MISSED
    missed_boot = {
        str(r.body[MissedKey.POINT]): r.header.boot
        for r in records
        if r.header.type is RecordType.MISSED
    }
    assert missed_boot["B"] < missed_boot["D"]  # one before the restart, one after
    finder = Finder()
    for r in records:
        finder.add(r)
    found = finder.result()
    assert found.total == 0, found.counts()


# --- in process: the pipeline opened again on the same files ------------------------------------


class Device:
    """The daemon's parts for one shift: outbox, pipeline, the day's agenda (agent/daemon.py)."""

    def __init__(self, folder: Path, key: Ed25519PrivateKey) -> None:
        self.outbox = Outbox(folder / "outbox.db", DEVICE, keys=[key.public_key()])
        self.outbox.begin_boot()
        self.agent = DeviceAgent(DEVICE, key, PLAN, self.outbox)
        self.agent.set_agenda(DAY, PLAN.agenda(DAY, DEVICE))

    def feed(self, samples: list[Sample]) -> None:
        for s in samples:
            self.agent.on_fix(fix(s))
            self.agent.tick(s.time_ms)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_restart_mid_shift_reports_no_window_twice_and_no_visited_point(
    tmp_path: Path, how: str
) -> None:
    key = Ed25519PrivateKey.generate()
    before, after = shift()
    whole = tmp_path / "whole"
    whole.mkdir()
    reference = Device(whole, key)  # the same shift, never interrupted
    reference.feed(before + after)
    reference.agent.finish(END_MS)
    reference.outbox.close()

    first = Device(tmp_path, key)
    first.feed(before)
    mid = recorded(tmp_path / "outbox.db", key)
    assert points(mid, RecordType.CHECKIN) == ["A", "C"]
    assert points(mid, RecordType.MISSED) == ["B"]
    if how == "stop":  # SIGTERM: open visits closed, the outbox closed
        first.agent.finish(before[-1].time_ms)
        first.outbox.close()
    # kill -9: the old outbox is left open and nothing is finished
    second = Device(tmp_path, key)
    second.feed(after)
    second.agent.finish(END_MS)
    second.outbox.close()
    first.outbox.close()

    records = recorded(tmp_path / "outbox.db", key)
    assert_nothing_twice(records)
    assert events(records) == events(recorded(whole / "outbox.db", key))


# --- a real agent process, killed with SIGKILL --------------------------------------------------


def write_device(folder: Path, key: Ed25519PrivateKey, track: Path) -> Path:
    """A device folder with its key, the plan and a config whose broker is never there
    (nothing is acknowledged, so the outbox keeps every record)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(folder / "device.key", pem)
    (folder / "plan.geojson").write_text(json.dumps(plan_to_geojson(PLAN)))
    config = folder / "config.toml"
    config.write_text(
        f'device = "{DEVICE}"\nkey = "device.key"\nplan = "plan.geojson"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[gnss]\nsource = "file://{track}"\n'
    )
    return config


REPO = Path(__file__).resolve().parents[1]  # the agent run is this tree's


async def start_agent(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "picket", "-v", "agent", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip


async def test_agent_process_killed_mid_shift_reports_nothing_twice(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    before, after = shift()
    first_half, second_half = tmp_path / "before.nmea", tmp_path / "after.nmea"
    first_half.write_bytes(nmea(before))
    second_half.write_bytes(nmea(after))
    config = write_device(tmp_path, key, first_half)
    db = tmp_path / "outbox.db"

    def has(rtype: RecordType, *wanted: str) -> bool:
        return set(wanted) <= set(points(recorded(db, key), rtype))

    proc = await start_agent(config)
    try:
        await wait_for(lambda: has(RecordType.CHECKIN, "A", "C"), 60, "check-ins at A and C")
        await wait_for(lambda: has(RecordType.MISSED, "B"), 60, "B missed")
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-shift: nothing finished, nothing closed
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == -signal.SIGKILL, err.decode()

    config.write_text(config.read_text().replace(str(first_half), str(second_half)))
    proc = await start_agent(config)
    try:  # fixes are judged in order: a false miss of C (08:51) would be stored before these
        await wait_for(lambda: has(RecordType.MISSED, "D"), 60, "D missed after the restart")
        await wait_for(lambda: has(RecordType.CHECKIN, "E"), 60, "the check-in at E")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()

    records = recorded(db, key)
    assert_nothing_twice(records)
    assert min(r.header.boot for r in records) < max(r.header.boot for r in records)
