"""A damaged outbox gives back what it still holds; the sidecar and the replay floor survive
hostile bytes; no number from outside makes SQLite raise OverflowError.

What "readable" means is decided here independently of agent/store/salvage.py: every
COSE_Sign1 item cbor2 can decode at a record's first bytes, in the file and its -wal, that
verifies with the device's key. The outbox must put back exactly those (pending, with their
own numbers and bytes), number new records after them, and state what was lost in a
signed DROPPED record; with a real center behind Mosquitto, every one of them arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import TlsFleet, running_center, signed, wait_for

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Plan
from agent.commands.executor import CommandExecutor
from agent.config import load_config
from agent.daemon import AgentRun
from agent.gnss.timekeeper import Stamp
from agent.health import store_salvage_report
from agent.store.cmdfloor import FLOOR_NAME, read_floor
from agent.store.outbox import Outbox
from agent.store.recovery import aside_path, move_aside, write_reserve
from agent.uplink.mqtt import BrokerAddress, Uplink
from agent.uplink.sync import SyncCore
from center.commands import CommandSigner, publish, receipts
from contract.commands import CommandVerifier, RollCall, command_payload
from contract.cose import sign1
from contract.fix import TimeSource
from contract.records import DroppedKey, RecordType, open_record
from contract.recordschema import validate_body
from provisioning.registry import Registry
from simulators.broker import Mosquitto

REPO = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).with_name("outbox_writer.py")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))  # outbox_writer's device
PUBLIC = KEY.public_key()
DEVICE = "h0001"
T0 = 1_772_323_200_000
MAGIC = b"\xd2\x84\x43\xa1\x01\x27\xa0"


def readable(path: Path) -> dict[int, bytes]:
    """seq -> bytes of every record of the device that verifies, in the file and its -wal."""
    out: dict[int, bytes] = {}
    for p in (path, path.with_name(path.name + "-wal")):
        data = p.read_bytes() if p.exists() else b""
        i = data.find(MAGIC)
        while i >= 0:
            fp = io.BytesIO(data[i : i + 70_000])
            with contextlib.suppress(Exception):  # what does not read is not readable
                cbor2.CBORDecoder(fp).decode()
                raw = data[i : i + fp.tell()]
                rec = open_record(raw, PUBLIC)
                if rec.header.device == DEVICE:
                    out.setdefault(rec.header.seq, raw)
            i = data.find(MAGIC, i + 1)
    return out


def filled(path: Path, n: int = 300) -> int:
    box = Outbox(path, DEVICE)
    box.begin_boot()
    box.append_many(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P001"}, T0) for _ in range(n))
    last = box.last_seq
    box.close()
    return last


def damage(path: Path, how: str, rng: random.Random) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        if how == "8 KB random mid-file":
            f.seek(size // 2)
            f.write(os.urandom(8192))
        elif how == "zeroed header":
            f.write(bytes(100))
        elif how == "truncated to half":
            f.truncate(size // 2)
        else:  # random bytes, random length, random offset
            length = rng.randrange(1, 16_384)
            f.seek(rng.randrange(0, size))
            f.write(rng.randbytes(length))


def check_salvage(path: Path, before: dict[int, bytes], old_last: int) -> Outbox:
    """The outbox reopened on a damaged file: exactly the readable records are back."""
    box = Outbox(path, DEVICE, keys=[PUBLIC])
    held = {s.seq: s.raw for s in box.pending(10**6)}
    assert held == before, f"readable {len(before)}, put back {len(held)}"
    if before and box.recovered_from is not None:
        report = box.salvage
        assert report is not None and report.salvaged == len(before)
        lost = [s for s in range(min(before), max(before) + 1) if s not in before]
        assert report.lost >= len(lost)
    box.begin_boot()
    new = box.append(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P002"}, T0))
    assert new.seq > max([old_last, *before]), "a sequence number was used again"
    return box


DAMAGE = ["8 KB random mid-file", "zeroed header", "truncated to half"]


@pytest.mark.parametrize("how", DAMAGE + [f"random {i}" for i in range(8)])
def test_every_readable_record_of_a_damaged_outbox_is_put_back(tmp_path: Path, how: str) -> None:
    path = tmp_path / "o.db"
    old_last = filled(path)
    damage(path, how, random.Random(how))
    before = readable(path)
    box = check_salvage(path, before, old_last)
    if how == "zeroed header":
        assert len(before) == 300
    report = box.salvage
    stored = store_salvage_report(box, KEY, time_ms=T0, time_source=TimeSource.PERSISTED)
    assert box.salvage is None
    if report is not None and report.lost:
        assert stored is not None
        rec = open_record(stored.raw, PUBLIC)
        assert rec.header.type is RecordType.DROPPED
        validate_body(rec.header.type, rec.body)
        assert rec.body[DroppedKey.COUNT] == report.lost
        assert rec.body[DroppedKey.SALVAGED] == len(before)
        assert rec.body[DroppedKey.BYTES] == 0 and rec.body[DroppedKey.TYPES] == []
    else:
        assert stored is None
    box.close()
    box = Outbox(path, DEVICE, keys=[PUBLIC])  # the report is not made twice
    assert box.recovered_from is None and box.salvage is None
    box.close()


def test_acknowledged_records_left_in_free_space_do_not_come_back(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, DEVICE)
    box.begin_boot()
    box.append_many(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P001"}, T0) for _ in range(300))
    box.acknowledge(range(1, 201))
    box.close()
    with path.open("r+b") as f:  # the last page: a leaf of the newest records
        f.seek(path.stat().st_size - 4096)
        f.write(os.urandom(4096))
    box = Outbox(path, DEVICE, keys=[PUBLIC])
    held = [s.seq for s in box.pending(10**6)]
    assert held and min(held) > 200
    box.close()


def test_a_salvage_a_kill_interrupted_is_done_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    old_last = filled(path)
    (path.with_name("o.db.reserve")).unlink()
    damage(path, "zeroed header", random.Random(1))
    before = readable(path)
    dest = aside_path(path)  # what a start does before it is killed: name it, move it
    write_reserve(path, DEVICE, 1, old_last + 1, salvage=dest.name)
    move_aside(path, dest)
    box = check_salvage(path, before, old_last)
    assert box.recovered_from == dest
    box.close()
    assert "salvage" not in json.loads(path.with_name("o.db.reserve").read_text())


def test_the_last_known_time_and_answered_commands_survive(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, DEVICE)
    box.begin_boot()
    box.store_time(T0 + 5)
    box.answer_command(
        number=7,
        command_type=2,
        outcome=0,
        reason=None,
        time_ms=T0,
        command=b"cmd",
        builds=[signed(KEY, DEVICE, RecordType.RECEIPT, {16: 7, 17: 2, 18: 0}, T0)],
    )
    box.append_many(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P001"}, T0) for _ in range(300))
    box.close()
    damage(path, "8 KB random mid-file", random.Random(2))
    box = Outbox(path, DEVICE, keys=[PUBLIC])
    assert box.recovered_from is not None
    assert box.stored_time() is not None and box.stored_time() >= T0  # type: ignore[operator]
    assert box.last_command() == 7
    box.close()


# --- kill -9, damage, and a real center -----------------------------------------------------


def write_then_kill(path: Path, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), KEY.private_bytes_raw().hex()],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    while not proc.stdout.readline().startswith(b"ready"):
        pass
    # killed in the middle of appending, after a random number of records it confirmed (not
    # after a random time: on a loaded machine that could be before the first one)
    confirmed = rng.randint(20, 200)
    while int(proc.stdout.readline()) < confirmed:
        pass
    proc.kill()
    proc.wait()
    proc.stdout.close()


def register(tmp_path: Path) -> Path:
    path = tmp_path / "registry.db"
    reg = Registry(path)
    reg.add(DEVICE, PUBLIC.public_bytes_raw(), 0)
    reg.close()
    return path


def center_seqs(db: Path) -> dict[int, bytes]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT seq, raw FROM records WHERE device = ?", (DEVICE,)).fetchall()
        return {s: bytes(r) for s, r in rows}
    finally:
        con.close()


@pytest.mark.integration
async def test_kill_9_and_damage_every_readable_record_reaches_the_center(
    tmp_path: Path, broker: Mosquitto
) -> None:
    rng = random.Random(20_261_207)
    registry = register(tmp_path)
    expected: dict[int, bytes] = {}
    figures = []
    for round_ in range(4):
        path = tmp_path / f"r{round_}" / "o.db"
        path.parent.mkdir()
        write_then_kill(path, rng)
        Outbox(path, DEVICE).close()  # a start after the kill folds the log into the file
        old_last = max(readable(path))
        damage(path, "8 KB random mid-file" if round_ == 0 else f"random {round_}", rng)
        before = readable(path)
        box = check_salvage(path, before, old_last)
        report = box.salvage
        dropped = store_salvage_report(box, KEY, time_ms=T0, time_source=TimeSource.PERSISTED)
        uplink = Uplink(
            box, BrokerAddress(broker.host, broker.port), core=SyncCore(ack_timeout_ms=2000)
        )
        task = asyncio.create_task(uplink.run(), name="uplink")
        try:
            async with running_center(tmp_path / f"r{round_}", registry, broker):
                uplink.on_stored()
                await wait_for(lambda b=box: b.depth() == 0, 60, "the outbox to drain")
        finally:
            uplink.stop()
            await asyncio.wait_for(task, timeout=10)
            box.close()
        got = center_seqs(tmp_path / f"r{round_}" / "center.db")
        for seq, raw in before.items():
            assert got.get(seq) == raw, f"readable record {seq} did not reach the center"
        assert (dropped is not None) == bool(report and report.lost)
        expected.update(before)
        figures.append(
            (old_last, box.recovered_from is not None, len(before), len(set(got) & set(before)))
        )
    print("salvage (written, damaged, readable, delivered):", figures)


# --- the sidecar: every hostile form is set aside the same way ---------------------------------

SIDECARS = {
    "not UTF-8": b"\xff\xfe{\x80\x81}",
    "another device": b'{"device": "h9999", "boot": 1, "seq_limit": 5000}',
    "huge numbers": b'{"device": "h0001", "boot": 1, "seq_limit": 1000000000000000000000000000000}',
    "2**63": b'{"device": "h0001", "boot": 9223372036854775808, "seq_limit": 5000}',
    "NaN": b'{"device": "h0001", "boot": NaN, "seq_limit": 5000}',
    "Infinity": b'{"device": "h0001", "boot": 1, "seq_limit": Infinity}',
    "a float": b'{"device": "h0001", "boot": 1, "seq_limit": 5000.5}',
    "a bool": b'{"device": "h0001", "boot": true, "seq_limit": 5000}',
    "negative": b'{"device": "h0001", "boot": 1, "seq_limit": -5}',
    "a list": b"[1, 2, 3]",
    "deep nesting": b"[" * 100_000,
    "huge file": b" " * 10_000_000,
    "device not text": b'{"device": 5, "boot": 1, "seq_limit": 5000}',
    "a bad salvage name": b'{"device": "h0001", "boot": 1, "seq_limit": 5000, "salvage": "../x"}',
}


@pytest.mark.parametrize("name", list(SIDECARS))
def test_a_hostile_sidecar_is_moved_aside_and_the_agent_starts(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    old_last = filled(path, 20)
    path.with_name("o.db.reserve").write_bytes(SIDECARS[name])
    with caplog.at_level(logging.ERROR, logger="agent.store.recovery"):
        box = Outbox(path, DEVICE)
    assert "unreadable" in caplog.text
    assert list(tmp_path.glob("o.db.reserve.damaged-*"))
    assert box.begin_boot() == 2  # the database itself was fine
    assert box.append(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P"}, T0)).seq == old_last + 1
    assert json.loads(path.with_name("o.db.reserve").read_text())["seq_limit"] > old_last
    box.close()


# --- numbers SQLite cannot hold ------------------------------------------------------------------


@pytest.mark.parametrize("n", [2**63, 2**64, 2**64 + 1, -1])
def test_no_number_from_outside_makes_the_outbox_raise_overflow(tmp_path: Path, n: int) -> None:
    box = Outbox(tmp_path / "o.db", DEVICE)
    box.begin_boot()
    box.append(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P"}, T0))
    assert box.acknowledge([n]) == 0
    box.refuse(n, "BAD")
    box.store_time(n)
    with pytest.raises(ValueError):
        box.answer_command(
            number=n, command_type=2, outcome=0, reason=None, time_ms=T0, command=b"",
            builds=[signed(KEY, DEVICE, RecordType.RECEIPT, {16: 1, 17: 2, 18: 0}, T0)],
        )  # fmt: skip
    assert box.depth() == 1 and box.last_command() == 0
    box.close()


CENTER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def make_executor(tmp_path: Path) -> CommandExecutor:
    box = Outbox(tmp_path / "o.db", DEVICE)
    box.begin_boot()
    agent = DeviceAgent(DEVICE, KEY, Plan(0, (), ()), box)
    ex = CommandExecutor(
        agent, CommandVerifier(CENTER.public_key(), DEVICE), lambda: Stamp(T0, TimeSource.GNSS)
    )
    ex.keep_floor(tmp_path / FLOOR_NAME)
    return ex


def rollcall(number: int) -> bytes:
    payload = command_payload(
        target=DEVICE, number=1, issued_ms=T0, expires_ms=T0 + 60_000, body=RollCall(b"x" * 8)
    )
    m = cbor2.loads(payload)
    m[4] = number
    return sign1(cbor2.dumps(m, canonical=True), CENTER)


@pytest.mark.parametrize("n", [2**63 - 1, 2**63, 2**64 - 1])
def test_a_command_numbered_past_sqlite_is_not_an_overflow(tmp_path: Path, n: int) -> None:
    ex = make_executor(tmp_path)
    handled = ex.handle(rollcall(n))  # refused by the contract, or ignored here: never raises
    assert handled.outcome is None or handled.number == n
    assert ex.handle(rollcall(5)).outcome is not None or ex.last_command() >= 5
    ex.agent.outbox.close()


# --- the replay floor outlives the outbox -------------------------------------------------------


def test_the_replay_floor_survives_losing_the_outbox(tmp_path: Path) -> None:
    ex = make_executor(tmp_path)
    raw = rollcall(4)
    assert ex.handle(raw).outcome is not None
    assert read_floor(tmp_path / FLOOR_NAME, DEVICE) == 4
    ex.agent.outbox.close()
    for p in tmp_path.glob("o.db*"):
        p.unlink()
    ex = make_executor(tmp_path)
    assert ex.agent.outbox.last_command() == 0
    handled = ex.handle(raw)
    assert handled.outcome is None and handled.reason == "replay"
    assert ex.agent.outbox.depth() == 0
    ex.agent.outbox.close()


@pytest.mark.parametrize(
    "text", [b"\xff", b'{"device": "h9", "last_command": 9}', b'{"last_command": NaN}', b"[" * 9999]
)
def test_a_broken_floor_file_leaves_the_outbox_floor(tmp_path: Path, text: bytes) -> None:
    (tmp_path / FLOOR_NAME).write_bytes(text)
    assert read_floor(tmp_path / FLOOR_NAME, DEVICE) == 0
    ex = make_executor(tmp_path)
    assert ex.handle(rollcall(1)).outcome is not None
    assert read_floor(tmp_path / FLOOR_NAME, DEVICE) == 1
    ex.agent.outbox.close()


@pytest.mark.integration
async def test_a_retained_roll_call_is_a_replay_after_the_outbox_is_deleted(
    tmp_path: Path, tls_fleet: TlsFleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    files = tls_fleet.provision(DEVICE)
    broker, center_tls = tls_fleet.broker, tls_fleet.center_context()
    cfg = load_config(files.config)
    box = Outbox(cfg.outbox_path, DEVICE)
    box.store_time(int(time.time() * 1000))  # the device knows the time from a previous run
    box.close()
    db = tmp_path / "center.db"
    async with running_center(tmp_path, tls_fleet.registry, broker, tls=center_tls):
        run = AgentRun(cfg)
        task = asyncio.create_task(run.run(), name="agent")
        try:
            with CommandSigner(tls_fleet.fleet.center_key, db) as signer:
                call = signer.build(
                    DEVICE, RollCall(b"r" * 8), now_ms=int(time.time() * 1000), ttl_s=600
                )
            await publish(broker.host, broker.port, DEVICE, call.raw, tls=center_tls)
            await wait_for(lambda: receipts(db), 20, "the receipt")
        finally:
            run.stop()
            await asyncio.wait_for(task, timeout=15)
        for p in cfg.outbox_path.parent.glob(cfg.outbox_path.name + "*"):
            p.unlink()  # the outbox, its log and its sidecar: all gone
        store = Outbox(cfg.outbox_path, DEVICE)
        store.store_time(int(time.time() * 1000))
        store.close()
        caplog.clear()
        run = AgentRun(cfg)
        task = asyncio.create_task(run.run(), name="agent")
        try:
            await wait_for(lambda: "command ignored (replay)" in caplog.text, 20, "the replay")
        finally:
            run.stop()
            await asyncio.wait_for(task, timeout=15)
        # The second run answered nothing: a command is answered in the same transaction as
        # its receipt is stored, and its outbox holds no answered command (it is read now,
        # not after a while: nothing is on its way). Only the first receipt is at the center.
        after = Outbox(cfg.outbox_path, DEVICE)
        assert after.answered_commands() == []
        assert after.last_command() == 0  # only the file knew
        after.close()
        assert len(receipts(db)) == 1
