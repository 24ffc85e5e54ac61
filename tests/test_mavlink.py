"""Drone telemetry over MAVLink 2: the pure decoder on frames pymavlink packs, and the
simulated drone heard by `MavlinkSource` over real UDP sockets on 127.0.0.1 (and once over a
pseudo-terminal, as a serial telemetry radio). No mocks.

Missions fly in virtual time: the source is given the simulator's clock, and the simulator is
stepped 100 ms at a time as fast as the loop turns, so minutes of flight take a fraction of a
second. Heartbeat loss is the one thing tested on the wall clock, with a short heartbeat.
Every wait is bounded by `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import pty
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import DEADLINE_S
from pymavlink.dialects.v20 import ardupilotmega
from pymavlink.dialects.v20 import common as mavlink2

from agent.checkin.geo import distance_m, offset
from agent.dock.mavlink import DEFAULT_ACCURACY_M, Change, DroneTelemetry, MavlinkDecoder
from agent.dock.mavsource import MavlinkSource
from agent.dock.mavurl import MavlinkError, MavlinkSpec, parse_mavlink_url
from agent.gnss.nmea import UERE_M
from agent.gnss.sources import SourceState, SourceStatus
from contract.fix import FixMode, Quality, TimeSource
from simulators.drone import SimDrone
from simulators.flight import ACCEL_H, CLIMB_MPS, CRUISE_MPS, DESCEND_MPS, WP_RADIUS_M, DroneState

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DOCK = (47.3769, 8.5417, 420.0)
ARMED = int(mavlink2.MAV_MODE_FLAG_SAFETY_ARMED)


# --- frames, as an autopilot packs them -----------------------------------------------------


class Frames:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))


class Autopilot:
    """pymavlink's encoder with a sysid/compid; each call returns the frame it packed."""

    def __init__(self, sysid: int = 1, compid: int = 1, dialect: Any = mavlink2) -> None:
        self.frames = Frames()
        self.mav = dialect.MAVLink(self.frames, srcSystem=sysid, srcComponent=compid)

    def __getattr__(self, name: str) -> Callable[..., bytes]:
        send = getattr(self.mav, f"{name}_send")

        def pack(*args: Any, **kwargs: Any) -> bytes:
            send(*args, **kwargs)
            return self.frames.out.pop()

        return pack

    def heartbeat_(self, *, armed: bool = False, autopilot: int = 3, type_: int = 2) -> bytes:
        base = int(mavlink2.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED) | (ARMED if armed else 0)
        return self.heartbeat(type_, autopilot, base, 5, 4)

    def position(
        self,
        boot_ms: int,
        lat: float = 47.5,
        lon: float = 8.5,
        *,
        alt_m: float = 500.0,
        rel_m: float = 80.0,
        vx: int = 0,
        vy: int = 0,
        vz: int = 0,
        hdg: int = 9000,
    ) -> bytes:
        return self.global_position_int(
            boot_ms,
            round(lat * 1e7),
            round(lon * 1e7),
            round(alt_m * 1000),
            round(rel_m * 1000),
            vx,
            vy,
            vz,
            hdg,
        )


def positions(out: list[DroneTelemetry]) -> list[DroneTelemetry]:
    return [t for t in out if Change.POSITION in t.changed]


# --- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "spec"),
    [
        ("udp://0.0.0.0:14550", MavlinkSpec("udp", host="0.0.0.0", port=14550)),  # noqa: S104
        ("udp://127.0.0.1:0", MavlinkSpec("udp", host="127.0.0.1", port=0)),
        ("udp://[::1]:14550", MavlinkSpec("udp", host="::1", port=14550)),
        ("serial:///dev/ttyACM0", MavlinkSpec("serial", path="/dev/ttyACM0", baud=57600)),
        ("serial:///dev/ttyS1?baud=921600", MavlinkSpec("serial", path="/dev/ttyS1", baud=921600)),
    ],
)
def test_urls(url: str, spec: MavlinkSpec) -> None:
    assert parse_mavlink_url(url) == spec
    assert parse_mavlink_url(str(spec)) == spec


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("tcp://host:5760", "unknown scheme"),
        ("udp://host", "udp://HOST:PORT"),
        ("udp://host:99999", "port is not a number"),
        ("udp://host:14550/x", "nothing more"),
        ("serial://dev/ttyACM0", "absolute path"),
        ("serial:///dev/ttyACM0?baud=12345", "not a standard rate"),
        ("serial:///dev/ttyACM0?speed=57600", "only parameter"),
    ],
)
def test_bad_urls(url: str, why: str) -> None:
    with pytest.raises(MavlinkError, match=why):
        parse_mavlink_url(url)


