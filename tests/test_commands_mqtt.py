"""Commands end to end against a real Mosquitto: the center signs and publishes, handsets
(outbox, agent, uplink, executor) answer, the center in-process stores the answers, and the
`picket center` command lines read them back. The pure side is in tests/test_commands.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import TlsFleet, running_center, wait_for

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Line, Plan, Point
from agent.checkin.planfile import plan_to_geojson
from agent.commands.executor import CommandExecutor, bundle_agenda
from agent.config import load_config
from agent.daemon import AgentRun
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink
from center.commands import CommandSigner, publish, receipts, rollcall_answers
from center.store import CenterStore
from contract.commands import CommandVerifier, Reminder, RollCall, TaskBundle, local_date
from contract.fix import Fix, TimeSource
from contract.records import Outcome, RecordType
from picket.commandcmd import (
    add_center_parsers,
    dispatch_async,
    key,
    reminder_async,
    roll_call_async,
)
from provisioning.center import create_center_key, load_center_key
from provisioning.fleet import Fleet
from provisioning.registry import Registry
from simulators.broker import Mosquitto, free_port
from simulators.nmea import gga, rmc

pytestmark = pytest.mark.integration

PLAN = Plan(
    version=3,
    points=(Point("P1", 29.2650, 106.2550), Point("P2", 29.2677, 106.2550)),
    lines=(Line("L1", ("P1", "P2")),),
)
KEYS = {f"h000{i}": Ed25519PrivateKey.from_private_bytes(bytes([i] * 32)) for i in (1, 2)}


def now_ms() -> int:
    return int(time.time() * 1000)


def register(tmp_path: Path) -> Path:
    path = tmp_path / "registry.db"
    reg = Registry(path)
    for dev, k in KEYS.items():
        reg.add(dev, k.public_key().public_bytes_raw(), 0)
    reg.close()
    return path


@dataclass
class Handset:
    box: Outbox
    agent: DeviceAgent
    executor: CommandExecutor
    uplink: Uplink


@contextlib.asynccontextmanager
async def handset(tmp_path: Path, broker: Mosquitto, device: str) -> AsyncIterator[Handset]:
    """A device's agent with its uplink running, commands wired as the daemon wires them."""
    box = Outbox(tmp_path / f"{device}.db", device)
    box.begin_boot()
    uplink = Uplink(box, BrokerAddress(broker.host, broker.port))
    agent = DeviceAgent(device, KEYS[device], PLAN, box, on_stored=uplink.on_stored)
    center_public = load_center_key(tmp_path / "fleet").public_key()
    executor = CommandExecutor(
        agent, CommandVerifier(center_public, device), lambda: Stamp(now_ms(), TimeSource.GNSS)
    )
    uplink.on_command = executor.on_command
    task = asyncio.create_task(uplink.run(), name=f"uplink-{device}")
    try:
        await asyncio.wait_for(uplink.connected.wait(), timeout=10)
        yield Handset(box, agent, executor, uplink)
    finally:
        uplink.stop()
        await asyncio.wait_for(task, timeout=10)
        box.close()


def center_types(db: Path) -> list[int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [t for (t,) in con.execute("SELECT type FROM records ORDER BY device, seq")]
    finally:
        con.close()


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="picket center")
    add_center_parsers(p.add_subparsers(dest="center_command", required=True))
    return p.parse_args(argv)


async def test_a_roll_call_is_answered_once_with_the_position_and_an_expired_one_refused(
    tmp_path: Path, broker: Mosquitto
) -> None:
    create_center_key(tmp_path / "fleet")
    center_key = load_center_key(tmp_path / "fleet")
    db = tmp_path / "center.db"
    challenge = bytes(range(100, 116))
    async with running_center(tmp_path, register(tmp_path), broker):
        async with handset(tmp_path, broker, "h0001") as h:
            h.agent.on_fix(Fix(now_ms() - 2_000, 29.2651, 106.2551, accuracy_m=4.0))
            with CommandSigner(center_key, db) as signer:
                roll = signer.build("h0001", RollCall(challenge), now_ms=now_ms(), ttl_s=60)
                await publish(broker.host, broker.port, "h0001", roll.raw)
                await wait_for(lambda: receipts(db), 10, "the receipt at the center")
                [answer] = rollcall_answers(db, challenge)
                assert answer.device == "h0001"
                assert (answer.lat, answer.lon) == (pytest.approx(29.2651), pytest.approx(106.2551))
                assert answer.accuracy_m == 4.0
                assert rollcall_answers(db, bytes(16)) == []

                # The same bytes again (a replay), then a command that expired an hour ago.
                await publish(broker.host, broker.port, "h0001", roll.raw)
                late = signer.build("h0001", Reminder("x"), now_ms=now_ms() - 3_600_000, ttl_s=60)
                await publish(broker.host, broker.port, "h0001", late.raw)
                await wait_for(lambda: len(receipts(db)) == 2, 10, "the second receipt")
        assert h.executor.stats.ignored["replay"] == 1
    got = [(r.number, r.type, r.outcome, r.reason) for r in receipts(db)]
    assert got == [(1, 2, Outcome.DONE, None), (2, 3, Outcome.REFUSED, "expired")]
    assert center_types(db) == [RecordType.ROLLCALL, RecordType.RECEIPT, RecordType.RECEIPT]


