"""The serial bridge to the radio MCU, end to end: no mocks.

The frame vectors of docs/bridge.md; then the host driver (firmware_bridge/host.py)
against the simulated MCU (simulators/mcusim.py): the real firmware logic and boot
decision on a thread, behind a real pseudo-terminal that the host opens by a symlink, as
it opens /dev/serial/by-id/…. Bit errors at 1e-3 … 1e-6 on both directions, a reset in the
middle of a frame, an unplugged and replugged port, a stalled MCU, a firmware from another
protocol, firmware updates that confirm and one that rolls back, and the agent's side:
an SOS press that becomes a signed ALERT record at the head of a real outbox. Every wait
is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import random
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import DEADLINE_S, no_fds_left

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Plan
from agent.config import ConfigError
from agent.gnss.timekeeper import Stamp
from agent.radio.bridgelink import BridgeLink
from agent.radio.settings import BridgeConfig, parse_bridge_section
from agent.store.outbox import Built, Outbox, Stored
from contract.cose import sign1
from contract.fix import Fix, TimeSource
from contract.records import (
    AlertKey,
    AlertKind,
    ChainPosition,
    MissedKey,
    RecordType,
    build,
    open_record,
)
from contract.recordschema import validate_body
from firmware_bridge import frame
from firmware_bridge import messages as m
from firmware_bridge.firmware.logic import LED_AMBER, LED_GREEN, LED_RED
from firmware_bridge.fwbundle import BOARD, BundleError, make_bundle, open_bundle
from firmware_bridge.host import (
    BootEvent,
    Bridge,
    BridgeOptions,
    BridgeTimeout,
    DutyCycleExceeded,
    Event,
    LinkDown,
    McuReset,
    RadioConfig,
    RadioRx,
    SendUncertain,
    SosEvent,
    StatusError,
    UpdateFailed,
    VersionMismatch,
)
from picket import bridgecmd
from provisioning.center import center_public_path, create_center_key, load_center_key
from simulators.mcuboard import sim_image
from simulators.mcusim import McuSim
from simulators.serialline import SerialLine

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bridge.md"
KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("5a" * 32))
CENTER = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("c3" * 32))
T0 = 1_772_353_800_000  # 2026-03-01T08:30:00Z
FAST = BridgeOptions(timeout_s=0.1, retries=3, heartbeat_s=0.5, ready_wait_s=5.0, backoff_max_s=0.2)
RADIO = RadioConfig(freq_hz=470_500_000, sf=10, bw_hz=125_000, cr=5, power_dbm=17)


@pytest.fixture(autouse=True)
def _no_leftover_fds() -> Iterator[None]:
    """Fail a test that leaves file descriptors open (ptys, pipes, ports)."""
    with no_fds_left("eventpoll"):
        yield


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[..., McuSim]]:
    made: list[McuSim] = []

    def make(**kwargs: object) -> McuSim:
        sim = McuSim(tmp_path / f"mcu{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(sim)
        sim.start()
        return sim

    try:
        yield make
    finally:
        for sim in made:
            sim.stop()


@contextlib.asynccontextmanager
async def bridged(
    sim: McuSim, options: BridgeOptions = FAST, events: list[Event] | None = None
) -> AsyncIterator[Bridge]:
    sink = events.append if events is not None else None
    async with Bridge(str(sim.link), on_event=sink, options=options) as bridge:
        yield bridge


async def until(cond: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - the simulator's state is plain values
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- frame vectors

# (what, type, id, payload hex, wire hex): docs/bridge.md lists the same.
VECTORS = [
    ("HELLO, id 1, host protocol 1", 0x01, 1, "01", "00 08 01 01 01 f2 b2 9f 90 00"),
    ("PING, id 2, no echo", 0x02, 2, "", "00 07 02 02 51 11 e1 9d 00"),
    ("PING, id 3, echo 00 11 00", 0x02, 3, "001100", "00 03 02 03 02 11 05 83 28 8e fd 00"),
    (
        "HELLO answer, id 1: OK, protocol 1, 1.0.0, boot 1, power-on, caps 0x0f",
        0x81,
        1,
        "00010100000100000f",
        "00 03 81 01 03 01 01 01 02 01 01 06 0f 53 41 f4 70 00",
    ),
    (
        "BOOT: protocol 1, 1.2.0, boot 258, rollback",
        0x40,
        0,
        "01010200020103",
        "00 02 40 04 01 01 02 08 02 01 03 4d 28 e6 ac 00",
    ),
    (
        "SOS: 2 presses, held 1500 ms",
        0x42,
        0,
        "02dc050000",
        "00 02 42 04 02 dc 05 01 05 84 2c 71 5e 00",
    ),
    ("RADIO_SEND answer, id 255: duty cycle", 0x84, 255, "04", "00 08 84 ff 04 25 53 34 8d 00"),
    ("FEEDBACK, id 9, SOS acknowledged", 0x05, 9, "04", "00 08 05 09 04 a9 64 25 2f 00"),
]


@pytest.mark.parametrize(
    ("what", "ftype", "fid", "payload", "wire"), VECTORS, ids=[v[0] for v in VECTORS]
)
def test_frame_vectors(what: str, ftype: int, fid: int, payload: str, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert frame.encode(ftype, fid, bytes.fromhex(payload)) == raw
    decoder = frame.Decoder()
    assert decoder.feed(raw) == [(ftype, fid, bytes.fromhex(payload))]
    # the CRC is CRC-32/ISO-HDLC over type, id and payload, little-endian: zlib's
    body = frame.cobs_decode(raw[1:-1])
    assert int.from_bytes(body[-4:], "little") == frame.crc32(body[:-4])
    assert 0 not in raw[1:-1]


def test_docs_list_the_same_vectors() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for what, ftype, fid, payload, wire in VECTORS:
        assert f"| {what} | 0x{ftype:02x} | {fid} | {payload or '—'} | `{wire}` |" in text, what


def test_a_long_frame_crosses_a_cobs_block() -> None:
    """254 non-zero bytes in a row need a 0xFF code: the docs' long vector."""
    payload = bytes(range(1, 256)) + bytes(range(1, 46))  # 300 bytes, no zero
    wire = frame.encode(m.PING, 4, payload)
    assert len(wire) == 310
    assert wire[:2] == b"\x00\xff"
    assert hashlib.sha256(wire).hexdigest()[:16] in DOCS.read_text(encoding="utf-8")
    assert frame.Decoder().feed(wire) == [(m.PING, 4, payload)]