# --- the decoder -------------------------------------------------------------------------------


def test_position_battery_mission_and_armed_are_decoded() -> None:
    ap, dec = Autopilot(sysid=7), MavlinkDecoder(time_source=TimeSource.GNSS)
    out = dec.feed(ap.heartbeat_(armed=True), T0)
    assert [(t.changed, t.heartbeat_ok, t.armed, t.fix) for t in out] == [
        (Change.HEARTBEAT | Change.ARMED, True, True, None)
    ]
    assert (dec.system_id, dec.component_id, dec.last_heartbeat_ms) == (7, 1, T0)
    gps = ap.gps_raw_int(0, 4, 0, 0, 0, 80, 120, 0, 0, 17, h_acc=650)
    pos = ap.position(
        100_000, 47.3769123, 8.5417456, alt_m=512.345, rel_m=92.5, vx=300, vy=-400, vz=-150
    )
    (t,) = dec.feed(gps + pos, T0 + 40)
    fix = t.fix
    assert fix is not None and t.changed == Change.POSITION
    assert (fix.lat, fix.lon) == (47.3769123, 8.5417456)
    assert (fix.alt_m, t.rel_alt_m) == (512.345, 92.5)
    assert fix.speed_mps == pytest.approx(5.0)
    assert fix.course_deg == pytest.approx(math.degrees(math.atan2(-4, 3)) % 360)  # over ground
    assert (t.heading_deg, t.climb_mps) == (90.0, 1.5)  # the nose, and up positive
    assert (fix.mode, fix.quality, fix.hdop, fix.satellites) == (
        FixMode.FIX_3D,
        Quality.DGPS,
        0.8,
        17,
    )
    assert fix.accuracy_m == 0.65  # h_acc wins over HDOP × UERE
    assert fix.usable and fix.time_source is TimeSource.GNSS
    assert fix.time_ms == t.time_ms == T0 + 40  # the first sample sets the offset

    # SYS_STATUS speaks for the battery until a BATTERY_STATUS is heard, which then wins
    (t,) = dec.feed(ap.sys_status(0, 0, 0, 0, 24_000, 1000, 93, 0, 0, 0, 0, 0, 0), T0 + 50)
    assert (t.changed, t.battery_pct, t.battery_mv) == (Change.BATTERY, 93, 24_000)
    assert dec.feed(ap.sys_status(0, 0, 0, 0, 24_000, 1000, 93, 0, 0, 0, 0, 0, 0), T0 + 60) == []
    cells = [4010, 4000, 3990, 4005, 3995, 4000, *[0xFFFF] * 4]
    (t,) = dec.feed(ap.battery_status(0, 1, 1, 2500, cells, 900, 1200, 0, 92), T0 + 70)
    assert (t.battery_pct, t.battery_mv) == (92, 24_000)
    assert dec.feed(ap.sys_status(0, 0, 0, 0, 25_000, 1000, 99, 0, 0, 0, 0, 0, 0), T0 + 80) == []
    unknown = ap.battery_status(0, 1, 1, 2500, [0xFFFF] * 10, -1, -1, -1, -1)
    (t,) = dec.feed(unknown, T0 + 90)
    assert (t.battery_pct, t.battery_mv) == (None, None)

    # mission progress: on change only; MISSION_ITEM_REACHED every time, on its own telemetry
    (t,) = dec.feed(ap.mission_current(0, 4, 3, 1), T0 + 100)
    assert (t.changed, t.mission_seq, t.reached) == (Change.MISSION, 0, None)
    assert dec.feed(ap.mission_current(0, 4, 3, 1), T0 + 200) == []
    out = dec.feed(ap.mission_item_reached(0) + ap.mission_current(1, 4, 3, 1), T0 + 300)
    assert [(t.changed, t.reached, t.mission_seq) for t in out] == [
        (Change.REACHED, 0, 0),
        (Change.MISSION, None, 1),
    ]
    (t,) = dec.feed(ap.heartbeat_(armed=False), T0 + 400)
    assert (t.changed, t.armed, t.fix) == (Change.ARMED, False, fix)  # a snapshot: last fix
    assert dec.stats.messages == dec.stats.accepted == 13
    assert (dec.stats.bad, dec.stats.unknown, dec.stats.ignored, dec.stats.lost) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("fix_type", "eph", "h_acc", "mode", "quality", "accuracy"),
    [
        (3, 90, 0, FixMode.FIX_3D, Quality.GPS, 0.9 * UERE_M),  # HDOP × UERE without h_acc
        (3, 0xFFFF, 0, FixMode.FIX_3D, Quality.GPS, DEFAULT_ACCURACY_M),
        (6, 60, 20, FixMode.FIX_3D, Quality.RTK, 0.02),
        (5, 60, 0, FixMode.FIX_3D, Quality.FLOAT_RTK, 0.6 * UERE_M),
        (2, 250, 0, FixMode.FIX_2D, Quality.ESTIMATED, 2.5 * UERE_M),
        (1, 0xFFFF, 0, FixMode.NO_FIX, Quality.ESTIMATED, None),
        (0, 0xFFFF, 0, FixMode.NO_FIX, Quality.ESTIMATED, None),
    ],
)
def test_fix_type_sets_mode_quality_and_accuracy(  # noqa: PLR0917 - one per column
    fix_type: int, eph: int, h_acc: int, mode: FixMode, quality: Quality, accuracy: float | None
) -> None:
    ap, dec = Autopilot(), MavlinkDecoder()
    dec.feed(ap.heartbeat_(), T0)
    gps = ap.gps_raw_int(0, fix_type, 0, 0, 0, eph, 0xFFFF, 0, 0, 255, h_acc=h_acc)
    (t,) = dec.feed(gps + ap.position(1000), T0)
    assert t.fix is not None
    assert (t.fix.mode, t.fix.quality, t.fix.satellites) == (mode, quality, 0)
    assert t.fix.accuracy_m == (None if accuracy is None else pytest.approx(accuracy))
    assert t.fix.usable is (quality is not Quality.ESTIMATED)


