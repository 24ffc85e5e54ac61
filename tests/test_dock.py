"""The drone dock: its state machine, its commands, and the whole path to the center.

The dock's decisions (agent/dock/machine.py) are tested against the simulated drone
(simulators/drone.py) speaking real MAVLink 2 frames, decoded by the real decoder
(agent/dock/mavlink.py): in memory for the pure tests (`Bench`: no socket, virtual time), over UDP
with a TLS broker and the center for the end-to-end ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import DEADLINE_S, TlsFleet, running_center, wait_for

from agent.checkin.device import DeviceAgent
from agent.checkin.engine import CheckinEngine, CheckinEvent
from agent.checkin.geo import offset
from agent.checkin.plan import Line, Plan, Point
from agent.commands.executor import CommandExecutor
from agent.config import load_config
from agent.dock.executor import DockAgent, DockExecutor
from agent.dock.machine import Dock
from agent.dock.mavlink import DroneTelemetry, MavlinkDecoder
from agent.dock.mavsource import MavlinkSource
from agent.dock.outputs import (
    DockState,
    MissionOutcome,
    MissionSummary,
    Output,
    ReturnHome,
    StartMission,
    StateChange,
)
from agent.dock.planning import DockConfig, plan_mission
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from center.commands import CommandSigner, publish, receipts
from contract.commands import (
    AbortMission,
    Body,
    CommandType,
    CommandVerifier,
    FlyLine,
    Priority,
    command_payload,
    read_stored,
)
from contract.cose import sign1
from contract.fix import Fix, TimeSource
from contract.records import CheckinKey, MissionKey, Outcome, RecordType, open_record
from picket import dockcmd
from provisioning.registry import Registry
from simulators.bigdistrict import District, generate
from simulators.dockreport import expected_checkins
from simulators.docksim import CHARGER_W, sortie_plan
from simulators.drone import SimDrone
from simulators.flight import DroneState

T0 = 1_772_330_400_000  # 2026-03-01 10:00 in the district
CENTER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DOCK_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))


@functools.cache
def district() -> District:
    return generate(3)


@functools.cache
def plan() -> Plan:
    return sortie_plan(district())


def config(**changes: object) -> DockConfig:
    site = district().docks[0]
    base = DockConfig("u01", site.lat, site.lon, site.alt_m, wind_mps=4.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class Bench:
    """A dock and its simulated drone joined by MAVLink frames in memory, on virtual time:
    each second the drone flies and sends, the decoder decodes (and notices silence, as
    MavlinkSource does), the dock decides, and its actions go to the drone."""

    def __init__(self, *, battery_pct: float = 100.0, dock: Dock | None = None) -> None:
        site = district().docks[0]
        self.t = T0
        self.drone = SimDrone(
            (site.lat, site.lon, site.alt_m), rng=random.Random(1), now_ms=T0,
            battery_pct=battery_pct,
        )  # fmt: skip
        self.decoder = MavlinkDecoder(time_source=TimeSource.GNSS)
        self.dock = dock if dock is not None else Dock(config(), plan())
        self.outputs: list[Output] = []
        self.executor: DockExecutor | None = None

    def carry(self, outputs: list[Output]) -> None:
        for o in outputs:
            if isinstance(o, StartMission):
                self.drone.start_mission([w.as_tuple() for w in o.waypoints], self.t)
            elif isinstance(o, ReturnHome):
                self.drone.abort(self.t)
        self.outputs.extend(outputs)

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.t += 1000
            for datagram in self.drone.step(self.t):
                for telemetry in self.decoder.feed(datagram, self.t):
                    self.hear(telemetry)
            for telemetry in self.decoder.tick(self.t):
                self.hear(telemetry)
            if self.executor is not None:
                self.executor.tick(self.t)
            else:
                self.carry(self.dock.tick(self.t))

    def hear(self, telemetry: DroneTelemetry) -> None:
        """To the executor when there is one (it records and acts), else to the dock."""
        if self.executor is not None:
            self.executor.on_telemetry(telemetry)
        else:
            self.carry(self.dock.telemetry(telemetry))

    def settle(self) -> None:
        """A calm day (3 m/s) and three seconds of telemetry: the dock knows its drone."""
        self.dock.observe_wind(3.0)
        self.run(3)

    def run_until(self, state: DockState, within_s: int) -> None:
        for _ in range(within_s):
            if self.dock.state is state:
                return
            self.run(1)
        raise AssertionError(f"the dock never reached {state.name} (it is {self.dock.state.name})")

    def fly(self, line: str, priority: Priority = Priority.ROUTINE, command: int = 1) -> None:
        assert self.dock.check_fly(line) is None
        self.carry(self.dock.fly(command, line, priority, self.t))

    def drone_state(self) -> DroneState:
        return self.drone.state  # (a call: mypy would keep an asserted property narrowed)

    def states(self) -> list[DockState]:
        return [o.state for o in self.outputs if isinstance(o, StateChange)]

    def changes(self) -> list[StateChange]:
        return [o for o in self.outputs if isinstance(o, StateChange)]

    def summaries(self) -> list[MissionSummary]:
        return [o for o in self.outputs if isinstance(o, MissionSummary)]

    def checkins(self) -> list[CheckinEvent]:
        return [o for o in self.outputs if isinstance(o, CheckinEvent)]


def telemetry(
    t: int = T0, *, battery: int | None = 100, armed: bool | None = False, ok: bool = True
) -> DroneTelemetry:
    site = district().docks[0]
    fix = Fix(t, site.lat, site.lon, accuracy_m=1.0, alt_m=site.alt_m)
    return DroneTelemetry(t, fix, 0.0, armed, battery, 24_000, 0, None, ok)


# --- altitude bands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("north_m", "rel_alt_m", "checked_in"),
    [
        (0.0, 30.0, False),  # below the band (369-459 m above sea level; the pad is at 321)
        (0.0, 160.0, False),  # above it
        (0.0, 93.0, True),  # in its middle
        (55.0, 93.0, False),  # in the band, but beside the point (radius 40 m)
    ],
    ids=["below-band", "above-band", "inside", "outside-radius"],
)
def test_a_pass_counts_only_inside_the_radius_and_the_band_for_the_dwell(
    north_m: float, rel_alt_m: float, checked_in: bool
) -> None:
    a01 = plan().point("A01")
    assert (a01.alt_min_m, a01.alt_max_m, a01.dwell_s, a01.radius_m) == (369, 459, 10, 40)
    bench = Bench()
    engine = CheckinEngine(plan())
    lat, lon = offset(a01.lat, a01.lon, north_m, 0.0)
    hover_s = 15.0  # longer than the dwell: the drone stays; only where it stays decides
    bench.drone.start_mission([(lat, lon, rel_alt_m, hover_s)], bench.t)
    events = []
    last = 0
    while bench.drone.state is not DroneState.LANDED or bench.drone.armed:
        bench.t += 1000
        for datagram in bench.drone.step(bench.t):
            for t in bench.decoder.feed(datagram, bench.t):
                if t.fix is not None and t.fix.time_ms is not None and t.fix.time_ms >= last + 1000:
                    last = t.fix.time_ms
                    events += engine.feed(t.fix)
    events += engine.finish(bench.t)
    found = [e for e in events if isinstance(e, CheckinEvent)]
    assert [e.point.id for e in found] == (["A01"] if checked_in else [])
    # the drone really was over the point, at that height, for that long (ground truth)
    over = [v for v in bench.drone.visits if v.index == 0]
    assert over and over[0].hovered_s == pytest.approx(hover_s, abs=0.1)
    truth = expected_checkins(bench.drone.track, plan(), ["A01"])
    assert len(truth) == len(found)


def test_the_dock_plans_each_point_in_the_middle_of_its_band() -> None:
    mission = plan_mission(plan(), "AL01", config())
    assert not isinstance(mission, str)
    for pid, w in zip(mission.points, mission.waypoints, strict=True):
        p = plan().point(pid)
        assert p.alt_min_m is not None and p.alt_max_m is not None
        amsl = config().home_alt_m + w.rel_alt_m
        assert p.alt_min_m + 10 <= amsl <= p.alt_max_m - 10, pid
        assert w.hover_s == p.dwell_s + config().hover_margin_s
    # A04 lies below the dock's hill: the middle of its band is 5 m under the pad, so the
    # drone flies at its lowest safe height, still inside the band
    assert mission.waypoints[3].rel_alt_m == config().min_rel_alt_m


# --- the state machine ----------------------------------------------------------------------


def test_on_the_pad_the_dock_charges_until_ready_and_tops_up() -> None:
    dock = Dock(config(), plan())
    seen = []
    for i, battery in enumerate([50, 80, 96, 93, 89, 97]):
        for o in dock.telemetry(telemetry(T0 + i * 1000, battery=battery)):
            assert isinstance(o, StateChange)
            seen.append((o.previous, o.state, o.battery_pct))
    assert seen == [
        (DockState.DOCKED, DockState.CHARGING, 50),
        (DockState.CHARGING, DockState.READY, 96),
        (DockState.READY, DockState.CHARGING, 89),
        (DockState.CHARGING, DockState.READY, 97),
    ]


def test_a_drone_on_the_docks_charger_is_reported_charging_then_ready() -> None:
    """The same over MAVLink from the simulated drone, whose pack the dock's charger fills."""
    bench = Bench(battery_pct=80)
    bench.drone.charger_w = CHARGER_W
    bench.run(3)
    assert bench.dock.state is DockState.CHARGING
    bench.run_until(DockState.READY, 900)
    minutes = (bench.t - T0) / 60_000
    assert 4 < minutes < 10  # 15 % of a 266 Wh pack at ~390 W net
    assert [(c.state, c.reason) for c in bench.changes()] == [
        (DockState.CHARGING, None),
        (DockState.READY, "charged"),
    ]
    assert bench.drone.battery_pct >= 95


