"""Center workers on an MQTT 5 shared subscription, against a real Mosquitto, with faults.

Each scenario ends the way a user checks it: every record the devices created is at the
center exactly once (zero lost, zero duplicates after de-duplication) and every outbox is
empty, because everything was acknowledged. The in-process scenarios run once per store
(`target` from tests/test_center_pg.py: SQLite, and the session's PostgreSQL);
the killed-process one runs `picket center run` itself, on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import DEADLINE_S, running_center, wait_for
from test_center_pg import Target, target

from agent.store.outbox import Built, Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink
from agent.uplink.sync import SyncCore
from center.batch import Saved, Store
from center.database import open_store
from center.errors import StoreError
from center.service import CenterService, shared
from center.snapshot import Snapshot
from center.status import read_status
from contract.fix import TimeSource
from contract.protocol import Batch, Refusal, ack_topic, decode_ack, records_topic, state_topic
from contract.records import ChainPosition, RecordType, build
from provisioning.registry import Registry
from simulators.broker import Mosquitto

pytestmark = pytest.mark.integration
__all__ = ["target"]  # the fixture, imported for its side effect on pytest

REPO = Path(__file__).resolve().parents[1]


def register(path: Path, keys: dict[str, Ed25519PrivateKey]) -> Path:
    reg = Registry(path)
    for dev, key in keys.items():
        reg.add(dev, key.public_key().public_bytes_raw(), 0)
    reg.close()
    return path


class Fleet:
    """Devices with real outboxes and uplinks; records appended on demand."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, n: int, ack_timeout_ms: int) -> None:
        self.keys = {f"d{i:03d}": Ed25519PrivateKey.generate() for i in range(1, n + 1)}
        self.registry = register(tmp_path / "registry.db", self.keys)
        self.boxes = {d: Outbox(tmp_path / f"{d}.db", d) for d in self.keys}
        self.uplinks = {
            d: Uplink(
                b,
                BrokerAddress(broker.host, broker.port),
                core=SyncCore(ack_timeout_ms=ack_timeout_ms),
            )
            for d, b in self.boxes.items()
        }
        self.created = dict.fromkeys(self.keys, 0)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(u.run(), name=f"uplink-{d}") for d, u in self.uplinks.items()
        ]

    def append(self, device: str, count: int) -> None:
        key = self.keys[device]

        def make(pos: ChainPosition) -> Built:
            raw = build(
                key,
                device=device,
                chain=pos,
                rtype=RecordType.CHECKIN,
                time_ms=1_772_323_200_000 + pos.seq * 1000,
                time_source=TimeSource.GNSS,
                body={16: f"P{pos.seq % 1000:03d}"},
            )
            return Built(RecordType.CHECKIN, 0, raw)

        self.boxes[device].append_many([make] * count)
        self.created[device] += count
        self.uplinks[device].on_stored(None)  # wake the uplink now

    def append_round(self, count: int) -> None:
        for device in self.keys:
            self.append(device, count)

    def records_sent(self) -> int:
        return sum(u.stats.records_sent for u in self.uplinks.values())

    def depth(self) -> int:
        return sum(b.depth() for b in self.boxes.values())

    async def close(self) -> None:
        for u in self.uplinks.values():
            u.stop()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout=15)
        for b in self.boxes.values():
            b.close()


def assert_exactly_once(target: Target, created: dict[str, int]) -> None:
    """Zero lost, zero duplicated: (device, seq) 1..n for every device, once each."""
    rows = target.query("SELECT device, seq FROM records")
    assert len(rows) == len(set(rows)), "a record is stored twice"
    expected = {(d, s) for d, n in created.items() for s in range(1, n + 1)}
    assert set(rows) == expected, f"lost {len(expected - set(rows))}, extra {set(rows) - expected}"


