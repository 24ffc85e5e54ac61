"""A device's event record, through the real ingest, becomes one event: both stores.

The record is signed as a device signs it (contract/events.py `event_body`, the device's
key), sent in a batch on the device's topic to `Ingest.handle` over a real store (SQLite
and PostgreSQL, the `target` fixture), and the operator's view is read back: the events
table and its attachments. Delivered again (the same device and sequence: a lost
acknowledgement) it is still one event; relayed by LoRa it is the same event; a record
the center refuses makes none.
"""

from __future__ import annotations

import hashlib

from test_center_pg import KEYS, T0, Target, key_of, target

from center.ingest import Ingest
from contract.events import Attachment, AttachmentKind, PlaceSource, event_body
from contract.fix import TimeSource
from contract.protocol import Batch, records_topic, relayed_topic
from contract.records import ChainPosition, RecordType, build, chain_hash

__all__ = ["target"]

PHOTO = b"\xff\xd8a photo\xff\xd9" * 100
NOTE = "楼道堆物 stairwell blocked".encode()


def event_record(device: str, seq: int, prev: bytes, category: int = 3) -> bytes:
    body = event_body(
        category,
        place=PlaceSource.FIX,
        lat=31.2304,
        lon=121.4737,
        accuracy_m=3.5,
        attachments=[
            Attachment.of(AttachmentKind.NOTE, NOTE),
            Attachment.of(AttachmentKind.PHOTO, PHOTO),
        ],
    )
    return build(
        KEYS[device],
        device=device,
        chain=ChainPosition(boot=1, seq=seq, prev=prev),
        rtype=RecordType.EVENT,
        time_ms=T0 + seq * 1000,
        time_source=TimeSource.GNSS,
        body=body,
    )


def checkin(device: str, seq: int, prev: bytes) -> bytes:
    return build(
        KEYS[device],
        device=device,
        chain=ChainPosition(boot=1, seq=seq, prev=prev),
        rtype=RecordType.CHECKIN,
        time_ms=T0 + seq * 1000,
        time_source=TimeSource.GNSS,
        body={16: "P1"},
    )


def events_of(target: Target) -> list[tuple[object, ...]]:
    return target.query(
        "SELECT device, seq, category, status, lat_e7, lon_e7, accuracy_dm, reported_ms "
        "FROM events ORDER BY number"
    )


def test_an_event_record_makes_one_event_however_often_it_comes(target: Target) -> None:
    first = checkin("h0001", 1, b"")
    event = event_record("h0001", 2, chain_hash(first))
    ingest = Ingest(target.open(), key_of)
    topic = records_topic("h0001")
    ack = ingest.handle(topic, Batch(1, (first, event)).encode(), T0)
    assert ack is not None and ack.stored == (1, 2)
    expected = [("h0001", 2, 3, 0, 312_304_000, 1_214_737_000, 35, T0 + 2000)]
    assert events_of(target) == expected
    digests = target.query("SELECT sha256, kind, size, held, complete FROM event_attachments")
    assert sorted((bytes(d), k, s, h, c) for d, k, s, h, c in digests) == sorted(
        [
            (hashlib.sha256(NOTE).digest(), 2, len(NOTE), 0, 0),
            (hashlib.sha256(PHOTO).digest(), 1, len(PHOTO), 0, 0),
        ]
    )
    # the acknowledgement was lost: the device sends the batch again, then by LoRa
    again = ingest.handle(topic, Batch(2, (event,)).encode(), T0 + 5000)
    assert again is not None and again.stored == (2,)
    ingest.handle(relayed_topic("h0001"), Batch(3, (event,)).encode(), T0 + 6000)
    ingest.store.close()
    fresh = Ingest(target.open(), key_of)  # a restarted center
    fresh.handle(topic, Batch(4, (event,)).encode(), T0 + 7000)
    fresh.store.close()
    assert events_of(target) == expected
    assert target.query("SELECT count(*) FROM event_attachments") == [(2,)]


def test_an_event_first_heard_by_lora_is_an_event(target: Target) -> None:
    event = event_record("h0002", 1, b"", category=7)
    ingest = Ingest(target.open(), key_of)
    ingest.handle(relayed_topic("h0002"), Batch(1, (event,)).encode(), T0)
    ingest.store.close()
    assert [(d, s, c) for d, s, c, *_ in events_of(target)] == [("h0002", 1, 7)]


def test_a_refused_event_record_makes_no_event(target: Target) -> None:
    forged = event_record("h0001", 1, b"")
    # signed by another device's key: refused, kept in `refused`, never an event
    bad = build(
        KEYS["h0002"],
        device="h0001",
        chain=ChainPosition(boot=1, seq=2, prev=chain_hash(forged)),
        rtype=RecordType.EVENT,
        time_ms=T0,
        time_source=TimeSource.GNSS,
        body=event_body(5),
    )
    ingest = Ingest(target.open(), key_of)
    ack = ingest.handle(records_topic("h0001"), Batch(1, (bad,)).encode(), T0)
    ingest.store.close()
    assert ack is not None and ack.stored == () and len(ack.refused) == 1
    assert events_of(target) == []