def test_a_mission_goes_through_every_state_and_is_summed_up() -> None:
    bench = Bench()
    bench.run(3)
    bench.fly("AL01", Priority.FIRE, command=7)
    bench.run_until(DockState.CHARGING, 1500)
    assert bench.states() == [
        DockState.READY,
        DockState.LAUNCHING,
        DockState.ON_MISSION,
        DockState.RETURNING,
        DockState.LANDED,
        DockState.CHARGING,
    ]
    reasons = [c.reason for c in bench.changes()]
    assert reasons[1:5] == ["command 7: fire", "took off", "every point flown", "landed"]
    assert {c.line for c in bench.changes()[1:5]} == {"AL01"}
    assert [e.point.id for e in bench.checkins()] == ["A01", "A02", "A03", "A04"]
    [summary] = bench.summaries()
    assert summary.outcome is MissionOutcome.COMPLETED
    assert (summary.line, summary.command, summary.priority) == ("AL01", 7, Priority.FIRE)
    assert (summary.reached, summary.missed) == (("A01", "A02", "A03", "A04"), ())
    assert summary.flight_s == pytest.approx(bench.drone.flight_time_s, abs=3)
    assert summary.battery_used_pct == 100 - bench.drone.battery_pct
    # the dock's energy estimate is on the safe side of what the flight took
    mission = plan_mission(plan(), "AL01", config())
    assert not isinstance(mission, str)
    assert summary.battery_used_pct is not None
    assert summary.battery_used_pct < mission.energy_pct < 2 * summary.battery_used_pct