def test_without_gps_raw_a_3d_fix_is_assumed() -> None:
    ap, dec = Autopilot(), MavlinkDecoder()
    dec.feed(ap.heartbeat_(), T0)
    (t,) = dec.feed(ap.position(1000, vx=10, vy=0, hdg=0xFFFF), T0)
    assert t.fix is not None and t.fix.usable
    assert (t.fix.quality, t.fix.accuracy_m, t.fix.hdop) == (Quality.GPS, DEFAULT_ACCURACY_M, None)
    assert (t.fix.course_deg, t.heading_deg) == (None, None)  # too slow for a course, no hdg
    # an estimator without an origin reports 0, 0: no position at all
    assert dec.feed(ap.position(1200, 0.0, 0.0), T0 + 200) == []
    assert dec.stats.ignored == 1


def test_listens_to_one_vehicle_autopilot() -> None:
    gcs, companion = Autopilot(sysid=255, compid=190), Autopilot(sysid=3, compid=191)
    drone, other = Autopilot(sysid=3), Autopilot(sysid=4)
    dec = MavlinkDecoder()
    gcs_hb = gcs.heartbeat_(type_=int(mavlink2.MAV_TYPE_GCS), autopilot=8)
    assert dec.feed(gcs_hb, T0) == []
    assert dec.feed(companion.heartbeat_(type_=18, autopilot=8), T0) == []
    assert dec.feed(drone.position(1000), T0) == []  # nobody to listen to yet
    assert (dec.system_id, dec.stats.ignored) == (None, 3)
    assert len(dec.feed(drone.heartbeat_(), T0)) == 1
    assert dec.feed(other.heartbeat_(armed=True) + other.position(2000), T0 + 10) == []
    assert dec.feed(companion.position(2000), T0 + 10) == []  # same system, not the autopilot
    assert len(dec.feed(drone.position(2000), T0 + 20)) == 1
    assert (dec.system_id, dec.component_id, dec.stats.ignored) == (3, 1, 6)
    # a given system id: others are ignored even when they speak first
    dec = MavlinkDecoder(system_id=4)
    assert dec.feed(drone.heartbeat_(), T0) == []
    assert [t.heartbeat_ok for t in dec.feed(other.heartbeat_(), T0)] == [True]


