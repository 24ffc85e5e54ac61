"""The center's promises that no other test could fail for: relayed batches are stored but
never acknowledged, and command numbers are never handed out twice, even by two
dispatchers at once. Real Mosquitto, the real center service, real dispatcher processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import running_center, signed

from agent.store.outbox import Outbox
from center.store import CenterStore
from contract.commands import Command, CommandVerifier, Reminder
from contract.protocol import Ack, Batch, ack_topic, decode_ack, records_topic, relayed_topic
from contract.records import RecordType
from provisioning.registry import Registry
from simulators.broker import Mosquitto

REPO = Path(__file__).resolve().parents[1]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
CENTER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(90, 122)))
T0 = 1_772_323_200_000


def registry_with(tmp_path: Path, device: str, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "registry.db"
    reg = Registry(path)
    reg.add(device, key.public_key().public_bytes_raw(), 0)
    reg.close()
    return path


# --- relayed batches --------------------------------------------------------------------------


async def test_a_relayed_batch_is_stored_but_never_acknowledged(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """docs/protocol.md, docs/security.md: a relayed batch (a LoRa gateway's) is stored and
    de-duplicated like any other, but never answered, so a forged relay cannot make the
    device drop a record it still holds."""
    registry = registry_with(tmp_path, "h0001", KEY)
    box = Outbox(tmp_path / "outbox.db", "h0001")
    raws = [
        s.raw
        for s in box.append_many(
            signed(KEY, "h0001", RecordType.CHECKIN, {16: f"P{i}"}, T0 + i) for i in range(5)
        )
    ]
    box.close()
    relayed, direct = Batch(41, tuple(raws[:3])), Batch(42, tuple(raws[3:]))
    acks: list[Ack] = []
    async with (
        running_center(tmp_path, registry, broker) as center,
        aiomqtt.Client(broker.host, broker.port, identifier="device-h0001") as device,
    ):
        await device.subscribe(ack_topic("h0001"), qos=1)
        await device.publish(relayed_topic("h0001"), relayed.encode(), qos=1)
        # the positive control, behind it on the same path: a batch the device sent itself
        await device.publish(records_topic("h0001"), direct.encode(), qos=1)
        async with asyncio.timeout(15):
            async for message in device.messages:
                assert isinstance(message.payload, bytes)
                acks.append(decode_ack(message.payload))
                if acks[-1].batch == direct.id:
                    break
        assert center.ingest.stats.stored == 5  # the relayed three were stored before it
    assert [(a.batch, a.stored) for a in acks] == [(direct.id, (4, 5))]
    with sqlite3.connect(tmp_path / "center.db") as db:
        seqs = [s for (s,) in db.execute("SELECT seq FROM records ORDER BY seq")]
    assert seqs == [1, 2, 3, 4, 5]


# --- command numbers ----------------------------------------------------------------------------

DISPATCHER = r"""
import sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from center.commands import CommandSigner
from contract.commands import Reminder

db, key_hex, name, count = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key_hex))
with CommandSigner(key, db) as signer:
    print("ready", flush=True)
    sys.stdin.readline()  # both start together
    for i in range(count):
        device = ("h0001", "h0002")[i % 2]
        s = signer.build(device, Reminder(name + " " + str(i)), now_ms=int(sys.argv[5]),
                         ttl_s=3600)
        print(device, s.number, flush=True)
"""
PER_DISPATCHER = 120


def test_two_dispatchers_at_once_never_hand_out_a_number_twice(tmp_path: Path) -> None:
    """docs/commands.md: the counter moves on in the transaction that logs the command, so
    a number is used once, even by two `picket center dispatch` at once. Every race must
    hand out each number once; at least one of a few must really interleave the two (on a
    loaded machine one dispatcher may finish before the other is scheduled)."""
    overlapped = [_race(tmp_path / f"race{i}") for i in range(RACES)]
    assert any(overlapped), "the dispatchers never overlapped: the race was not tried"


RACES = 5


def _race(folder: Path) -> bool:
    """Two dispatchers at once on a new center database; checks every number, and says
    whether the two interleaved."""
    folder.mkdir()
    db = folder / "center.db"
    CenterStore(db).close()  # a center's database, as `picket center run` makes it
    now = int(time.time() * 1000)
    key = CENTER_KEY.private_bytes_raw().hex()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DISPATCHER, str(db), key, name, str(PER_DISPATCHER), str(now)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("A", "B")
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    got: dict[str, dict[str, list[int]]] = {}
    for p, name in zip(procs, ("A", "B"), strict=True):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        got[name] = {"h0001": [], "h0002": []}
        for line in out.splitlines():
            device, number = line.split()
            got[name][device].append(int(number))
    each = PER_DISPATCHER // 2
    overlapped = False
    with sqlite3.connect(db) as con:
        for device in ("h0001", "h0002"):
            a, b = got["A"][device], got["B"][device]
            assert len(a) == len(b) == each  # none lost
            assert sorted(a + b) == list(range(1, 2 * each + 1)), "a number twice, or skipped"
            overlapped = overlapped or (min(a) < max(b) and min(b) < max(a))
            rows = con.execute(
                "SELECT number, raw FROM sent_commands WHERE device = ? ORDER BY number", (device,)
            ).fetchall()
            assert [n for n, _ in rows] == list(range(1, 2 * each + 1))
            verifier = CommandVerifier(CENTER_KEY.public_key(), device)
            for number, raw in rows:  # what a device would take from each
                command = verifier.check(raw, now, number - 1)
                assert isinstance(command, Command) and command.number == number
                assert isinstance(command.body, Reminder)
            (last,) = con.execute(
                "SELECT last FROM command_numbers WHERE device = ?", (device,)
            ).fetchone()
            assert last == 2 * each
    return overlapped
