"""The center's ingest core with its real SQLite store: verify, de-duplicate, refuse, answer."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from center.audit import audit
from center.errors import CenterDbError
from center.ingest import Ingest
from center.service import KeyCache
from center.store import CenterStore
from contract.cose import sig_structure
from contract.fix import TimeSource
from contract.protocol import Batch, Refusal, records_topic
from contract.records import ChainPosition, RecordType, build
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


# --- tampering: every kind of mutation is refused, counted and kept, never stored --------------


def _parts(raw: bytes) -> list[object]:
    item = cbor2.loads(raw)
    assert isinstance(item, cbor2.CBORTag) and item.tag == 18
    return list(item.value)


def _envelope(parts: list[object], tag: int | None = 18) -> bytes:
    return cbor2.dumps(parts if tag is None else cbor2.CBORTag(tag, parts))


def _signed(protected: bytes, payload: bytes, key: Ed25519PrivateKey, unprotected: object) -> bytes:
    """A COSE_Sign1 with any protected header, validly signed by `key`."""
    signature = key.sign(sig_structure(protected, payload))
    return _envelope([protected, unprotected, payload, signature])


def _flip_point_digit(payload: bytes) -> bytes:
    i = payload.index(b"P002") + 3  # the last digit of the point id: still valid CBOR
    return payload[:i] + bytes([payload[i] ^ 0x01]) + payload[i + 1 :]


def _bad_body() -> bytes:
    return build(
        KEYS["h0001"],
        device="h0001",
        chain=ChainPosition(boot=1, seq=2, prev=bytes(16)),
        rtype=RecordType.CHECKIN,
        time_ms=1_772_323_200_002,
        time_source=TimeSource.GNSS,
        body={16: 2},
    )


Parts = tuple[bytes, dict[object, object], bytes, bytes]
KEY1 = KEYS["h0001"]

# name: (make the tampered record from the parts of a valid one (device h0001, seq 2),
#        the reason stored, whether the acknowledgement can name the sequence number)
TAMPERING: dict[str, tuple[Callable[[Parts], bytes], str, bool]] = {
    "wrong tag (98)": (lambda p: _envelope(list(p), tag=98), "MALFORMED", False),
    "untagged": (lambda p: _envelope(list(p), tag=None), "MALFORMED", False),
    "changed payload byte": (
        lambda p: _envelope([p[0], p[1], _flip_point_digit(p[2]), p[3]]),
        "BAD_SIGNATURE",
        True,
    ),
    "changed algorithm (-7, re-signed)": (
        lambda p: _signed(cbor2.dumps({1: -7}), p[2], KEY1, {}),
        "MALFORMED",
        False,
    ),
    "removed algorithm (re-signed)": (lambda p: _signed(b"", p[2], KEY1, {}), "MALFORMED", False),
    "algorithm only in unprotected header (re-signed)": (
        lambda p: _signed(b"", p[2], KEY1, {1: -8}),
        "MALFORMED",
        False,
    ),
    "critical header (re-signed)": (
        lambda p: _signed(cbor2.dumps({1: -8, 2: [99]}), p[2], KEY1, {}),
        "MALFORMED",
        False,
    ),
    "changed protected header (extra parameter)": (
        lambda p: _envelope([cbor2.dumps({1: -8, 3: 0}), *p[1:]]),
        "BAD_SIGNATURE",
        True,
    ),
    "changed protected header (same meaning, other bytes)": (
        lambda p: _envelope([b"\xa1\x01\x38\x07", *p[1:]]),  # alg -8 in a longer encoding
        "BAD_SIGNATURE",
        True,
    ),
    "wrong key (another device's)": (
        lambda p: record("h0001", 2, key=KEYS["h0002"]),
        "BAD_SIGNATURE",
        True,
    ),
    "truncated signature": (lambda p: _envelope([*p[:3], p[3][:63]]), "MALFORMED", False),
    "trailing bytes": (lambda p: _envelope(list(p)) + b"\x00", "MALFORMED", False),
    "body fails validate_body (point is a number)": (lambda p: _bad_body(), "MALFORMED", True),
}


def _mutated(name: str) -> bytes:
    protected, unprotected, payload, signature = _parts(record("h0001", 2))
    assert isinstance(protected, bytes) and isinstance(unprotected, Mapping)
    assert isinstance(payload, bytes) and isinstance(signature, bytes)
    return TAMPERING[name][0]((protected, dict(unprotected), payload, signature))


@pytest.mark.parametrize("name", TAMPERING)
def test_tampering_is_refused_counted_and_kept(tmp_path: Path, name: str) -> None:
    ingest, db = make(tmp_path)
    _, reason, answered = TAMPERING[name]
    tampered = _mutated(name)
    assert tampered != record("h0001", 2)
    ack = ingest.handle(
        records_topic("h0001"), Batch(9, (record("h0001", 1), tampered)).encode(), 500
    )
    assert ack is not None
    assert ack.stored == (1,)
    assert ack.refused == (((2, Refusal[reason]),) if answered else ())
    assert ingest.stats.refused == 1
    assert ingest.stats.refused_by_reason == {reason: 1}
    assert ingest.stats.stored == 1
    assert rows(db, "SELECT device, seq FROM records") == [("h0001", 1)]
    stored = rows(db, "SELECT device, seq, reason, raw, received_ms FROM refused")
    assert stored == [("h0001", 2 if answered else None, reason, tampered, 500)]


def test_the_untampered_record_is_accepted(tmp_path: Path) -> None:
    # the control for the table above: record 2 itself is fine
    ingest, _ = make(tmp_path)
    ack = ingest.handle(
        records_topic("h0001"), Batch(9, (record("h0001", 1), record("h0001", 2))).encode(), 0
    )
    assert ack is not None and ack.stored == (1, 2) and ingest.stats.refused == 0


def test_malformed_body_names_the_problem(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    bad = _mutated("body fails validate_body (point is a number)")
    ingest.handle(records_topic("h0001"), Batch(1, (bad,)).encode(), 0)
    [(detail,)] = rows(db, "SELECT detail FROM refused")
    assert detail == "check-in key 16 (point) must be text of at most 128 UTF-8 bytes"


# --- the devices table: each key that verified a stored record -----------------------------------


def test_devices_table_holds_each_key_that_verified_a_record(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    ingest.handle(records_topic("h0001"), Batch(1, (record("h0001", 1),)).encode(), 1000)
    ingest.handle(records_topic("h0001"), Batch(2, (record("h0001", 2),)).encode(), 2000)
    ingest.handle(records_topic("h0002"), Batch(1, (record("h0002", 1),)).encode(), 3000)
    # refused only: no key is recorded for a device that has no stored record
    stranger = Ed25519PrivateKey.generate()
    ingest.handle(records_topic("h9999"), Batch(1, (record("h9999", 1, stranger),)).encode(), 0)
    assert rows(db, "SELECT id, public_key, first_seen_ms FROM devices ORDER BY id") == [
        ("h0001", KEYS["h0001"].public_key().public_bytes_raw(), 1000),
        ("h0002", KEYS["h0002"].public_key().public_bytes_raw(), 3000),
    ]


def test_devices_table_survives_a_restart_and_keeps_first_seen(tmp_path: Path) -> None:
    ingest, db = make(tmp_path)
    ingest.handle(records_topic("h0001"), Batch(1, (record("h0001", 1),)).encode(), 1000)
    ingest.store.close()
    again = Ingest(CenterStore(db), key_of)  # a new center process on the same database
    again.handle(records_topic("h0001"), Batch(1, (record("h0001", 2),)).encode(), 5000)
    assert rows(db, "SELECT id, first_seen_ms FROM devices") == [("h0001", 1000)]


def test_a_reprovisioned_device_has_a_row_per_key(tmp_path: Path) -> None:
    db = tmp_path / "center.db"
    old, new = KEYS["h0001"], Ed25519PrivateKey.generate()
    current = {"h0001": old}
    ingest = Ingest(CenterStore(db), lambda d: current[d].public_key() if d in current else None)
    ingest.handle(records_topic("h0001"), Batch(1, (record("h0001", 1),)).encode(), 1000)
    current["h0001"] = new
    ingest.handle(records_topic("h0001"), Batch(2, (record("h0001", 2, new),)).encode(), 2000)
    assert rows(db, "SELECT public_key, first_seen_ms FROM devices ORDER BY first_seen_ms") == [
        (old.public_key().public_bytes_raw(), 1000),
        (new.public_key().public_bytes_raw(), 2000),
    ]


def test_key_cache_path_fills_the_devices_table_from_the_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.db")
    reg.add("h0001", KEYS["h0001"].public_key().public_bytes_raw(), 0)
    reg.close()
    db = tmp_path / "center.db"
    ingest = Ingest(CenterStore(db), KeyCache(tmp_path / "registry.db"))
    ack = ingest.handle(records_topic("h0001"), Batch(1, (record("h0001", 1),)).encode(), 7)
    assert ack is not None and ack.stored == (1,)
    assert rows(db, "SELECT id, public_key, first_seen_ms FROM devices") == [
        ("h0001", KEYS["h0001"].public_key().public_bytes_raw(), 7)
    ]


def test_key_cache_follows_a_rotation_without_forgetting_the_device(tmp_path: Path) -> None:
    """A record under a key the cache has not seen makes it re-read the registry at once; a
    registry change right after must not make a known device look unknown."""
    path = tmp_path / "registry.db"
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    reg = Registry(path)
    reg.add("h0001", old.public_key().public_bytes_raw(), 0)
    cache = KeyCache(path, check_s=0.2)  # looks at the registry's version at most every 0.2 s
    ingest = Ingest(CenterStore(tmp_path / "center.db"), cache)
    ack = ingest.handle(records_topic("h0001"), Batch(1, (record("h0001", 1, old),)).encode(), 1)
    assert ack is not None and ack.stored == (1,)
    reg.add("h0001", new.public_key().public_bytes_raw(), 1)  # rotated: the cache is stale
    ack = ingest.handle(records_topic("h0001"), Batch(2, (record("h0001", 2, new),)).encode(), 2)
    assert ack is not None and ack.stored == (2,)
    reg.set_setting("touched", "yes")  # any later registry write, within the rate limit
    time.sleep(0.3)  # the cache notices the new registry version
    ack = ingest.handle(records_topic("h0001"), Batch(3, (record("h0001", 3, old),)).encode(), 3)
    assert ack is not None and ack.stored == (3,) and ack.refused == ()  # old key still verifies
    reg.close()
    cache.close()
    ingest.store.close()


# --- chain state: a database from before it gets it when a current center opens it -------------


def test_an_older_center_database_gets_chain_state_when_opened(tmp_path: Path) -> None:
    from center.status import read_status
    from contract.records import Eviction, chain_hash, dropped_body

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(  # the tables of the center before chain state
        "CREATE TABLE records (device TEXT NOT NULL, seq INTEGER NOT NULL, boot INTEGER NOT NULL,"
        " type INTEGER NOT NULL, time_ms INTEGER NOT NULL, time_source INTEGER NOT NULL,"
        " prev BLOB NOT NULL, hash BLOB NOT NULL, raw BLOB NOT NULL, received_ms INTEGER NOT NULL,"
        " PRIMARY KEY (device, seq));"
        "CREATE TABLE refused (id INTEGER PRIMARY KEY, device TEXT, seq INTEGER,"
        " reason TEXT NOT NULL, detail TEXT NOT NULL, raw BLOB NOT NULL,"
        " received_ms INTEGER NOT NULL);"
    )
    raws: list[bytes] = []
    for seq in (1, 2, 3):
        raws.append(
            build(
                KEYS["h0001"],
                device="h0001",
                chain=ChainPosition(1, seq, chain_hash(raws[-1]) if raws else b""),
                rtype=RecordType.CHECKIN,
                time_ms=1_772_323_200_000 + seq,
                time_source=TimeSource.GNSS,
                body={16: "P001"},
            )
        )
    dropped = build(
        KEYS["h0001"],
        device="h0001",
        chain=ChainPosition(1, 7, bytes(16)),
        rtype=RecordType.DROPPED,
        time_ms=1_772_323_200_007,
        time_source=TimeSource.GNSS,
        body=dropped_body(Eviction(3, 4, 6, 300, (RecordType.HEALTH,))),
    )
    for seq, raw, prev in (
        (1, raws[0], b""),
        (3, raws[2], chain_hash(raws[1])),
        (7, dropped, bytes(16)),
    ):
        rtype = 8 if seq == 7 else 1
        con.execute(
            "INSERT INTO records VALUES (?, ?, 1, ?, 0, 1, ?, ?, ?, ?)",
            ("h0001", seq, rtype, prev, chain_hash(raw), raw, 5000 + seq),
        )
    con.commit()
    con.close()
    with pytest.raises(CenterDbError, match="older center"):
        read_status(db, 0)
    CenterStore(db).close()  # a current center opens it once
    [dev] = read_status(db, 10_000).devices
    assert (dev.records, dev.last_seq, dev.last_seen_ms) == (3, 7, 5007)
    assert [(g.first, g.last, g.kind.value) for g in dev.gaps] == [
        (2, 2, "MISSING"),
        (4, 6, "DROPPED"),
    ]
    assert dev.missing == 1 and dev.forks == 0
    # and the center goes on from there: record 2 fills the gap and links both ways
    ingest = Ingest(CenterStore(db), key_of)
    ack = ingest.handle(records_topic("h0001"), Batch(1, (raws[1],)).encode(), 20_000)
    assert ack is not None and ack.stored == (2,)
    ingest.store.close()
    [dev] = read_status(db, 20_000).devices
    assert (dev.records, dev.missing, dev.forks) == (4, 0, 0)
