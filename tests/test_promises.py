"""Promises from README.md and docs/*.md that had no test able to fail for them.

docs/testing.md ("Promises and the tests that hold them") lists every promise checked, with
the test that holds it; the areas with more than a test or two have files of their own
(tests/test_promises_outbox.py, tests/test_promises_center.py, tests/test_promises_link.py).
Here: the LoRa fallback's rules (agent/uplink/lorafallback.py), the bridge's refusal of
another protocol (docs/bridge.md) and a dock's priorities (docs/docks.md). Real parts:
the firmware logic behind a pseudo-terminal, the host driver, a real outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import signed, wait_for
from test_cli_hostile import _numbers, run
from test_dock import Bench, _records, _signed, executor
from test_promises_link import spliced

from agent.dock.outputs import DockState, MissionOutcome
from agent.store.outbox import Outbox, Stored
from agent.uplink.lorafallback import LoraFallback
from center.store import CenterStore
from contract.commands import FlyLine, Priority
from contract.records import MissionKey, Outcome, RecordType, alert_body
from firmware_bridge import frame
from firmware_bridge import messages as m
from firmware_bridge.host import Bridge, BridgeOptions, Event, LogEvent, VersionMismatch
from firmware_bridge.lora import record_packet
from simulators.broker import Mosquitto
from simulators.mcusim import McuSim

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(60, 92)))
T0 = 1_772_323_200_000
THIRTY_DAYS_S = 30 * 86_400
FAST = BridgeOptions(timeout_s=0.1, retries=3, heartbeat_s=0.5, ready_wait_s=5.0, backoff_max_s=0.2)

# --- the LoRa fallback ------------------------------------------------------------------------


@dataclass
class Ip:
    """The uplink's state as the fallback sees it (`Uplink.connected.is_set` in the daemon)."""

    up: bool = True

    def __call__(self) -> bool:
        return self.up


@dataclass
class Radio:
    sim: McuSim
    fallback: LoraFallback
    box: Outbox

    def store(self, rtype: RecordType, tag: str) -> Stored:
        body = alert_body() if rtype is RecordType.ALERT else {16: tag}
        if rtype is RecordType.HEALTH:
            body = {16: 80}
        stored = self.box.append(signed(KEY, "h0001", rtype, body, T0))
        self.fallback.on_stored(stored)
        return stored

    def on_air(self) -> list[bytes]:
        return [p for _t, p in self.sim.sent_packets]


@contextlib.asynccontextmanager
async def radio(tmp_path: Path, ip: Ip, *, max_queue: int = 64) -> AsyncIterator[Radio]:
    box = Outbox(tmp_path / "outbox.db", "h0001")
    sim = McuSim(tmp_path / "mcu", duty_cycle=1.0)  # no duty-cycle waits: order is the point
    sim.start()
    try:
        async with Bridge(str(sim.link), options=FAST) as bridge:
            yield Radio(sim, LoraFallback(bridge, ip, after_s=0, max_queue=max_queue,
                                          retry_s=0.05), box)  # fmt: skip
    finally:
        sim.stop()
        box.close()


@contextlib.asynccontextmanager
async def running(fallback: LoraFallback) -> AsyncIterator[None]:
    task = asyncio.create_task(fallback.run(), name="lora-fallback")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_records_stored_while_ip_is_up_and_health_never_go_by_radio(tmp_path: Path) -> None:
    """agent/uplink/lorafallback.py: records stored while IP is up are never sent by radio,
    even when IP drops right after; only alerts and check-ins ever are."""
    ip = Ip(up=True)
    async with radio(tmp_path, ip) as r, running(r.fallback):
        r.store(RecordType.CHECKIN, "while-up")
        r.store(RecordType.ALERT, "while-up")
        ip.up = False  # IP drops before the radio task has looked
        r.store(RecordType.HEALTH, "down")
        checkin = r.store(RecordType.CHECKIN, "down")
        alert = r.store(RecordType.ALERT, "down")
        # the positive control: what was stored while IP was down goes, alert first
        await wait_for(lambda: len(r.on_air()) >= 2, 10, "two packets on the air")
        assert r.on_air() == [record_packet(alert.raw), record_packet(checkin.raw)]
        assert (r.fallback.stats.queued, r.fallback.stats.sent) == (2, 2)


async def test_the_radio_sends_alerts_first_then_the_newest_and_drops_the_oldest(
    tmp_path: Path,
) -> None:
    """Alerts go first, then the newest check-ins; the queue keeps at most `max_queue`, the
    oldest check-ins dropped first (they still go by IP)."""
    ip = Ip(up=False)
    async with radio(tmp_path, ip, max_queue=3) as r:
        c1, c2, c3 = (r.store(RecordType.CHECKIN, f"C{i}") for i in (1, 2, 3))
        alert = r.store(RecordType.ALERT, "A")
        assert r.fallback.stats.dropped == 1
        async with running(r.fallback):
            await wait_for(lambda: len(r.on_air()) >= 3, 10, "three packets on the air")
        assert r.on_air() == [record_packet(s.raw) for s in (alert, c3, c2)]
        assert record_packet(c1.raw) not in r.on_air()
        assert r.box.depth() == 4  # the radio deletes nothing: only the center's ack does