async def test_roll_call_cli_lists_who_answered_where_and_who_did_not(
    tmp_path: Path, broker: Mosquitto
) -> None:
    fleet = tmp_path / "fleet"
    err = io.StringIO()
    assert key(parse("key", "--fleet", str(fleet)), io.StringIO(), err) == 2  # no fleet yet
    assert "not a fleet folder" in err.getvalue()
    Fleet.init(fleet, now_ms()).close()  # `picket provision init`
    assert key(parse("key", "--fleet", str(fleet)), io.StringIO(), io.StringIO()) == 0
    db = tmp_path / "center.db"
    async with (
        running_center(tmp_path, register(tmp_path), broker),
        handset(tmp_path, broker, "h0001") as h,
    ):
        h.agent.on_fix(Fix(now_ms() - 1_000, 29.2677, 106.2550, accuracy_m=2.5))
        argv = ["roll-call", "--fleet", str(fleet), "--db", str(db)]
        argv += ["--broker", f"{broker.host}:{broker.port}", "--team", "T01"]
        out, err = io.StringIO(), io.StringIO()
        code = await roll_call_async(
            parse(*argv, "--members", "h0001,h0002", "--wait", "3"), out, err
        )
        assert code == 1, err.getvalue()  # h0002 is switched off
        text = out.getvalue()
        assert "h0001" in text and "29.2677000" in text and "106.2550000" in text
        assert [ln.split() for ln in text.splitlines()][-1] == ["h0002", "no", "answer"]
        assert "1 of 2 answered" in err.getvalue()

        out = io.StringIO()
        code = await roll_call_async(
            parse(*argv, "--members", "h0001", "--json", "--wait", "10"), out, err
        )
        assert code == 0
        doc = json.loads(out.getvalue().splitlines()[-1])
        assert [a["device"] for a in doc["answered"]] == ["h0001"]
        assert doc["missing"] == [] and doc["sent"] == [{"device": "h0001", "number": 2}]


async def test_dispatch_cli_sets_the_agenda_or_reports_the_refusal(
    tmp_path: Path, broker: Mosquitto
) -> None:
    fleet = tmp_path / "fleet"
    create_center_key(fleet)
    db = tmp_path / "center.db"
    today = local_date(now_ms(), PLAN.utc_offset_min)
    async with (
        running_center(tmp_path, register(tmp_path), broker),
        handset(tmp_path, broker, "h0001") as h,
    ):
        argv = ["dispatch", "--fleet", str(fleet), "--db", str(db), "--device", "h0001"]
        argv += ["--broker", f"{broker.host}:{broker.port}", "--date", today.isoformat()]
        argv += ["--lines", "L1", "--wait", "10"]
        out, err = io.StringIO(), io.StringIO()
        assert await dispatch_async(parse(*argv, "--plan-version", "3"), out, err) == 0
        assert "done" in out.getvalue()
        bundle = TaskBundle(3, today, ("L1",))
        assert h.agent.engine.agenda == bundle_agenda(PLAN, bundle, "h0001")

        out = io.StringIO()
        assert await dispatch_async(parse(*argv, "--plan-version", "9"), out, err) == 1
        assert "refused: plan version 9 not on device" in out.getvalue()
        assert h.executor.bundle == bundle  # the refused one changed nothing

        out = io.StringIO()
        reminder = ["reminder", "--fleet", str(fleet), "--db", str(db), "--device", "h0001"]
        reminder += ["--broker", f"{broker.host}:{broker.port}", "--wait", "10"]
        args = parse(*reminder, "--text", "Torch check at 18:00", "--json")
        assert await reminder_async(args, out, err) == 0
        doc = json.loads(out.getvalue())
        assert doc["ok"] and doc["sent"][0]["outcome"] == "done"
        assert doc["sent"][0]["number"] == 3


