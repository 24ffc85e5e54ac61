"""The center's side of the bounds: sizes checked before decoding, what `refused` keeps, and a
status that reads whatever a database already holds (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import sqlite3

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from test_center_pg import Target, target

from center.batch import REFUSED_PREFIX
from center.ingest import Ingest, check_record
from center.status import as_json, read_status, render
from contract import bounds as b
from contract.fix import TimeSource
from contract.protocol import Batch, Refusal, records_topic
from contract.records import (
    ChainPosition,
    Header,
    Record,
    RecordType,
    build,
    chain_hash,
    health_body,
)

__all__ = ["target"]  # the fixture, imported for its side effect on pytest

KEY = Ed25519PrivateKey.generate()
T0 = 1_772_323_200_000
TOPIC = records_topic("h0001")


def key_of(device: str) -> Ed25519PublicKey | None:
    return KEY.public_key() if device == "h0001" else None


def rec(
    seq: int, body: dict[int, object], *, time_ms: int = T0, key: Ed25519PrivateKey = KEY
) -> bytes:
    return build(
        key,
        device="h0001",
        chain=ChainPosition(1, seq, b"" if seq == 1 else bytes(16)),
        rtype=RecordType.CHECKIN,
        time_ms=time_ms,
        time_source=TimeSource.GNSS,
        body=body,
    )


def padded(seq: int, size: int, **kw: object) -> bytes:
    """A check-in of exactly `size` bytes (an unknown key 99 pads it)."""
    base = len(rec(seq, {16: "P001", 99: b"x" * 300}))
    raw = rec(seq, {16: "P001", 99: b"x" * (300 + size - base)}, **kw)  # type: ignore[arg-type]
    assert len(raw) == size
    return raw


def test_a_record_at_the_size_bound_is_stored_and_one_byte_more_refused_unread() -> None:
    at = check_record(padded(1, b.MAX_RECORD), "h0001", KEY.public_key())
    assert isinstance(at, tuple)
    over = check_record(padded(2, b.MAX_RECORD + 1), "h0001", KEY.public_key())
    assert not isinstance(over, tuple)
    assert (over.seq, over.reason) == (None, "MALFORMED")
    assert over.detail == f"record of {b.MAX_RECORD + 1} bytes: at most {b.MAX_RECORD}"
    assert (len(over.raw), over.size) == (REFUSED_PREFIX, b.MAX_RECORD + 1)


def test_a_time_past_the_horizon_is_refused_naming_its_sequence_number(target: Target) -> None:
    ingest = Ingest(target.open(), key_of)
    try:
        batch = Batch(1, (rec(1, {16: "P001"}, time_ms=2**63 - 1), rec(2, {16: "P001"})))
        ack = ingest.handle(TOPIC, batch.encode(), T0)
    finally:
        ingest.store.close()
    assert ack is not None
    assert (ack.stored, ack.refused) == ((2,), ((1, Refusal.MALFORMED),))
    [(detail,)] = target.query("SELECT detail FROM refused")
    assert "key 6 (time)" in detail


def test_refused_keeps_a_prefix_and_digest_of_unsigned_input_and_signed_records_whole(
    target: Target,
) -> None:
    ingest = Ingest(target.open(), key_of)
    junk = b"\xff" * (b.MAX_BATCH_BYTES + 1)
    forged = padded(1, 600, key=Ed25519PrivateKey.generate())  # no key of h0001 signed it
    signed_bad = rec(2, {16: 17, 99: b"y" * 400})  # signed by h0001, a bad body: evidence
    try:
        assert ingest.handle(TOPIC, junk, T0) is None
        ack = ingest.handle(TOPIC, Batch(2, (forged, signed_bad)).encode(), T0)
    finally:
        ingest.store.close()
    assert ack is not None
    assert ack.refused == ((1, Refusal.BAD_SIGNATURE), (2, Refusal.MALFORMED))
    rows = target.query("SELECT reason, raw, size, sha256 FROM refused ORDER BY id")
    assert [(r, bytes(raw), size, bytes(h)) for r, raw, size, h in rows] == [
        ("BAD_BATCH", junk[:REFUSED_PREFIX], len(junk), hashlib.sha256(junk).digest()),
        ("BAD_SIGNATURE", forged[:REFUSED_PREFIX], 600, hashlib.sha256(forged).digest()),
        ("MALFORMED", signed_bad, len(signed_bad), hashlib.sha256(signed_bad).digest()),
    ]


def test_status_reads_values_stored_before_the_bounds(target: Target) -> None:
    """A database written by an older center may hold a record time in the year 292278994
    (so a depth time): the status shows it without failing."""
    store = target.open()
    raw = build(
        KEY,
        device="h0001",
        chain=ChainPosition(1, 1, b""),
        rtype=RecordType.HEALTH,
        time_ms=T0,
        time_source=TimeSource.GNSS,
        body=health_body(depth=3),
    )
    far = 2**63 - 1
    header = Header(RecordType.HEALTH, "h0001", 1, 1, b"", far, TimeSource.GNSS)
    try:
        store.save([Record(header, {16: 3}, raw)], [], far)  # as an unbounded center did
    finally:
        store.close()
    status = read_status(target.db, T0)
    js = as_json(status)
    [dev] = js["devices"]  # type: ignore[misc]
    assert (dev["outbox_depth"], dev["outbox_depth_at"], dev["outbox_depth_at_ms"]) == (
        3,
        None,
        far,
    )
    assert dev["last_seen"] is None and dev["last_seen_ms"] == far
    assert "h0001" in render(status)
    assert chain_hash(raw)  # the record itself is whole


def test_an_older_refused_table_gains_its_columns_and_keeps_its_rows(target: Target) -> None:
    old = (
        "CREATE TABLE refused (id {pk}, device TEXT, seq {int}, reason TEXT NOT NULL,"
        " detail TEXT NOT NULL, raw {blob} NOT NULL, received_ms {int} NOT NULL)"
    )
    insert = (
        "INSERT INTO refused (reason, detail, raw, received_ms) VALUES ('BAD_BATCH', 'x', {v}, 1)"
    )
    if target.kind == "sqlite":
        con = sqlite3.connect(target.db)
        con.execute(old.format(pk="INTEGER PRIMARY KEY", int="INTEGER", blob="BLOB"))
        con.execute(insert.format(v="x'00ff'"))
        con.commit()
        con.close()
    else:
        with psycopg.connect(target.db, autocommit=True) as pg:
            pg.execute(old.format(pk="BIGSERIAL PRIMARY KEY", int="BIGINT", blob="BYTEA"))
            pg.execute(insert.format(v="'\\x00ff'::bytea"))
    ingest = Ingest(target.open(), key_of)
    try:
        ingest.handle(TOPIC, b"junk", T0)
    finally:
        ingest.store.close()
    target.open().close()  # a second open finds the columns there
    rows = target.query("SELECT raw, size, sha256 FROM refused ORDER BY id")
    assert [(bytes(r), s, None if h is None else bytes(h)) for r, s, h in rows] == [
        (b"\x00\xff", None, None),  # the row from before: kept as it was
        (b"junk", 4, hashlib.sha256(b"junk").digest()),
    ]


@pytest.mark.parametrize("depth", [b.UINT32_MAX, b.UINT32_MAX + 1, 2**63])
def test_health_depth_at_and_past_its_bound(depth: int) -> None:
    raw = build(
        KEY,
        device="h0001",
        chain=ChainPosition(1, 1, b""),
        rtype=RecordType.HEALTH,
        time_ms=T0,
        time_source=TimeSource.GNSS,
        body=health_body(depth=depth),
    )
    checked = check_record(raw, "h0001", KEY.public_key())
    if depth <= b.UINT32_MAX:
        assert isinstance(checked, tuple)
    else:
        assert not isinstance(checked, tuple)
        assert (checked.seq, checked.reason) == (1, "MALFORMED")
        assert "key 16 (outbox depth)" in checked.detail
        assert checked.raw == raw  # signed by the device: kept whole
