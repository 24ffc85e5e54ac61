"""The attachment uploader (agent/events/uploader.py) riding the agent's real uplink
(agent/uplink/mqtt.py) through a real Mosquitto, against a model center on the same broker.

The model center is an MQTT client written from docs/protocol.md and docs/events.md: it
acknowledges every batch of records, learns the digests each EVENT record lists, and
answers attachment messages with tests/test_upload_core.py's `ModelCenter` (UNKNOWN until
the event record is in). The center's real receiver is being written; this test holds the
device's half until it lands.

What a user would check: a report's photo and note reach the center whole once its record
is acknowledged, and are then deleted on the device; an agent stopped mid-upload and
started again continues from what the center holds (its first chunk is at `held`, and no
byte is stored twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import DEADLINE_S, wait_for
from test_upload_core import ModelCenter

from agent.events.attachstore import AttachmentStore
from agent.events.report import report_event
from agent.events.settings import EventsConfig
from agent.events.upload import UploadCore
from agent.events.uploader import Uploader
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from contract.attachments import AttachmentState, decode_upload
from contract.cose import decode_sign1
from contract.events import parse_event
from contract.fix import TimeSource
from contract.protocol import (
    PREFIX,
    Ack,
    attachment_state_topic,
    decode_batch,
    device_of_topic,
    records_topic,
    state_topic,
)
from contract.records import RecordType, parse_payload
from simulators.broker import Mosquitto
from simulators.camera import SimCamera

pytestmark = pytest.mark.integration
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
DEVICE = "h0501"
T0 = 1_772_359_200_000
QUICK = UplinkOptions(keepalive_s=5, backoff_max_s=1.0, publish_timeout_s=5.0)
SETTINGS = EventsConfig(photo_max_side=1600)


class Center:
    """Acknowledges records, answers attachments (the model), can fall silent on them."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.model = ModelCenter()
        self.silent_after: int | None = None  # stop answering after this many chunks stored
        self.ack_after_unknown = False  # hold acknowledgements until an UNKNOWN was answered
        self.unknowns = 0
        self.offline = 0  # "offline" on …/up/state: the agent's last words of a clean stop
        self._held_acks: list[tuple[str, Ack, list[bytes]]] = []

    async def run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, identifier="model") as c:
            await c.subscribe(f"{PREFIX}/+/up/records", qos=1)
            await c.subscribe(f"{PREFIX}/+/up/att", qos=1)
            await c.subscribe(f"{PREFIX}/+/up/state", qos=1)
            ready.set()
            async for m in c.messages:
                device = device_of_topic(m.topic.value)
                assert isinstance(m.payload, bytes)
                if m.topic.value == state_topic(device):
                    self.offline += m.payload == b"offline"
                    continue
                if m.topic.value == records_topic(device):
                    batch = decode_batch(m.payload)
                    seqs: list[int] = []
                    digests: list[bytes] = []
                    for raw in batch.records:
                        rec = parse_payload(decode_sign1(raw).payload, raw)
                        if rec.header.type is RecordType.EVENT:
                            digests += parse_event(rec.body).digests
                        seqs.append(rec.header.seq)
                    self._held_acks.append((device, Ack(batch.id, tuple(seqs), ()), digests))
                    if not self.ack_after_unknown or self.unknowns:
                        await self._release(c)
                    continue
                if self.silent_after is not None and len(self.model.stored) >= self.silent_after:
                    decode_upload(m.payload)  # heard, never answered
                    continue
                status = self.model.answer(m.payload)
                await c.publish(attachment_state_topic(device), status.encode(), qos=1)
                if status.state is AttachmentState.UNKNOWN:
                    self.unknowns += 1
                    await self._release(c)

    async def _release(self, c: aiomqtt.Client) -> None:
        """Store the events of the batches received and acknowledge them."""
        while self._held_acks:
            device, ack, digests = self._held_acks.pop(0)
            self.model.known.update(digests)
            await c.publish(f"{PREFIX}/{device}/down/ack", ack.encode(), qos=1)


