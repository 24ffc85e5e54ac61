"""Outbox appends (number + sign + store, one commit each) against raw SQLite commits.

Run: .venv/bin/python bench/outbox.py [--records N]
Both sides use WAL with synchronous=FULL and ~160-byte rows on the same disk.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.fix import TimeSource
from agent.outbox import Built, Outbox
from agent.records import ChainPosition, RecordType, build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=3000)
    n = ap.parse_args().records
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, raw BLOB)")
        row = bytes(160)
        t0 = time.perf_counter()
        for i in range(n):
            con.execute("BEGIN")
            con.execute("INSERT INTO t VALUES (?, ?)", (i, row))
            con.execute("COMMIT")
        raw_rate = n / (time.perf_counter() - t0)
        con.close()

        box = Outbox(Path(tmp) / "outbox.db", "h0001")
        box.begin_boot()

        def make(pos: ChainPosition) -> Built:
            raw = build(
                key,
                device="h0001",
                chain=pos,
                rtype=RecordType.CHECKIN,
                time_ms=1_772_323_200_000,
                time_source=TimeSource.GNSS,
                body={16: "P007", 17: 1, 18: 96_000},
            )
            return Built(RecordType.CHECKIN, 0, raw)

        t0 = time.perf_counter()
        for _ in range(n):
            box.append(make)
        box_rate = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        pending = box.pending(n)
        box.acknowledge(s.seq for s in pending)
        drain = n / (time.perf_counter() - t0)
        box.close()
    print(f"raw SQLite commit (WAL, FULL): {raw_rate:8.0f}/s")
    print(f"outbox append (sign + store): {box_rate:8.0f}/s   ratio {box_rate / raw_rate:.2f}")
    print(f"outbox read + acknowledge:    {drain:8.0f}/s (one transaction)")


if __name__ == "__main__":
    main()
