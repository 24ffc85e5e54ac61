"""A photo from a device to the center and out through Open311, over the real TLS broker.

The fleet is set up as a technician sets it up (tests/peers.py `tls_fleet`: Mosquitto with
client certificates and the ACL `picket provision broker-config` writes), the center runs
`center/service.py` with its certificate, and the device is a plain aiomqtt client with the
device's own TLS identity, doing what the device's uploader does: its event record in a
batch on up/records, then, once acknowledged, its photo (a real JPEG from the simulated
camera) in chunks on up/att, each answered on down/att after the center's COMMIT. The photo
is then fetched from the center's Open311 API as a GeoReport client would, by the
request's `media_url`, byte for byte.

Another device cannot add bytes to it: its chunks on h0001's topic never reach the center
(broker ACL), and on its own topic the center answers UNKNOWN.

The way back: `picket center events accept|dispatch … --fleet` (the real command, in a
subprocess) signs one EVENT_STATUS command per device to tell and publishes it; the
reporter and the assignee each get it on their command topic and verify it with the
contract's `CommandVerifier` against the fleet's center key, as the device does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
import aiomqtt

from center.events.api import Api, serve
from center.events.catalogue import DEFAULT, load
from center.events.store import EventDb
from contract.attachments import AttachmentState, Question, Status, chunks, decode_status
from contract.commands import Command, CommandVerifier
from contract.eventcommands import EventStatus, EventStatusCode
from contract.events import Attachment, AttachmentKind, PlaceSource, event_body
from contract.fix import TimeSource
from contract.protocol import (
    Batch,
    ack_topic,
    attachment_state_topic,
    attachment_topic,
    command_topic,
    decode_ack,
    records_topic,
)
from contract.records import ChainPosition, RecordType, build
from simulators.broker import Mosquitto
from simulators.camera import SimCamera
from tests.peers import DEADLINE_S, TlsFleet, now_ms, picket_json, running_center

KEY = "k" * 20


@contextlib.asynccontextmanager
async def device_client(
    broker: Mosquitto, ctx: ssl.SSLContext, name: str
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=name, tls_context=ctx,
        protocol=aiomqtt.ProtocolVersion.V5, timeout=10,
    ) as c:  # fmt: skip
        await c.subscribe(f"picket/v1/{name}/down/#", qos=1)
        yield c


async def next_on(client: aiomqtt.Client, topic: str) -> bytes:
    async with asyncio.timeout(DEADLINE_S):
        async for m in client.messages:
            if m.topic.value == topic:
                assert isinstance(m.payload, bytes)
                return m.payload
    raise AssertionError("the subscription ended")


async def status_of(client: aiomqtt.Client, device: str, message: bytes) -> Status:
    await client.publish(attachment_topic(device), message, qos=1)
    return decode_status(await next_on(client, attachment_state_topic(device)))


async def test_a_photo_goes_from_the_device_to_the_open311_api(tls_fleet: TlsFleet) -> None:
    one, two = tls_fleet.device("h0001"), tls_fleet.device("h0002")
    assert one.tls is not None and two.tls is not None
    photo = SimCamera(seed=3).jpeg()
    sha = hashlib.sha256(photo).digest()
    record = build(
        one.load_key(),
        device="h0001",
        chain=ChainPosition(boot=1, seq=1, prev=b""),
        rtype=RecordType.EVENT,
        time_ms=now_ms(),
        time_source=TimeSource.GNSS,
        body=event_body(
            3,
            place=PlaceSource.FIX,
            lat=31.2304,
            lon=121.4737,
            accuracy_m=4.0,
            attachments=[Attachment.of(AttachmentKind.PHOTO, photo)],
        ),
    )
    db = tls_fleet.root / "center.db"
    center = tls_fleet.center_context()
    async with (
        running_center(tls_fleet.root, tls_fleet.registry, tls_fleet.broker, tls=center),
        device_client(tls_fleet.broker, one.tls.context(), "h0001") as dev,
        device_client(tls_fleet.broker, two.tls.context(), "h0002") as other,
    ):
        # before its record: the center knows no such attachment
        early = await status_of(dev, "h0001", Question(sha, None, len(photo)).encode())
        assert early.state is AttachmentState.UNKNOWN
        await dev.publish(records_topic("h0001"), Batch(7, (record,)).encode(), qos=1)
        ack = decode_ack(await next_on(dev, ack_topic("h0001")))
        assert ack.stored == (1,)
        # h0002 publishes h0001's first chunk on h0001's topic (the broker drops it), then
        # on its own (the center answers UNKNOWN): once that answer is in, the broker has
        # handled the first one
        first = next(chunks(photo, 0)).encode()
        await other.publish(attachment_topic("h0001"), first, qos=1)
        theirs = await status_of(other, "h0002", first)
        assert theirs.state is AttachmentState.UNKNOWN
        asked = await status_of(dev, "h0001", Question(sha, 0, len(photo)).encode())
        assert (asked.held, asked.state) == (0, AttachmentState.PARTIAL)
        # the upload, each chunk answered after the COMMIT
        answers = [await status_of(dev, "h0001", c.encode()) for c in chunks(photo, 0)]
        held = [a.held for a in answers]
        assert held == [min(len(photo), o + 32 * 1024) for o in range(0, len(photo), 32 * 1024)]
        assert answers[-1].state is AttachmentState.COMPLETE
        assert all(a.state is AttachmentState.PARTIAL for a in answers[:-1])

    # the center's Open311 API serves the photo by the request's media_url
    events = EventDb(db)
    api = Api(events, load(DEFAULT), {KEY: "test"}, now_ms)
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(api, "127.0.0.1", 0, stop, port.set_result))
    try:
        base = f"http://127.0.0.1:{await asyncio.wait_for(port, DEADLINE_S)}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/requests/1.json") as r:
                request = (await r.json())[0]
            assert request["media_url"] == f"{base}/media/{sha.hex()}.jpg"
            async with http.get(request["media_url"]) as r:
                assert r.status == 200 and r.content_type == "image/jpeg"
                assert await r.read() == photo
    finally:
        stop.set()
        await asyncio.wait_for(server, DEADLINE_S)
        events.close()


async def test_each_change_is_a_signed_command_to_the_reporter_and_the_assignee(
    tls_fleet: TlsFleet,
) -> None:
    one, two = tls_fleet.device("h0001"), tls_fleet.device("h0002")
    assert one.tls is not None and two.tls is not None
    record = build(
        one.load_key(),
        device="h0001",
        chain=ChainPosition(boot=1, seq=4, prev=b""),
        rtype=RecordType.EVENT,
        time_ms=now_ms(),
        time_source=TimeSource.GNSS,
        body=event_body(5, place=PlaceSource.PICKED, lat=31.23, lon=121.47),
    )
    db = tls_fleet.root / "center.db"
    center = tls_fleet.center_context()
    async with (
        running_center(tls_fleet.root, tls_fleet.registry, tls_fleet.broker, tls=center),
        device_client(tls_fleet.broker, one.tls.context(), "h0001") as dev,
    ):
        await dev.publish(records_topic("h0001"), Batch(1, (record,)).encode(), qos=1)
        assert decode_ack(await next_on(dev, ack_topic("h0001"))).stored == (4,)
    broker = f"{tls_fleet.broker.host}:{tls_fleet.broker.port}"
    common = ["--db", db, "--fleet", tls_fleet.fleet.dir, "--broker", broker,
              "--tls", tls_fleet.center_tls, "--json"]  # fmt: skip
    accepted = await picket_json("center", "events", "accept", "1", *common)
    assert accepted["sent"] == [{"device": "h0001", "number": 1}]
    dispatched = await picket_json("center", "events", "dispatch", "1", "--to", "h0002", *common)
    assert dispatched["sent"] == [
        {"device": "h0001", "number": 2},
        {"device": "h0002", "number": 1},
    ]
    public = tls_fleet.fleet.center_key.public_key()
    for cfg, number in ((one, 2), (two, 1)):
        assert cfg.tls is not None
        async with device_client(tls_fleet.broker, cfg.tls.context(), cfg.device) as c:
            raw = await next_on(c, command_topic(cfg.device))  # retained: the newest
        command = CommandVerifier(public, cfg.device).check(raw, now_ms(), number - 1)
        assert isinstance(command, Command), command
        assert command.number == number
        body = command.body
        assert isinstance(body, EventStatus)
        assert (body.event, body.status, body.reporter, body.report_seq, body.category) == (
            1,
            EventStatusCode.DISPATCHED,
            "h0001",
            4,
            5,
        )
        assert (body.assignee, body.by, body.lat_e7, body.lon_e7) == (
            "h0002",
            "center",
            312_300_000,
            1_214_700_000,
        )
        assert body.deadline_ms is not None and body.deadline_ms > body.changed_ms
