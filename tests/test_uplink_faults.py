"""The uplink against real faults: a real Mosquitto killed or down, agents killed, links cut
or gone half-open (simulators/proxy.py), the center killed, batches delivered twice.

Each test ends as an operator would check a shift: every record created on a device is at
the center exactly once (center.audit), nothing lost, nothing duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sqlite3
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from peers import DEADLINE_S, running_center, wait_for

from agent.store.outbox import Builder, Built, Outbox, Stored
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from agent.uplink.sync import SyncCore
from center.audit import audit
from contract.errors import LocalError
from contract.fix import TimeSource
from contract.protocol import MAX_BATCH, Batch, ack_topic, decode_ack, records_topic, state_topic
from contract.records import ChainPosition, RecordType, build
from contract.tls import BrokerTls
from provisioning.registry import Registry
from simulators.broker import Mosquitto
from simulators.proxy import LinkProxy

pytestmark = pytest.mark.integration

T0 = 1_772_323_200_000
QUICK = UplinkOptions(keepalive_s=5, backoff_max_s=1.0, publish_timeout_s=5.0)


def register(tmp_path: Path, devices: dict[str, Ed25519PrivateKey]) -> Path:
    path = tmp_path / "registry.db"
    reg = Registry(path)
    for dev, key in devices.items():
        reg.add(dev, key.public_key().public_bytes_raw(), 0)
    reg.close()
    return path


def record(key: Ed25519PrivateKey, device: str, rtype: RecordType, point: str) -> Builder:
    body: dict[int, object] = {16: point} if rtype is RecordType.CHECKIN else {16: 1}

    def make(pos: ChainPosition) -> Built:
        raw = build(
            key,
            device=device,
            chain=pos,
            rtype=rtype,
            time_ms=T0 + pos.seq * 1000,
            time_source=TimeSource.GNSS,
            body=body,
        )
        return Built(rtype, T0 + pos.seq * 1000, raw)

    return make


def backlog(box: Outbox, key: Ed25519PrivateKey, n: int, tag: str = "B") -> list[Stored]:
    """n check-ins in one transaction, as after a long time out of coverage."""
    return box.append_many(
        record(key, box.device, RecordType.CHECKIN, f"{tag}{i}") for i in range(n)
    )


def core(**kw: int) -> SyncCore:
    return SyncCore(batch_size=32, max_batch_size=256, **kw)


def audit_clean(tmp_path: Path, registry: Path, created: dict[str, int]) -> None:
    found = audit(tmp_path / "center.db", registry)
    assert found.lost(created) == 0, "records lost"
    assert found.duplicated == 0, "records duplicated"
    assert found.delivered == found.verified == sum(created.values())


@contextlib.asynccontextmanager
async def running(*uplinks: Uplink) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(u.run(), name=f"uplink-{u.device}") for u in uplinks]
    try:
        yield
    finally:
        for u in uplinks:
            u.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)


# --------------------------------------------------------------------------- the broker


@pytest.mark.parametrize("persistence", [False, True], ids=["persistence-off", "persistence-on"])
async def test_broker_killed_and_restarted_mid_drain(tmp_path: Path, persistence: bool) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    backlog(box, key, 3000)
    with Mosquitto(tmp_path / "broker", persistence=persistence) as broker:
        address = BrokerAddress(broker.host, broker.port)
        # what was in flight to a center that had not subscribed again yet is sent again
        up = Uplink(box, address, core=core(ack_timeout_ms=2000), options=QUICK)
        async with running_center(tmp_path, registry, broker), running(up):
            await wait_for(lambda: up.stats.records_acked >= 200, 20, "the drain to begin")
            assert box.depth() > 0, "drained before the broker could be killed"
            broker.kill()  # kill -9 while batches and acknowledgements are in flight
            await asyncio.sleep(0.5)
            await asyncio.to_thread(broker.start)
            await wait_for(lambda: box.depth() == 0, 30, "the outbox to drain")
        assert up.stats.connects >= 2
    if persistence:
        assert (tmp_path / "broker" / "mosquitto.db").exists()
    audit_clean(tmp_path, registry, {"h0001": 3000})
    box.close()


async def test_two_hundred_devices_buffer_through_a_broker_outage(
    tmp_path: Path, broker: Mosquitto
) -> None:
    keys = {f"d{i:03d}": Ed25519PrivateKey.generate() for i in range(200)}
    registry = register(tmp_path, keys)
    boxes = {d: Outbox(tmp_path / f"{d}.db", d) for d in keys}
    for d, box in boxes.items():
        backlog(box, keys[d], 5, "before")
    address = BrokerAddress(broker.host, broker.port)
    options = UplinkOptions(keepalive_s=10, backoff_max_s=2.0)
    ups = [
        Uplink(b, address, core=core(ack_timeout_ms=3000), options=options) for b in boxes.values()
    ]
    async with running_center(tmp_path, registry, broker), running(*ups):
        await wait_for(lambda: all(b.depth() == 0 for b in boxes.values()), 40, "first sync")
        broker.kill()
        for _ in range(4):  # several seconds down, the devices keep working
            for (d, box), up in zip(boxes.items(), ups, strict=True):
                up.on_stored(box.append(record(keys[d], d, RecordType.CHECKIN, "during")))
            await asyncio.sleep(1.0)
        assert all(b.depth() == 4 for b in boxes.values()), "records went out with no broker"
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: all(b.depth() == 0 for b in boxes.values()), 40, "the drain")
    assert all(u.stats.connects >= 2 for u in ups)
    audit_clean(tmp_path, registry, {d: b.last_seq for d, b in boxes.items()})
    for b in boxes.values():
        b.close()


# --------------------------------------------------------------------------- the agent


async def test_agent_killed_between_publish_and_acknowledgement(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The center stores a batch, its acknowledgement never arrives, the agent dies (kill -9:
    task gone, outbox connection dropped unclosed); the restarted agent resends, the center
    de-duplicates."""
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    path = tmp_path / "o.db"
    box = Outbox(path, "h0001")
    box.begin_boot()
    async with (
        running_center(tmp_path, registry, broker) as center,
        LinkProxy(broker.host, broker.port) as proxy,
    ):
        first = Uplink(box, BrokerAddress(proxy.host, proxy.port), core=core(), options=QUICK)
        task = asyncio.create_task(first.run(), name="uplink-first")
        await asyncio.wait_for(first.connected.wait(), 10)
        proxy.silence(up=False, down=True)  # publishes reach the center; nothing comes back
        for s in backlog(box, key, 100):
            first.on_stored(s)
        await wait_for(lambda: center.ingest.stats.stored >= 100, 10, "the center to store")
        assert box.depth() == 100 and first.stats.records_acked == 0
        task.cancel()  # kill -9
        with contextlib.suppress(asyncio.CancelledError):
            await task
        abandoned = box  # never closed: a killed process closes nothing
        box = Outbox(path, "h0001")
        assert box.begin_boot() == 2
        assert box.depth() == 100
        second = Uplink(box, BrokerAddress(broker.host, broker.port), core=core(), options=QUICK)
        async with running(second):
            await wait_for(lambda: box.depth() == 0, 15, "the restarted agent to drain")
        assert center.ingest.stats.duplicates >= 100
    audit_clean(tmp_path, registry, {"h0001": 100})
    abandoned.close()
    box.close()