def test_heartbeat_loss_mid_mission_is_a_fault_and_the_drone_is_brought_home() -> None:
    bench = Bench()
    bench.run(3)
    bench.fly("AL01")
    while not bench.checkins():  # over A01 and on to A02
        bench.run(1)
    bench.drone.silence(20)
    bench.run(25)
    fault = [c for c in bench.changes() if c.state is DockState.FAULT]
    assert len(fault) == 1
    assert (fault[0].previous, fault[0].reason) == (DockState.ON_MISSION, "heartbeat lost")
    assert bench.dock.state is DockState.RETURNING  # heartbeat back, armed: told to come home
    assert bench.drone.state is DroneState.RETURNING
    assert bench.dock.check_fly("AL01.1") == "drone not ready: flying line AL01"
    bench.run_until(DockState.CHARGING, 900)
    assert bench.states()[-4:] == [
        DockState.FAULT,
        DockState.RETURNING,
        DockState.LANDED,
        DockState.CHARGING,
    ]
    [summary] = bench.summaries()
    assert summary.outcome is MissionOutcome.FAULT
    assert summary.reached == ("A01",)
    assert summary.missed == ("A02", "A03", "A04")


def test_a_silent_drone_on_the_pad_is_a_fault_until_it_speaks_again() -> None:
    dock = Dock(config(), plan())
    dock.telemetry(telemetry(T0, battery=100))
    assert dock.state is DockState.READY
    out = dock.tick(T0 + 6_000)  # beyond the 5 s heartbeat timeout
    assert [(o.state, o.reason) for o in out if isinstance(o, StateChange)] == [
        (DockState.FAULT, "heartbeat lost")
    ]
    assert dock.check_fly("AL01") == "drone not ready: heartbeat lost"
    dock.telemetry(telemetry(T0 + 7_000))
    dock.telemetry(telemetry(T0 + 8_000))
    assert dock.state is DockState.READY
    assert dock.check_fly("AL01") is None


