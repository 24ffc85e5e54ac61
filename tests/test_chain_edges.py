"""The center's ingest and chain bookkeeping at their edges (center/ingest.py, center/batch.py),
found by the mutation benchmark (bench/mutation.py; docs/testing.md), against a real SQLite
store: what a fork keeps as evidence when the record is long, which health record sets a
device's outbox depth, and the counters `picket center run --json` prints.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from center.batch import REFUSED_PREFIX
from center.database import open_store
from center.ingest import Ingest
from center.status import build_status
from contract.bounds import MAX_RECORD
from contract.cose import sign1
from contract.events import PlaceSource, event_body
from contract.fix import TimeSource
from contract.protocol import Ack, Batch, Refusal, records_topic
from contract.records import (
    ChainPosition,
    Outcome,
    RecordType,
    build,
    chain_hash,
    health_body,
    receipt_body,
)
from provisioning.registry import KeyEntry

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(40, 72)))
DEVICE = "h0007"
T0 = 1_772_359_200_000


def key_of(device: str) -> Ed25519PublicKey | None:
    return KEY.public_key() if device == DEVICE else None


def record(
    seq: int, prev: bytes, rtype: RecordType, body: dict[int, object], time_ms: int | None = None
) -> bytes:
    return build(
        KEY,
        device=DEVICE,
        chain=ChainPosition(boot=1, seq=seq, prev=prev),
        rtype=rtype,
        time_ms=T0 + seq * 1000 if time_ms is None else time_ms,
        time_source=TimeSource.GNSS,
        body=body,
    )


def receipt(seq: int, prev: bytes, reason: str) -> bytes:
    return record(seq, prev, RecordType.RECEIPT, receipt_body(seq, 3, Outcome.DONE, reason))


def send(ingest: Ingest, raws: list[bytes], bid: int = 1) -> Ack:
    ack = ingest.handle(records_topic(DEVICE), Batch(bid, tuple(raws)).encode(), T0)
    assert ack is not None
    return ack


def test_a_long_forked_record_is_kept_whole_as_evidence(tmp_path: Path) -> None:
    db = tmp_path / "center.db"
    ingest = Ingest(open_store(db), key_of)
    first = receipt(1, b"", "a" * 400)
    send(ingest, [first])
    fork = receipt(1, b"", "b" * 400)  # signed by the device's key, same number, other bytes
    assert len(fork) > REFUSED_PREFIX  # longer than what is kept of unsigned junk
    ack = send(ingest, [fork], bid=2)
    assert ack.stored == (1,)  # durable at the center: kept in `refused`
    ingest.store.close()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT seq, reason, raw, size FROM refused").fetchall()
    assert rows == [(1, "FORK", fork, len(fork))]


def test_of_two_health_records_with_the_same_time_the_later_one_sets_the_depth(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "center.db")
    ingest = Ingest(store, key_of)
    h1 = record(1, b"", RecordType.HEALTH, health_body(depth=40), time_ms=T0)
    h2 = record(2, chain_hash(h1), RecordType.HEALTH, health_body(depth=3), time_ms=T0)
    send(ingest, [h1, h2])
    [dev] = build_status(store.snapshot(), T0).devices
    assert (dev.depth, dev.depth_time_ms) == (3, T0)
    # and an older health record arriving later does not take it back
    h0 = record(3, chain_hash(h2), RecordType.HEALTH, health_body(depth=99), time_ms=T0 - 1)
    send(ingest, [h0], bid=2)
    [dev] = build_status(store.snapshot(), T0).devices
    assert dev.depth == 3
    store.close()


def test_the_counters_printed_for_the_center_say_what_happened(tmp_path: Path) -> None:
    store = open_store(tmp_path / "center.db")
    ingest = Ingest(store, key_of)
    r1 = receipt(1, b"", "ok")
    r2 = receipt(2, chain_hash(r1), "ok")
    send(ingest, [r1, r2])
    send(ingest, [r2], bid=2)  # a duplicate
    send(ingest, [receipt(2, chain_hash(r1), "other")], bid=3)  # a fork
    intruder = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    forged = build(
        intruder, device=DEVICE, chain=ChainPosition(1, 3, chain_hash(r2)),
        rtype=RecordType.RECEIPT, time_ms=T0, time_source=TimeSource.GNSS,
        body=receipt_body(3, 3, Outcome.DONE),
    )  # fmt: skip
    send(ingest, [forged], bid=4)
    send(ingest, [receipt(1, b"", "third")], bid=5)  # a second fork, in a batch of its own
    assert ingest.handle(records_topic(DEVICE), b"\xff", T0) is None  # not a batch
    assert ingest.stats.as_dict() == {
        "batches": 5,
        "bad_batches": 1,
        "stored": 2,
        "duplicates": 1,
        "refused": 3,  # two forks and the forged record
        "forks": 2,
    }
    assert ingest.stats.refused_by_reason == {"FORK": 2, "BAD_SIGNATURE": 1}
    store.close()


def test_an_event_record_the_center_stores_makes_one_event(tmp_path: Path) -> None:
    # docs/events.md: a device's event record (type 11), once stored, is an event
    db = tmp_path / "center.db"
    ingest = Ingest(open_store(db), key_of)
    body = event_body(5, place=PlaceSource.FIX, lat=31.2304, lon=121.4737, accuracy_m=4.0)
    event = record(1, b"", RecordType.EVENT, body)
    assert send(ingest, [event]).stored == (1,)
    assert send(ingest, [event], bid=2).stored == (1,)  # delivered again: still one event
    ingest.store.close()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT device, seq, category, lat_e7, lon_e7 FROM events").fetchall()
    assert rows == [(DEVICE, 1, 5, 312_304_000, 1_214_737_000)]


def refused_rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT device, seq, reason, detail, raw, size FROM refused").fetchall()


def test_refusals_name_the_device_and_say_what_was_wrong(tmp_path: Path) -> None:
    db = tmp_path / "center.db"
    ingest = Ingest(open_store(db), key_of)
    too_big = b"\x00" * (MAX_RECORD + 1)
    not_cose = b"\xa0"
    bad_payload = sign1(cbor2.dumps({1: 1, 2: DEVICE, 4: 7}), KEY)  # a header cut short
    ack = send(ingest, [too_big, not_cose, bad_payload])
    ingest.store.close()
    assert ack.refused == ((7, Refusal.MALFORMED),)  # the one whose number could be read
    rows = refused_rows(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (DEVICE, None, "MALFORMED"),  # too big to read
        (DEVICE, None, "MALFORMED"),  # not COSE
        (DEVICE, 7, "MALFORMED"),  # signed, but no record
    ]
    big, cose, payload = (str(r[3]) for r in rows)
    assert str(MAX_RECORD) in big
    assert "COSE" in cose
    assert payload and payload != "None"


def test_a_long_record_no_key_signed_is_kept_as_a_prefix_with_its_size(tmp_path: Path) -> None:
    db = tmp_path / "center.db"
    ingest = Ingest(open_store(db), key_of)
    intruder = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    forged = build(
        intruder, device=DEVICE, chain=ChainPosition(1, 1, b""), rtype=RecordType.RECEIPT,
        time_ms=T0, time_source=TimeSource.GNSS, body=receipt_body(1, 3, Outcome.DONE, "z" * 400),
    )  # fmt: skip
    assert len(forged) > REFUSED_PREFIX
    assert send(ingest, [forged]).refused == ((1, Refusal.BAD_SIGNATURE),)
    ingest.store.close()
    [(device, seq, reason, detail, raw, size)] = refused_rows(db)
    assert (device, seq, reason, raw, size) == (
        DEVICE, 1, "BAD_SIGNATURE", forged[:REFUSED_PREFIX], len(forged)
    )  # fmt: skip
    assert "signature" in str(detail)


def test_a_record_signed_at_the_moment_its_key_was_revoked_is_refused(tmp_path: Path) -> None:
    revoked = T0 + 2_000

    def history(device: str) -> list[KeyEntry]:
        return [KeyEntry(KEY.public_key(), revoked_ms=revoked)] if device == DEVICE else []

    ingest = Ingest(open_store(tmp_path / "center.db"), history)
    before = receipt(1, b"", "ok")  # signed at T0 + 1000
    at = receipt(2, chain_hash(before), "ok")  # signed at T0 + 2000: the revocation
    ack = send(ingest, [before, at])
    assert ack.stored == (1,)
    assert ack.refused == ((2, Refusal.REVOKED),)
    ingest.store.close()
    [(_d, _s, reason, detail, _r, _z)] = refused_rows(tmp_path / "center.db")
    assert reason == "REVOKED"
    assert str(revoked) in str(detail)


def test_bad_batches_are_logged_once_as_a_warning_then_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = Ingest(open_store(tmp_path / "center.db"), key_of)
    with caplog.at_level(logging.DEBUG, logger="center.ingest"):
        for _ in range(3):
            assert ingest.handle(records_topic(DEVICE), b"\xff", T0) is None
    levels = [r.levelno for r in caplog.records if "refused message" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert ingest.stats.bad_batches == 3
    ingest.store.close()


def test_records_never_received_below_a_restarted_chain_are_missing(tmp_path: Path) -> None:
    """A device whose outbox was lost starts a new chain (empty `prev`) at a number past
    every one it used; if 1..4 never arrived, they are missing, not skipped."""
    store = open_store(tmp_path / "center.db")
    ingest = Ingest(store, key_of)
    send(ingest, [receipt(5, b"", "after a lost outbox")])
    [dev] = build_status(store.snapshot(), T0).devices
    assert [(g.first, g.last, g.kind.value) for g in dev.gaps] == [(1, 4, "MISSING")]
    assert dev.missing == 4
    store.close()


def test_a_long_record_of_another_or_an_unknown_device_is_kept_as_a_prefix(
    tmp_path: Path,
) -> None:
    """No key of the device on the topic signed it: what is kept is its first bytes, its
    size and digest, never the whole (center/batch.py)."""
    db = tmp_path / "center.db"
    ingest = Ingest(open_store(db), key_of)
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))

    def long_record(device: str) -> bytes:
        return build(
            other, device=device, chain=ChainPosition(1, 1, b""), rtype=RecordType.RECEIPT,
            time_ms=T0, time_source=TimeSource.GNSS,
            body=receipt_body(1, 3, Outcome.DONE, "y" * 400),
        )  # fmt: skip

    wrong = long_record("h0099")  # names another device than the topic's
    assert send(ingest, [wrong]).refused == ((1, Refusal.WRONG_DEVICE),)
    unknown = long_record("h0099")
    ack = ingest.handle(records_topic("h0099"), Batch(2, (unknown,)).encode(), T0)
    assert ack is not None
    assert ack.refused == ((1, Refusal.UNKNOWN_DEVICE),)
    ingest.store.close()
    rows = refused_rows(db)
    assert [(r[2], r[4], r[5]) for r in rows] == [
        ("WRONG_DEVICE", wrong[:REFUSED_PREFIX], len(wrong)),
        ("UNKNOWN_DEVICE", unknown[:REFUSED_PREFIX], len(unknown)),
    ]


def test_a_message_that_is_not_a_batch_is_kept_with_what_was_wrong(tmp_path: Path) -> None:
    db = tmp_path / "center.db"
    ingest = Ingest(open_store(db), key_of)
    assert ingest.handle(records_topic(DEVICE), b"\xa1\x01\x02", T0) is None  # a map, no batch
    ingest.store.close()
    [(device, seq, reason, detail, raw, size)] = refused_rows(db)
    assert (device, seq, reason, raw, size) == (None, None, "BAD_BATCH", b"\xa1\x01\x02", 3)
    assert "batch" in str(detail)