# --------------------------------------------------------------------------- the link


async def test_a_half_open_link_is_noticed_by_the_uplinks_probe(
    tmp_path: Path, broker: Mosquitto
) -> None:
    keepalive = 2
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    async with (
        running_center(tmp_path, registry, broker),
        LinkProxy(broker.host, broker.port) as proxy,
    ):
        options = UplinkOptions(keepalive_s=keepalive, backoff_initial_s=0.05)
        up = Uplink(box, BrokerAddress(proxy.host, proxy.port), core=core(), options=options)
        async with running(up):
            await asyncio.wait_for(up.connected.wait(), 10)
            for n in (1, 2):  # idle since a moment ago, then right after an acknowledgement
                up.on_stored(backlog(box, key, 1, f"ok{n}")[0])
                await wait_for(lambda: box.depth() == 0, DEADLINE_S, "the acknowledgement")
                if n == 1:
                    await asyncio.sleep(keepalive * 0.6)
                losses = up.stats.link_losses
                assert proxy.silence() == 1
                up.on_stored(backlog(box, key, 1, f"lost{n}")[0])  # sent into the void
                await wait_for(lambda: not up.connected.is_set(), DEADLINE_S, "detection")
                assert up.stats.link_losses == losses + 1
                # noticed by the uplink's probe (within 1.375 keepalives by construction), not
                # by paho's keepalive (two) nor the batch's PUBACK timeout (ten seconds); how
                # long it took is bench/backlog.py's figure ("half-open link noticed after")
                assert "no PUBACK within 0.5 keepalive" in up.stats.last_error
                await asyncio.wait_for(up.connected.wait(), DEADLINE_S)  # a new one forwards
                await wait_for(lambda: box.depth() == 0, DEADLINE_S, "the resend")
        assert up.stats.connects == 3
    audit_clean(tmp_path, registry, {"h0001": 4})
    box.close()