# --- the bridge refuses another protocol ------------------------------------------------------


async def test_an_mcu_of_another_protocol_is_sent_nothing_but_hello(tmp_path: Path) -> None:
    """docs/bridge.md: an MCU whose HELLO names another protocol is refused with
    VersionMismatch and no other request is sent to it."""
    with (
        McuSim(tmp_path / "mcu", protocol=2, version=(2, 0, 0)) as sim,
        spliced(sim, tmp_path / "ttyHOST") as splice,
    ):
        bridge = Bridge(str(tmp_path / "ttyHOST"), options=FAST)
        bridge.start()
        try:
            for call in (
                bridge.ping(b"x"),
                bridge.send_packet(b"\xd2record"),
                bridge.configure_radio(),
                bridge.battery(),
            ):
                with pytest.raises(VersionMismatch, match="protocol 2"):
                    await call
            # it keeps asking who is there (the firmware may be updated), and nothing else
            await wait_for(lambda: bridge.stats.reconnects >= 2, 10, "the bridge to try twice more")
        finally:
            await bridge.close()
        sent = frame.Decoder().feed(bytes(splice.from_host))
        assert len(sent) >= 3  # the positive control: the recorder saw the HELLOs
        assert {t for t, _i, _p in sent} == {m.HELLO}
        assert sim.sent_packets == []  # nothing went on the air


# --- a dock's priorities ------------------------------------------------------------------------


def test_a_fire_mission_does_not_pre_empt_a_routine_one_in_flight(tmp_path: Path) -> None:
    """docs/docks.md: the priority of a FLY_LINE is recorded, never acted on: a fire-watch
    mission does not pre-empt a routine one in flight (the dock refuses a second mission)."""
    bench = Bench()
    with executor(tmp_path, bench) as ex:
        bench.settle()
        routine = ex.handle(_signed(FlyLine("AL01.1", Priority.ROUTINE), 1, bench.t))
        assert routine.outcome is Outcome.DONE
        bench.run_until(DockState.ON_MISSION, 120)
        fire = ex.handle(_signed(FlyLine("AL01", Priority.FIRE), 2, bench.t))
        assert fire.outcome is Outcome.REFUSED and fire.reason is not None
        assert fire.reason.startswith("drone not ready")
        bench.run_until(DockState.CHARGING, 1500)
        [mission] = _records(ex.agent.outbox, RecordType.MISSION)  # one flight, to its end
    assert mission[MissionKey.COMMAND] == 1
    assert mission[MissionKey.OUTCOME] == MissionOutcome.COMPLETED
    assert mission[MissionKey.PRIORITY] == Priority.ROUTINE


async def test_what_waited_in_the_port_before_the_host_opened_it_is_dropped(
    tmp_path: Path,
) -> None:
    """docs/bridge.md: input that waited in the driver is flushed on opening (an event from
    before this session is not delivered as if it had just happened)."""
    events: list[Event] = []
    stale = frame.encode(m.LOG, 0, bytes((2,)) + b"from before")
    fresh = frame.encode(m.LOG, 0, bytes((1,)) + b"now")
    with (
        McuSim(tmp_path / "mcu") as sim,
        spliced(sim, tmp_path / "ttyHOST") as splice,
    ):
        splice.to_host(stale, wait=True)  # in the tty's input queue, nobody reading
        async with Bridge(str(tmp_path / "ttyHOST"), on_event=events.append, options=FAST) as b:
            assert await b.ping(b"up") < 1.0
            splice.to_host(fresh)  # the positive control, through the same tty
            await wait_for(lambda: any(isinstance(e, LogEvent) for e in events), 5, "the log")
    assert [e for e in events if isinstance(e, LogEvent)] == [LogEvent(1, "now")]


# --- commands live at most 30 days ------------------------------------------------------------


def test_a_command_is_valid_for_thirty_days_and_not_a_second_more(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """docs/commands.md: a command is valid for at most 30 days (`--ttl`); a longer one is
    refused before any number is taken."""
    fleet, db = tmp_path / "fleet", tmp_path / "center.db"
    assert run("provision", "init", "--fleet", fleet, cwd=tmp_path).code == 0
    CenterStore(db).close()
    base = ["center", "reminder", "--fleet", fleet, "--db", db, "--device", "h0001"]
    base += ["--broker", f"{broker.host}:{broker.port}", "--text", "hi"]
    longer = run(*base, "--ttl", str(THIRTY_DAYS_S + 1), cwd=tmp_path)
    assert longer.code == 2 and "--ttl" in longer.err, longer.err
    assert _numbers(db) == []
    month = run(*base, "--ttl", str(THIRTY_DAYS_S), cwd=tmp_path)
    assert month.code == 0, month.err
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT number, expires_ms - issued_ms FROM sent_commands").fetchall()
    assert rows == [(1, THIRTY_DAYS_S * 1000)]