def test_a_mission_whose_drone_never_arms_is_given_up() -> None:
    dock = Dock(config(), plan())
    dock.telemetry(telemetry(T0))
    out = dock.fly(3, "AL01.1", Priority.ROUTINE, T0)
    assert isinstance(out[0], StartMission) and dock.state is DockState.LAUNCHING
    for s in range(1, 63):  # the drone keeps talking, but stays disarmed
        out += dock.telemetry(telemetry(T0 + s * 1000))
        out += dock.tick(T0 + s * 1000)
    changes = [(o.previous, o.state, o.reason) for o in out if isinstance(o, StateChange)]
    assert changes[-2] == (DockState.LAUNCHING, DockState.DOCKED, "drone did not take off")
    assert changes[-1] == (DockState.DOCKED, DockState.READY, "charged")
    [summary] = [o for o in out if isinstance(o, MissionSummary)]
    assert (summary.outcome, summary.flight_s, summary.missed) == (
        MissionOutcome.FAULT, 0, ("A01",)
    )  # fmt: skip
    assert any(isinstance(o, ReturnHome) for o in out)


@pytest.mark.parametrize(
    ("setup", "line", "reason"),
    [
        ({}, "AL09", "line AL09 not in aerial plan version 1"),
        ({"battery": 23}, "AL01", "battery 23 % below 65 % needed"),
        ({"wind": 14.0}, "AL01", "wind 14 m/s above limit 10 m/s"),
        ({"wind": 10.0}, "AL01", "wind 10 m/s at limit 10 m/s"),
        ({"wind": 10.4}, "AL01", "wind 10.4 m/s above limit 10 m/s"),
        ({"wind": None}, "AL01", "wind unknown: no reading"),
        ({"armed": True}, "AL01", "drone not ready: armed"),
        ({"telemetry": False}, "AL01", "drone not ready: no telemetry yet"),
        ({"battery": None}, "AL01", "battery unknown: no reading"),
        ({"battery": 100}, "AL02", "battery 100 % below 110 % needed"),  # d02's line: too far
    ],
)
def test_a_flight_the_dock_cannot_make_is_refused_with_the_reason(
    setup: dict[str, object], line: str, reason: str
) -> None:
    dock = Dock(config(), plan())
    if "wind" in setup:
        wind = setup["wind"]
        dock.wind_mps = wind if isinstance(wind, float) else None
    if setup.get("telemetry", True):
        battery = setup.get("battery", 100)
        armed = setup.get("armed", False)
        assert battery is None or isinstance(battery, int)
        assert isinstance(armed, bool)
        dock.telemetry(telemetry(battery=battery, armed=armed))
    assert dock.check_fly(line) == reason