async def test_cancelling_the_uplink_while_its_link_fails_ends_it(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """kill -9 of an agent, in process: the task must end even when the cancellation lands
    while the session is failing (a TaskGroup in 3.11 would drop it)."""
    box = Outbox(tmp_path / "o.db", "h0001")
    options = UplinkOptions(keepalive_s=5, backoff_initial_s=0.01)
    async with LinkProxy(broker.host, broker.port) as proxy:
        for i in range(20):
            up = Uplink(box, BrokerAddress(proxy.host, proxy.port), options=options)
            task = asyncio.create_task(up.run(), name=f"uplink-{i}")
            await asyncio.wait_for(up.connected.wait(), DEADLINE_S)
            proxy.cut()
            await asyncio.sleep(0.0005 * i)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
            if not done:
                up.stop()
                await task
            assert done, f"cancel {i} was swallowed"
    box.close()


async def test_last_will_and_retained_state(tmp_path: Path, broker: Mosquitto) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    states: list[bytes] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="watcher") as watcher:
        await watcher.subscribe(state_topic("h0001"), qos=1)

        async def watch() -> None:
            async for m in watcher.messages:
                assert isinstance(m.payload, bytes)
                states.append(m.payload)

        reader = asyncio.create_task(watch(), name="state-watcher")
        async with LinkProxy(broker.host, broker.port) as proxy:
            options = UplinkOptions(keepalive_s=5, backoff_initial_s=0.05)
            up = Uplink(box, BrokerAddress(proxy.host, proxy.port), options=options)
            async with running(up):
                await wait_for(lambda: states == [b"online"], 10, "online")
                proxy.cut()  # no DISCONNECT: the broker publishes the will
                await wait_for(lambda: states[1:2] == [b"offline"], 10, "the will")
                await wait_for(lambda: states[2:] == [b"online"], 10, "online again")
            assert states == [b"online", b"offline", b"online", b"offline"]  # clean stop
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    async with aiomqtt.Client(broker.host, broker.port, identifier="late") as late:
        await late.subscribe(state_topic("h0001"), qos=1)
        m = await asyncio.wait_for(anext(aiter(late.messages)), DEADLINE_S)
        assert (m.payload, m.retain) == (b"offline", True)
    box.close()


