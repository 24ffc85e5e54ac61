"""The outbox against real SQLite files: numbering, priorities, eviction, damage, full disk.

The kill -9 test is in tests/test_outbox_crash.py, the stateful model in
tests/test_outbox_model.py.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import signed

from agent.errors import StorageError
from agent.store.outbox import Built, Outbox, Stored
from contract.fix import TimeSource
from contract.records import (
    ChainPosition,
    DroppedKey,
    Eviction,
    RecordType,
    alert_body,
    build,
    chain_hash,
    dropped_body,
    health_body,
    open_record,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()
T0 = 1_772_323_200_000
Builder = Callable[[ChainPosition], Built]


def maker(device: str, rtype: RecordType = RecordType.CHECKIN, time_ms: int = T0) -> Builder:
    bodies: dict[RecordType, dict[int, object]] = {
        RecordType.HEALTH: health_body(depth=3, battery_pct=80),
        RecordType.ALERT: alert_body(),
    }
    return signed(KEY, device, rtype, bodies.get(rtype, {16: "P001"}), time_ms)


def on_evict(pos: ChainPosition, eviction: Eviction) -> Built:
    raw = build(
        KEY,
        device="h0001",
        chain=pos,
        rtype=RecordType.DROPPED,
        time_ms=T0,
        time_source=TimeSource.GNSS,
        body=dropped_body(eviction),
    )
    return Built(RecordType.DROPPED, T0, raw)


def assert_chain(stored: list[Stored]) -> None:
    """Every record verifies, and links to its predecessor wherever that one is still held."""
    recs = {s.seq: open_record(s.raw, PUBLIC) for s in stored}
    for seq, rec in recs.items():
        assert rec.header.seq == seq
        if seq - 1 in recs:
            assert rec.header.prev == chain_hash(recs[seq - 1].raw), f"chain broken at {seq}"


def eviction_in(dropped: Stored) -> Eviction:
    """What a DROPPED record says was evicted, read back from its signed bytes."""
    body = open_record(dropped.raw, PUBLIC).body
    count, first, last, size, types = (body[k] for k in list(DroppedKey)[:5])
    assert isinstance(count, int) and isinstance(first, int) and isinstance(last, int)
    assert isinstance(size, int) and isinstance(types, list)
    return Eviction(count, first, last, size, tuple(RecordType(t) for t in types))


# --- numbering -------------------------------------------------------------------------------


def test_records_are_numbered_and_chained(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    box.begin_boot()
    stored = [box.append(maker("h0001")) for _ in range(5)]
    assert [s.seq for s in stored] == [1, 2, 3, 4, 5]
    recs = [open_record(s.raw, PUBLIC) for s in stored]
    assert recs[0].header.prev == b""
    for before, after in itertools.pairwise(recs):
        assert after.header.prev == chain_hash(before.raw)
    assert all(r.header.boot == 1 for r in recs)
    assert box.depth() == 5
    box.close()


def test_acknowledge_deletes_only_what_is_covered(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    for _ in range(6):
        box.append(maker("h0001"))
    assert box.acknowledge([2, 4, 99, 4]) == 2
    assert [s.seq for s in box.pending(10)] == [1, 3, 5, 6]
    assert [s.seq for s in box.pending(2, skip=[1])] == [3, 5]
    assert box.acknowledge([]) == 0
    box.close()


def test_refused_records_are_kept_but_not_resent(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    for _ in range(3):
        box.append(maker("h0001"))
    box.refuse(2, "BAD_SIGNATURE")
    assert [s.seq for s in box.pending(10)] == [1, 3]
    assert box.depth() == 2
    box.close()
    con = sqlite3.connect(tmp_path / "o.db")
    assert con.execute("SELECT refused FROM outbox WHERE seq = 2").fetchone() == ("BAD_SIGNATURE",)
    con.close()


def test_sequence_and_boot_survive_reopen_and_never_repeat(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, "h0001")
    assert box.begin_boot() == 1
    box.append(maker("h0001"))
    box.append(maker("h0001"))
    box.acknowledge([1, 2])  # an empty outbox must not reset the numbering
    last = box.append(maker("h0001"))
    box.acknowledge([3])  # nor one whose newest record went
    box.close()
    box = Outbox(path, "h0001")
    assert box.last_seq == 3
    assert box.begin_boot() == 2
    nxt = box.append(maker("h0001"))
    assert nxt.seq == last.seq + 1
    rec = open_record(nxt.raw, PUBLIC)
    assert rec.header.boot == 2
    assert rec.header.prev == chain_hash(last.raw)
    box.close()


def test_an_outbox_belongs_to_one_device(tmp_path: Path) -> None:
    Outbox(tmp_path / "o.db", "h0001").close()
    with pytest.raises(StorageError, match="belongs to device 'h0001'"):
        Outbox(tmp_path / "o.db", "h0002")


def test_a_failing_build_stores_nothing_and_uses_no_number(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")

    def broken(_pos: ChainPosition) -> Built:
        raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        box.append(broken)
    with pytest.raises(RuntimeError):  # a batch is all or nothing
        box.append_many([maker("h0001"), maker("h0001"), broken])
    assert box.depth() == 0
    assert box.append(maker("h0001")).seq == 1
    box.close()


def test_append_many_numbers_and_chains_a_batch_in_one_transaction(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    box.begin_boot()
    first = box.append(maker("h0001"))
    batch = box.append_many(maker("h0001") for _ in range(250))  # more than one INSERT chunk
    assert [s.seq for s in batch] == list(range(2, 252))
    assert box.append_many([]) == []
    last = box.append(maker("h0001"))
    assert last.seq == 252
    assert_chain([first, *batch, last])
    assert [s.raw for s in box.pending(1000)] == [s.raw for s in (first, *batch, last)]
    box.close()


def test_the_sidecar_reserves_numbers_before_they_are_used(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    boot = box.begin_boot()
    box.append_many(maker("h0001") for _ in range(30))
    reserve = json.loads((tmp_path / "o.db.reserve").read_text())
    assert reserve["device"] == "h0001"
    assert reserve["boot"] == boot
    assert reserve["seq_limit"] > box.last_seq
    assert not (tmp_path / "o.db.reserve.tmp").exists()
    box.close()


def test_an_outbox_from_before_priorities_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(
        """
        CREATE TABLE meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY, type INTEGER NOT NULL,
                             time_ms INTEGER NOT NULL, raw BLOB NOT NULL, refused TEXT);
        INSERT INTO meta VALUES ('device', 'h0001'), ('boot', 4), ('next_seq', 3), ('prev', x'');
        INSERT INTO outbox VALUES (1, 1, 0, x'01', NULL), (2, 6, 0, x'02', NULL);
        """
    )
    con.close()
    box = Outbox(path, "h0001")
    assert box.recovered_from is None
    assert [s.seq for s in box.pending(10)] == [2, 1]  # the alert first
    assert box.begin_boot() == 5
    assert box.append(maker("h0001")).seq == 3
    box.close()


# --- priorities and the size cap ----------------------------------------------------------------


def test_alerts_jump_the_queue_and_evictable_records_wait(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    health = box.append(maker("h0001", RecordType.HEALTH), evictable=True)
    c1 = box.append(maker("h0001"))
    alert = box.append(maker("h0001", RecordType.ALERT))
    c2 = box.append(maker("h0001", RecordType.MISSED))
    kept_health = box.append(maker("h0001", RecordType.HEALTH))  # not evictable: kept class
    assert [s.seq for s in box.pending(10)] == [
        alert.seq, c1.seq, c2.seq, kept_health.seq, health.seq
    ]  # fmt: skip
    assert [s.seq for s in box.pending(2)] == [alert.seq, c1.seq]
    assert [s.seq for s in box.pending(3, skip=[alert.seq, c2.seq])] == [
        c1.seq, kept_health.seq, health.seq
    ]  # fmt: skip
    box.close()
    box = Outbox(tmp_path / "o.db", "h0001")  # the order is stored, not remembered
    assert box.pending(1)[0].seq == alert.seq
    box.close()


def test_only_health_records_can_be_evictable(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    for rtype in (RecordType.CHECKIN, RecordType.ALERT, RecordType.ROLLCALL):
        with pytest.raises(ValueError, match="never evicted"):
            box.append(maker("h0001", rtype), evictable=True)
    assert box.append(maker("h0001")).seq == 1  # no number was used
    with pytest.raises(ValueError, match="on_evict"):
        Outbox(tmp_path / "o2.db", "h0001", cap_bytes=1000)
    box.close()


def test_eviction_leaves_a_signed_chained_dropped_record(tmp_path: Path) -> None:
    cap = 4000
    box = Outbox(tmp_path / "o.db", "h0001", cap_bytes=cap, on_evict=on_evict)
    box.begin_boot()
    created: dict[int, Stored] = {}
    for i in range(60):
        rtype = RecordType.CHECKIN if i % 10 == 0 else RecordType.HEALTH
        s = box.append(maker("h0001", rtype, T0 + i), evictable=rtype is RecordType.HEALTH)
        created[s.seq] = s
    held = box.pending(1000)
    dropped = [s for s in held if s.type is RecordType.DROPPED]
    assert dropped, "the cap never evicted anything"
    assert box.stored_bytes == sum(len(s.raw) for s in held)
    assert box.stored_bytes <= cap
    assert not box.cap_exceeded
    # every check-in is still there; every record that went is accounted for by a DROPPED one
    held_seqs = {s.seq for s in held}
    assert {q for q, s in created.items() if s.type is RecordType.CHECKIN} <= held_seqs
    gone = sorted(q for q in created if q not in held_seqs)
    evictions = [eviction_in(s) for s in dropped]
    assert sum(e.count for e in evictions) == len(gone) == box.evicted
    assert sum(e.bytes for e in evictions) == sum(len(created[q].raw) for q in gone)
    for e in evictions:
        assert e.types == (RecordType.HEALTH,)
        span = [q for q in gone if e.first_seq <= q <= e.last_seq]
        assert len(span) == e.count
        assert (span[0], span[-1]) == (e.first_seq, e.last_seq)
    # one DROPPED record stands for several evicted ones, not one each
    assert len(gone) >= 3 * len(dropped)
    # the DROPPED records are numbered and chained like any other record, right after the
    # record whose append made room
    assert_chain(held)
    for s in dropped:
        assert open_record(s.raw, PUBLIC).header.prev == chain_hash(created[s.seq - 1].raw)
    order = [s.type is RecordType.HEALTH for s in held]
    assert order == sorted(order)  # health waits behind check-ins and DROPPED records
    box.close()


def test_the_cap_never_evicts_checkins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cap = 2000
    box = Outbox(tmp_path / "o.db", "h0001", cap_bytes=cap, on_evict=on_evict)
    health = box.append(maker("h0001", RecordType.HEALTH), evictable=True)
    with caplog.at_level(logging.WARNING, logger="agent.store.outbox"):
        checkins = [box.append(maker("h0001")) for _ in range(40)]
    assert box.cap_exceeded
    assert box.stored_bytes > cap
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 1  # said once
    pending = box.pending(1000)
    assert {s.seq for s in checkins} <= {s.seq for s in pending}
    # one lone health record frees too little to be worth a DROPPED record of its own size
    assert health.seq in {s.seq for s in pending}
    assert box.evicted == 0
    assert not [s for s in pending if s.type is RecordType.DROPPED]
    box.acknowledge(s.seq for s in checkins)
    assert not box.cap_exceeded
    box.close()


# --- damage ---------------------------------------------------------------------------------------


def filled(path: Path, n: int = 300) -> tuple[int, int, Stored]:
    """An outbox with `n` records over two boots, closed; returns (boot, last seq, last)."""
    box = Outbox(path, "h0001")
    box.begin_boot()
    box.append_many(maker("h0001") for _ in range(n // 2))
    boot = box.begin_boot()
    last = box.append_many(maker("h0001") for _ in range(n - n // 2))[-1]
    box.close()
    return boot, last.seq, last


def test_a_file_of_garbage_is_moved_aside_and_numbering_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    old_boot, old_seq, _ = filled(path)
    garbage = os.urandom(path.stat().st_size)
    path.write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="agent.store.outbox"):
        box = Outbox(path, "h0001")
    assert box.recovered_from is not None
    assert box.recovered_from.name.startswith("o.db.damaged-")
    assert box.recovered_from.read_bytes() == garbage  # kept as it was, never written over
    assert "damaged" in caplog.text and str(box.recovered_from) in caplog.text
    assert "chain restarts" in caplog.text
    assert box.depth() == 0
    boot = box.begin_boot()
    assert boot > old_boot
    s = box.append(maker("h0001"))
    assert s.seq > old_seq
    rec = open_record(s.raw, PUBLIC)
    assert rec.header.boot == boot
    assert rec.header.prev == b""
    box.close()
    box = Outbox(path, "h0001")  # the new file is healthy and carries on from itself
    assert box.recovered_from is None
    assert box.append(maker("h0001")).seq == s.seq + 1
    box.close()


def test_a_truncated_database_is_moved_aside_and_numbering_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    old_boot, old_seq, _ = filled(path, 600)
    size = path.stat().st_size
    os.truncate(path, size // 2)
    with caplog.at_level(logging.ERROR, logger="agent.store.outbox"):
        box = Outbox(path, "h0001")
    assert box.recovered_from is not None
    assert box.recovered_from.stat().st_size == size // 2
    assert "malformed" in caplog.text
    assert box.begin_boot() > old_boot
    assert box.append(maker("h0001")).seq > old_seq
    box.close()


def test_a_damaged_file_whose_newest_record_reads_keeps_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    old_boot, old_seq, last = filled(path, 600)
    page = 4096
    middle = path.stat().st_size // page // 2
    with path.open("r+b") as f:  # a leaf page in the middle of the records
        f.seek(middle * page)
        f.write(os.urandom(page))
    box = Outbox(path, "h0001")
    assert box.recovered_from is not None
    s = box.append(maker("h0001"))
    rec = open_record(s.raw, PUBLIC)
    assert rec.header.prev == chain_hash(last.raw)  # links across the break
    assert s.seq > old_seq
    assert rec.header.boot > old_boot
    box.close()


def test_a_damaged_file_is_moved_with_its_log(tmp_path: Path) -> None:
    live, cut = tmp_path / "live", tmp_path / "cut"
    live.mkdir()
    cut.mkdir()
    _, old_seq, _ = filled(live / "o.db", 20)
    box = Outbox(live / "o.db", "h0001")
    box.append(maker("h0001"))  # in the log only, not yet in the database file
    for name in ("o.db", "o.db-wal", "o.db.reserve"):  # the files as a power cut leaves them
        (cut / name).write_bytes((live / name).read_bytes())
    box.close()
    wal = (cut / "o.db-wal").read_bytes()
    (cut / "o.db").write_bytes(os.urandom((cut / "o.db").stat().st_size))
    box = Outbox(cut / "o.db", "h0001")
    assert box.recovered_from is not None
    assert Path(f"{box.recovered_from}-wal").read_bytes() == wal
    assert not (cut / "o.db-wal").exists() or (cut / "o.db-wal").read_bytes() != wal
    assert box.append(maker("h0001")).seq > old_seq + 1
    box.close()


def test_a_lost_database_never_reuses_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    old_boot, old_seq, _ = filled(path, 20)
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="agent.store.outbox"):
        box = Outbox(path, "h0001")
    assert "missing" in caplog.text
    assert box.recovered_from is None
    assert box.begin_boot() > old_boot
    assert box.append(maker("h0001")).seq > old_seq
    box.close()


def test_an_unreadable_sidecar_is_moved_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    _, old_seq, _ = filled(path, 20)
    (tmp_path / "o.db.reserve").write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="agent.store.outbox"):
        box = Outbox(path, "h0001")
    assert "unreadable" in caplog.text
    assert list(tmp_path.glob("o.db.reserve.damaged-*"))
    assert json.loads((tmp_path / "o.db.reserve").read_text())["seq_limit"] > old_seq
    assert box.append(maker("h0001")).seq == old_seq + 1  # the database itself was fine
    box.close()


# --- full disk ------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = bytes(4096)
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler


def test_a_full_disk_loses_nothing_stored_and_recovers(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small") as small:
        path = small / "o.db"
        box = Outbox(path, "h0001")
        box.begin_boot()
        stored = box.append_many(maker("h0001") for _ in range(50))
        filler = fill(small)
        error: StorageError | None = None
        for _ in range(5000):  # the log may have room for a few more commits
            try:
                stored.append(box.append(maker("h0001")))
            except StorageError as exc:
                error = exc
                break
        assert error is not None, "the disk never filled up"
        assert "disk full" in str(error)
        # the failed record is not there, everything stored before is, intact
        last = stored[-1].seq
        assert box.last_seq == last
        held = box.pending(100_000)
        assert [s.raw for s in held] == [s.raw for s in stored]
        assert_chain(held)
        with pytest.raises(StorageError, match="disk full"):
            box.begin_boot()  # the sidecar cannot be written either
        assert box.boot == 1
        # space comes back: the next record takes the next number, nothing is skipped
        filler.unlink()
        nxt = box.append(maker("h0001"))
        assert nxt.seq == last + 1
        assert open_record(nxt.raw, PUBLIC).header.prev == chain_hash(stored[-1].raw)
        assert box.begin_boot() == 2
        box.close()
        box = Outbox(path, "h0001")
        assert box.recovered_from is None
        assert [s.seq for s in box.pending(100_000)] == [*(s.seq for s in stored), nxt.seq]
        box.close()
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()


def test_a_full_database_is_reported_as_a_full_disk(tmp_path: Path) -> None:
    """Without root: SQLite's own page limit gives the same SQLITE_FULL as a full disk."""
    box = Outbox(tmp_path / "o.db", "h0001")
    stored = box.append_many(maker("h0001") for _ in range(10))
    box._db.execute("PRAGMA max_page_count = 8")  # the file as it is now, plus very little
    with pytest.raises(StorageError, match="disk full"):
        for _ in range(1000):
            stored.append(box.append(maker("h0001")))
    assert [s.raw for s in box.pending(1000)] == [s.raw for s in stored]
    box._db.execute("PRAGMA max_page_count = 1000000")
    assert box.append(maker("h0001")).seq == stored[-1].seq + 1
    box.close()