def test_heartbeat_loss_and_return() -> None:
    ap, dec = Autopilot(), MavlinkDecoder(heartbeat_timeout_s=3.0)
    assert dec.tick(T0 + 10_000) == []  # never heard: nothing to lose
    dec.feed(ap.heartbeat_(), T0)
    assert dec.tick(T0 + 2999) == []
    dec.feed(ap.position(5000), T0 + 2999)  # telemetry is not a heartbeat
    (lost,) = dec.tick(T0 + 3000)
    assert (lost.changed, lost.heartbeat_ok, lost.time_ms) == (Change.HEARTBEAT, False, T0 + 3000)
    assert dec.tick(T0 + 9000) == []  # once
    back = dec.feed(ap.heartbeat_(), T0 + 9500)
    assert [(t.changed, t.heartbeat_ok) for t in back] == [(Change.HEARTBEAT, True)]
    # feed() notices a loss first, even when the driver's timer did not run
    out = dec.feed(ap.heartbeat_(), T0 + 20_000)
    assert [t.heartbeat_ok for t in out] == [False, True]
    assert dec.stats.heartbeats_lost == 2


def test_drone_time_is_mapped_to_the_dock_clock() -> None:
    ap, dec = Autopilot(), MavlinkDecoder(heartbeat_timeout_s=1e6)
    dec.feed(ap.heartbeat_(), T0)
    boot0 = 600_000
    rng = random.Random(4)
    times, jitter = [], []
    for i in range(50):  # 200 ms apart on the drone, 30 ms of latency plus 0-80 ms jitter
        boot = boot0 + 200 * i
        jitter.append(rng.randint(0, 80))
        arrival = T0 + 200 * i + 30 + jitter[-1]
        (t,) = dec.feed(ap.position(boot), arrival)
        assert t.fix is not None
        assert t.fix.time_ms == t.time_ms <= arrival  # never later than it came
        times.append(t.time_ms - (T0 + 200 * i))
    assert all(30 <= d <= 110 for d in times)
    assert times[-1] - 30 - min(jitter) in (0, 1)  # the smallest latency seen (+ drift room)
    # repeated or reordered positions are dropped; time never runs back
    assert dec.feed(ap.position(boot0 + 200 * 48), T0 + 20_000) == []
    # the dock's clock steps 60 s forward: followed once late samples persist 5 s
    boot = boot0 + 200 * 50
    stepped = []
    for i in range(40):
        (t,) = dec.feed(ap.position(boot + 200 * i), T0 + 60_000 + 200 * (50 + i) + 30)
        stepped.append(t.time_ms - (T0 + 60_000 + 200 * (50 + i)))
    assert stepped[0] < -50_000 and stepped[-1] == 30
    # a reboot: boot time starts over
    (t,) = dec.feed(ap.position(3_000), T0 + 200_000)
    assert dec.stats.reboots == 1 and t.time_ms == T0 + 200_000
    assert dec.stats.ignored == 1


def test_a_frame_cut_at_a_datagram_end_is_dropped_but_a_stream_keeps_it() -> None:
    ap = Autopilot()
    a, b, c = ap.heartbeat_(), ap.position(1000), ap.position(1200)
    dec = MavlinkDecoder()
    assert len(dec.feed(a + b[:10], T0)) == 1
    assert dec.stats.bad == 1  # the cut frame
    out = dec.feed(b[10:] + c, T0 + 300)
    assert len(positions(out)) == 1 and dec.stats.bad == 2  # its tail, as a bad prefix
    dec = MavlinkDecoder()  # a serial stream: the halves meet
    out = dec.feed(a + b[:10], T0, stream=True) + dec.feed(b[10:] + c, T0 + 300, stream=True)
    assert len(positions(out)) == 2 and dec.stats.bad == 0


