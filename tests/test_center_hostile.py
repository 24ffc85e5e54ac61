"""Hostile and broken input against a real center and Mosquitto: one bad record never stops it.

A device with valid keys sends each hostile thing (a HEALTH record with an outbox depth of
2**63, a DROPPED record with such counts, a record dated in the year 292278994, a signed
check-in of 20 kB, a batch of junk, a batch whose id is 2**63)
and right after it a good record. The center stays up, refuses the hostile one with a
reason (in the acknowledgement when it can name the record's sequence number, always in
`refused`), and acknowledges the good one; `picket center status` still reads the database.
Against SQLite and, when one is reachable, PostgreSQL (tests/test_center_pg.py's `target`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import aiomqtt
import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import running_center
from test_center_pg import Target, target

from center.batch import REFUSED_PREFIX
from center.status import as_json, read_status
from contract.fix import TimeSource
from contract.protocol import Ack, Batch, Refusal, ack_topic, decode_ack, records_topic
from contract.records import ChainPosition, RecordType, build, chain_hash
from provisioning.registry import Registry
from simulators.broker import Mosquitto

pytestmark = pytest.mark.integration
__all__ = ["target"]  # the fixture, imported for its side effect on pytest

DEVICE = "h0001"
T0 = 1_772_323_200_000


class Device:
    """A device with valid keys that numbers and links its records itself."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.seq = 0
        self.prev = b""

    def record(
        self, rtype: RecordType, body: Mapping[int, object], time_ms: int | None = None
    ) -> bytes:
        self.seq += 1
        raw = build(
            self.key,
            device=DEVICE,
            chain=ChainPosition(1, self.seq, self.prev),
            rtype=rtype,
            time_ms=T0 + self.seq if time_ms is None else time_ms,
            time_source=TimeSource.GNSS,
            body=body,
        )
        self.prev = chain_hash(raw)
        return raw

    def good(self) -> bytes:
        return self.record(RecordType.CHECKIN, {16: "P001"})


async def next_ack(client: aiomqtt.Client, within_s: float = 15) -> Ack:
    async def first() -> bytes:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
        raise AssertionError("the client stopped")

    return decode_ack(await asyncio.wait_for(first(), timeout=within_s))


def _hostile(d: Device) -> list[tuple[str, Callable[[], bytes], bool]]:
    """(what, the hostile batch, whether the acknowledgement names its record)."""
    big = 2**63
    return [
        (
            "health, depth 2**63",
            lambda: Batch(1, (d.record(RecordType.HEALTH, {16: big}),)).encode(),
            True,
        ),
        (
            "dropped, counts 2**63",
            lambda: Batch(
                2,
                (d.record(RecordType.DROPPED, {16: big, 17: 1, 18: big, 19: big, 20: [1]}),),
            ).encode(),
            True,
        ),
        (
            "time in the year 292278994",
            lambda: Batch(3, (d.record(RecordType.CHECKIN, {16: "P001"}, 2**63 - 1),)).encode(),
            True,
        ),
        (
            "signed check-in of 20 kB",
            lambda: Batch(
                4, (d.record(RecordType.CHECKIN, {16: "P001", 99: b"x" * 20_000}),)
            ).encode(),
            False,  # over MAX_RECORD: refused before it is decoded, seq unknown
        ),
    ]


async def test_each_hostile_record_is_refused_and_the_next_good_one_acknowledged(
    target: Target, tmp_path: Path, broker: Mosquitto
) -> None:
    d = Device()
    reg = Registry(tmp_path / "registry.db")
    reg.add(DEVICE, d.key.public_key().public_bytes_raw(), 0)
    reg.close()
    junk = bytes(range(256)) * 64  # 16 KiB that is no CBOR map
    async with (
        running_center(target.db, tmp_path / "registry.db", broker) as svc,
        aiomqtt.Client(broker.host, broker.port, identifier="picket-h0001") as client,
    ):
        await client.subscribe(ack_topic(DEVICE), qos=1)
        topic = records_topic(DEVICE)
        for what, hostile, named in _hostile(d):
            await client.publish(topic, hostile(), qos=1)
            hostile_seq = d.seq
            ack = await next_ack(client)
            if named:
                assert ack.refused == ((hostile_seq, Refusal.MALFORMED),), what
            else:
                assert (ack.stored, ack.refused) == ((), ()), what
            good = d.good()
            await client.publish(topic, Batch(100 + d.seq, (good,)).encode(), qos=1)
            ack = await next_ack(client)
            assert ack.stored == (d.seq,), what
        for what, payload in (
            ("junk", junk),
            ("batch id 2**63", cbor2.dumps({1: 2**63, 2: []})),
        ):
            await client.publish(topic, payload, qos=1)  # no answer: not a batch
            good = d.good()
            await client.publish(topic, Batch(200 + d.seq, (good,)).encode(), qos=1)
            ack = await next_ack(client)
            assert ack.stored == (d.seq,), what
        assert svc.ingest.stats.bad_batches == 2
    stored = {s for (s,) in target.query("SELECT seq FROM records")}
    assert stored == {2, 4, 6, 8, 9, 10}  # every good one; none of the hostile ones
    refused = target.query("SELECT seq, reason, detail, raw, size, sha256 FROM refused ORDER BY id")
    assert [(s, r) for s, r, *_ in refused] == [
        (1, "MALFORMED"),
        (3, "MALFORMED"),
        (5, "MALFORMED"),
        (None, "MALFORMED"),
        (None, "BAD_BATCH"),
        (None, "BAD_BATCH"),
    ]
    details = [detail for _, _, detail, *_ in refused]
    assert "outbox depth" in details[0] and "count" in details[1]
    assert "key 6 (time)" in details[2] and "at most 1024" in details[3]
    _, _, _, raw, size, digest = refused[4]
    assert (bytes(raw), size, bytes(digest)) == (
        junk[:REFUSED_PREFIX],
        len(junk),
        hashlib.sha256(junk).digest(),
    )
    totals = as_json(read_status(target.db, int(time.time() * 1000)))["totals"]
    assert isinstance(totals, dict)
    assert (totals["records"], totals["missing"], totals["refused"]) == (6, 4, 6)