def test_a_point_whose_band_is_below_what_the_drone_keeps_cannot_be_flown() -> None:
    site = district().docks[0]
    low = Point("X1", site.lat + 0.002, site.lon, radius_m=40, alt_min_m=300, alt_max_m=340)
    flat = Plan(1, (low,), (Line("LX", ("X1",)),))
    assert plan_mission(flat, "LX", config()) == (
        "point X1: its band ends 19 m above the dock, too low for the 20 m the drone keeps"
    )


# --- commands and receipts (the executor, against a real outbox) ------------------------------


def _signed(body: Body, number: int, issued: int = T0) -> bytes:
    payload = command_payload(
        target="d01", number=number, issued_ms=issued, expires_ms=issued + 60_000, body=body
    )
    return sign1(payload, CENTER)


@contextlib.contextmanager
def executor(tmp_path: Path, bench: Bench) -> Iterator[DockExecutor]:
    box = Outbox(tmp_path / "outbox.db", "d01")
    box.begin_boot()
    agent = DockAgent("d01", DOCK_KEY, plan(), box, drone="u01")
    dock = Dock(config(), plan(), engine=agent.engine)
    bench.dock = dock
    ex = DockExecutor(
        agent,
        CommandVerifier(CENTER.public_key(), "d01"),
        lambda: Stamp(bench.t, TimeSource.GNSS),
        dock,
        bench.drone,
    )
    bench.executor = ex
    try:
        yield ex
    finally:
        box.close()


def _records(box: Outbox, rtype: RecordType) -> list[dict[int, object]]:
    stored = [s for s in box.pending(1000) if s.type is rtype]
    return [dict(open_record(s.raw, DOCK_KEY.public_key()).body) for s in stored]


def test_a_mission_refused_for_low_battery_is_answered_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    bench = Bench(battery_pct=35)
    with executor(tmp_path, bench) as ex:
        bench.dock.observe_wind(3.0)
        bench.run(3)  # the dock hears the drone: 35 %
        handled = ex.handle(_signed(FlyLine("AL01", Priority.FIRE), 1, bench.t))
        assert handled.outcome is Outcome.REFUSED
        assert handled.reason == "battery 35 % below 65 % needed"
        [receipt] = _records(ex.agent.outbox, RecordType.RECEIPT)
        assert receipt == {
            16: 1,
            17: int(CommandType.FLY_LINE),
            18: int(Outcome.REFUSED),
            19: "battery 35 % below 65 % needed",
        }
        assert bench.drone_state() is DroneState.DOCKED  # nothing was sent to the drone
        # a short flight fits: carried out, then aborted by the center
        assert ex.handle(_signed(FlyLine("AL01.1"), 2, bench.t)).outcome is Outcome.DONE
        assert bench.drone_state() is DroneState.TAKING_OFF
        bench.run(20)
        assert ex.handle(_signed(AbortMission(), 3, bench.t)).outcome is Outcome.DONE
        assert bench.drone_state() is DroneState.RETURNING
        bench.run(120)
        assert ex.handle(_signed(AbortMission(), 4, bench.t)).reason == "no mission in flight"
        states = _records(ex.agent.outbox, RecordType.DOCK_STATE)
        assert [(s[17], s[16]) for s in states] == [
            (DockState.DOCKED, DockState.CHARGING),
            (DockState.CHARGING, DockState.LAUNCHING),
            (DockState.LAUNCHING, DockState.ON_MISSION),
            (DockState.ON_MISSION, DockState.RETURNING),
            (DockState.RETURNING, DockState.LANDED),
            (DockState.LANDED, DockState.CHARGING),
        ]
        assert states[3][18] == "aborted by command 3"
        [mission] = _records(ex.agent.outbox, RecordType.MISSION)
        assert mission[MissionKey.OUTCOME] == MissionOutcome.ABORTED
        assert mission[MissionKey.COMMAND] == 2
        assert mission[MissionKey.MISSED] == ["A01"]
        # the stored commands read back as they were sent
        kinds = [read_stored(c.command).body for c in ex.agent.outbox.answered_commands()]
        assert kinds == [
            FlyLine("AL01", Priority.FIRE), FlyLine("AL01.1"), AbortMission(), AbortMission()
        ]  # fmt: skip


