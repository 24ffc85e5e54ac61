"""Memory per connected device on one Mosquitto, with the whole district online at once.

Run: .venv/bin/python bench/broker_memory.py [--devices N] [--concurrency C]

The district has 2,747 devices. Each holds one MQTT connection the way `agent.uplink.mqtt`
does: client id picket-{device}, a last will (`offline`, retained, QoS 1) on its state
topic, QoS 1 subscriptions to its acknowledgement and command topics, and `online`
published retained after connecting, so the broker also keeps one retained message per
device. This bench opens that many aiomqtt clients from one process to a private Mosquitto
(simulators/broker.py) and reads the broker's resident memory (VmRSS, /proc/PID/status)
before the first connection and once all are up and settled; per device is the
difference over N. File descriptors: each client holds three here (paho's socket and
its wake-up pair) and the broker one per device, so the soft limit is raised to the hard
one before the broker starts (it inherits it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt

from contract.protocol import ack_topic, command_topic, state_topic
from simulators.broker import Mosquitto

DISTRICT = 2_747


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for process {pid}")


def raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < need:
        raise SystemExit(f"need about {need} file descriptors; the hard limit is {hard}")
    return hard


async def device(
    broker: Mosquitto, n: int, gate: asyncio.Semaphore, up: asyncio.Event, done: asyncio.Event
) -> None:
    dev = f"h{n + 1:04d}"
    state = state_topic(dev)
    async with contextlib.AsyncExitStack() as stack:
        async with gate:  # connect a few at a time; stay connected after
            client = await stack.enter_async_context(
                aiomqtt.Client(
                    broker.host,
                    broker.port,
                    identifier=f"picket-{dev}",
                    keepalive=60,
                    timeout=30,
                    will=aiomqtt.Will(state, b"offline", qos=1, retain=True),
                )
            )
        await client.subscribe([(ack_topic(dev), 1), (command_topic(dev), 1)])
        await client.publish(state, b"online", qos=1, retain=True)
        up.set()
        await done.wait()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=DISTRICT)
    ap.add_argument("--concurrency", type=int, default=64, help="connections opened at once")
    args = ap.parse_args()
    n = args.devices
    limit = raise_fd_limit(3 * n + 200)
    with (
        tempfile.TemporaryDirectory(prefix="picket-bench-broker-") as d,
        Mosquitto(Path(d) / "broker") as broker,
    ):
        pid = broker.pid
        assert pid is not None
        await asyncio.sleep(0.5)
        before = rss_kib(pid)
        gate = asyncio.Semaphore(args.concurrency)
        done = asyncio.Event()
        ups = [asyncio.Event() for _ in range(n)]
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(device(broker, i, gate, ups[i], done), name=f"device-{i}")
            while not all(e.is_set() for e in ups):
                await asyncio.sleep(0.1)
                if time.perf_counter() - t0 > 300:
                    raise SystemExit("not all devices connected within 5 minutes")
            took = time.perf_counter() - t0
            await asyncio.sleep(2.0)  # let the broker settle (retained store, queues)
            after = rss_kib(pid)
            done.set()
    per = (after - before) / n
    print(f"{n} devices connected in {took:.1f} s (fd limit {limit})")
    print(f"mosquitto RSS: {before / 1024:.1f} MiB idle, {after / 1024:.1f} MiB with all online")
    print(f"per connected device: {per:.1f} KiB (connection, will, 2 subscriptions, 1 retained)")
    print(f"the district ({DISTRICT} devices) on one broker: {DISTRICT * per / 1024:.1f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
