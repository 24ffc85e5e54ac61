"""The spine against a real Mosquitto: agents, uplinks and the center, with faults.

Each test starts its own broker on a free loopback port (the `broker` fixture).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import DEADLINE_S, running_center, wait_for

from agent.health import health_snapshot, store_health
from agent.store.outbox import Built, Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink
from agent.uplink.sync import SyncCore
from center.audit import audit
from contract.fix import TimeSource
from contract.protocol import Batch, Refusal, ack_topic, decode_ack, records_topic
from contract.records import ChainPosition, RecordType, build
from picket.progress import Progress
from provisioning.registry import Registry
from simulators.broker import Mosquitto
from simulators.demo import DemoOptions, run_demo

pytestmark = pytest.mark.integration


def register(tmp_path: Path, devices: dict[str, Ed25519PrivateKey]) -> Path:
    path = tmp_path / "registry.db"
    reg = Registry(path)
    for dev, key in devices.items():
        reg.add(dev, key.public_key().public_bytes_raw(), 0)
    reg.close()
    return path


def append_checkin(box: Outbox, key: Ed25519PrivateKey, point: str) -> None:
    def make(pos: ChainPosition) -> Built:
        raw = build(
            key,
            device=box.device,
            chain=pos,
            rtype=RecordType.CHECKIN,
            time_ms=1_772_323_200_000 + pos.seq * 1000,
            time_source=TimeSource.GNSS,
            body={16: point},
        )
        return Built(RecordType.CHECKIN, 0, raw)

    box.append(make)


async def test_demo_pipeline_delivers_every_checkin_exactly_once(tmp_path: Path) -> None:
    report = await run_demo(
        DemoOptions(devices=6, minutes=25, seed=11, workdir=tmp_path / "demo"), Progress(quiet=True)
    )
    assert report["checkins_expected"] > 0
    assert report["checkins_recorded"] == report["checkins_expected"]
    assert report["records_delivered"] == report["records_created"]
    assert report["records_verified"] == report["records_delivered"]
    assert report["records_lost"] == 0
    assert report["records_duplicated"] == 0
    assert (tmp_path / "demo" / "center.db").exists()
    found = audit(tmp_path / "demo" / "center.db", tmp_path / "demo" / "fleet" / "registry.db")
    assert found.delivered == report["records_created"]


async def test_tampered_record_over_mqtt_is_refused_and_counted(
    tmp_path: Path, broker: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    append_checkin(box, key, "P001")
    append_checkin(box, key, "P002")
    good, other = (s.raw for s in box.pending(2))
    tampered = other.replace(b"P002", b"P999")
    async with running_center(tmp_path, registry, broker) as center:
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-h0001") as client:
            await client.subscribe(ack_topic("h0001"), qos=1)
            await client.publish(records_topic("h0001"), Batch(5, (good, tampered)).encode(), qos=1)
            message = await asyncio.wait_for(anext(aiter(client.messages)), timeout=10)
        ack = decode_ack(bytes(message.payload))  # type: ignore[arg-type]
        assert ack.batch == 5
        assert ack.stored == (1,)
        assert ack.refused == ((2, Refusal.BAD_SIGNATURE),)
        assert center.ingest.stats.refused == 1
        assert center.ingest.stats.stored == 1
    found = audit(tmp_path / "center.db", registry)
    assert (found.delivered, found.verified, found.refused) == (1, 1, 1)
    assert found.refused_by_reason == {"BAD_SIGNATURE": 1}
    box.close()


async def test_outbox_keeps_records_until_the_center_acknowledges(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The broker accepting a publish proves nothing: with no center, nothing is deleted."""
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    uplink = Uplink(box, BrokerAddress(broker.host, broker.port), core=SyncCore(ack_timeout_ms=500))
    task = asyncio.create_task(uplink.run(), name="uplink")
    try:
        for i in range(10):
            append_checkin(box, key, f"P{i:03d}")
            uplink.on_stored()
        # every record published, its PUBACK back, no acknowledgement within the timeout, and
        # published again: the uplink has been round its loop with the broker's answers
        await wait_for(lambda: uplink.stats.records_sent >= 20, DEADLINE_S, "the resends")
        assert box.depth() == 10, "records were deleted without the center's acknowledgement"
        async with running_center(tmp_path, registry, broker):
            await wait_for(lambda: box.depth() == 0, 15, "the outbox to drain")
    finally:
        uplink.stop()
        await asyncio.wait_for(task, timeout=10)
    found = audit(tmp_path / "center.db", registry)
    assert found.lost({"h0001": 10}) == 0
    assert (found.delivered, found.verified, found.duplicated) == (10, 10, 0)
    box.close()