@pytest.mark.parametrize("ber", [1e-2, 1e-3])
def test_every_corrupted_frame_is_dropped_and_costs_only_itself(ber: float) -> None:
    """Through the decoder alone: exactly the frames the line did not touch come out."""
    rng = random.Random(5)
    frames = [
        (rng.randrange(256), rng.randrange(256), rng.randbytes(rng.randrange(0, 64)))
        for _ in range(3000)
    ]
    line = SerialLine(ber, random.Random(6))
    decoder = frame.Decoder()
    got: list[tuple[int, int, bytes]] = []
    for f in frames:
        got.extend(decoder.feed(line.carry(frame.encode(*f))))
    assert line.frames == len(frames)
    assert line.corrupted > 50
    assert len(got) == len(frames) - line.corrupted  # resynchronised within one frame
    it = iter(frames)
    assert all(g in it for g in got)  # in order, each one an original: nothing corrupt
    assert decoder.bad_frames >= line.corrupted


# --------------------------------------------------------------------------- bit errors


def _soak_args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "sim": True,
        "port": None,
        "ber": 0.0,
        "frames": 1000,
        "seed": 3,
        "timeout": None,
        "json": True,
    }
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("ber", [1e-3, 1e-4, 1e-5, 1e-6])
async def test_bit_errors_are_never_delivered(ber: float) -> None:
    full = await bridgecmd.soak_report(_soak_args(ber=ber, frames=1000))
    report = {k: v for k, v in full.items() if isinstance(v, int)}  # the counters
    assert report["corrupted_accepted"] == 0
    assert report["requests_failed"] == 0
    assert report["frames_lost"] == report["frames_corrupted"]  # each error cost one frame
    assert report["retries"] >= report["frames_corrupted"]  # each one cost an attempt
    if ber >= 1e-3:
        assert report["frames_corrupted_to_mcu"] > 50
        assert report["frames_corrupted_to_host"] > 50


