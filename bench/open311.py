"""Open311 `GET /requests.json` over 100,000 events: how long the center takes to answer.

Run: .venv/bin/python bench/open311.py [--events N] [--rounds R] [--dir DIR]

Fills a SQLite center database with N events (default 100,000) spread over the last 120
days: seeded categories, places around the district and one in ten with a photo held, a
fifth of them rejected or closed. Then `picket center api` is started as the real process on
a free loopback port and each query below is asked R times over HTTP (a new connection each
time, as a city's poller would); the figures are wall time from sending the request to the
last byte of the JSON parsed, median and worst, with the number of requests and bytes the
answer carried. The issue asks for "well under a second" over 100,000 events. Prints, never
asserts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from center.events import lifecycle
from center.events import store as ev
from center.events.store import EventDb, NewEvent
from center.store import CenterStore

DAY = 86_400_000
KEY = "bench-0123456789abcdef"


def fill(db_path: Path, n: int, now_ms: int, seed: int = 18) -> float:
    rnd = random.Random(seed)
    CenterStore(db_path).close()
    started = time.perf_counter()
    db = EventDb(db_path)
    with db.write() as sql:
        for i in range(n):
            new = NewEvent(
                device=f"h{rnd.randrange(1, 2748):04d}",
                seq=i + 1,
                category=rnd.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 99)),
                reported_ms=now_ms - rnd.randrange(120 * DAY),
                place=0,
                lat_e7=295_000_000 + rnd.randrange(-200_000, 200_000),
                lon_e7=1_063_000_000 + rnd.randrange(-200_000, 200_000),
                accuracy_dm=rnd.randrange(20, 150),
            )
            number, _ = ev.add_event(sql, new, now_ms)
            if i % 10 == 0:
                photo = rnd.randbytes(2048)
                sha = hashlib.sha256(photo).digest()
                ev.add_attachment(sql, number, sha, 1, len(photo), data=photo)
            if i % 5 == 0:
                ev.act(sql, number, lifecycle.Reject("not ours"), by="bench", at_ms=now_ms)
    db.close()
    return time.perf_counter() - started


def start_api(db_path: Path, keys: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "picket", "center", "api", "--db", str(db_path), "--listen",
         "127.0.0.1:0", "--keys", str(keys)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"picket center api did not start: {line!r}")
    return proc, line.split()[-1]


def ask(url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (our own loopback server)
        body = r.read()
    found = json.loads(body)
    return time.perf_counter() - t0, len(found), len(body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--dir", type=Path, help="where the database goes (a temporary folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        db_path, keys = Path(tmp) / "center.db", Path(tmp) / "keys.txt"
        keys.write_text(f"bench {KEY}\n")
        now = int(time.time() * 1000)
        took = fill(db_path, args.events, now)
        size = db_path.stat().st_size / 1e6
        print(f"filled {args.events:,} events in {took:.1f} s ({size:.0f} MB of SQLite)")
        proc, root = start_api(db_path, keys)
        try:
            queries = {
                "default (90 days, all)": "/requests.json",
                "status=open": "/requests.json?status=open",
                "service_code=4": "/requests.json?service_code=4",
                "status=closed&service_code=1,2": "/requests.json?status=closed&service_code=1,2",
                "a 7-day window": "/requests.json?start_date="
                + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 30 * 86400))
                + "&end_date="
                + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 23 * 86400)),
                "one request by id": "/requests/50000.json",
            }
            print(f"GET over HTTP, {args.rounds} rounds each (median / worst):")
            for name, path in queries.items():
                ask(root + path)  # warm: the first answer reads the pages from disk
                runs = [ask(root + path) for _ in range(args.rounds)]
                times = [t * 1000 for t, _, _ in runs]
                _, count, size_b = runs[-1]
                print(
                    f"  {name:<32} {statistics.median(times):7.1f} ms / {max(times):7.1f} ms"
                    f"   {count:>5} requests, {size_b / 1000:,.0f} kB"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