class _Unplugged:
    """A link to the drone that loses everything: the dock died before it could send."""

    def start_mission(self, waypoints: object, now_ms: int) -> None:
        pass

    def abort(self, now_ms: int) -> None:
        pass


def test_a_dock_stopped_between_the_receipt_and_the_upload_ends_the_mission_as_fault(
    tmp_path: Path,
) -> None:
    bench = Bench()
    with executor(tmp_path, bench) as ex:
        bench.settle()
        ex.link = _Unplugged()
        assert ex.handle(_signed(FlyLine("AL01.1", Priority.CROWD), 1, bench.t)).outcome is (
            Outcome.DONE
        )
    # ... the power went: the receipt is committed, the drone never heard of the mission
    with executor(tmp_path, bench) as ex:
        bench.dock.observe_wind(3.0)
        ex.restore()
        assert bench.dock.state is DockState.FAULT
        bench.run(3)
        [mission] = _records(ex.agent.outbox, RecordType.MISSION)
        assert (mission[MissionKey.COMMAND], mission[MissionKey.OUTCOME]) == (
            1,
            MissionOutcome.FAULT,
        )
        assert mission[MissionKey.FLIGHT_S] == 0 and mission[MissionKey.MISSED] == ["A01"]
        assert mission[MissionKey.PRIORITY] == Priority.CROWD
        assert bench.drone_state() is DroneState.DOCKED
        assert bench.dock.check_fly("AL01.1") is None  # the dock can fly again
        reasons = [s.get(18) for s in _records(ex.agent.outbox, RecordType.DOCK_STATE)]
        assert "restarted during a mission" in reasons


def test_a_dock_restarted_mid_flight_brings_the_drone_home_and_records_the_mission_once(
    tmp_path: Path,
) -> None:
    bench = Bench()
    with executor(tmp_path, bench) as ex:
        bench.settle()
        assert ex.handle(_signed(FlyLine("AL01.1"), 1, bench.t)).outcome is Outcome.DONE
        bench.run(30)
        assert bench.drone.armed and bench.dock.state is DockState.ON_MISSION
    with executor(tmp_path, bench) as ex:  # the dock restarts; the drone flies on meanwhile
        bench.run(5)
        bench.dock.observe_wind(3.0)
        ex.restore()
        bench.run_until(DockState.CHARGING, 600)  # landed, then charging
        assert bench.drone_state() is DroneState.LANDED
        changes = [(c[17], c[16]) for c in _records(ex.agent.outbox, RecordType.DOCK_STATE)]
        assert changes[-4:] == [  # told to come home at the first reading
            (DockState.DOCKED, DockState.FAULT),  # a restarted dock starts docked
            (DockState.FAULT, DockState.RETURNING),
            (DockState.RETURNING, DockState.LANDED),
            (DockState.LANDED, DockState.CHARGING),
        ]
        [mission] = _records(ex.agent.outbox, RecordType.MISSION)
        assert (mission[MissionKey.COMMAND], mission[MissionKey.OUTCOME]) == (
            1,
            MissionOutcome.FAULT,
        )
        assert mission[MissionKey.FLIGHT_S] > 0
    with executor(tmp_path, bench) as ex:  # and again: the mission is closed, nothing to take up
        ex.restore()
        assert bench.dock.state is DockState.DOCKED and bench.dock.flight is None
        assert len(_records(ex.agent.outbox, RecordType.MISSION)) == 1