def test_soak_command_reports_no_corrupted_frame_accepted() -> None:
    parser = argparse.ArgumentParser(prog="picket")
    bridgecmd.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bridge", "soak", "--sim", "--ber", "1e-3", "--frames", "2000", "--json"]
    )
    out = io.StringIO()
    assert bridgecmd.soak(args, out) == 0
    report = json.loads(out.getvalue().splitlines()[-1])
    for key in ("frames_sent", "frames_corrupted", "corrupted_accepted", "resyncs", "frames_lost",
                "retries", "wall_seconds"):  # fmt: skip
        assert key in report
    assert report["corrupted_accepted"] == 0
    assert report["frames_corrupted"] > 300
    assert report["frames_lost"] == report["frames_corrupted"]
    assert report["resyncs"] == 0


def test_ping_command_on_the_simulator() -> None:
    parser = argparse.ArgumentParser(prog="picket")
    bridgecmd.add_parsers(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    args = parser.parse_args(["bridge", "ping", "--sim", "--count", "20", "--json"])
    assert bridgecmd.ping(args, out) == 0
    report = json.loads(out.getvalue())
    assert report["firmware"] == "1.0.0"
    assert report["answered"] == 20
    # the figures themselves are what `picket bridge ping` is for; a test only checks their shape
    assert 0 < report["rtt_ms_min"] <= report["rtt_ms_median"] <= report["rtt_ms_max"]


def test_soak_refuses_ber_on_a_real_port(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="picket")
    bridgecmd.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bridge", "soak", "/dev/ttyACM9", "--ber", "1e-3"])
    assert bridgecmd.soak(args) == 2
    assert "needs --sim" in capsys.readouterr().err


# --------------------------------------------------------------------------- faults


async def test_requests_and_events(sim_factory: Callable[..., McuSim]) -> None:
    sim = sim_factory()
    events: list[Event] = []
    async with bridged(sim, events=events) as bridge:
        assert bridge.info is not None and bridge.info.version == (1, 0, 0)
        assert await bridge.echo(b"abc") == b"abc"
        await bridge.configure_radio(RADIO)
        assert sim.radio_configs[-1] == (470_500_000, 10, 125_000, 5, 17, 8, 0x12)
        toa = await bridge.send_packet(b"\xd2" + bytes(120))
        assert toa > 300  # SF10, 121 bytes
        assert sim.sent_packets[-1][1] == b"\xd2" + bytes(120)
        sim.set_battery(3700, charging=True)
        assert tuple(await bridge.battery()) == (3700, 30, True)
        status = await bridge.status()
        assert status.version == (1, 0, 0) and status.radio_busy
        sim.deliver(b"hello", rssi_dbm=-101, snr_db=-2.25)
        sim.press_sos(held_ms=200)
        await until(lambda: any(isinstance(e, SosEvent) for e in events))
    rx = [e for e in events if isinstance(e, RadioRx)]
    assert [(r.packet, r.rssi_dbm, r.snr_db) for r in rx] == [(b"hello", -101, -2.25)]
    sos = next(e for e in events if isinstance(e, SosEvent))
    # how long it was held is counted on the simulated board's real-time clock, which a loaded
    # machine stretches; tests/test_firmware.py holds that count to the millisecond
    assert sos.presses == 1 and sos.held_ms > 0


async def test_radio_refusals_name_the_status(sim_factory: Callable[..., McuSim]) -> None:
    sim = sim_factory(duty_cycle=0.0004)  # 1.44 s of air an hour: two packets of 554 ms
    async with bridged(sim) as bridge:
        await bridge.configure_radio(RadioConfig(sf=9))
        assert await bridge.send_packet(bytes(100)) == 554
        with pytest.raises(StatusError, match="RADIO_SEND refused by the MCU: radio busy"):
            await bridge.send_packet(bytes(10))  # the first one is still on the air
        await until(lambda: not sim.mcu or not sim.mcu.hal.radio.busy(sim.now_ms))
        assert await bridge.send_packet(bytes(100)) == 554
        await until(lambda: not sim.mcu or not sim.mcu.hal.radio.busy(sim.now_ms))
        with pytest.raises(DutyCycleExceeded, match="duty cycle exhausted") as caught:
            await bridge.send_packet(bytes(100))
        assert caught.value.status == m.DUTY_CYCLE
        assert len(sim.sent_packets) == 2


async def test_a_garbled_answer_to_radio_send_is_not_sent_again(
    sim_factory: Callable[..., McuSim],
) -> None:
    sim = sim_factory(seed=11)
    async with bridged(sim) as bridge:
        sim.set_ber(0.0, to_host=0.05)  # nearly every answer arrives broken
        with pytest.raises(SendUncertain, match="may be on the air"):
            await bridge.send_packet(b"record")
        assert len(sim.sent_packets) == 1  # one transmission, no retry
        sim.set_ber(0.0)
        assert await bridge.echo(b"ok") == b"ok"  # idempotent requests retry through it all


async def test_reset_mid_frame_fails_the_request_then_resynchronises(
    sim_factory: Callable[..., McuSim],
) -> None:
    sim = sim_factory()
    events: list[Event] = []
    async with bridged(sim, events=events) as bridge:
        await bridge.configure_radio(RADIO)
        configs = len(sim.radio_configs)
        sim.reset(mid_frame=True)  # power goes halfway through the answer to the next request
        with pytest.raises(McuReset, match="restarted"):
            await bridge.ping(b"12345678")
        await bridge.wait_ready()
        assert await bridge.echo(b"after") == b"after"
        assert sim.to_host.cut == 1
        assert bridge.stats.bad_frames == 1  # the cut frame; the BOOT behind it came whole
        assert bridge.stats.resyncs == 1
        assert bridge.info is not None and bridge.info.boot_count == 2
        # the radio settings were sent again to the restarted MCU
        await until(lambda: len(sim.radio_configs) >= configs + 2)
        assert sim.radio_configs[-1] == (470_500_000, 10, 125_000, 5, 17, 8, 0x12)
    boots = [e for e in events if isinstance(e, BootEvent)]
    assert [b.info.boot_count for b in boots] == [2]


async def test_unplug_and_replug(sim_factory: Callable[..., McuSim]) -> None:
    sim = sim_factory()
    links: list[bool] = []
    async with Bridge(str(sim.link), options=FAST, on_link=lambda s: links.append(s.up)) as bridge:
        assert await bridge.echo(b"up") == b"up"
        sim.unplug()
        await until(lambda: not bridge.link.up)
        assert "hung up" in bridge.link.detail or "Input/output error" in bridge.link.detail
        with pytest.raises(LinkDown):
            await bridge.wait_ready(timeout_s=0.3)
        # attempts against the missing link
        await until(lambda: "No such file or directory" in bridge.link.detail)
        sim.replug()
        await bridge.wait_ready()
        assert await bridge.echo(b"back") == b"back"
        assert bridge.stats.reconnects == 1
        assert bridge.stats.resyncs == 0  # the MCU kept running: nothing to resynchronise
        assert bridge.stats.link_downs == 1
    assert links[:3] == [True, False, False] and links[-1] is True


async def test_stall_times_out_then_recovers(sim_factory: Callable[..., McuSim]) -> None:
    sim = sim_factory()
    opts = BridgeOptions(timeout_s=0.1, retries=2, heartbeat_s=0.3, ready_wait_s=0.2)
    async with bridged(sim, opts) as bridge:
        sim.stall(1.5)
        with pytest.raises(BridgeTimeout, match=r"PING #\d+: no answer .* after 3 attempts"):
            await bridge.ping(b"x")
        assert bridge.stats.timeouts == 3 and bridge.stats.retries == 2
        await until(lambda: not bridge.link.up)
        assert bridge.stats.link_downs == 1
        await bridge.wait_ready(timeout_s=5)
        assert await bridge.echo(b"y") == b"y"
        assert bridge.stats.resyncs == 0
        # what waited in the driver during the stall was answered late, and dropped
        await until(lambda: bridge.stats.stale_responses >= 1)


async def test_another_protocol_is_refused(sim_factory: Callable[..., McuSim]) -> None:
    sim = sim_factory(protocol=2, version=(2, 0, 0))
    bridge = Bridge(str(sim.link), options=FAST)
    with pytest.raises(VersionMismatch) as caught:
        await bridge.__aenter__()
    text = str(caught.value)
    assert "protocol 2" in text and "this host speaks 1" in text and "2.0.0" in text
    assert caught.value.mcu_protocol == 2
    assert not bridge.link.up


# --------------------------------------------------------------------------- firmware updates


def test_bundles_refuse_tampering_other_fleets_and_boards() -> None:
    image = sim_image((1, 1, 0), size=2000)
    raw = make_bundle(image, (1, 1, 0), CENTER)
    assert open_bundle(raw, CENTER.public_key()) == ((1, 1, 0), image)
    at = raw.index(image[100:120])
    tampered = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]
    with pytest.raises(BundleError, match="not signed by this fleet"):
        open_bundle(tampered, CENTER.public_key())
    with pytest.raises(BundleError, match="not signed by this fleet"):
        open_bundle(make_bundle(image, (1, 1, 0), KEY), CENTER.public_key())
    other = make_bundle(image, (1, 1, 0), CENTER, board="esp32-sx1276")
    with pytest.raises(BundleError, match="for board 'esp32-sx1276'; this device is 'rp2-sx1262'"):
        open_bundle(other, CENTER.public_key())
    with pytest.raises(BundleError, match="not a firmware bundle"):
        open_bundle(b"\x00" * 10, CENTER.public_key())


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"kind": 2**20000}, "kind an integer of about 6021 digits"),
        ({"v": 2**20000}, "format an integer of about 6021 digits"),
        ({"board": 2**20000}, "for board an integer of about 6021 digits"),
        ({"version": [2**20000, 0, 0]}, "version a list that cannot be shown"),
        ({"version": 2**20000}, "version an integer of about 6021 digits"),
        ({2**20000: 1}, "unknown field.s. an integer of about 6021 digits"),
        ({f"x{i}": 1 for i in range(9)}, "unknown field.s. x0, x1, x2, x3, x4 and 4 more"),
    ],
    ids=["kind", "format", "board", "version-item", "version", "field", "many-fields"],
)
def test_bundle_values_too_long_to_print_are_named_briefly(
    changes: dict[object, object], word: str
) -> None:
    # Fuzz reproducers: str()/repr() of a 6,021-digit integer raised ValueError out of
    # open_bundle instead of its BundleError.
    image = sim_image((1, 1, 0), size=200)
    doc: dict[object, object] = {
        "kind": "picket-firmware", "v": 1, "version": [1, 1, 0], "board": BOARD,
        "image": image, "sha256": hashlib.sha256(image).digest(),
    }  # fmt: skip
    doc.update(changes)
    with pytest.raises(BundleError, match=word):
        open_bundle(sign1(cbor2.dumps(doc), CENTER), CENTER.public_key())


