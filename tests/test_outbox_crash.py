"""kill -9 of a real writer process at random moments: nothing confirmed is ever lost.

tests/outbox_writer.py stores signed check-ins in a loop and prints each sequence number
after `append` returned. The test kills it with SIGKILL 5–60 ms after it reports ready
(a seeded random delay), at least 200 times and until 10,000 check-ins have been
confirmed, and now and then also during start-up (opening, checking, `begin_boot`).
After every kill it reopens the outbox and checks what a center would: PRAGMA
integrity_check is ok, the file was not taken for damaged, every confirmed record is
there, sequence numbers run from 1 with no gap and no repeat, every record verifies and
links to the one before it, and boots only go up.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.store.outbox import Outbox
from contract.records import chain_hash, open_record

REPO = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).with_name("outbox_writer.py")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
KILLS = 200
CONFIRMED = 10_000
SEED = 20_261_128


@dataclass
class Audit:
    """What the checks after each kill have established so far."""

    hashes: list[bytes] = field(default_factory=list)  # chain_hash of record seq i+1
    boots: list[int] = field(default_factory=list)  # boot of record seq i+1

    def check(self, path: Path, confirmed: set[int]) -> None:
        box = Outbox(path, "h0001")
        try:
            assert box.recovered_from is None, "a healthy outbox was taken for damaged"
            con = sqlite3.connect(path)
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            con.close()
            stored = box.pending(10**7)
        finally:
            box.close()
        seqs = [s.seq for s in stored]
        assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat in sequence numbers"
        assert not confirmed - set(seqs), (
            f"confirmed records lost: {sorted(confirmed - set(seqs))[:10]}"
        )
        for s in stored[: len(self.hashes)]:  # what was checked before is unchanged
            assert chain_hash(s.raw) == self.hashes[s.seq - 1], f"record {s.seq} changed"
        for s in stored[len(self.hashes) :]:
            rec = open_record(s.raw, KEY.public_key())
            assert rec.header.seq == s.seq
            assert rec.header.prev == (self.hashes[-1] if self.hashes else b""), (
                f"chain broken at {s.seq}"
            )
            assert not self.boots or rec.header.boot >= self.boots[-1], "boot went back"
            self.hashes.append(chain_hash(s.raw))
            self.boots.append(rec.header.boot)


def start(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), KEY.private_bytes_raw().hex()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def kill(proc: subprocess.Popen[bytes]) -> list[bytes]:
    """SIGKILL, then every complete line it wrote before dying."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    return out.split(b"\n")[:-1]  # a last line without its newline is not a confirmation


@pytest.mark.integration
def test_kill_9_at_random_moments_loses_nothing_confirmed(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "o.db"
    audit = Audit()
    confirmed: set[int] = set()
    boots: list[int] = []
    kills = early = 0
    t0 = time.monotonic()
    while kills < KILLS or len(confirmed) < CONFIRMED:
        proc = start(path)
        assert proc.stdout is not None
        opening = proc.stdout.readline()
        assert opening == b"opening\n", opening + (proc.stderr.read() if proc.stderr else b"")
        if (kills + early) % 10 == 9:  # now and then while it opens, checks, begins a boot
            time.sleep(rng.uniform(0.0, 0.010))
            lines = kill(proc)
            early += 1
        else:
            ready = proc.stdout.readline()
            assert ready.startswith(b"ready "), ready + (proc.stderr.read() if proc.stderr else b"")
            time.sleep(rng.uniform(0.005, 0.060))
            lines = [ready.rstrip(b"\n"), *kill(proc)]
            kills += 1
        if lines and lines[0].startswith(b"ready "):
            boot = int(lines[0].split()[1])
            assert not boots or boot > boots[-1], f"boot {boot} after {boots[-1]}"
            boots.append(boot)
            seqs = [int(x) for x in lines[1:]]
            assert seqs == sorted(set(seqs)), "a writer confirmed a number twice"
            assert not confirmed & set(seqs), "a confirmed number was handed out again"
            confirmed.update(seqs)
        audit.check(path, confirmed)
    elapsed = time.monotonic() - t0
    print(
        f"\n{kills} kills after ready + {early} during start-up, {len(confirmed)} confirmed, "
        f"{len(audit.hashes)} stored, boots 1..{boots[-1]}, {elapsed:.0f} s"
    )
    assert len(audit.hashes) >= len(confirmed)
    assert audit.boots == sorted(audit.boots)