def test_garbage_unknown_and_corrupt_frames_are_counted() -> None:
    ap, dec = Autopilot(), MavlinkDecoder()
    dec.feed(ap.heartbeat_(), T0)
    corrupt = bytearray(ap.position(1000))
    corrupt[20] ^= 0x55
    ahrs = Autopilot(dialect=ardupilotmega).ahrs(0, 0, 0, 0, 0, 0, 0)  # not in common
    v1 = ap.mav.heartbeat_encode(2, 3, ARMED, 5, 4).pack(ap.mav, force_mavlink1=True)
    assert dec.feed(b"hello drone\n", T0) == []
    assert dec.feed(bytes(corrupt), T0) == []
    assert dec.feed(ahrs, T0) == []
    assert dec.stats.bad == 2 and dec.stats.unknown == 1
    (t,) = dec.feed(v1, T0 + 10)  # MAVLink 1 framing is still understood
    assert t.armed is True
    assert len(dec.feed(ap.position(1400), T0 + 20)) == 1


@settings(max_examples=300, deadline=None)
@given(junk=st.lists(st.binary(max_size=300), max_size=6), stream=st.booleans())
def test_no_input_crashes_the_decoder(junk: list[bytes], stream: bool) -> None:
    ap, dec = Autopilot(), MavlinkDecoder()
    dec.feed(ap.heartbeat_(), T0)
    for i, data in enumerate(junk):
        dec.feed(data, T0 + i)
        dec.feed(b"\xfd" + data, T0 + i, stream=stream)  # looks like a frame start
    dec.reset_stream()
    assert len(positions(dec.feed(ap.position(10**6), T0 + 100))) == 1


# --- the simulator alone -----------------------------------------------------------------------


def mission(dock: tuple[float, float, float] = DOCK) -> list[tuple[float, float, float, float]]:
    """Three aerial checkpoints 200-360 m out: hover 10 s, pass through, hover 20 s."""
    lat, lon, _ = dock
    return [
        (*offset(lat, lon, 220.0, 40.0), 60.0, 10.0),
        (*offset(lat, lon, 260.0, 320.0), 90.0, 0.0),
        (*offset(lat, lon, -60.0, 200.0), 45.0, 20.0),
    ]


def fly_until_disarmed(drone: SimDrone, limit_s: float = 1200) -> None:
    end = drone.now_ms + round(limit_s * 1000)
    while (drone.state is not DroneState.LANDED or drone.armed) and drone.now_ms < end:
        drone.step(drone.now_ms + 500)


def test_sim_kinematics_visits_and_energy() -> None:
    drone = SimDrone(DOCK, rng=random.Random(7), now_ms=T0)
    drone.step(T0 + 2000)
    drone.start_mission(mission(), T0 + 2000)
    fly_until_disarmed(drone)
    assert drone.state is DroneState.LANDED and drone.reached == [0, 1, 2]
    track = drone.track
    for a, b in itertools.pairwise(track):
        dt = (b.time_ms - a.time_ms) / 1000
        assert b.speed_mps <= CRUISE_MPS + 1e-9
        assert abs(b.speed_mps - a.speed_mps) <= ACCEL_H * dt + 1e-6
        climb = (b.rel_alt_m - a.rel_alt_m) / dt
        assert -DESCEND_MPS - 1e-6 <= climb <= CLIMB_MPS + 1e-6
    assert max(s.speed_mps for s in track) == pytest.approx(CRUISE_MPS)
    visits = {v.index: v for v in drone.visits}
    assert sorted(visits) == [0, 1, 2]
    for i, (_, _, _, hover_s) in enumerate(mission()):
        v = visits[i]
        assert hover_s <= v.hovered_s <= hover_s + 0.05
        assert v.left_ms is not None and v.left_ms - v.entered_ms >= hover_s * 1000
    # 1.06 km at 10 m/s, 30 s of hover, climbs and a descent: about four minutes
    assert 200 < drone.flight_time_s < 330
    assert drone.true_position[3] == 0.0 and distance_m(*drone.true_position[:2], *DOCK[:2]) < 0.5