@contextlib.asynccontextmanager
async def agent(
    folder: Path, broker: Mosquitto, core: UploadCore | None = None
) -> AsyncIterator[tuple[Uplink, Uploader]]:
    """The uplink with the uploader hooked in, as agent/daemon.py assembles them."""
    outbox = Outbox(folder / "outbox.db", DEVICE)
    store = AttachmentStore(folder / "attachments.db", 50_000_000)
    uplink = Uplink(outbox, BrokerAddress(broker.host, broker.port), options=QUICK)
    uploader = Uploader(store, DEVICE, core=core)
    uplink.attachments = uploader
    task = asyncio.create_task(uplink.run())
    try:
        yield uplink, uploader
    finally:
        uplink.stop()
        await asyncio.wait_for(task, DEADLINE_S)
        store.close()
        outbox.close()


def report(folder: Path, photo: bytes) -> list[bytes]:
    outbox = Outbox(folder / "outbox.db", DEVICE)
    store = AttachmentStore(folder / "attachments.db", 50_000_000)
    try:
        done = report_event(
            outbox, store, KEY, DEVICE, category=1, stamp=Stamp(T0, TimeSource.GNSS),
            settings=SETTINGS, note="装修垃圾", photos=[photo],
        )  # fmt: skip
        return list(done.digests)
    finally:
        store.close()
        outbox.close()


@contextlib.asynccontextmanager
async def center_on(broker: Mosquitto) -> AsyncIterator[Center]:
    center = Center(broker)
    ready = asyncio.Event()
    task = asyncio.create_task(center.run(ready))
    await asyncio.wait_for(ready.wait(), DEADLINE_S)
    try:
        yield center
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_report_reaches_the_center_whole_and_is_then_deleted(tmp_path: Path) -> None:
    photo = SimCamera(seed=21, width=2400, height=1800).jpeg(0)
    digests = report(tmp_path, photo)
    with Mosquitto(tmp_path / "broker") as broker:
        async with center_on(broker) as center:
            center.ack_after_unknown = True  # the first question comes before the record is in
            # asked again only when the record is acknowledged: no later retry within the test
            patient = UploadCore(unknown_first_ms=3_600_000, unknown_max_ms=3_600_000)
            async with agent(tmp_path, broker, patient) as (uplink, uploader):
                model = center.model
                await wait_for(lambda: set(digests) <= model.complete, DEADLINE_S, "delivered")
                await wait_for(lambda: uploader.store.pending() == [], DEADLINE_S, "deleted")
                assert uplink.outbox.depth() == 0  # the record was acknowledged first
                assert center.unknowns >= 1
    stored = {d: bytes(model.held[d]) for d in digests}
    assert stored[digests[1]] == "装修垃圾".encode()
    assert len(stored[digests[0]]) > 100_000  # the photo, re-encoded, checked by its digest
    assert len(model.stored) == len(set(model.stored))  # no chunk stored twice


async def test_an_agent_stopped_mid_upload_continues_from_what_the_center_holds(
    tmp_path: Path,
) -> None:
    photo = SimCamera(seed=22, width=2400, height=1800).jpeg(1)
    digests = report(tmp_path, photo)
    with Mosquitto(tmp_path / "broker") as broker:
        async with center_on(broker) as center:
            center.silent_after = 3  # three chunks stored, then no more answers
            async with agent(tmp_path, broker) as (_uplink, uploader):
                await wait_for(lambda: len(center.model.stored) >= 3, DEADLINE_S, "3 chunks")
                await wait_for(lambda: uploader.core.waiting > 0, DEADLINE_S, "in flight")
            # the stop's "offline" comes after every message of the first run: none comes late
            await wait_for(lambda: center.offline == 1, DEADLINE_S, "the first run's last words")
            held = len(center.model.held[digests[0]])
            assert held == 3 * 32 * 1024  # the photo's first chunks fill the window
            center.model.seen.clear()
            center.silent_after = None
            async with agent(tmp_path, broker) as (_uplink, uploader):  # a restart
                await wait_for(lambda: set(digests) <= center.model.complete, DEADLINE_S, "done")
            chunks = [(d, o) for kind, d, o in center.model.seen if kind == "c" and d == digests[0]]
            assert chunks and chunks[0] == (digests[0], held)  # from held, never from zero
            assert min(o for _, o in chunks if o is not None) == held
    assert len(center.model.stored) == len(set(center.model.stored))
