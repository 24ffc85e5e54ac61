"""The broker against hostile clients, for real: Mosquitto with the fleet's configuration.

Three doors issue 15 found open: no size limit on what a client publishes; a device's
certificate connecting under another device's client id, which pushes that device off the
broker; and a world-readable TLS key that the center loaded while every other private key
was refused. Each test asserts what an operator would check.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from agent.config import AgentConfig, load_config
from agent.store.outbox import Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from center.service import CenterService
from contract.commands import MAX_CERT, MAX_LINES, RotateKeys, TaskBundle, command_payload
from contract.cose import sign1
from contract.errors import LocalError
from contract.fix import TimeSource
from contract.protocol import MAX_BATCH, Batch, records_topic
from contract.records import ChainPosition, Outcome, RecordType, build, receipt_body
from contract.tls import BrokerTls
from provisioning import ca
from provisioning.brokerconf import MAX_PACKET_SIZE, MESSAGE_SIZE_LIMIT, write_broker_config
from provisioning.device import provision_device
from provisioning.fleet import Fleet
from simulators.broker import Mosquitto, free_port
from tests.peers import DEADLINE_S, now_ms, signed, wait_for

ROOT = Path(__file__).resolve().parents[1]
LONG_ID = "d" * 64  # the longest device, point or line id


# --- sizes ------------------------------------------------------------------------------------


def rotation_receipt(key: Ed25519PrivateKey, seq: int) -> bytes:
    """The largest record a device writes: a key rotation's receipt, with the public halves
    of its next key pair (an Ed25519 key and a CSR) and a reason of MAX_REASON characters."""
    tls_key = ca.new_tls_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LONG_ID)]))
        .sign(tls_key, hashes.SHA256())
    )
    body = receipt_body(
        2**32,
        5,
        Outcome.REFUSED,
        "r" * 100,
        next_signing_key=bytes(32),
        next_csr=csr.public_bytes(serialization.Encoding.DER),
    )
    return build(
        key,
        device=LONG_ID,
        chain=ChainPosition(boot=2**32, seq=2**40 + seq, prev=bytes(16)),
        rtype=RecordType.RECEIPT,
        time_ms=now_ms(),
        time_source=TimeSource.GNSS,
        body=body,
    )


def full_batch() -> bytes:
    key = Ed25519PrivateKey.generate()
    return Batch(2**31 - 1, tuple(rotation_receipt(key, i) for i in range(MAX_BATCH))).encode()


def test_the_limit_fits_the_largest_legitimate_messages() -> None:
    key = Ed25519PrivateKey.generate()
    record = rotation_receipt(key, 0)
    assert len(record) <= 1024, "the largest record outgrew the limit's reasoning"
    assert len(full_batch()) < 0.65 * MESSAGE_SIZE_LIMIT  # 256 of them: ~159 KB
    assert MESSAGE_SIZE_LIMIT == 262_928  # docs/provisioning.md states it
    common = {"target": LONG_ID, "number": 2**40, "issued_ms": now_ms(), "expires_ms": now_ms()}
    lines = tuple(f"{i:03d}".ljust(64, "l") for i in range(MAX_LINES))
    bundle = TaskBundle(2**32 - 1, dt.date(2030, 12, 31), lines)
    rotation = RotateKeys(bytes(MAX_CERT))
    for body in (bundle, rotation):
        signed = sign1(command_payload(team=LONG_ID, body=body, **common), key)
        assert len(signed) < MESSAGE_SIZE_LIMIT // 8, (type(body).__name__, len(signed))
    assert MESSAGE_SIZE_LIMIT + len(records_topic(LONG_ID)) + 16 < MAX_PACKET_SIZE


# --- a fleet on the production layout ----------------------------------------------------------


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fleet = Fleet.init(root / "fleet", now_ms(), name="hostile")
        self.broker = Mosquitto(
            root / "broker", tls_dir=root / "broker-tls", service_port=free_port()
        )
        write_broker_config(self.fleet, root / "broker-tls", self.broker.port, now_ms())
        self.center_tls = self.fleet.issue_center(root / "center-tls", now_ms())

    def device(self, name: str) -> AgentConfig:
        files = provision_device(
            self.fleet,
            name,
            self.root / "devices" / name,
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            now_ms=now_ms(),
        )
        return load_config(files.config)

    def center(self) -> ssl.SSLContext:
        tls = self.center_tls
        return BrokerTls(tls / "ca.crt", tls / "center.crt", tls / "center.key").context()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    try:
        with s.broker:
            yield s
    finally:
        s.fleet.close()


def tls_of(cfg: AgentConfig) -> ssl.SSLContext:
    assert cfg.tls is not None
    return cfg.tls.context()


@contextlib.asynccontextmanager
async def connected(
    port: int, ctx: ssl.SSLContext, name: str, *, v5: bool = False
) -> AsyncIterator[aiomqtt.Client]:
    version = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=name, tls_context=ctx, protocol=version, timeout=5
    ) as c:
        yield c


async def alive(c: aiomqtt.Client) -> bool:
    """The broker still answers this client (a refused one is hung up on at once: a
    generous timeout costs nothing then, and only bounds a broker that says nothing)."""
    try:
        await c.publish("picket/v1/nobody/up/ping", b"", qos=1, timeout=DEADLINE_S)
    except aiomqtt.MqttError:
        return False
    return True


END = b"end"  # the last message of a test's sequence: everything before it was forwarded


async def received_until_end(c: aiomqtt.Client) -> list[int]:
    """Sizes of what `c` receives, up to and including END. A device's publishes are
    forwarded in the order they were sent, so what was not forwarded before END never is."""
    sizes: list[int] = []
    async with asyncio.timeout(DEADLINE_S):
        async for m in c.messages:
            assert isinstance(m.payload, bytes)
            sizes.append(len(m.payload))
            if m.payload == END:
                return sizes
    raise AssertionError("the subscription ended")


# --- size -------------------------------------------------------------------------------------


async def test_an_oversize_publish_is_refused_while_a_full_batch_passes(setup: Setup) -> None:
    cfg = setup.device("h0001")
    topic = records_topic("h0001")
    batch = full_batch()
    port = setup.broker.service_port
    assert port is not None
    async with connected(port, setup.center(), "watcher", v5=True) as watcher:
        await watcher.subscribe("picket/v1/+/up/records", qos=1)
        async with connected(setup.broker.port, tls_of(cfg), "h0001") as dev:
            await dev.publish(topic, batch, qos=1, timeout=10)
            await dev.publish(topic, bytes(MESSAGE_SIZE_LIMIT), qos=1, timeout=10)
            await dev.publish(topic, bytes(MESSAGE_SIZE_LIMIT + 1), qos=1, timeout=10)
            assert await alive(dev)
            await dev.publish(topic, END, qos=1, timeout=10)
        assert await received_until_end(watcher) == [len(batch), MESSAGE_SIZE_LIMIT, len(END)]
        # A packet over max_packet_size: the broker hangs up before reading it.
        with pytest.raises(aiomqtt.MqttError):
            async with connected(setup.broker.port, tls_of(cfg), "h0001") as dev:
                await dev.publish(topic, bytes(MAX_PACKET_SIZE + 1), qos=1, timeout=10)
                assert not await alive(dev)
                raise aiomqtt.MqttError("disconnected")
        async with connected(setup.broker.port, tls_of(cfg), "h0001") as dev:
            await dev.publish(topic, END, qos=1, timeout=10)  # after the hang-up
        assert await received_until_end(watcher) == [len(END)]


# --- client ids -------------------------------------------------------------------------------


async def test_a_device_cannot_push_another_off_the_broker_by_its_client_id(
    setup: Setup,
) -> None:
    one, two = setup.device("h0001"), setup.device("h0002")
    outbox = Outbox(two.outbox_path, two.device)
    options = UplinkOptions(keepalive_s=5, connect_timeout_s=3, tls=two.tls)
    uplink = Uplink(outbox, BrokerAddress(setup.broker.host, setup.broker.port), options=options)
    task = asyncio.create_task(uplink.run(), name="uplink-h0002")
    port = setup.broker.service_port
    assert port is not None
    try:
        await asyncio.wait_for(uplink.connected.wait(), 10)
        for _ in range(3):  # over and over, as the issue says
            async with connected(setup.broker.port, tls_of(one), "h0002") as attacker:
                assert await alive(attacker)  # the broker has taken the attacker's CONNECT
        # the uplink's first connection still carries a new record to the center's side
        async with connected(port, setup.center(), "watcher", v5=True) as watcher:
            await watcher.subscribe(records_topic("h0002"), qos=1)
            key = two.load_key()
            uplink.on_stored(outbox.append(signed(key, "h0002", RecordType.CHECKIN, {16: "P1"})))
            await asyncio.wait_for(anext(aiter(watcher.messages)), DEADLINE_S)
        assert (uplink.stats.connects, uplink.stats.link_losses) == (1, 0)
        assert uplink.connected.is_set()
    finally:
        uplink.stop()
        await asyncio.wait_for(task, 10)
        outbox.close()
    log = (setup.root / "broker" / "mosquitto.log").read_text()
    assert "as h0002 (p2, c1, k5, u'h0002')" in log, "the uplink's client id is its device id"
    assert "already connected" not in log


async def test_a_device_certificate_is_refused_on_the_services_listener(setup: Setup) -> None:
    cfg = setup.device("h0001")
    port = setup.broker.service_port
    assert port is not None
    with pytest.raises(aiomqtt.MqttError):
        async with connected(port, tls_of(cfg), "h0002"):
            pass
    # ...and the center's certificate is refused on the devices' listener
    with pytest.raises(aiomqtt.MqttError):
        async with connected(setup.broker.port, setup.center(), "picket-center-x"):
            pass


async def test_several_center_workers_share_one_identity(setup: Setup) -> None:
    cfg = setup.device("h0001")
    port = setup.broker.service_port
    assert port is not None
    registry = setup.fleet.dir / "registry.db"
    workers = [
        CenterService(
            setup.root / "center.db", registry, setup.broker.host, port, tls=setup.center()
        )
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(w.run(), name=f"center-{i}") for i, w in enumerate(workers)]
    outbox = Outbox(cfg.outbox_path, cfg.device)
    outbox.begin_boot()
    key = cfg.load_key()
    outbox.append_many(
        signed(key, cfg.device, RecordType.CHECKIN, {16: f"P{i}"}, now_ms()) for i in range(20)
    )
    options = UplinkOptions(keepalive_s=5, connect_timeout_s=3, tls=cfg.tls)
    uplink = Uplink(outbox, BrokerAddress(setup.broker.host, setup.broker.port), options=options)
    up = asyncio.create_task(uplink.run(), name="uplink-h0001")
    try:
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in workers)), 10)
        await wait_for(lambda: outbox.depth() == 0, 20, "the outbox to drain")
        assert uplink.stats.records_acked == 20
        assert all(w.ready.is_set() for w in workers)
    finally:
        uplink.stop()
        await asyncio.wait_for(up, 10)
        outbox.close()
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    log = (setup.root / "broker" / "mosquitto.log").read_text()
    assert "already connected" not in log, "the center's workers pushed each other off"


def test_the_generated_configuration_binds_ids_and_limits_sizes(tmp_path: Path) -> None:
    with Fleet.init(tmp_path / "fleet", now_ms(), name="conf") as fleet:
        conf = write_broker_config(fleet, tmp_path / "broker", 8883, now_ms()).read_text()
    devices, services = conf.split("listener 8883\n")[1].split("listener 8884\n")
    assert "use_username_as_clientid true" in devices and "/ca.crt" in devices
    assert "use_username_as_clientid false" in services and "/services-ca.crt" in services
    assert f"message_size_limit {MESSAGE_SIZE_LIMIT}\n" in conf
    assert f"max_packet_size {MAX_PACKET_SIZE}\n" in conf


# --- key permissions --------------------------------------------------------------------------


def test_a_world_readable_tls_key_is_refused_like_every_other(tmp_path: Path) -> None:
    with Fleet.init(tmp_path / "fleet", now_ms(), name="keys") as fleet:
        folder = fleet.issue_center(tmp_path / "center-tls", now_ms())
    key, cert = folder / "center.key", folder / "center.crt"
    key.chmod(0o644)
    with pytest.raises(LocalError, match=r"permissions 0644 are too open.*chmod 600"):
        BrokerTls(folder / "ca.crt", cert, key).context()
    both = tmp_path / "both.pem"  # the key inside the certificate file
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    both.chmod(0o640)
    with pytest.raises(LocalError, match=f"TLS key {both}: permissions 0640"):
        BrokerTls(folder / "ca.crt", both).context()
    both.chmod(0o600)
    key.chmod(0o600)
    BrokerTls(folder / "ca.crt", both).context()
    BrokerTls(folder / "ca.crt", cert, key).context()


def test_center_run_refuses_a_world_readable_tls_key(tmp_path: Path) -> None:
    with Fleet.init(tmp_path / "fleet", now_ms(), name="cli") as fleet:
        folder = fleet.issue_center(tmp_path / "center-tls", now_ms())
    (folder / "center.key").chmod(0o644)
    run = subprocess.run(
        [sys.executable, "-m", "picket", "center", "run", "--db", str(tmp_path / "c.db"),
         "--registry", str(tmp_path / "fleet" / "registry.db"),
         "--broker", f"127.0.0.1:{free_port()}", "--tls", str(folder)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "permissions 0644 are too open" in run.stderr
    assert f"chmod 600 {folder / 'center.key'}" in run.stderr


def test_a_services_ca_is_made_once_and_kept(tmp_path: Path) -> None:
    with Fleet.init(tmp_path / "fleet", now_ms(), name="svc") as fleet:
        fleet.issue_center(tmp_path / "a", now_ms())
        first = (tmp_path / "fleet" / "services-ca.crt").read_bytes()
        fleet.issue_center(tmp_path / "b", now_ms())
    assert (tmp_path / "fleet" / "services-ca.crt").read_bytes() == first
    assert (os.stat(tmp_path / "fleet" / "services-ca.key").st_mode & 0o777) == 0o600
