"""The outbox against real SQLite files, including a writer killed with SIGKILL."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import StorageError
from agent.fix import TimeSource
from agent.outbox import Built, Outbox
from agent.records import ChainPosition, RecordType, build, chain_hash, open_record

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def maker(device: str, rtype: RecordType = RecordType.CHECKIN, time_ms: int = 1_772_323_200_000):
    def make(pos: ChainPosition) -> Built:
        raw = build(
            KEY,
            device=device,
            chain=pos,
            rtype=rtype,
            time_ms=time_ms,
            time_source=TimeSource.GNSS,
            body={16: "P001"},
        )
        return Built(rtype, time_ms, raw)

    return make


def test_records_are_numbered_and_chained(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    box.begin_boot()
    stored = [box.append(maker("h0001")) for _ in range(5)]
    assert [s.seq for s in stored] == [1, 2, 3, 4, 5]
    recs = [open_record(s.raw, KEY.public_key()) for s in stored]
    assert recs[0].header.prev == b""
    for before, after in itertools.pairwise(recs):
        assert after.header.prev == chain_hash(before.raw)
    assert all(r.header.boot == 1 for r in recs)
    assert box.depth() == 5


def test_acknowledge_deletes_only_what_is_covered(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    for _ in range(6):
        box.append(maker("h0001"))
    assert box.acknowledge([2, 4, 99]) == 2
    assert [s.seq for s in box.pending(10)] == [1, 3, 5, 6]
    assert [s.seq for s in box.pending(2, skip=[1])] == [3, 5]


def test_refused_records_are_kept_but_not_resent(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    for _ in range(3):
        box.append(maker("h0001"))
    box.refuse(2, "BAD_SIGNATURE")
    assert [s.seq for s in box.pending(10)] == [1, 3]
    assert box.depth() == 2
    box.close()
    import sqlite3

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
    box.close()
    box = Outbox(path, "h0001")
    assert box.begin_boot() == 2
    nxt = box.append(maker("h0001"))
    assert nxt.seq == last.seq + 1
    rec = open_record(nxt.raw, KEY.public_key())
    assert rec.header.boot == 2
    assert rec.header.prev == chain_hash(last.raw)


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
    assert box.depth() == 0
    assert box.append(maker("h0001")).seq == 1


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests.test_outbox import maker
    from agent.outbox import Outbox
    box = Outbox(Path(sys.argv[1]), "h0001")
    box.begin_boot()
    while True:
        s = box.append(maker("h0001"))
        print(s.seq, flush=True)
    """
)


def test_kill_9_loses_no_stored_record_and_never_reuses_a_number(tmp_path: Path) -> None:
    """A record whose append returned survives SIGKILL; numbering continues after it."""
    path = tmp_path / "o.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(Path(__file__).resolve().parents[1])))
    confirmed: list[int] = []
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(200):
            confirmed.append(int(proc.stdout.readline()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    box = Outbox(path, "h0001")
    stored = box.pending(100_000)
    seqs = [s.seq for s in stored]
    assert set(confirmed) <= set(seqs), "a record confirmed as stored was lost"
    assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers have a gap or a repeat"
    assert len(confirmed) == len(set(confirmed))
    recs = [open_record(s.raw, KEY.public_key()) for s in stored]
    for before, after in itertools.pairwise(recs):
        assert after.header.prev == chain_hash(before.raw), f"chain broken at {after.header.seq}"
    assert [r.header.boot for r in recs][-1] == 3
