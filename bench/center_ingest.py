"""Center ingest (verify, store, acknowledge) per core, as a ratio to raw Ed25519 verification.

Run: .venv/bin/python bench/center_ingest.py [--devices N] [--batches B] [--rounds R]
                                             [--dir DIR] [--pg [URL]]

Records are real signed, chained check-ins (~155 bytes) from many devices, signed before
the clock starts, in batches of 32 as an uplink sends them, interleaved across devices.
"ingest" is `Ingest.handle` on each batch's bytes plus encoding its acknowledgement: decode
the batch, decode and verify every record, validate its body, place it in its device's
chain and store it in one transaction per batch (SQLite WAL, synchronous=FULL: a COMMIT
is on disk before the ack could go), on a fresh database each round. "verify" is the raw
primitive on the same records: `Ed25519PublicKey.verify` over a ready Sig_structure, no
decoding at all. "check" is ingest without the store (decode, verify, validate), to show
where the rest goes. One process, one thread: records/s is per core. Rounds alternate the
sides; each rate is the best round's, and the ratio compares those.
Goal (issue "Center"): ingest at least 50 % of the verify limit.

`--pg URL` adds PostgreSQL at URL, on a schema made for the run and dropped after it;
`--pg` alone starts a private server for the run (simulators/pgserver.py: a temporary
folder, a free port, removed after), durable like the SQLite side (fsync and
synchronous_commit on), so no user's database is touched and the two compare fairly.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from center.batch import Store
from center.database import open_store
from center.ingest import Ingest, check_record
from center.store import CenterStore
from contract.cose import decode_sign1, sig_structure
from contract.fix import TimeSource
from contract.protocol import Batch, decode_batch, records_topic
from contract.records import ChainPosition, RecordType, build, chain_hash
from simulators.pgserver import PgServer

GOAL = 0.50
BATCH = 32
T0 = 1_772_323_200_000
PRIVATE = "private"  # --pg without a URL


def checkin(key: Ed25519PrivateKey, device: str, seq: int, prev: bytes) -> bytes:
    return build(
        key,
        device=device,
        chain=ChainPosition(boot=1, seq=seq, prev=prev),
        rtype=RecordType.CHECKIN,
        time_ms=T0 + seq * 60_000,
        time_source=TimeSource.GNSS,
        body={16: "P017", 17: 3, 18: 96, 19: 292651234, 20: 1062551234, 21: 35, 22: 97, 23: 0},
    )


Msgs = list[tuple[str, bytes]]
RawSide = list[tuple[Ed25519PublicKey, bytes, bytes]]


def workload(devices: int, batches: int) -> tuple[Msgs, RawSide, dict[str, Ed25519PublicKey]]:
    """(topic, batch bytes) interleaved across devices; (key, signature, Sig_structure) per
    record for the raw side; and the public keys by device."""
    keys = {f"h{i:04d}": Ed25519PrivateKey.generate() for i in range(1, devices + 1)}
    chains: dict[str, list[bytes]] = {}
    for device, key in keys.items():
        out: list[bytes] = []
        for seq in range(1, batches * BATCH + 1):
            out.append(checkin(key, device, seq, chain_hash(out[-1]) if out else b""))
        chains[device] = out
    msgs = [
        (records_topic(d), Batch(b, tuple(chains[d][b * BATCH : (b + 1) * BATCH])).encode())
        for b in range(batches)
        for d in keys
    ]
    public = {d: k.public_key() for d, k in keys.items()}
    raw_side = []
    for d, recs in chains.items():
        for raw in recs:
            m = decode_sign1(raw)
            raw_side.append((public[d], m.signature, sig_structure(m.protected, m.payload)))
    return msgs, raw_side, public


def time_it(fn: Callable[[], int]) -> tuple[float, float]:
    """(records per wall second, records per CPU second) of one run of fn."""
    w0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return n / (time.perf_counter() - w0), n / max(1e-9, time.process_time() - c0)


@contextlib.contextmanager
def sqlite_store(where: Path) -> Iterator[Store]:
    with tempfile.TemporaryDirectory(dir=where) as d:
        store = CenterStore(Path(d) / "center.db")
        try:
            yield store
        finally:
            store.close()


@contextlib.contextmanager
def pg_store(url: str) -> Iterator[Store]:
    import psycopg
    from psycopg import sql

    schema = f"picket_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in url else "?"
    store = open_store(f"{url}{sep}options=-csearch_path%3D{schema}")
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=100, help="devices (100)")
    p.add_argument("--batches", type=int, default=8, help="batches of 32 per device (8)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="SQLite here")
    p.add_argument(
        "--pg", nargs="?", const=PRIVATE, help="also PostgreSQL at URL (alone: a private server)"
    )
    args = p.parse_args()
    with contextlib.ExitStack() as stack:
        pg_url = args.pg
        if pg_url == PRIVATE:
            pg_url = stack.enter_context(PgServer(durable=True)).url
        run(args, pg_url)


def run(args: argparse.Namespace, pg_url: str | None) -> None:
    msgs, raw_side, public = workload(args.devices, args.batches)
    n = len(raw_side)
    key_of = public.get

    def verify() -> int:
        for key, sig, tbs in raw_side:
            key.verify(sig, tbs)
        return n

    def check() -> int:
        for topic, payload in msgs:
            device = topic.split("/")[2]
            key = key_of(device)
            for raw in decode_batch(payload).records:
                check_record(raw, device, key)
        return n

    def ingest(opener: Callable[[], contextlib.AbstractContextManager[Store]]) -> Callable[[], int]:
        def run() -> int:
            with opener() as store:
                ing = Ingest(store, key_of)
                for topic, payload in msgs:
                    ack = ing.handle(topic, payload, T0)
                    assert ack is not None
                    ack.encode()
                assert ing.stats.stored == n, ing.stats
            return n

        return run

    sides: dict[str, Callable[[], int]] = {
        "verify (raw Ed25519)": verify,
        "check (no store)": check,
        "ingest, SQLite": ingest(lambda: sqlite_store(args.dir)),
    }
    if pg_url is not None:
        url = pg_url
        sides["ingest, PostgreSQL"] = ingest(lambda: pg_store(url))
    best: dict[str, tuple[float, float]] = dict.fromkeys(sides, (0.0, 0.0))
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            wall, cpu = time_it(sides[name])
            if wall > best[name][0]:
                best[name] = (wall, cpu)

    print(
        f"{n:,} signed check-ins from {args.devices} devices, batches of {BATCH}, "
        f"one transaction per batch; best of {args.rounds} alternating rounds"
    )
    print(f"SQLite: WAL + synchronous=FULL in {args.dir}")
    if pg_url:
        where = "a private server, fsync on" if args.pg == PRIVATE else pg_url
        print(f"PostgreSQL: {where}")
    limit = best["verify (raw Ed25519)"][0]
    print(f"{'':24}{'records/s':>12}{'per CPU s':>12}{'of verify':>11}")
    for name, (wall, cpu) in best.items():
        print(f"{name:24}{wall:12,.0f}{cpu:12,.0f}{wall / limit:11.0%}")
    for name, (wall, _) in best.items():
        if name.startswith("ingest"):
            verdict = "met" if wall / limit >= GOAL else "MISSED"
            print(f"goal: {name} ≥ {GOAL:.0%} of raw verification: {verdict} ({wall / limit:.0%})")


if __name__ == "__main__":
    main()
