"""How fast one agent drains a backlog: records per second from its outbox to the center.

Run: .venv/bin/python bench/backlog.py [--records N] [--rounds R] [--batch MAX] [--window W]
                                        [--keepalive S]

A device out of coverage for a shift comes back with thousands of records. This bench
stores N signed check-ins in one outbox (signing is not timed: bench/records.py measures
it), starts a private Mosquitto and the center as its own process (`picket center run`,
as a site runs it, so center and agent do not share a CPU core), then times one `Uplink`
from its start until the outbox is empty: connect, publish, the center verifying,
storing and acknowledging every record, and the outbox deleting them. Each round uses
fresh files. It prints records per second and seconds per round, and the batch size the
uplink grew to.
Goal (issue "Uplink"): a 10,000-record backlog drains in seconds, not minutes.

Then, once per round, how long the uplink takes to notice a half-open link: connected
through a proxy (simulators/proxy.py) with a keepalive of S seconds (2), the link goes
silent both ways while a record is sent into it; the figure is the time from the silence
to the uplink dropping the connection (docs/protocol.md: within 1.375 keepalives).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.store.outbox import Builder, Built, Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from agent.uplink.sync import SyncCore
from contract.fix import TimeSource
from contract.records import ChainPosition, RecordType, build
from provisioning.registry import Registry
from simulators.broker import Mosquitto
from simulators.proxy import LinkProxy

DEVICE = "h0001"
GOAL_S = 10.0


def checkin(key: Ed25519PrivateKey, i: int) -> Builder:
    def make(pos: ChainPosition) -> Built:
        t = 1_772_323_200_000 + i * 60_000
        raw = build(
            key,
            device=DEVICE,
            chain=pos,
            rtype=RecordType.CHECKIN,
            time_ms=t,
            time_source=TimeSource.GNSS,
            body={16: f"P{i % 24:03d}", 17: 3, 18: 95, 19: 295_000_000, 20: 1_065_000_000},
        )
        return Built(RecordType.CHECKIN, t, raw)

    return make


async def start_center(work: Path, registry: Path, broker: Mosquitto) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "picket",
        "center",
        "run",
        "--db",
        str(work / "center.db"),
        "--registry",
        str(registry),
        "--broker",
        f"{broker.host}:{broker.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=(work / "center.log").open("ab"),
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    if not line.startswith(b"ready"):
        proc.kill()
        raise SystemExit(f"the center did not start; see {work / 'center.log'}")
    return proc


async def one_round(work: Path, n: int, max_batch: int, window: int) -> tuple[float, int]:
    key = Ed25519PrivateKey.generate()
    registry = work / "registry.db"
    reg = Registry(registry)
    reg.add(DEVICE, key.public_key().public_bytes_raw(), 0)
    reg.close()
    box = Outbox(work / "outbox.db", DEVICE)
    box.append_many(checkin(key, i) for i in range(n))
    with Mosquitto(work / "broker") as broker:
        center = await start_center(work, registry, broker)
        try:
            core = SyncCore(batch_size=32, max_batch_size=max_batch, window=window)
            uplink = Uplink(box, BrokerAddress(broker.host, broker.port), core=core)
            t0 = time.perf_counter()
            task = asyncio.create_task(uplink.run(), name="uplink")
            while box.depth() > 0:
                await asyncio.sleep(0.005)
                if time.perf_counter() - t0 > 300:
                    raise SystemExit("no drain within 5 minutes")
            took = time.perf_counter() - t0
            uplink.stop()
            await asyncio.wait_for(task, 20)
        finally:
            center.terminate()
            await center.communicate()
    box.close()
    return took, core.batch_size


async def half_open(work: Path, keepalive: int) -> float:
    """Seconds from the link going silent to the uplink dropping it (no center is needed:
    the probe's PUBACK comes from the broker)."""
    key = Ed25519PrivateKey.generate()
    box = Outbox(work / "outbox.db", DEVICE)
    with Mosquitto(work / "broker") as broker:
        async with LinkProxy(broker.host, broker.port) as proxy:
            options = UplinkOptions(keepalive_s=keepalive, backoff_initial_s=0.05)
            uplink = Uplink(box, BrokerAddress(proxy.host, proxy.port), options=options)
            task = asyncio.create_task(uplink.run(), name="uplink")
            await asyncio.wait_for(uplink.connected.wait(), 20)
            proxy.silence()
            t0 = time.perf_counter()
            uplink.on_stored(box.append(checkin(key, 0)))  # sent into the void
            while uplink.connected.is_set():
                await asyncio.sleep(0.005)
                if time.perf_counter() - t0 > 60:
                    raise SystemExit("a half-open link not noticed within a minute")
            took = time.perf_counter() - t0
            uplink.stop()
            await asyncio.wait_for(task, 20)
    box.close()
    return took


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256, help="largest batch (records)")
    ap.add_argument("--window", type=int, default=8, help="batches in flight")
    ap.add_argument("--keepalive", type=int, default=2, help="for the half-open link (s)")
    args = ap.parse_args()
    times = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="picket-bench-backlog-") as d:
            took, size = await one_round(Path(d), args.records, args.batch, args.window)
        times.append(took)
        print(
            f"round {r + 1}: {args.records} records in {took:.2f} s "
            f"({args.records / took:,.0f} records/s), batches grew to {size}"
        )
    best, median = min(times), statistics.median(times)
    rate = args.records / median
    print(
        f"backlog of {args.records}: median {median:.2f} s ({rate:,.0f} records/s),"
        f" best {best:.2f} s; window {args.window} batches of up to {args.batch}"
    )
    verdict = "met" if median <= GOAL_S else "NOT met"
    print(f"goal (drained in seconds, here <= {GOAL_S:.0f} s): {verdict}")
    noticed = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="picket-bench-halfopen-") as d:
            noticed.append(await half_open(Path(d), args.keepalive))
    worst = max(noticed) / args.keepalive
    print(
        f"half-open link noticed after {statistics.median(noticed):.2f} s (median of"
        f" {len(noticed)}, worst {worst:.2f} keepalives; keepalive {args.keepalive} s;"
        " promised: within 1.375)"
    )


if __name__ == "__main__":
    asyncio.run(main())