def test_a_handset_refuses_the_docks_commands(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", "d01")
    box.begin_boot()
    try:
        agent = DeviceAgent("d01", DOCK_KEY, plan(), box)
        ex = CommandExecutor(
            agent, CommandVerifier(CENTER.public_key(), "d01"), lambda: Stamp(T0, TimeSource.GNSS)
        )
        bodies: list[Body] = [FlyLine("AL01"), AbortMission()]
        for number, body in enumerate(bodies, start=1):
            handled = ex.handle(_signed(body, number))
            assert (handled.outcome, handled.reason) == (
                Outcome.REFUSED,
                "this device is not a dock",
            )
    finally:
        box.close()


def test_an_aerial_checkin_names_the_drone_and_stays_small(tmp_path: Path) -> None:
    bench = Bench()
    with executor(tmp_path, bench) as ex:
        bench.settle()
        assert ex.handle(_signed(FlyLine("AL01.1"), 1, bench.t)).outcome is Outcome.DONE
        bench.run(10)
        bench.run_until(DockState.CHARGING, 600)
        checkins = [s for s in ex.agent.outbox.pending(1000) if s.type is RecordType.CHECKIN]
        [raw] = [s.raw for s in checkins]
        body = open_record(raw, DOCK_KEY.public_key()).body
        assert body[CheckinKey.POINT] == "A01" and body[CheckinKey.DRONE] == "u01"
        assert len(raw) <= 160 + 6  # 6 bytes for the drone's id (docs/records.md)


# --- end to end: the center commands, the drone flies, the center holds the proof ------------


async def soon(cond: Callable[[], bool], what: str, within_s: float = DEADLINE_S) -> None:
    """Like peers.wait_for, without its 50 ms naps: a UDP datagram on loopback takes
    microseconds, and a flight is hundreds of steps."""
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0)