async def test_update_that_confirms(sim_factory: Callable[..., McuSim]) -> None:
    sim = sim_factory(confirm_after_ms=300)
    version, image = open_bundle(
        make_bundle(sim_image((1, 1, 0)), (1, 1, 0), CENTER), CENTER.public_key()
    )
    progress: list[int] = []
    opts = BridgeOptions(timeout_s=0.3, heartbeat_s=0.5, confirm_s=1.5)
    async with bridged(sim, opts) as bridge:
        await bridge.configure_radio(RADIO)
        result = await bridge.update_firmware(
            image, version, progress=lambda n, _t: progress.append(n)
        )
        assert result.previous == (1, 0, 0) and result.version == (1, 1, 0)
        assert result.chunks == -(-len(image) // 256)
        assert progress[-1] == len(image)
        assert bridge.info is not None and bridge.info.version == (1, 1, 0)
        assert bridge.stats.resyncs == 1
        assert sim.radio_configs[-1][1] == 10  # settings sent again to the new image
    assert sim.version == (1, 1, 0)
    assert sim.boot_state.confirmed and not sim.boot_state.tried
    sim.reset()  # the update survives a restart
    await until(lambda: sim.boot_count == result.boot_count + 1)
    assert sim.version == (1, 1, 0)


async def test_update_that_never_confirms_rolls_back(sim_factory: Callable[..., McuSim]) -> None:
    sim = sim_factory(confirm_after_ms=300, watchdog_ms=400)
    image = sim_image((1, 2, 0), confirms=False)
    opts = BridgeOptions(timeout_s=0.2, heartbeat_s=0.3, confirm_s=3.0)
    async with bridged(sim, opts) as bridge:
        with pytest.raises(UpdateFailed, match=r"the MCU rolled back to 1\.0\.0") as caught:
            await bridge.update_firmware(image, (1, 2, 0))
        assert caught.value.rolled_back_to == (1, 0, 0)
        await bridge.wait_ready()
        assert bridge.info is not None and bridge.info.version == (1, 0, 0)
        assert bridge.info.reset_cause == m.RESET_ROLLBACK
        assert await bridge.echo(b"rolled back") == b"rolled back"
    assert sim.version == (1, 0, 0) and sim.stats.watchdog_resets == 1


# --------------------------------------------------------------------------- the agent


def _missed(agent: DeviceAgent, seq_hint: int) -> Stored:
    body: dict[int, object] = {
        MissedKey.POINT: f"P{seq_hint:03d}",
        MissedKey.PLAN_VERSION: 1,
        MissedKey.LINE: "L1",
    }

    def make(pos: ChainPosition) -> Built:
        raw = build(
            agent.key, device=agent.device, chain=pos, rtype=RecordType.MISSED,
            time_ms=T0 + seq_hint, time_source=TimeSource.GNSS, body=body,
        )  # fmt: skip
        return Built(RecordType.MISSED, T0 + seq_hint, raw)

    return agent.outbox.append(make)


@contextlib.asynccontextmanager
async def linked(agent: DeviceAgent, sim: McuSim, **kw: object) -> AsyncIterator[BridgeLink]:
    config = BridgeConfig(port=str(sim.link), battery_poll_s=0.2, **kw)  # type: ignore[arg-type]
    link = BridgeLink(config, agent, clock=lambda: Stamp(T0 + 5000, TimeSource.GNSS), options=FAST)
    task = asyncio.create_task(link.run(), name="bridge-link")
    try:
        await link.bridge.wait_ready()
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_sos_press_becomes_an_alert_at_the_head_of_the_outbox(
    tmp_path: Path, sim_factory: Callable[..., McuSim]
) -> None:
    sim = sim_factory(battery_mv=3750)  # 42 %
    outbox = Outbox(tmp_path / "outbox.db", "h0001")
    uplinked: list[Stored] = []
    agent = DeviceAgent("h0001", KEY, Plan(0, (), ()), outbox, on_stored=uplinked.append)
    agent.last_fix = Fix(time_ms=T0, lat=29.265, lon=106.255, accuracy_m=3.5)
    try:
        for i in range(3):
            _missed(agent, i)
        async with linked(agent, sim) as link:
            await until(lambda: link.battery is not None)
            sim.press_sos(held_ms=200)
            await until(lambda: link.stats.alerts == 1)
            await until(lambda: any(led == LED_RED for _t, _b, led in sim.indications))
            head = outbox.pending(10)
            assert [s.type for s in head] == [RecordType.ALERT] + [RecordType.MISSED] * 3
            record = open_record(head[0].raw, KEY.public_key())  # signed by the device key
            validate_body(RecordType.ALERT, record.body)
            assert record.header.device == "h0001" and record.header.time_ms == T0 + 5000
            assert record.body == {
                AlertKey.KIND: int(AlertKind.SOS),
                AlertKey.LAT_E7: 292_650_000,
                AlertKey.LON_E7: 1_062_550_000,
                AlertKey.ACCURACY_DM: 35,
                AlertKey.BATTERY_PCT: 42,
            }
            assert [s.type for s in uplinked] == [RecordType.ALERT]  # the uplink was woken
            assert agent.created[RecordType.ALERT] == 1
            # The MCU shows the pattern before its reply reaches the host: wait for the reply.
            await until(lambda: link.stats.feedback_sent >= 1)
    finally:
        outbox.close()


async def test_records_and_battery_become_feedback(
    tmp_path: Path, sim_factory: Callable[..., McuSim]
) -> None:
    sim = sim_factory(battery_mv=4000)
    outbox = Outbox(tmp_path / "outbox.db", "h0001")
    agent = DeviceAgent("h0001", KEY, Plan(0, (), ()), outbox)
    try:
        async with linked(agent, sim, low_battery_pct=20) as link:
            agent.on_stored(Stored(1, RecordType.CHECKIN, b""))  # as DeviceAgent calls it
            await until(lambda: any(led == LED_GREEN for _t, _b, led in sim.indications))
            agent.on_stored(_missed(agent, 2))  # a missed point: buzzer and red
            await until(lambda: any(b and led == LED_RED for _t, b, led in sim.indications))
            sim.set_battery(3450)  # 3 %
            await until(lambda: any(led == LED_AMBER for _t, _b, led in sim.indications))
            assert link.stats.low_battery_warnings == 1
            for _ in range(3):  # more polls at the same level (each reading is judged at once)
                polled = link.battery_at
                await until(lambda p=polled: link.battery_at != p)
            assert link.stats.low_battery_warnings == 1  # no second warning
            sim.set_battery(4000)  # charged: the warning re-arms, and the next low level warns
            await until(lambda: link.battery is not None and link.battery.percent > 50)
            sim.set_battery(3450)
            await until(lambda: link.stats.low_battery_warnings == 2)
    finally:
        outbox.close()


def test_bridge_section_of_the_config(tmp_path: Path) -> None:
    where = str(tmp_path / "config.toml")
    assert parse_bridge_section(None, tmp_path, where) is None
    cfg = parse_bridge_section({"port": "/dev/ttyACM0"}, tmp_path, where)
    assert cfg == BridgeConfig("/dev/ttyACM0")
    cfg = parse_bridge_section(
        {"port": "tty/mcu", "baud": 230400, "radio": {"sf": 11, "power_dbm": 20}}, tmp_path, where
    )
    assert cfg is not None and cfg.port == str(tmp_path / "tty/mcu") and cfg.baud == 230400
    assert cfg.radio == RadioConfig(sf=11, power_dbm=20)
    for table, problem in [
        ({"port": "/dev/ttyACM0", "speed": 9600}, "unknown key(s) 'speed'"),
        ({}, "'port' must be a device path"),
        ({"port": "/dev/ttyACM0", "baud": 12345}, "'baud' 12345 is not one of"),
        ({"port": "tcp://host:1"}, "expected a device path"),
        ({"port": "/dev/ttyACM0", "radio": {"sf": "9"}}, "'sf' must be int"),
        ({"port": "/dev/ttyACM0", "low_battery_pct": 120}, "'low_battery_pct' must be 0-100"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(problem)):
            parse_bridge_section(table, tmp_path, where)


# --------------------------------------------------------------------------- bridge bundle|update


def _bridge_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="picket")
    bridgecmd.add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bridge", *argv])


def _signed_bundle(
    tmp_path: Path, fleet: str, version: str, *, confirms: bool = True, board: str | None = None
) -> Path:
    """`picket bridge bundle` over a simulator image, signed by `fleet`'s center key."""
    create_center_key(tmp_path / fleet)
    numbers = tuple(int(v) for v in version.split("."))
    image = tmp_path / f"{fleet}-{version}.img"
    image.write_bytes(sim_image((numbers[0], numbers[1], numbers[2]), confirms=confirms))
    out = tmp_path / f"{fleet}-{version}.bundle"
    extra = ["--board", board] if board else []
    argv = ["bundle", "--fleet", str(tmp_path / fleet), "--image", str(image), "--version",
            version, "--out", str(out), *extra]  # fmt: skip
    text = io.StringIO()
    assert bridgecmd.bundle(_bridge_cli(*argv), text) == 0
    assert f"signed firmware {version} for {board or 'rp2-sx1262'}" in text.getvalue()
    return out


def test_bundle_command_signs_with_the_fleet_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bridgecmd.BOARD == BOARD
    raw = _signed_bundle(tmp_path, "fleet", "1.1.0").read_bytes()
    image = (tmp_path / "fleet-1.1.0.img").read_bytes()
    assert open_bundle(raw, load_center_key(tmp_path / "fleet").public_key()) == (
        (1, 1, 0),
        image,
    )
    # refused: no center key, an image the MCU's boot stage could not unpack, a bad version
    args = ["--image", str(tmp_path / "fleet-1.1.0.img"), "--version", "1.2.0", "--out",
            str(tmp_path / "x.bundle")]  # fmt: skip
    assert bridgecmd.bundle(_bridge_cli("bundle", "--fleet", str(tmp_path / "none"), *args)) == 2
    assert "no center key at" in capsys.readouterr().err
    (tmp_path / "raw.bin").write_bytes(b"\x7fELF" + bytes(100))
    args[1] = str(tmp_path / "raw.bin")
    assert bridgecmd.bundle(_bridge_cli("bundle", "--fleet", str(tmp_path / "fleet"), *args)) == 2
    assert "not a firmware image in the MCU's format" in capsys.readouterr().err
    assert not (tmp_path / "x.bundle").exists()
    with pytest.raises(SystemExit):
        _bridge_cli("bundle", "--fleet", str(tmp_path / "fleet"), *args[:3], "1.2", *args[4:])
    assert "must be X.Y.Z" in capsys.readouterr().err


def test_update_command_installs_a_bundle_on_the_simulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _signed_bundle(tmp_path, "fleet", "1.1.0")
    center = str(center_public_path(tmp_path / "fleet"))
    out = io.StringIO()
    args = _bridge_cli("update", "--sim", "--bundle", str(bundle), "--center-key", center, "--json")
    assert bridgecmd.update(args, out) == 0
    report = json.loads(out.getvalue())
    assert report["outcome"] == "updated"
    assert (report["previous"], report["version"]) == ("1.0.0", "1.1.0")
    assert report["running"] == "1.1.0"  # the MCU's STATUS after the update
    assert report["sim"] == {
        "version": "1.1.0",
        "boot_count": 2,
        "confirmed": True,  # the new image confirmed itself while the host waited
        "watchdog_resets": 0,
    }
    assert report["chunks"] == -(-report["size"] // 256)
    err = capsys.readouterr().err
    assert "signed by the fleet's center key; MCU on sim runs 1.0.0" in err
    assert f"sending firmware 1.1.0: {report['size']}/{report['size']} bytes (100 %)" in err
    assert "switching to firmware 1.1.0" in err


@pytest.mark.parametrize("flaw", ["other-fleet", "tampered", "other-board", "not-a-bundle"])
def test_update_command_refuses_a_bad_bundle_before_sending_anything(
    flaw: str,
    tmp_path: Path,
    sim_factory: Callable[..., McuSim],
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_center_key(tmp_path / "fleet")
    if flaw == "other-fleet":
        bundle = _signed_bundle(tmp_path, "elsewhere", "1.1.0")
        problem = "not signed by this fleet's center key"
    elif flaw == "tampered":
        bundle = _signed_bundle(tmp_path, "fleet", "1.1.0")
        raw = bytearray(bundle.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # one bit of the image
        bundle.write_bytes(bytes(raw))
        problem = "not signed by this fleet's center key"
    elif flaw == "other-board":
        bundle = _signed_bundle(tmp_path, "fleet", "1.1.0", board="esp32-sx1276")
        problem = "is for board 'esp32-sx1276'; this device is 'rp2-sx1262'"
    else:
        bundle = tmp_path / "firmware.uf2"
        bundle.write_bytes(b"UF2\n" + bytes(600))
        problem = "not a firmware bundle"
    sim = sim_factory()  # a real port: the command must not even open it
    center = str(center_public_path(tmp_path / "fleet"))
    args = _bridge_cli(
        "update", str(sim.link), "--bundle", str(bundle), "--center-key", center, "--json"
    )
    out = io.StringIO()
    assert bridgecmd.update(args, out) == 2
    err = capsys.readouterr().err
    assert f"picket: error: {bundle} refused, nothing sent: " in err
    assert problem in err
    assert out.getvalue() == ""
    assert sim.to_mcu.bytes == 0  # not one byte reached the MCU
    assert sim.version == (1, 0, 0) and sim.boot_count == 1


def test_update_command_reports_a_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _signed_bundle(tmp_path, "fleet", "1.2.0")
    center = str(center_public_path(tmp_path / "fleet"))
    out = io.StringIO()
    args = _bridge_cli(
        "update", "--sim", "--sim-no-confirm", "--bundle", str(bundle), "--center-key", center
    )
    assert bridgecmd.update(args, out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "update to 1.2.0 failed: the MCU rolled back to 1.0.0: firmware 1.2.0 did not confirm "
        "itself; MCU firmware 1.0.0 running"
    )
    assert lines[1] == "simulator: firmware 1.0.0 (confirmed), boot 3, 1 watchdog reset(s)"
    assert "switching to firmware 1.2.0" in capsys.readouterr().err
    # --sim-no-confirm describes the simulator: a real port refuses it
    args = _bridge_cli("update", "/dev/ttyACM9", "--sim-no-confirm", "--bundle", str(bundle),
                       "--center-key", center)  # fmt: skip
    assert bridgecmd.update(args) == 2
    assert "needs --sim" in capsys.readouterr().err