async def test_broker_killed_mid_sync_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    keys = {f"h{i:04d}": Ed25519PrivateKey.generate() for i in range(1, 4)}
    registry = register(tmp_path, keys)
    boxes = {d: Outbox(tmp_path / f"{d}.db", d) for d in keys}
    uplinks = {
        d: Uplink(b, BrokerAddress(broker.host, broker.port), core=SyncCore(ack_timeout_ms=1000))
        for d, b in boxes.items()
    }
    tasks = [asyncio.create_task(u.run(), name=f"uplink-{d}") for d, u in uplinks.items()]
    try:
        async with running_center(tmp_path, registry, broker):
            for round_ in range(3):
                for d, box in boxes.items():
                    for i in range(50):
                        append_checkin(box, keys[d], f"R{round_}-{i}")
                    uplinks[d].on_stored()
                sent = {d: u.stats.records_sent for d, u in uplinks.items()}
                await wait_for(
                    lambda s=sent: all(
                        u.connected.is_set() and u.stats.records_sent > s[d]
                        for d, u in uplinks.items()
                    ),
                    DEADLINE_S,
                    "every device to send some of this round",
                )
                broker.kill()  # kill -9 while batches and acknowledgements are in flight
                await wait_for(
                    lambda: not any(u.connected.is_set() for u in uplinks.values()),
                    DEADLINE_S,
                    "every device to notice",
                )
                broker.start()  # same port: clients reconnect with backoff
            await wait_for(
                lambda: all(b.depth() == 0 for b in boxes.values()), 40, "all outboxes to drain"
            )
    finally:
        for u in uplinks.values():
            u.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    found = audit(tmp_path / "center.db", registry)
    assert found.lost({d: 150 for d in keys}) == 0
    assert (found.delivered, found.verified, found.duplicated) == (450, 450, 0)
    assert all(u.stats.connects >= 2 for u in uplinks.values())
    for b in boxes.values():
        b.close()


async def test_health_records_are_stored_evictable_and_accepted_by_the_center(
    tmp_path: Path, broker: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    now = 1_772_323_200_000
    for i in range(3):
        body = health_snapshot(
            now_ms=now + i, outbox_depth=box.depth(), clock_source=TimeSource.GNSS
        )
        stored = store_health(box, key, body, time_ms=now + i, time_source=TimeSource.GNSS)
        assert stored.type is RecordType.HEALTH
    append_checkin(box, key, "P001")
    # evictable: served after the newer check-in, as the outbox serves evictable records last
    assert [s.type for s in box.pending(10)] == [RecordType.CHECKIN] + [RecordType.HEALTH] * 3
    uplink = Uplink(box, BrokerAddress(broker.host, broker.port))
    async with running_center(tmp_path, registry, broker):
        task = asyncio.create_task(uplink.run(), name="uplink")
        try:
            await wait_for(lambda: box.depth() == 0, 10, "the outbox to drain")
        finally:
            uplink.stop()
            await asyncio.wait_for(task, timeout=10)
    found = audit(tmp_path / "center.db", registry)
    assert (found.delivered, found.verified, found.refused) == (4, 4, 0)
    box.close()