async def test_two_workers_share_the_load_and_store_everything_once(
    target: Target, tmp_path: Path, broker: Mosquitto
) -> None:
    fleet = Fleet(tmp_path, broker, n=20, ack_timeout_ms=15_000)
    async with (
        running_center(target.db, fleet.registry, broker) as a,
        running_center(target.db, fleet.registry, broker) as b,
    ):
        fleet.start()
        for device in fleet.keys:
            fleet.append(device, 50)
        try:
            await wait_for(lambda: fleet.depth() == 0, 60, "every record to be acknowledged")
        finally:
            await fleet.close()
    assert a.ingest.stats.batches > 0 and b.ingest.stats.batches > 0, "one worker did it all"
    assert a.ingest.stats.stored + b.ingest.stats.stored == 1000
    assert a.ingest.stats.refused == b.ingest.stats.refused == 0
    assert_exactly_once(target, fleet.created)
    status = read_status(target.db, 1_772_323_200_000)
    assert status.totals["records"] == 1000 and status.totals["missing"] == 0
    assert status.totals["forks"] == 0


async def test_a_worker_cancelled_mid_stream_and_restarted_loses_nothing(
    target: Target, tmp_path: Path, broker: Mosquitto
) -> None:
    fleet = Fleet(tmp_path, broker, n=5, ack_timeout_ms=1000)
    first = CenterService(target.db, fleet.registry, broker.host, broker.port)
    task = asyncio.create_task(first.run(), name="center-first")
    await asyncio.wait_for(first.ready.wait(), timeout=10)
    fleet.start()
    try:
        # 5 devices × 40 rounds × 5 records, while the center works; it is cancelled once it
        # has stored 200, mid-stream (batches in flight, acks unsent), and before the last
        # 10 rounds are appended however slow it is, so some are always left for the second
        rounds = 0
        deadline = time.monotonic() + DEADLINE_S
        while first.ingest.stats.stored < 200:
            assert time.monotonic() < deadline, "the first worker stored too little"
            if rounds < 30:
                fleet.append_round(5)
                rounds += 1
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=DEADLINE_S)
        for _ in range(rounds, 40):
            fleet.append_round(5)
        stored = first.ingest.stats.stored
        assert 200 <= stored <= 25 * rounds < 1000
        # devices publish to a group with no member (they send again: seen), and nothing lands
        sent = fleet.records_sent()
        await wait_for(lambda: fleet.records_sent() > sent, DEADLINE_S, "a publish meanwhile")
        assert target.query("SELECT count(*) FROM records") == [(stored,)]
        async with running_center(target.db, fleet.registry, broker) as second:
            await wait_for(lambda: fleet.depth() == 0, 60, "the outboxes to drain")
    finally:
        await fleet.close()
    assert first.ingest.stats.stored + second.ingest.stats.stored == 1000
    assert_exactly_once(target, fleet.created)


async def test_center_process_killed_mid_stream_and_restarted_loses_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    db = tmp_path / "center.db"
    fleet = Fleet(tmp_path, broker, n=4, ack_timeout_ms=1000)
    argv = [
        *("-m", "picket", "center", "run", "--db", str(db)),
        *("--registry", str(fleet.registry), "--broker", f"{broker.host}:{broker.port}"),
    ]

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=(tmp_path / "center.log").open("ab"),
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        assert line == b"ready\n", line
        return proc

    target = Target("sqlite", str(db))
    proc = await start()
    fleet.start()
    try:
        # 4 devices × 30 rounds × 8 records; the center is killed once it has stored 100, and
        # before the last 10 rounds are appended however slow it is
        rounds = 0
        deadline = time.monotonic() + DEADLINE_S
        while not (db.exists() and target.query("SELECT count(*) FROM records")[0][0] > 100):
            assert time.monotonic() < deadline, "the first center stored too little"
            if rounds < 20:
                fleet.append_round(8)
                rounds += 1
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # no clean-up at all, mid-stream
        await asyncio.wait_for(proc.wait(), timeout=10)
        for _ in range(rounds, 30):
            fleet.append_round(8)
        stored_before = target.query("SELECT count(*) FROM records")[0][0]
        assert 100 < stored_before <= 32 * rounds < 960
        proc = await start()
        await wait_for(lambda: fleet.depth() == 0, 60, "the outboxes to drain")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fleet.close()
    stats = json.loads(out.decode().splitlines()[-1])
    assert stats["stored"] == 960 - stored_before
    assert_exactly_once(target, fleet.created)