async def test_new_checkins_and_alerts_jump_a_draining_backlog(
    tmp_path: Path, broker: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    backlog(box, key, 4000)
    up = Uplink(box, BrokerAddress(broker.host, broker.port), core=core(), options=QUICK)
    async with running_center(tmp_path, registry, broker), running(up):
        await wait_for(lambda: up.stats.records_acked >= 100, DEADLINE_S, "the drain to begin")
        new = [
            box.append(record(key, "h0001", RecordType.CHECKIN, "new")),
            box.append(record(key, "h0001", RecordType.ALERT, "alert")),
        ]
        for s in new:
            up.on_stored(s)
        seqs = [s.seq for s in new]
        # what of the backlog was still to be sent (not in flight) when they were stored
        waiting = [s.seq for s in box.pending(10_000, skip=up.core.skip)]
        assert len(waiting) >= 1000, "drained too far before the new records came"
        await wait_for(lambda: box.depth() == 0, DEADLINE_S, "the drain")
    # The center stores records in the order they come (rowid). The new records go in the
    # next batch (with as much of the backlog as fills it), and all the rest after them,
    # however fast or slow the link. (How large batches grow on a fast link is
    # bench/backlog.py's figure.)
    con = sqlite3.connect(f"file:{tmp_path / 'center.db'}?mode=ro", uri=True)
    try:
        rowid = dict(con.execute("SELECT seq, rowid FROM records WHERE device = 'h0001'"))
    finally:
        con.close()
    newest = max(rowid[s] for s in seqs)
    ahead = [s for s in waiting if rowid[s] < newest]
    assert len(ahead) < MAX_BATCH, f"{len(ahead)} of the waiting backlog went before them"
    audit_clean(tmp_path, registry, {"h0001": 4002})
    box.close()


# --------------------------------------------------------------------------- the center


async def start_center_process(
    tmp_path: Path, registry: Path, broker: Mosquitto
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "picket",
        "center",
        "run",
        "--db",
        str(tmp_path / "center.db"),
        "--registry",
        str(registry),
        "--broker",
        f"{broker.host}:{broker.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.startswith(b"ready"), line
    return proc


async def test_center_killed_and_restarted_mid_drain(tmp_path: Path, broker: Mosquitto) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    backlog(box, key, 3000)
    up = Uplink(
        box, BrokerAddress(broker.host, broker.port), core=core(ack_timeout_ms=1500), options=QUICK
    )
    center = await start_center_process(tmp_path, registry, broker)
    try:
        async with running(up):
            await wait_for(lambda: up.stats.records_acked >= 200, 20, "the drain to begin")
            assert box.depth() > 0
            center.send_signal(signal.SIGKILL)
            await center.wait()
            await asyncio.sleep(0.5)
            center = await start_center_process(tmp_path, registry, broker)
            await wait_for(lambda: box.depth() == 0, 30, "the drain")
    finally:
        if center.returncode is None:
            center.terminate()
        await center.communicate()
    assert up.core.resent_batches >= 1
    audit_clean(tmp_path, registry, {"h0001": 3000})
    box.close()


async def test_duplicate_deliveries_are_stored_once(tmp_path: Path, broker: Mosquitto) -> None:
    key = Ed25519PrivateKey.generate()
    registry = register(tmp_path, {"h0001": key})
    box = Outbox(tmp_path / "o.db", "h0001")
    raws = tuple(s.raw for s in backlog(box, key, 20))
    async with running_center(tmp_path, registry, broker) as center:
        async with aiomqtt.Client(broker.host, broker.port, identifier="dup-h0001") as client:
            await client.subscribe(ack_topic("h0001"), qos=1)
            # the same batch twice, then the same records under another batch id
            for bid in (7, 7, 8):
                await client.publish(records_topic("h0001"), Batch(bid, raws).encode(), qos=1)
            acks = []
            for _ in range(3):
                m = await asyncio.wait_for(anext(aiter(client.messages)), 10)
                assert isinstance(m.payload, bytes)
                acks.append(decode_ack(m.payload))
        assert sorted(a.batch for a in acks) == [7, 7, 8]
        assert all(a.stored == tuple(range(1, 21)) for a in acks)  # each ack lists all
        assert center.ingest.stats.duplicates == 40
    audit_clean(tmp_path, registry, {"h0001": 20})
    box.close()


# --------------------------------------------------------------------------- TLS


def _certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a device certificate it signed, with the device's key."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    end = start + dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "picket test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    dev_key = ec.generate_private_key(ec.SECP256R1())
    dev = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h0001")]))
        .issuer_name(ca_name)
        .public_key(dev_key.public_key())
        .serial_number(2)
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / "device.pem", tmp_path / "device.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(dev.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        dev_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)  # a private key only its owner may read, or BrokerTls refuses it
    return paths


def test_tls_context_from_the_device_certificate(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    ctx = BrokerTls(ca, cert, key).context()
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.get_ca_certs()[0]["subject"] == ((("commonName", "picket test CA"),),)
    box = Outbox(tmp_path / "o.db", "h0001")
    Uplink(
        box, BrokerAddress("127.0.0.1", 8883), options=UplinkOptions(tls=BrokerTls(ca, cert, key))
    )
    box.close()
    with pytest.raises(LocalError, match="without a certificate"):
        BrokerTls(ca, None, key).context()
    with pytest.raises(LocalError, match="cannot load"):
        BrokerTls(ca, tmp_path / "missing.pem").context()
    not_a_key = tmp_path / "not-a-key.pem"  # a certificate where the key should be, 0600
    not_a_key.write_bytes(ca.read_bytes())
    not_a_key.chmod(0o600)
    with pytest.raises(LocalError, match="cannot load"):
        BrokerTls(ca, cert, not_a_key).context()
    with pytest.raises(LocalError, match="too open"):
        BrokerTls(ca, cert, ca).context()  # readable by all: refused before it is read