@pytest.mark.integration
async def test_a_mission_commanded_from_the_center_is_flown_and_its_checkins_verified(
    tmp_path: Path, tls_fleet: TlsFleet
) -> None:
    files = tls_fleet.provision("d01")
    cfg = load_config(files.config)
    center_public = cfg.load_center_key()
    assert center_public is not None
    now = {"ms": T0}
    box = Outbox(cfg.outbox_path, "d01")
    box.begin_boot()
    holder: list[DockExecutor] = []
    uplink = Uplink(
        box,
        BrokerAddress(cfg.broker_host, cfg.broker_port),
        options=UplinkOptions(tls=cfg.tls, keepalive_s=4, connect_timeout_s=3.0),
        on_command=lambda raw: holder[0].on_command(raw),  # noqa: PLW0108 (bound later)
    )
    agent = DockAgent("d01", cfg.load_key(), plan(), box, on_stored=uplink.on_stored, drone="u01")
    dock = Dock(config(wind_mps=3.0), plan(), engine=agent.engine)
    source = MavlinkSource("udp://127.0.0.1:0", clock=lambda: now["ms"])
    site = district().docks[0]
    db = tmp_path / "center.db"
    center_tls = tls_fleet.center_context()

    async def feed() -> None:
        async for t in source.telemetry():
            if holder:
                holder[0].on_telemetry(t)

    async with running_center(tmp_path, tls_fleet.registry, tls_fleet.broker, tls=center_tls):
        uplink_task = asyncio.create_task(uplink.run(), name="uplink")
        feed_task = asyncio.create_task(feed(), name="mavlink")
        try:
            await asyncio.wait_for(uplink.connected.wait(), timeout=15)
            await wait_for(lambda: source.address is not None, 10, "the MAVLink socket")
            assert source.address is not None
            with SimDrone(
                (site.lat, site.lon, site.alt_m), rng=random.Random(5), now_ms=T0,
                target=source.address,
            ) as drone:  # fmt: skip
                ex = DockExecutor(
                    agent,
                    CommandVerifier(center_public, "d01"),
                    lambda: Stamp(now["ms"], TimeSource.GNSS),
                    dock,
                    drone,
                )
                holder.append(ex)
                sent = 0

                async def second() -> None:
                    nonlocal sent
                    now["ms"] += 1000
                    sent += len(drone.step(now["ms"]))
                    await soon(lambda: source.stats.reads >= sent, "the datagrams")
                    ex.tick(now["ms"])

                for _ in range(3):
                    await second()
                with CommandSigner(tls_fleet.fleet.center_key, db) as signer:
                    fly = signer.build("d01", FlyLine("AL01.2", Priority.CROWD), now_ms=now["ms"],
                                       ttl_s=300)  # fmt: skip
                await publish(
                    tls_fleet.broker.host, tls_fleet.broker.port, "d01", fly.raw, tls=center_tls
                )
                await wait_for(lambda: box.last_command() >= fly.number, 15, "the dock's answer")
                assert drone.state is DroneState.TAKING_OFF
                for _ in range(900):
                    await second()
                    if dock.state is DockState.CHARGING:
                        break
                assert dock.state is DockState.CHARGING
                truth = expected_checkins(drone.track, plan(), ["A02"])
            await wait_for(lambda: box.depth() == 0, 20, "the outbox to drain")
        finally:
            feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed_task
            uplink.stop()
            await asyncio.wait_for(uplink_task, timeout=15)
            box.close()

    [receipt] = receipts(db, ["d01"])
    assert (receipt.number, receipt.type, receipt.outcome) == (1, 6, Outcome.DONE)
    # every record the dock made is at the center and verifies with the dock's key
    reg = Registry(tls_fleet.registry, readonly=True)
    key = reg.public_key("d01")
    reg.close()
    assert key is not None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute("SELECT seq, type, raw FROM records WHERE device = 'd01'").fetchall()
    con.close()
    records = {seq: open_record(raw, key) for seq, _, raw in rows}
    assert sorted(records) == list(range(1, len(records) + 1))
    checkins = [r for r in records.values() if r.header.type is RecordType.CHECKIN]
    assert len(truth) == 1 and len(checkins) == 1
    [c] = checkins
    assert (c.body[CheckinKey.POINT], c.body[CheckinKey.DRONE]) == ("A02", "u01")
    assert truth[0].start_ms - 1000 <= c.header.time_ms <= truth[0].end_ms
    [mission] = [r for r in records.values() if r.header.type is RecordType.MISSION]
    assert mission.body[MissionKey.LINE] == "AL01.2"
    assert (mission.body[MissionKey.REACHED], mission.body[MissionKey.MISSED]) == (1, [])
    assert mission.body[MissionKey.OUTCOME] == MissionOutcome.COMPLETED


# --- `picket sim dock` ----------------------------------------------------------------------


@pytest.mark.integration
def test_picket_sim_dock_records_every_expected_aerial_checkin_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="picket sim dock")
    dockcmd.add_arguments(parser)
    code = dockcmd.dock(parser.parse_args(["--minutes", "14", "--seed", "3", "--json"]))
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, report
    assert report["aerial_checkins_expected"] >= 4  # AL01 flown whole: four points
    assert report["aerial_checkins_recorded"] == report["aerial_checkins_expected"]
    assert report["aerial_checkins_matched"] == report["aerial_checkins_expected"]
    assert (report["records_lost"], report["records_duplicated"]) == (0, 0)
    assert report["missions_flown"] >= 1 and report["missions_refused"] >= 1
    assert report["commands"][1]["reason"] == "drone not ready: flying line AL01"
    assert report["drained"] is True
    assert isinstance(report["wall_seconds"], float)


def test_picket_sim_dock_refuses_a_dock_the_district_lacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="picket sim dock")
    dockcmd.add_arguments(parser)
    assert dockcmd.dock(parser.parse_args(["--dock", "3", "--minutes", "1"])) == 2
    assert "the district has 2 docks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--minutes", "0"])
