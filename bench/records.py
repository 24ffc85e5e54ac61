"""Record signing and verification against raw Ed25519, and check-in sizes over a shift.

Run: .venv/bin/python bench/records.py [--devices N] [--minutes M]
Prints rates and their ratio to the raw primitive (absolute times on shared machines are noisy).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.device import DeviceAgent
from agent.fix import TimeSource
from agent.outbox import Outbox
from agent.records import ChainPosition, RecordType, build, open_record
from simulators.demo import SHIFT_START_MS
from simulators.district import generate_district
from simulators.walker import Walker


def rate(fn: object, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=60)
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    body = {
        16: "P007",
        17: 1,
        18: 96_000,
        19: 292_651_234,
        20: 1_062_551_234,
        21: 30,
        22: 97,
        23: 0,
    }
    pos = ChainPosition(boot=1, seq=1234, prev=bytes(16))

    def make() -> bytes:
        return build(
            key,
            device="h0001",
            chain=pos,
            rtype=RecordType.CHECKIN,
            time_ms=SHIFT_START_MS,
            time_source=TimeSource.GNSS,
            body=body,
        )

    raw = make()
    msg = bytes(110)
    sig = key.sign(msg)
    pub = key.public_key()
    n = 20_000
    raw_sign = rate(lambda: key.sign(msg), n)
    rec_sign = rate(make, n)
    raw_verify = rate(lambda: pub.verify(sig, msg), n)
    rec_verify = rate(lambda: open_record(raw, pub), n)
    print(
        f"sign:   raw Ed25519 {raw_sign:9.0f}/s   record build+sign {rec_sign:9.0f}/s   "
        f"ratio {rec_sign / raw_sign:.2f}"
    )
    print(
        f"verify: raw Ed25519 {raw_verify:9.0f}/s   record verify+decode {rec_verify:9.0f}/s   "
        f"ratio {rec_verify / raw_verify:.2f}"
    )

    plan = generate_district(7)
    sizes: Counter[int] = Counter()
    end = SHIFT_START_MS + int(args.minutes * 60_000)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.devices):
            dev = f"h{i + 1:04d}"
            box = Outbox(Path(tmp) / f"{dev}.db", dev)
            box.begin_boot()
            agent = DeviceAgent(dev, key, plan, box)
            walker = Walker(
                dev, plan, plan.lines[i % len(plan.lines)], random.Random(i), SHIFT_START_MS, end
            )
            t = SHIFT_START_MS
            while not walker.done:
                agent.on_nmea(walker.tick(t))
                t += 1000
            sizes.update(len(s.raw) for s in box.pending(10_000))
            box.close()
    values = sorted(sizes.elements())
    print(
        f"check-in sizes over {len(values)} check-ins: min {values[0]} B, "
        f"median {statistics.median(values):.0f} B, max {values[-1]} B (limit 160 B)"
    )


if __name__ == "__main__":
    main()