def test_sim_endurance_is_25_to_30_minutes_and_low_battery_returns() -> None:
    lat, lon, _ = DOCK
    drone = SimDrone(DOCK, rng=random.Random(1), now_ms=T0)
    drone.start_mission([(*offset(lat, lon, 30.0, 0.0), 30.0, 3600.0)], T0)
    while drone.state is not DroneState.HOVERING:
        drone.step(drone.now_ms + 1000)
    pct, mv, t = drone.battery_pct, drone.battery_mv, drone.now_ms
    drone.step(t + 300_000)  # five minutes of hover
    assert drone.state is DroneState.HOVERING
    per_minute = (pct - drone.battery_pct) / 5
    assert 100 / 30 <= per_minute <= 100 / 25
    assert drone.battery_mv < mv - 200
    drone.step(drone.now_ms + 1_500_000)  # the failsafe brings it home at 20 %
    assert drone.state in (DroneState.RETURNING, DroneState.LANDING, DroneState.LANDED)
    fly_until_disarmed(drone)
    assert drone.state is DroneState.LANDED and 10 <= drone.battery_pct < 20
    assert drone.visits[0].hovered_s < 3600


# --- over real UDP ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def listening(**kwargs: Any) -> AsyncIterator[tuple[MavlinkSource, list[DroneTelemetry]]]:
    """A MavlinkSource on a free port of 127.0.0.1, consumed into a list by a task."""
    source = MavlinkSource("udp://127.0.0.1:0", **kwargs)
    got: list[DroneTelemetry] = []

    async def consume() -> None:
        async for item in source.telemetry():
            got.append(item)

    task = asyncio.create_task(consume(), name="mavlink-consumer")
    try:
        await until(lambda: source.address is not None)
        yield source, got
        assert not task.done(), "the source must never stop"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    """Wait for `condition`; the deadline only bounds a failure (docs/testing.md)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - counters of the code under test, not events
            await asyncio.sleep(0.002)


class VirtualClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.calls = 0  # how often the source looked at the time

    def __call__(self) -> int:
        self.calls += 1
        return self.now_ms


async def fly(
    drone: SimDrone, clock: VirtualClock, until_ms: int, source: MavlinkSource, step_ms: int = 100
) -> None:
    """Step the drone in virtual time; each step's datagrams are read (and stamped with that
    step's time) before the next step, however long the loop takes to get to them. Call it
    when everything sent to `source` before has been read."""
    while drone.now_ms < until_ms:
        clock.now_ms = drone.now_ms + step_ms
        reads = source.stats.reads + len(drone.step(clock.now_ms))
        await until(lambda r=reads: source.stats.reads >= r)


async def test_udp_mission_matches_the_simulators_truth() -> None:
    clock = VirtualClock(T0)
    statuses: list[SourceStatus] = []
    async with listening(clock=clock, on_status=statuses.append) as (source, got):
        assert source.address is not None
        with SimDrone(DOCK, rng=random.Random(11), now_ms=T0, target=source.address) as drone:
            await fly(drone, clock, T0 + 3000, source)
            drone.start_mission(mission(), T0 + 3000)
            end = T0 + 1_200_000
            while (drone.state is not DroneState.LANDED or drone.armed) and drone.now_ms < end:
                await fly(drone, clock, drone.now_ms + 1000, source)
            await fly(drone, clock, drone.now_ms + 1500, source)  # the disarmed heartbeat
            await until(lambda: source.stats.messages >= drone.sent_messages)
            assert drone.send_errors == 0
    stats = source.stats
    assert (stats.messages, stats.accepted) == (drone.sent_messages, drone.sent_messages)
    assert (stats.bad, stats.lost, stats.dropped, stats.heartbeats_lost) == (0, 0, 0, 0)
    assert [s.state for s in statuses[:3]] == [
        SourceState.CONNECTING,
        SourceState.STALE,
        SourceState.RECEIVING,
    ]
    assert source.peer is not None and source.peer[0] == "127.0.0.1"

    # every position, where the simulator really was (GNSS noise < 1 m, < 0.5 m up)
    fixes = positions(got)
    truth = [s for s in drone.track if s.sent]
    assert len(fixes) == len(truth) > 1000
    for t, s in zip(fixes, truth, strict=True):
        fix = t.fix
        assert fix is not None and fix.usable and fix.time_ms is not None
        assert t.rel_alt_m is not None and fix.alt_m is not None
        assert distance_m(fix.lat, fix.lon, s.lat, s.lon) < 1.0
        assert abs(fix.alt_m - s.alt_m) < 0.5 and abs(t.rel_alt_m - s.rel_alt_m) < 0.5
        assert fix.alt_m - t.rel_alt_m == pytest.approx(DOCK[2], abs=0.002)  # AMSL = dock + rel
        assert fix.speed_mps == pytest.approx(s.speed_mps, abs=0.015)
        assert 0 <= fix.time_ms - s.time_ms <= 200  # the drone's time, on the dock's clock

    # mission progress: the items in order, each waypoint reached, hovers held
    progress = [t.mission_seq for t in got if Change.MISSION in t.changed]
    assert progress == [0, 1, 2, 3]  # 3 is the return to launch
    assert [t.reached for t in got if t.reached is not None] == drone.reached == [0, 1, 2]
    wps = mission()
    for i, (lat, lon, rel_alt, hover_s) in enumerate(wps):
        near = [
            t.time_ms
            for t in fixes
            if t.fix is not None
            and t.rel_alt_m is not None
            and distance_m(t.fix.lat, t.fix.lon, lat, lon) <= WP_RADIUS_M + 1.0
            and abs(t.rel_alt_m - rel_alt) <= WP_RADIUS_M + 0.5
        ]
        assert near, f"waypoint {i} never seen"
        assert (near[-1] - near[0]) / 1000 >= hover_s
        (visit,) = [v for v in drone.visits if v.index == i]
        assert visit.hovered_s >= hover_s

    # armed for the flight only; battery only ever drains
    armed = [t.armed for t in got if Change.ARMED in t.changed]
    assert armed == [False, True, False]
    battery = [(t.battery_pct, t.battery_mv) for t in got if Change.BATTERY in t.changed]
    pcts = [p for p, _ in battery if p is not None]
    assert pcts == sorted(pcts, reverse=True) and pcts[0] - pcts[-1] >= 5
    assert pcts[-1] == pytest.approx(drone.battery_pct, abs=1)
    first_mv, last_mv = battery[0][1], battery[-1][1]
    assert first_mv is not None and last_mv is not None and last_mv < first_mv
    assert all(t.heartbeat_ok for t in got)
    times = [t.time_ms for t in got]
    assert times == sorted(times)


async def test_udp_garbage_and_strangers_are_counted_never_fatal() -> None:
    clock = VirtualClock(T0)
    rng = random.Random(3)
    async with listening(clock=clock) as (source, got):
        assert source.address is not None
        gcs = Autopilot(sysid=255, compid=190)
        stray = Autopilot(sysid=9)
        junk = 0
        with (
            SimDrone(DOCK, rng=random.Random(5), now_ms=T0, target=source.address) as drone,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as noise,
        ):
            await fly(drone, clock, T0 + 1000, source)
            drone.start_mission(mission()[:1], T0 + 1000)
            for k in range(60):
                await fly(drone, clock, drone.now_ms + 500, source)
                data = [
                    rng.randbytes(rng.randint(1, 400)),
                    b"\xfd" + rng.randbytes(rng.randint(0, 40)),
                    stray.position(1000 + k * 100)[:-4],
                ][k % 3]
                noise.sendto(data, source.address)
                noise.sendto(
                    gcs.heartbeat_(type_=6, autopilot=8) + stray.heartbeat_(), source.address
                )
                junk += 1
                reads = source.stats.reads + 2
                await until(lambda r=reads: source.stats.reads >= r)
            await until(lambda: source.stats.messages >= drone.sent_messages + 2 * 60)
    stats = source.stats
    assert stats.bad + stats.unknown >= junk
    assert stats.ignored >= 2 * 60
    assert stats.accepted == drone.sent_messages
    assert len(positions(got)) == len([s for s in drone.track if s.sent])
    assert source.decoder.system_id == 1


async def test_udp_heartbeat_loss_is_noticed_within_the_timeout() -> None:
    """On a virtual clock shared by the drone and the source, stepped only once what was
    sent has been read: the loss is timed to the millisecond however loaded the machine."""
    timeout_s = 0.5
    seen: list[tuple[DroneTelemetry, int | None]] = []
    statuses: list[SourceStatus] = []
    clock = VirtualClock(T0)
    source = MavlinkSource(
        "udp://127.0.0.1:0", heartbeat_timeout_s=timeout_s, clock=clock, on_status=statuses.append
    )

    async def consume() -> None:
        async for item in source.telemetry():
            seen.append((item, source.decoder.last_heartbeat_ms))

    async def looked_at(now_ms: int) -> None:
        """Set the time and wait for the source to look at it: with the drone silent, only
        its tick does, and judges the heartbeat right then."""
        clock.now_ms = now_ms
        calls = clock.calls
        await until(lambda: clock.calls > calls)

    task = asyncio.create_task(consume(), name="mavlink-consumer")
    try:
        await until(lambda: source.address is not None)
        assert source.address is not None
        with SimDrone(
            DOCK, rng=random.Random(2), now_ms=T0, target=source.address, heartbeat_period_ms=100
        ) as drone:
            await fly(drone, clock, T0 + 600, source, step_ms=20)
            drone.silence(1.2)
            silent_from = drone.now_ms
            last_heard = source.decoder.last_heartbeat_ms
            assert last_heard is not None and last_heard <= silent_from
            await looked_at(last_heard + 499)
            assert source.stats.heartbeats_lost == 0  # a millisecond short of the timeout
            await looked_at(last_heard + 500)
            await until(lambda: source.stats.heartbeats_lost == 1)
            await until(lambda: source.status.state is SourceState.STALE)  # real time, 0.5 s
            drone.step(clock.now_ms)  # still silent: nothing sent
            await fly(drone, clock, silent_from + 1700, source, step_ms=20)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    changes = [
        (t.time_ms, t.heartbeat_ok, last) for t, last in seen if Change.HEARTBEAT in t.changed
    ]
    assert [ok for _, ok, _ in changes] == [True, False, True]
    lost_at, _, last_before = changes[1]
    assert last_before == last_heard and lost_at == last_heard + timeout_s * 1000
    back_at = changes[2][0]
    silent_to = silent_from + 1200  # positions sent after the silence are stamped after it
    assert silent_to <= back_at < silent_to + 100 + 20  # the next heartbeat, the step it fell in
    quiet = [t for t, _ in seen if lost_at < t.time_ms < silent_to and Change.POSITION in t.changed]
    assert quiet == []
    assert source.stats.heartbeats_lost == 1
    states = [s.state for s in statuses]
    assert SourceState.STALE in states[2:] and states[-1] is SourceState.RECEIVING


# --- over a serial line ------------------------------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    os.close(slave)  # the source opens it by name, as it would a radio
    os.set_blocking(master, False)
    try:
        yield master, path
    finally:
        os.close(master)


async def test_serial_stream_reassembles_frames(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    clock = VirtualClock(T0)
    source = MavlinkSource(f"serial://{path}?baud=57600", clock=clock)
    got: list[DroneTelemetry] = []

    async def consume() -> None:
        async for item in source.telemetry():
            got.append(item)

    task = asyncio.create_task(consume(), name="mavlink-serial-consumer")
    try:
        await until(lambda: source.status.state is SourceState.STALE)
        drone = SimDrone(DOCK, rng=random.Random(9), now_ms=T0)
        drone.start_mission(mission()[:1], T0)
        while drone.now_ms < T0 + 20_000:
            clock.now_ms = drone.now_ms + 100
            data = b"".join(drone.step(clock.now_ms))
            for i in range(0, len(data), 7):  # a radio delivers odd-sized pieces
                chunk = data[i : i + 7]
                while chunk:
                    try:
                        chunk = chunk[os.write(master, chunk) :]
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
            await asyncio.sleep(0)
        await until(lambda: source.stats.messages >= drone.sent_messages)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert source.stats.bad == 0 and source.stats.accepted == drone.sent_messages
    assert len(positions(got)) == len(drone.track) > 90
    assert any(t.armed for t in got) and got[-1].rel_alt_m is not None and got[-1].rel_alt_m > 20