async def publish_and_collect(
    client: aiomqtt.Client, device: str, payloads: list[bytes], expect: int
) -> list[bytes]:
    """Publish batches as `device` and gather `expect` acknowledgements."""
    for p in payloads:
        await client.publish(records_topic(device), p, qos=1)
    got: list[bytes] = []

    async def gather() -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append(message.payload)
            if len(got) == expect:
                return

    await asyncio.wait_for(gather(), timeout=15)
    return got


def checkin(key: Ed25519PrivateKey, device: str, seq: int, prev: bytes = b"") -> bytes:
    return build(
        key,
        device=device,
        chain=ChainPosition(boot=1, seq=seq, prev=prev),
        rtype=RecordType.CHECKIN,
        time_ms=1_772_323_200_000 + seq,
        time_source=TimeSource.GNSS,
        body={16: "P001"},
    )


async def test_duplicate_deliveries_are_acknowledged_each_time_and_stored_once(
    target: Target, tmp_path: Path, broker: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path / "registry.db", {"h0001": key})
    batch = Batch(11, tuple(checkin(key, "h0001", s) for s in (1, 2, 3))).encode()
    async with (
        running_center(target.db, registry, broker) as a,
        running_center(target.db, registry, broker) as b,
        aiomqtt.Client(broker.host, broker.port, identifier="picket-h0001") as client,
    ):
        await client.subscribe(ack_topic("h0001"), qos=1)
        acks = [decode_ack(p) for p in await publish_and_collect(client, "h0001", [batch] * 4, 4)]
    assert all((x.batch, x.stored, x.refused) == (11, (1, 2, 3), ()) for x in acks)
    assert a.ingest.stats.stored + b.ingest.stats.stored == 3
    assert a.ingest.stats.duplicates + b.ingest.stats.duplicates == 9
    assert_exactly_once(target, {"h0001": 3})


async def test_forged_unknown_and_garbage_are_counted_while_the_center_keeps_running(
    target: Target, tmp_path: Path, broker: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path / "registry.db", {"h0001": key})
    forged = checkin(Ed25519PrivateKey.generate(), "h0001", 1)
    stranger = checkin(Ed25519PrivateKey.generate(), "h0404", 1)
    async with (
        running_center(target.db, registry, broker) as center,
        aiomqtt.Client(broker.host, broker.port, identifier="picket-h0001") as h1,
        aiomqtt.Client(broker.host, broker.port, identifier="picket-h0404") as h404,
    ):
        await h1.subscribe(ack_topic("h0001"), qos=1)
        await h404.subscribe(ack_topic("h0404"), qos=1)
        [ack] = await publish_and_collect(h1, "h0001", [Batch(1, (forged,)).encode()], 1)
        assert decode_ack(ack).refused == ((1, Refusal.BAD_SIGNATURE),)
        [ack] = await publish_and_collect(h404, "h0404", [Batch(2, (stranger,)).encode()], 1)
        assert decode_ack(ack).refused == ((1, Refusal.UNKNOWN_DEVICE),)
        await h1.publish(records_topic("h0001"), b"\xffnot a batch", qos=1)
        await h1.publish(state_topic("h0001"), b"sideways", qos=1)
        [ack] = await publish_and_collect(
            h1, "h0001", [Batch(3, (checkin(key, "h0001", 1),)).encode()], 1
        )
        assert decode_ack(ack).stored == (1,)  # still running, still storing
        await wait_for(lambda: center.bad_states == 1, DEADLINE_S, "the bad state message")
        stats = center.ingest.stats
        assert (stats.bad_batches, stats.stored) == (1, 1)
        assert stats.refused_by_reason == {"BAD_SIGNATURE": 1, "UNKNOWN_DEVICE": 1}
    assert target.query("SELECT reason, count(*) FROM refused GROUP BY reason ORDER BY 1") == [
        ("BAD_BATCH", 1),
        ("BAD_SIGNATURE", 1),
        ("UNKNOWN_DEVICE", 1),
    ]


