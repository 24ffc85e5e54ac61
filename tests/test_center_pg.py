"""The ingest path against both stores: SQLite and PostgreSQL.

Every test here takes the `target` fixture, once per store. PostgreSQL is the session's
server (the `pg` fixture, tests/pgserver.py): a private one started for the session, or
the one PICKET_TEST_PG names; each test gets a schema of its own, dropped afterwards. When
there is no server to be had, the PostgreSQL half is skipped and says why.
`tests/test_center_shared.py` and others import the fixture for their tests.
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg import sql

from center.batch import Store
from center.chain import Verdict
from center.database import open_store
from center.errors import CenterDbError, StoreError
from center.ingest import Ingest, check_record
from center.snapshot import Presence
from center.status import build_status, read_status
from contract.fix import TimeSource
from contract.protocol import Batch, Refusal, records_topic
from contract.records import (
    ChainPosition,
    Eviction,
    RecordType,
    build,
    chain_hash,
    dropped_body,
    health_body,
)
from picket import centerstatus

KEYS = {f"h{i:04d}": Ed25519PrivateKey.generate() for i in range(1, 4)}
T0 = 1_772_323_200_000


@dataclass(frozen=True, slots=True)
class Target:
    """One database to test against: a SQLite path or a PostgreSQL URL (own schema)."""

    kind: str
    db: str

    def open(self) -> Store:
        return open_store(self.db)

    def query(self, text: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            lite = sqlite3.connect(self.db)
            try:
                return lite.execute(text).fetchall()
            finally:
                lite.close()
        with psycopg.connect(self.db) as con:
            return con.execute(sql.SQL(text)).fetchall()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", str(tmp_path / "center.db"))
        return
    url = request.getfixturevalue("pg").url  # only here: SQLite cases need no server
    schema = f"picket_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in url else "?"
    try:
        yield Target("postgresql", f"{url}{sep}options=-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def key_of(device: str) -> Ed25519PublicKey | None:
    k = KEYS.get(device)
    return None if k is None else k.public_key()


def record(
    device: str,
    seq: int,
    prev: bytes,
    *,
    key: Ed25519PrivateKey | None = None,
    point: str | None = None,
    body: dict[int, object] | None = None,
    rtype: RecordType = RecordType.CHECKIN,
) -> bytes:
    return build(
        key or KEYS[device],
        device=device,
        chain=ChainPosition(boot=1, seq=seq, prev=prev),
        rtype=rtype,
        time_ms=T0 + seq * 1000,
        time_source=TimeSource.GNSS,
        body=body if body is not None else {16: point or f"P{seq:03d}"},
    )


def chain(device: str, n: int) -> list[bytes]:
    out: list[bytes] = []
    for seq in range(1, n + 1):
        out.append(record(device, seq, chain_hash(out[-1]) if out else b""))
    return out


def send(ingest: Ingest, device: str, raws: list[bytes], now_ms: int = T0, bid: int = 1) -> Any:
    return ingest.handle(records_topic(device), Batch(bid, tuple(raws)).encode(), now_ms)


# --- the ingest ---------------------------------------------------------------------------------


def test_batches_are_stored_once_and_acknowledged_every_time(target: Target) -> None:
    ingest = Ingest(target.open(), key_of)
    recs = chain("h0001", 5)
    ack = send(ingest, "h0001", recs[:3], bid=7)
    assert (ack.batch, ack.stored, ack.refused) == (7, (1, 2, 3), ())
    ack = send(ingest, "h0001", recs, bid=8)  # 1..3 again, 4..5 new
    assert ack.stored == (1, 2, 3, 4, 5)
    ack = send(ingest, "h0001", recs, bid=9)
    assert ack.stored == (1, 2, 3, 4, 5)
    assert (ingest.stats.stored, ingest.stats.duplicates) == (5, 8)
    ingest.store.close()
    assert target.query("SELECT seq, raw FROM records ORDER BY seq") == [
        (i + 1, raw) for i, raw in enumerate(recs)
    ]
    assert target.query("SELECT count(*) FROM refused") == [(0,)]


def test_forged_unknown_and_garbage_are_refused_counted_and_kept(target: Target) -> None:
    ingest = Ingest(target.open(), key_of)
    good = chain("h0001", 2)
    forged = record("h0001", 3, chain_hash(good[1]), key=Ed25519PrivateKey.generate())
    tampered = record("h0001", 4, b"").replace(b"P004", b"P666")
    ack = send(ingest, "h0001", [*good, forged, tampered, b"not cose"])
    assert ack.stored == (1, 2)
    assert ack.refused == ((3, Refusal.BAD_SIGNATURE), (4, Refusal.BAD_SIGNATURE))
    stranger = record("h9999", 1, b"", key=Ed25519PrivateKey.generate())
    ack = send(ingest, "h9999", [stranger])
    assert ack.refused == ((1, Refusal.UNKNOWN_DEVICE),)
    ack = send(ingest, "h0002", [record("h0001", 5, b"")])
    assert ack.refused == ((5, Refusal.WRONG_DEVICE),)
    assert ingest.handle(records_topic("h0001"), b"\xff garbage", T0) is None
    huge = record("h0001", 2**64 - 1, b"")  # signed, but no database integer holds it
    ack = send(ingest, "h0001", [huge, record("h0001", 0, b"")])
    assert ack.stored == () and ack.refused == ((0, Refusal.MALFORMED),)
    # and the center goes on storing
    ack = send(ingest, "h0001", chain("h0001", 3)[2:])
    assert ack.stored == (3,)
    assert ingest.stats.refused_by_reason == {
        "BAD_SIGNATURE": 2,
        "MALFORMED": 3,
        "UNKNOWN_DEVICE": 1,
        "WRONG_DEVICE": 1,
    }
    assert ingest.stats.bad_batches == 1
    ingest.store.close()
    assert target.query("SELECT reason, count(*) FROM refused GROUP BY reason ORDER BY 1") == [
        ("BAD_BATCH", 1),
        ("BAD_SIGNATURE", 2),
        ("MALFORMED", 3),
        ("UNKNOWN_DEVICE", 1),
        ("WRONG_DEVICE", 1),
    ]
    assert target.query("SELECT count(*) FROM records") == [(3,)]


def test_a_second_record_for_a_stored_sequence_is_a_fork_kept_in_refused(target: Target) -> None:
    store = target.open()
    ingest = Ingest(store, key_of)
    recs = chain("h0001", 4)
    send(ingest, "h0001", recs)
    other = record("h0001", 3, chain_hash(recs[1]), point="P999")  # signed, links, differs
    ack = send(ingest, "h0001", [other, recs[3]])
    assert ack.stored == (3, 4)  # durable at the center (the fork in refused), not refused
    assert ack.refused == ()
    assert ingest.stats.refused_by_reason == {"FORK": 1}
    assert ingest.stats.forks == 1
    assert ingest.stats.duplicates == 1
    saved = store.save([], [], T0)  # an empty save changes nothing
    assert saved.verdicts == ()
    status = build_status(store.snapshot(), T0)
    store.close()
    [dev] = status.devices
    assert (dev.records, dev.last_seq, dev.forks, dev.missing) == (4, 4, 1, 0)
    assert target.query("SELECT device, seq, reason, raw FROM refused") == [
        ("h0001", 3, "FORK", other)
    ]
    assert target.query("SELECT raw FROM records WHERE seq = 3") == [(recs[2],)]
    assert target.query("SELECT seq, kind FROM forks") == [(3, "CONFLICT")]


def test_gaps_and_link_forks_are_kept_per_device_and_survive_a_restart(target: Target) -> None:
    recs = chain("h0001", 10)
    ingest = Ingest(target.open(), key_of)
    send(ingest, "h0001", [recs[i - 1] for i in (1, 2, 5, 6, 9)])
    ingest.store.close()
    # a new center on the same database: the chain state is where the last one left it
    ingest = Ingest(target.open(), key_of)
    status = read_status(target.db, T0)
    [dev] = status.devices
    assert [(g.first, g.last) for g in dev.gaps] == [(3, 4), (7, 8)]
    assert (dev.missing, dev.forks, dev.last_seq) == (4, 0, 9)
    bad7 = record("h0001", 7, b"\x05" * 16)  # signed by h0001, does not link to 6
    send(ingest, "h0001", [recs[2], recs[3], bad7, recs[7]])
    ingest.store.close()
    [dev] = read_status(target.db, T0).devices
    assert (dev.missing, dev.records, dev.forks) == (0, 9, 2)  # 6→7 and 7→8 do not link
    assert target.query("SELECT seq, kind FROM forks ORDER BY seq") == [(7, "LINK"), (8, "LINK")]
    assert target.query("SELECT count(*) FROM gaps") == [(0,)]


def test_status_reports_presence_health_and_explained_gaps(target: Target) -> None:
    store = target.open()
    ingest = Ingest(store, key_of)
    r1 = record("h0001", 1, b"")
    r2 = record("h0001", 2, chain_hash(r1), rtype=RecordType.HEALTH, body=health_body(depth=42))
    dropped = record(
        "h0001",
        6,
        b"\x07" * 16,  # links to the evicted record 5, which the center never sees
        rtype=RecordType.DROPPED,
        body=dropped_body(Eviction(3, 3, 5, 400, (RecordType.HEALTH,))),
    )
    r7 = record("h0001", 7, chain_hash(dropped), rtype=RecordType.HEALTH, body=health_body(depth=3))
    send(ingest, "h0001", [r1, r7, dropped, r2])  # older health after newer: depth stays 3
    send(ingest, "h0002", chain("h0002", 2), now_ms=T0 + 5000)
    store.note_presence("h0001", Presence.ONLINE, T0 + 1000)
    store.note_presence("h0003", Presence.OFFLINE, T0 + 2000)  # a state, never a record
    store.note_presence("h0001", Presence.OFFLINE, T0 + 500)  # older than what is kept
    store.note_presence("h0001", Presence.ONLINE, T0 + 9000, retained=True)  # a replay
    store.close()
    status = read_status(target.db, T0 + 60_000)
    by = {d.device: d for d in status.devices}
    assert sorted(by) == ["h0001", "h0002", "h0003"]
    h1, h2, h3 = by["h0001"], by["h0002"], by["h0003"]
    assert (h1.online, h1.online_from.value, h1.last_seen_ms) == (True, "state", T0 + 1000)
    assert (h1.depth, h1.depth_time_ms) == (3, T0 + 7000)
    assert [(g.first, g.last, g.kind.value) for g in h1.gaps] == [(3, 5, "DROPPED")]
    assert h1.missing == 0
    assert (h2.online, h2.online_from.value, h2.depth) == (True, "last_seen", None)
    assert (h3.online, h3.records, h3.last_seen_ms) == (False, 0, T0 + 2000)
    assert read_status(target.db, T0 + 3_600_000).devices[1].online is False  # not heard of
    assert status.totals == {
        "devices": 3,
        "online": 2,
        "records": 6,
        "missing": 0,
        "gaps": 0,
        "forks": 0,
        "outbox_depth": 3,
        "refused": 0,
    }


def test_two_stores_on_one_database_take_turns(target: Target) -> None:
    """Two workers' stores, each on its own thread and connection, fed overlapping batches
    of the same devices: every record once, chains whole, no false forks."""
    recs = {d: chain(d, 96) for d in KEYS}
    opened = [target.open(), target.open()]
    ingests = [Ingest(s, key_of) for s in opened]
    errors: list[BaseException] = []

    def work(ingest: Ingest, offset: int) -> None:
        try:
            for i in range(0, 96, 16):
                for d in KEYS:
                    start = max(0, i - offset)  # each worker resends part of the other's
                    send(ingest, d, recs[d][start : i + 16], bid=i)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(ingest, off))
        for ingest, off in zip(ingests, (0, 8), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(i.stats.stored for i in ingests) == 3 * 96
    assert all(i.stats.forks == 0 and i.stats.refused == 0 for i in ingests)
    snap = opened[0].snapshot()
    for s in opened:
        s.close()
    assert [(r.device, r.chain.records, r.chain.last_seq, r.chain.gaps) for r in snap.devices] == [
        (d, 96, 96, ()) for d in sorted(KEYS)
    ]
    assert target.query("SELECT count(*), count(DISTINCT device) FROM records") == [(288, 3)]


def test_save_reports_a_verdict_per_record(target: Target) -> None:
    store = target.open()
    recs = chain("h0001", 3)
    send(Ingest(store, key_of), "h0001", recs[:2])
    checked = [check_record(r, "h0001", key_of("h0001")) for r in recs]
    good = [c[0] for c in checked if isinstance(c, tuple)]
    assert len(good) == 3
    saved = store.save(good, [], T0)
    store.close()
    assert saved.verdicts == (Verdict.DUPLICATE, Verdict.DUPLICATE, Verdict.NEW)
    assert saved.fresh == [False, False, True]


# --- `picket center status` ----------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="picket")
    sub = p.add_subparsers(dest="command", required=True)
    center = sub.add_parser("center").add_subparsers(dest="center_command", required=True)
    centerstatus.add_parser(center)
    return p.parse_args(argv)


def test_cli_status_json_and_table(target: Target) -> None:
    ingest = Ingest(target.open(), key_of)
    recs = chain("h0001", 6)
    send(ingest, "h0001", [recs[0], recs[1], recs[4], recs[5]], now_ms=T0 + 1000)
    send(ingest, "h0002", chain("h0002", 1), now_ms=T0 + 2000)
    ingest.store.close()
    out, err = io.StringIO(), io.StringIO()
    args = parse(["center", "status", "--db", target.db, "--json"])
    assert centerstatus.status(args, out, err, now_ms=T0 + 62_000) == 0
    data = json.loads(out.getvalue().splitlines()[-1])
    assert data["totals"]["devices"] == 2 and data["totals"]["missing"] == 2
    h1 = data["devices"][0]
    assert h1["device"] == "h0001"
    assert h1["gaps"] == [{"first": 3, "last": 4, "kind": "MISSING"}]
    assert (h1["records"], h1["last_seq"], h1["online"], h1["last_seen"]) == (
        4,
        6,
        True,
        "2026-03-01T00:00:01Z",
    )
    out = io.StringIO()
    assert centerstatus.status(parse(["center", "status", "--db", target.db]), out, err, T0) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "STATE", "LAST"]
    assert lines[1].split()[:2] == ["h0001", "online?"]
    assert "2 (3-4)" in lines[1]
    assert "2 devices, 2 online; 5 records, 2 missing in 1 gap, 0 forks" in out.getvalue()
    assert err.getvalue() == ""


def test_cli_status_of_something_else_is_bad_input(tmp_path: Any) -> None:
    err = io.StringIO()
    missing = tmp_path / "nope.db"
    assert centerstatus.status(parse(["center", "status", "--db", str(missing)]), err=err) == 2
    assert err.getvalue().startswith(f"picket: error: no center database at {missing}")
    with pytest.raises(CenterDbError, match="cannot connect"):
        read_status("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", 0)


def test_a_lost_postgresql_connection_fails_one_batch_and_the_next_reconnects(
    target: Target,
) -> None:
    if target.kind != "postgresql":
        pytest.skip("PostgreSQL only: a server-side disconnect")
    store = target.open()
    ingest = Ingest(store, key_of)
    recs = chain("h0001", 4)
    send(ingest, "h0001", recs[:2])
    pid = store._conn.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(target.db, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreError):
        send(ingest, "h0001", recs[2:])  # nothing stored, nothing acknowledged
    ack = send(ingest, "h0001", recs[2:])  # the device resends; a new connection takes it
    assert ack.stored == (3, 4)
    store.close()
    assert target.query("SELECT count(*) FROM records") == [(4,)]