def test_cli_refuses_bad_input_with_exit_2_and_an_unreachable_broker_with_1(
    tmp_path: Path,
) -> None:
    fleet, db = tmp_path / "fleet", tmp_path / "center.db"
    base = ["roll-call", "--fleet", str(fleet), "--db", str(db), "--device", "h0001"]
    base += ["--broker", f"127.0.0.1:{free_port()}", "--wait", "0"]

    def run(*argv: str) -> tuple[int, str]:
        err = io.StringIO()
        code = asyncio.run(roll_call_async(parse(*argv), io.StringIO(), err))
        return code, err.getvalue()

    code, err = run(*base)
    assert code == 2 and "no center key" in err
    create_center_key(fleet)
    code, err = run(*base)
    assert code == 2 and "no center database" in err
    db.write_bytes(b"")
    code, err = run(*base)
    assert code == 2 and "not a Picket center database" in err
    db.unlink()
    CenterStore(db).close()
    code, err = run(*base)
    assert code == 1 and "cannot publish" in err
    code, err = run(*base[:5], "--team", "T01", *base[7:])
    assert code == 2 and "--members" in err
    with pytest.raises(SystemExit) as exc:
        parse("dispatch", *base[1:], "--date", "2026-02-30", "--lines", "L1", "--plan-version", "1")
    assert exc.value.code == 2


async def test_the_daemon_carries_out_commands_and_restores_a_bundle_after_a_restart(
    tmp_path: Path, tls_fleet: TlsFleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    center_key = tls_fleet.fleet.center_key
    files = tls_fleet.provision("h0001")  # the center's key comes in the bundle
    broker, center_tls = tls_fleet.broker, tls_fleet.center_context()
    (files.directory / "plan.geojson").write_text(json.dumps(plan_to_geojson(PLAN)))
    t = now_ms()
    nmea = tmp_path / "fix.nmea"
    nmea.write_text(
        "".join(
            gga(t + i * 1000, 29.2651, 106.2551)
            + rmc(t + i * 1000, 29.2651, 106.2551, speed_mps=0, course_deg=0)
            for i in range(3)
        )
    )
    config = files.config
    text = config.read_text().replace(
        'outbox = "outbox.db"', 'outbox = "outbox.db"\nplan = "plan.geojson"'
    )
    config.write_text(text + f'\n[gnss]\nsource = "file://{nmea}"\n')
    cfg = load_config(config)
    box = Outbox(cfg.outbox_path, "h0001")
    box.store_time(now_ms())  # the device knows the time from a previous run
    box.close()
    db = tmp_path / "center.db"
    today = local_date(now_ms(), 0)
    async with running_center(tmp_path, tls_fleet.registry, broker, tls=center_tls):
        run = AgentRun(cfg)
        task = asyncio.create_task(run.run(), name="agent")
        try:
            with CommandSigner(center_key, db) as signer:
                bundle = signer.build(
                    "h0001", TaskBundle(3, today, ("L1",)), now_ms=now_ms(), ttl_s=600
                )
                await wait_for(lambda: "agenda for" in caplog.text, 15, "the agent's first tick")
                await publish(broker.host, broker.port, "h0001", bundle.raw, tls=center_tls)
                await wait_for(lambda: receipts(db), 15, "the receipt")
        finally:
            run.stop()
            await asyncio.wait_for(task, timeout=15)
        assert [(r.number, r.outcome) for r in receipts(db)] == [(1, Outcome.DONE)]
        assert f"agenda for {today}: 0 points" in caplog.text  # the plan assigns nothing
        caplog.clear()
        run = AgentRun(cfg)
        task = asyncio.create_task(run.run(), name="agent")
        try:
            await wait_for(lambda: "agenda for" in caplog.text, 15, "the restarted agent's tick")
        finally:
            run.stop()
            await asyncio.wait_for(task, timeout=15)
        assert f"agenda for {today}: 2 points" in caplog.text  # the bundle's line L1
