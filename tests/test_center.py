"""The center's ingest core with its real SQLite store: verify, de-duplicate, refuse, answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.fix import TimeSource
from agent.protocol import Batch, Refusal, records_topic
from agent.records import ChainPosition, RecordType, build
from center.audit import audit
from center.ingest import Ingest
from center.store import CenterStore
from provisioning.registry import Registry

KEYS = {d: Ed25519PrivateKey.generate() for d in ("h0001", "h0002")}


def record(device: str, seq: int, key: Ed25519PrivateKey | None = None) -> bytes:
    return build(
        key or KEYS[device],
        device=device,
        chain=ChainPosition(boot=1, seq=seq, prev=b"" if seq == 1 else bytes(16)),
        rtype=RecordType.CHECKIN,
        time_ms=1_772_323_200_000 + seq,
        time_source=TimeSource.GNSS,
        body={16: f"P{seq:03d}"},
    )


def key_of(device: str) -> Ed25519PublicKey | None:
    k = KEYS.get(device)
    return None if k is None else k.public_key()


def make(tmp_path: Path) -> tuple[Ingest, Path]:
    db = tmp_path / "center.db"
    return Ingest(CenterStore(db), key_of), db


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_valid_batch_is_stored_and_acknowledged(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    batch = Batch(7, tuple(record("h0001", s) for s in (1, 2, 3)))
    ack = ingest.handle(records_topic("h0001"), batch.encode(), 1000)
    assert ack is not None
    assert ack.batch == 7
    assert sorted(ack.stored) == [1, 2, 3]
    assert ack.refused == ()
    assert rows(db, "SELECT device, seq FROM records ORDER BY seq") == [
        ("h0001", 1),
        ("h0001", 2),
        ("h0001", 3),
    ]


def test_redelivery_is_acknowledged_again_but_stored_once(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    payload = Batch(1, (record("h0001", 1), record("h0001", 2))).encode()
    ingest.handle(records_topic("h0001"), payload, 1000)
    ack = ingest.handle(records_topic("h0001"), payload, 2000)
    assert ack is not None and sorted(ack.stored) == [1, 2]
    assert rows(db, "SELECT count(*) FROM records") == [(2,)]
    assert ingest.stats.duplicates == 2
    assert ingest.stats.stored == 2


def test_same_sequence_from_two_devices_are_two_records(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    ingest.handle(records_topic("h0001"), Batch(1, (record("h0001", 1),)).encode(), 0)
    ingest.handle(records_topic("h0002"), Batch(1, (record("h0002", 1),)).encode(), 0)
    assert rows(db, "SELECT count(*) FROM records") == [(2,)]


def test_tampered_record_is_refused_counted_and_kept_for_inspection(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    good = record("h0001", 1)
    raw = record("h0001", 2)
    tampered = raw.replace(b"P002", b"P666")
    assert tampered != raw
    ack = ingest.handle(records_topic("h0001"), Batch(3, (good, tampered)).encode(), 0)
    assert ack is not None
    assert ack.stored == (1,)
    assert ack.refused == ((2, Refusal.BAD_SIGNATURE),)
    assert ingest.stats.refused == 1
    assert rows(db, "SELECT seq FROM records") == [(1,)]
    assert rows(db, "SELECT device, seq, reason, raw FROM refused") == [
        ("h0001", 2, "BAD_SIGNATURE", tampered)
    ]


def test_record_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    ingest, _ = make(tmp_path)
    forged = record("h0001", 1, key=Ed25519PrivateKey.generate())
    ack = ingest.handle(records_topic("h0001"), Batch(1, (forged,)).encode(), 0)
    assert ack is not None and ack.refused == ((1, Refusal.BAD_SIGNATURE),)


def test_unknown_device_and_wrong_topic_are_refused(tmp_path: Path) -> None:
    ingest, _ = make(tmp_path)
    stranger = Ed25519PrivateKey.generate()
    ack = ingest.handle(
        records_topic("h9999"), Batch(1, (record("h9999", 1, stranger),)).encode(), 0
    )
    assert ack is not None and ack.refused == ((1, Refusal.UNKNOWN_DEVICE),)
    # h0002 publishing a record of h0001 on its own topic: not accepted as h0001's
    ack = ingest.handle(records_topic("h0002"), Batch(2, (record("h0001", 5),)).encode(), 0)
    assert ack is not None and ack.refused == ((5, Refusal.WRONG_DEVICE),)
    assert ingest.stats.stored == 0


def test_garbage_is_refused_and_the_center_keeps_going(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    assert ingest.handle(records_topic("h0001"), b"\xff\x00garbage", 0) is None
    assert ingest.handle("not/a/picket/topic", Batch(1, ()).encode(), 0) is None
    ack = ingest.handle(
        records_topic("h0001"), Batch(4, (b"not cose", record("h0001", 1))).encode(), 0
    )
    assert ack is not None and ack.stored == (1,)
    assert ingest.stats.bad_batches == 2
    assert rows(db, "SELECT reason FROM refused ORDER BY id") == [
        ("BAD_BATCH",),
        ("BAD_BATCH",),
        ("MALFORMED",),
    ]
    # a batch whose records are CBOR but not COSE: refused per record, never a crash
    bogus = cbor2.dumps({1: 9, 2: [cbor2.dumps([1, 2, 3])]})
    ack = ingest.handle(records_topic("h0001"), bogus, 0)
    assert ack is not None and ack.stored == () and ack.refused == ()


def test_audit_reverifies_against_the_registry(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    reg = Registry(tmp_path / "registry.db")
    for dev, key in KEYS.items():
        reg.add(dev, key.public_key().public_bytes_raw(), 0)
    reg.close()
    ingest.handle(
        records_topic("h0001"), Batch(1, (record("h0001", 1), record("h0001", 3))).encode(), 0
    )
    found = audit(db, tmp_path / "registry.db")
    assert (found.delivered, found.verified, found.duplicated) == (2, 2, 0)
    assert found.lost({"h0001": 3, "h0002": 1}) == 2  # h0001 seq 2 and h0002 seq 1
    # damage one stored record behind the center's back: the audit notices
    con = sqlite3.connect(db)
    con.execute("UPDATE records SET raw = ? WHERE seq = 3", (record("h0002", 3),))
    con.commit()
    con.close()
    assert audit(db, tmp_path / "registry.db").verified == 1
