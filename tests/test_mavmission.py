"""The mission upload over MAVLink 2 (agent/dock/mission.py) against the simulated drone."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from pymavlink.dialects.v20 import common as mavlink2

from agent.dock.mavlink import Change, MavlinkDecoder
from agent.dock.mission import MissionLink, MissionUploader, Phase, as_dock_numbering
from simulators.drone import SimDrone
from simulators.flight import DroneState

T0 = 1_780_000_000_000
DOCK = (52.52, 13.405, 35.0)
WAYPOINTS = [(52.5203, 13.405, 25.0, 4.0)]


def drone() -> SimDrone:
    return SimDrone(DOCK, rng=random.Random(1), now_ms=T0)


def state(d: SimDrone) -> DroneState:
    return d.state  # read afresh (an assert narrowed the property)


def kinds(frames: list[bytes]) -> list[str]:
    parser: Any = mavlink2.MAVLink(None)
    return [str(m.get_type()) for f in frames for m in parser.parse_buffer(f) or []]


def exchange(up: MissionUploader, d: SimDrone, frames: list[bytes], now: int) -> None:
    """Pass frames back and forth until neither side has anything to say."""
    while frames:
        replies = [r for f in frames for r in d.handle_mavlink(f, now)]
        frames = [r for f in replies for r in up.feed(f, now)]


def test_a_mission_is_uploaded_armed_started_and_flown_as_start_mission_flies_it() -> None:
    d, up = drone(), MissionUploader()
    first = up.start(WAYPOINTS, T0)
    assert kinds(first) == ["MISSION_COUNT"]
    exchange(up, d, first, T0)
    assert up.outcome is not None and up.outcome.ok, up.outcome
    assert d.state is DroneState.TAKING_OFF and d.armed
    t = T0
    while state(d) is not DroneState.LANDED and t < T0 + 300_000:
        t += 1000
        d.step(t)
    assert d.reached == [0] and state(d) is DroneState.LANDED
    assert d.visits[0].hovered_s >= 4.0


def test_a_lost_request_is_retried_and_the_upload_completes() -> None:
    d, up = drone(), MissionUploader(timeout_ms=1000, retries=3)
    count = up.start(WAYPOINTS, T0)
    lost = [r for f in count for r in d.handle_mavlink(f, T0)]
    assert kinds(lost) == ["MISSION_REQUEST_INT"]  # ... and dropped
    assert up.tick(T0 + 999) == []
    again = up.tick(T0 + 1000)
    assert kinds(again) == ["MISSION_COUNT"] and up.resent == 1
    exchange(up, d, again, T0 + 1000)
    assert up.outcome is not None and up.outcome.ok
    assert d.state is DroneState.TAKING_OFF


def test_an_error_ack_fails_the_upload_with_its_reason() -> None:
    up = MissionUploader()
    up.start(WAYPOINTS, T0)
    mav: Any = mavlink2.MAVLink(None, srcSystem=1, srcComponent=1)
    nack = mav.mission_ack_encode(255, 190, mavlink2.MAV_MISSION_NO_SPACE).pack(mav)
    assert up.feed(nack, T0 + 10) == []
    assert up.outcome is not None and not up.outcome.ok
    assert up.outcome.reason == "MAV_MISSION_NO_SPACE" and up.phase is Phase.IDLE


def test_a_silent_drone_fails_the_upload_after_the_retries() -> None:
    up = MissionUploader(timeout_ms=100, retries=2)
    up.start(WAYPOINTS, T0)
    sent = [up.tick(T0 + 100 * i) for i in range(1, 5)]
    assert [len(s) for s in sent] == [1, 1, 0, 0]
    assert up.outcome is not None and not up.outcome.ok and "no answer" in str(up.outcome.reason)


def test_abort_brings_the_flying_drone_home() -> None:
    d, up = drone(), MissionUploader()
    exchange(up, d, up.start(WAYPOINTS, T0), T0)
    d.step(T0 + 20_000)
    exchange(up, d, up.abort(T0 + 20_000), T0 + 20_000)
    assert up.outcome is not None and up.outcome.operation == "abort" and up.outcome.ok
    assert d.state in (DroneState.RETURNING, DroneState.LANDING)


async def test_the_mission_link_uploads_over_udp() -> None:
    with drone() as d:
        addr = d.listen()
        link = MissionLink(addr, MissionUploader(timeout_ms=200), clock=lambda: T0)
        task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.ready.wait(), 30)
        link.start_mission(WAYPOINTS, T0)
        for _ in range(200):
            d.serve(T0)
            if link.uploader.outcome is not None:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        assert link.uploader.outcome is not None and link.uploader.outcome.ok
        assert d.state is DroneState.TAKING_OFF


def test_an_uploaded_mission_is_numbered_as_uploaded_and_renumbered_for_the_dock() -> None:
    """The autopilot counts the take-off item: waypoint 0 is item 1, the return item 2. The
    dock counts waypoints: `as_dock_numbering` gives it waypoint 0, then 1 (= n: coming home)."""
    d, up = drone(), MissionUploader()
    exchange(up, d, up.start(WAYPOINTS, T0), T0)
    assert [item[0] for item in d.uploaded_mission] == [
        mavlink2.MAV_CMD_NAV_TAKEOFF,
        mavlink2.MAV_CMD_NAV_WAYPOINT,
        mavlink2.MAV_CMD_NAV_RETURN_TO_LAUNCH,
    ]
    decoder = MavlinkDecoder()
    raw: list[tuple[int | None, int | None]] = []
    seen: list[tuple[int | None, int | None]] = []
    t = T0
    while state(d) is not DroneState.LANDED and t < T0 + 300_000:
        t += 500
        for datagram in d.step(t):
            for telemetry in decoder.feed(datagram, t):
                if telemetry.changed & (Change.MISSION | Change.REACHED):
                    raw.append((telemetry.mission_seq, telemetry.reached))
                    mine = as_dock_numbering(telemetry)
                    seen.append((mine.mission_seq, mine.reached))
    assert (1, 1) in raw and (0, 0) in seen  # waypoint 0 reached, as item 1
    assert raw[-1][0] == 2 and seen[-1][0] == 1  # the return: item 2, the dock's n
    assert all(reached is None or reached == 0 for _, reached in seen)