async def test_state_messages_make_devices_online_and_offline(
    target: Target, tmp_path: Path, broker: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path / "registry.db", {"h0001": key, "h0002": key})
    async with aiomqtt.Client(broker.host, broker.port, identifier="picket-h0001") as dev:
        # retained before any center runs: a center that starts later learns it all the same
        await dev.publish(state_topic("h0001"), b"online", qos=1, retain=True)
        await dev.publish(state_topic("h0002"), b"offline", qos=1, retain=True)
        async with running_center(target.db, registry, broker) as center:
            await wait_for(lambda: center.states == 2, 10, "the retained states")
            now = 1_900_000_000_000
            by = {d.device: d for d in read_status(target.db, now).devices}
            assert (by["h0001"].online, by["h0002"].online) == (True, False)
            await dev.publish(state_topic("h0001"), b"offline", qos=1, retain=True)
            await wait_for(lambda: center.states == 3, 10, "the live state")
    [h1, _] = read_status(target.db, now).devices
    assert (h1.online, h1.online_from.value) == (False, "state")
    assert h1.last_seen_ms is not None


def test_shared_filter_is_mqtt5_shared_subscription_syntax() -> None:
    assert shared("picket-center", "picket/v1/+/up/records") == (
        "$share/picket-center/picket/v1/+/up/records"
    )
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError, match="group"):
            shared(bad, "x")


class FailsOnce:
    """A store whose first save fails, as a database that is briefly unavailable."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.failed = False

    def save(self, *args: Any, **kwargs: Any) -> Saved:
        if not self.failed:
            self.failed = True
            raise StoreError("disk I/O error (injected)")
        return self.inner.save(*args, **kwargs)

    def note_presence(self, *args: Any, **kwargs: Any) -> None:
        self.inner.note_presence(*args, **kwargs)

    def snapshot(self) -> Snapshot:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


async def test_a_failing_database_acknowledges_nothing_and_the_center_recovers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path / "registry.db", {"h0001": key})
    db = tmp_path / "center.db"
    store = FailsOnce(open_store(db))
    center = CenterService(db, registry, broker.host, broker.port, store=store)
    task = asyncio.create_task(center.run(), name="center")
    batch = Batch(5, (checkin(key, "h0001", 1),)).encode()
    try:
        await asyncio.wait_for(center.ready.wait(), timeout=10)
        async with aiomqtt.Client(broker.host, broker.port, identifier="picket-h0001") as client:
            await client.subscribe(ack_topic("h0001"), qos=1)
            await client.publish(records_topic("h0001"), batch, qos=1)
            await wait_for(lambda: store.failed and not center.ready.is_set(), 10, "the failure")
            await asyncio.wait_for(center.ready.wait(), timeout=DEADLINE_S)  # back, same process
            # the resend, then a batch after it: the acknowledgements come in that order, so
            # one for what was not stored would have come before them
            after = Batch(6, (checkin(key, "h0001", 2),)).encode()
            acks = await publish_and_collect(client, "h0001", [batch, after], 2)
        assert [(a.batch, a.stored) for a in map(decode_ack, acks)] == [(5, (1,)), (6, (2,))]
    finally:
        center.stop()
        await asyncio.wait_for(task, timeout=10)
    assert_exactly_once(Target("sqlite", str(db)), {"h0001": 2})


async def test_a_worker_cancelled_while_its_session_fails_stops(tmp_path: Path) -> None:
    """A cancellation that lands while the session is failing ends the worker: aiomqtt turns
    a cancelled session into MqttError ("disconnected during message iteration"), and a
    TaskGroup in Python 3.11 then raises that and drops the cancellation. A worker that only
    caught the error would reconnect and run on, and `wait_for(task)` would never return."""
    service = CenterService(tmp_path / "center.db", register(tmp_path / "r.db", {}), "::1", 1)
    started = asyncio.Event()

    async def failing_session() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise aiomqtt.MqttError("Disconnected during message iteration") from None

    service._session = failing_session  # type: ignore[method-assign]  # the race, made certain
    task = asyncio.create_task(service.run(), name="center-worker")
    await asyncio.wait_for(started.wait(), timeout=DEADLINE_S)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)  # asyncio.wait never cancels it
    assert task in done, "the cancelled worker ran on"
    assert task.cancelled()
