"""The fleet's broker for real: Mosquitto with TLS, client certificates, the ACL and the CRL.

Every device here went through enroll → approve → install (provision_device), the broker
runs the configuration `picket provision broker-config` writes, and the center connects
with the certificate `picket provision center` makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from agent.config import AgentConfig, ConfigError, load_config
from agent.identity.enroll import load_private
from agent.store.outbox import Builder, Outbox
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from center.ingest import Ingest
from center.service import KeyCache
from center.store import CenterStore
from contract.protocol import Ack, Batch, Refusal, command_topic, records_topic
from contract.records import RecordType
from contract.tls import BrokerTls
from provisioning import ca
from provisioning.fleet import Fleet
from simulators.broker import Mosquitto
from tests.peers import DEADLINE_S, TlsFleet, now_ms, running_center, signed, wait_for

END = b"end"  # the last message a reader waits for


def device_context(cfg: AgentConfig) -> ssl.SSLContext:
    assert cfg.tls is not None
    return cfg.tls.context()


@contextlib.asynccontextmanager
async def client(
    broker: Mosquitto, ctx: ssl.SSLContext, name: str
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=name,
        tls_context=ctx,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
    ) as c:
        yield c


def checkin(key: Ed25519PrivateKey, device: str, time_ms: int, point: str = "P1") -> Builder:
    return signed(key, device, RecordType.CHECKIN, {16: point}, time_ms)


QUICK = UplinkOptions(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.1, backoff_max_s=0.5)


@contextlib.asynccontextmanager
async def uplink_of(cfg: AgentConfig, records: int = 1) -> AsyncIterator[tuple[Uplink, Outbox]]:
    """The device's outbox with `records` signed check-ins, and its uplink running."""
    outbox = Outbox(cfg.outbox_path, cfg.device)
    outbox.begin_boot()
    key = cfg.load_key()
    outbox.append_many(checkin(key, cfg.device, now_ms(), f"P{i}") for i in range(records))
    uplink = Uplink(
        outbox,
        BrokerAddress(cfg.broker_host, cfg.broker_port),
        options=replace(QUICK, tls=cfg.tls),
    )
    task = asyncio.create_task(uplink.run(), name=f"uplink-{cfg.device}")
    try:
        yield uplink, outbox
    finally:
        uplink.stop()
        await asyncio.wait_for(task, 10)
        outbox.close()


# --- connecting and syncing -----------------------------------------------------------------


async def test_a_provisioned_device_syncs_over_tls(tls_fleet: TlsFleet) -> None:
    cfg = tls_fleet.device("h0001")
    assert cfg.tls is not None and cfg.tls.cert_path is not None
    registry = tls_fleet.fleet.dir / "registry.db"
    center = tls_fleet.center_context()
    async with running_center(tls_fleet.root, registry, tls_fleet.broker, tls=center) as svc:
        async with uplink_of(cfg, records=5) as (uplink, outbox):
            await wait_for(lambda: outbox.depth() == 0, 20, "the outbox to drain over TLS")
        assert uplink.stats.records_acked == 5
        assert svc.ingest.stats.stored == 5
    conf = (tls_fleet.root / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "allow_anonymous false" in conf


async def test_a_client_without_a_certificate_is_refused(tls_fleet: TlsFleet) -> None:
    cfg = tls_fleet.device("h0001")
    anonymous = BrokerTls(cfg.tls.ca_path if cfg.tls else None).context()
    with pytest.raises(aiomqtt.MqttError):
        async with client(tls_fleet.broker, anonymous, "nobody"):
            pass


async def test_plain_mqtt_is_not_offered(tls_fleet: TlsFleet) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            tls_fleet.broker.host, tls_fleet.broker.port, identifier="plain", timeout=3
        ):
            pass


# --- access rules ---------------------------------------------------------------------------


async def test_a_device_cannot_publish_or_subscribe_under_another_devices_topics(
    tls_fleet: TlsFleet,
) -> None:
    one, two = tls_fleet.device("h0001"), tls_fleet.device("h0002")
    center = tls_fleet.center_context()
    async with (
        client(tls_fleet.broker, center, "watcher") as watcher,
        client(tls_fleet.broker, device_context(one), "h0001") as c1,
        client(tls_fleet.broker, device_context(two), "h0002") as c2,
    ):
        await watcher.subscribe("picket/v1/+/up/#", qos=1)
        await c1.subscribe("picket/v1/h0002/down/#", qos=1)  # granted, but never delivered
        await c1.subscribe("picket/v1/+/up/#", qos=1)  # another device's uplink: nothing
        await c1.subscribe("picket/v1/h0001/down/#", qos=1)  # its own: the end marker
        await c2.subscribe("picket/v1/h0002/down/#", qos=1)
        # h0001 writes into h0002's uplink topic, then into its own
        await c1.publish(records_topic("h0002"), b"forged", qos=1)
        await c1.publish(records_topic("h0001"), b"own", qos=1)
        await c2.publish(records_topic("h0002"), b"from two", qos=1)
        # the center writes to h0002; h0001 writes to h0002's command topic
        await watcher.publish(command_topic("h0002"), b"for two", qos=1)
        await c1.publish(command_topic("h0002"), b"forged command", qos=1)
        # The end markers, last, on topics each reader may read: the broker has handled
        # everything above before them, so what it forwarded comes before them.
        await c2.publish(records_topic("h0002"), END, qos=1)
        await watcher.publish(command_topic("h0001"), END, qos=1)
        await watcher.publish(command_topic("h0002"), END, qos=1)

        async def collect(c: aiomqtt.Client) -> list[tuple[str, bytes]]:
            got: list[tuple[str, bytes]] = []
            async with asyncio.timeout(DEADLINE_S):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    got.append((m.topic.value, m.payload))
                    if m.payload == END:
                        return got[:-1]
            raise AssertionError("the subscription ended")

        seen_by_center, seen_by_one, seen_by_two = await asyncio.gather(
            collect(watcher), collect(c1), collect(c2)
        )
    assert sorted(seen_by_center) == [
        (records_topic("h0001"), b"own"),
        (records_topic("h0002"), b"from two"),
    ]
    assert seen_by_one == [], "h0001 read topics that are not its own"
    assert seen_by_two == [(command_topic("h0002"), b"for two")]


async def test_the_center_reads_through_its_shared_subscription(tls_fleet: TlsFleet) -> None:
    cfg = tls_fleet.device("h0001")
    registry = tls_fleet.fleet.dir / "registry.db"
    center = tls_fleet.center_context()
    async with running_center(tls_fleet.root, registry, tls_fleet.broker, tls=center) as svc:
        assert svc.records_filter.startswith("$share/")
        async with uplink_of(cfg, records=3) as (_uplink, outbox):
            await wait_for(lambda: outbox.depth() == 0, 20, "records through $share")


# --- revocation -----------------------------------------------------------------------------


async def test_a_revoked_device_is_refused_by_the_broker_after_a_restart(
    tls_fleet: TlsFleet,
) -> None:
    one, two = tls_fleet.device("h0001"), tls_fleet.device("h0002")
    async with client(tls_fleet.broker, device_context(two), "h0002"):
        pass  # accepted before
    revoked = tls_fleet.fleet.revoke("h0002", now_ms())
    assert revoked == 1
    crl = x509.load_pem_x509_crl((tls_fleet.root / "broker-tls" / "crl.pem").read_bytes())
    assert len(list(crl)) == 1
    tls_fleet.broker.stop()
    tls_fleet.broker.start()
    with pytest.raises(aiomqtt.MqttError):
        async with client(tls_fleet.broker, device_context(two), "h0002"):
            pass
    async with client(tls_fleet.broker, device_context(one), "h0001"):
        pass  # the others are unaffected


async def test_a_revoked_device_is_refused_after_a_reload(tls_fleet: TlsFleet) -> None:
    one, two = tls_fleet.device("h0001"), tls_fleet.device("h0002")
    async with client(tls_fleet.broker, device_context(two), "h0002"):
        pass  # accepted before
    tls_fleet.fleet.revoke("h0002", now_ms())
    tls_fleet.broker.reload()  # a signal: Mosquitto reads the new CRL when it gets to it

    async def refused() -> bool:
        try:
            async with client(tls_fleet.broker, device_context(two), "h0002"):
                return False
        except aiomqtt.MqttError:
            return True

    async with asyncio.timeout(DEADLINE_S):
        while not await refused():  # noqa: ASYNC110 - a reload sends no event to wait on
            await asyncio.sleep(0.1)
    async with client(tls_fleet.broker, device_context(one), "h0001"):
        pass  # the others are unaffected


def test_the_center_refuses_records_signed_after_the_revocation(tls_fleet: TlsFleet) -> None:
    cfg = tls_fleet.device("h0001")
    key = cfg.load_key()
    box = Outbox(cfg.outbox_path, cfg.device)
    box.begin_boot()
    t = now_ms()
    stored = box.append_many(
        [checkin(key, "h0001", t - 60_000, "before"), checkin(key, "h0001", t + 60_000, "after")]
    )
    raws = [s.raw for s in stored]
    box.close()
    tls_fleet.fleet.revoke("h0001", t)
    ingest = Ingest(
        CenterStore(tls_fleet.root / "center.db"), KeyCache(tls_fleet.fleet.dir / "registry.db")
    )
    ack = ingest.handle(records_topic("h0001"), Batch(1, tuple(raws)).encode(), t)
    assert isinstance(ack, Ack)
    assert ack.stored == (stored[0].seq,)
    assert ack.refused == ((stored[1].seq, Refusal.REVOKED),)
    ingest.store.close()


# --- certificates that must not work --------------------------------------------------------


def reissue(cfg: AgentConfig, fleet: Fleet, *, issued_ms: int, days: int) -> None:
    """Replace the device's certificate with one for the same key, issued at another time."""
    assert cfg.tls is not None and cfg.tls.cert_path is not None and cfg.tls.key_path
    tls_key = load_private(cfg.tls.key_path)
    assert isinstance(tls_key, ec.EllipticCurvePrivateKey)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(tls_key, hashes.SHA256())
    )
    cert = ca.issue_client(fleet.ca_key(), fleet.ca_cert, cfg.device, csr, issued_ms, days=days)
    cfg.tls.cert_path.write_bytes(ca.pem(cert))


async def test_an_expired_certificate_is_refused_with_a_clear_error(tls_fleet: TlsFleet) -> None:
    cfg = tls_fleet.device("h0001")
    reissue(cfg, tls_fleet.fleet, issued_ms=now_ms() - 10 * 86_400_000, days=2)
    async with uplink_of(cfg) as (uplink, _outbox):
        await wait_for(lambda: uplink.stats.link_losses >= 2, 10, "connection attempts")
        assert uplink.stats.connects == 0
    print(uplink.stats.last_error)
    assert "expired" in uplink.stats.last_error


async def test_a_certificate_from_another_ca_is_refused_with_a_clear_error(
    tls_fleet: TlsFleet,
) -> None:
    other = Fleet.init(tls_fleet.root / "other-fleet", now_ms(), name="other")
    cfg = tls_fleet.device("h0009", fleet=other)  # enrolled in another fleet
    # it trusts its own fleet's CA, so also present ours to get as far as the broker's check
    ours = (tls_fleet.fleet.dir / "ca.crt").read_bytes()
    assert cfg.tls is not None and cfg.tls.ca_path is not None
    cfg.tls.ca_path.write_bytes(cfg.tls.ca_path.read_bytes() + ours)
    async with uplink_of(cfg) as (uplink, _outbox):
        await wait_for(lambda: uplink.stats.link_losses >= 2, 10, "connection attempts")
        assert uplink.stats.connects == 0
    assert "CA" in uplink.stats.last_error
    other.close()


async def test_a_broker_of_another_fleet_is_not_trusted(tls_fleet: TlsFleet) -> None:
    other = Fleet.init(tls_fleet.root / "other-fleet", now_ms(), name="other")
    cfg = tls_fleet.device("h0001", fleet=other)  # trusts only the other fleet's CA
    async with uplink_of(cfg) as (uplink, _outbox):
        await wait_for(lambda: uplink.stats.link_losses >= 2, 10, "connection attempts")
        assert uplink.stats.connects == 0
    assert "broker's certificate" in uplink.stats.last_error
    other.close()


def test_a_tls_key_readable_by_others_is_refused(tls_fleet: TlsFleet) -> None:
    cfg = tls_fleet.device("h0001")
    assert cfg.tls is not None and cfg.tls.key_path is not None
    cfg.tls.key_path.chmod(0o644)
    with pytest.raises(ConfigError, match="too open"):
        load_config(tls_fleet.root / "devices" / "h0001" / "config.toml")
    cfg.tls.key_path.chmod(0o600)
    cfg.key_path.chmod(0o640)
    with pytest.raises(ConfigError, match="too open"):
        load_config(tls_fleet.root / "devices" / "h0001" / "config.toml").load_key()


# --- `picket provision rotate` --------------------------------------------------------------


async def test_rotate_publishes_a_signed_rotation_the_device_receives(
    tls_fleet: TlsFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    from contract.commands import CommandType, CommandVerifier, RotateKeys
    from contract.commands import Refusal as CommandRefusal
    from picket.cli import main

    cfg = tls_fleet.device("h0001")
    db = tls_fleet.root / "center.db"
    base = ["provision", "rotate", "--fleet", str(tls_fleet.fleet.dir), "--db", str(db)]
    broker = ["--broker", f"{tls_fleet.broker.host}:{tls_fleet.broker.port}"]
    center = tls_fleet.center_context()
    async with running_center(tls_fleet.root, tls_fleet.registry, tls_fleet.broker, tls=center):
        before = tls_fleet.fleet.registry.entry("h0001")
        assert before is not None
        code = await asyncio.to_thread(
            main, [*base, "--id", "h0001", *broker, "--tls", str(tls_fleet.center_tls), "--json"]
        )
        assert code == 0
        report = json.loads(capsys.readouterr().out.splitlines()[-1])
        after = tls_fleet.fleet.registry.entry("h0001")
        assert after is not None and after.fingerprint == report["fingerprint"]
        assert after.fingerprint != before.fingerprint  # the pre-committed key is current
        async with client(tls_fleet.broker, device_context(cfg), "h0001") as c:
            await c.subscribe(command_topic("h0001"), qos=1)  # retained: waiting for it
            async with asyncio.timeout(5):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    key = cfg.load_center_key()
                    assert key is not None
                    verdict = CommandVerifier(key, "h0001").check(m.payload, now_ms(), 0)
                    break
        assert not isinstance(verdict, CommandRefusal)
        assert verdict.type == CommandType.ROTATE_KEYS
        assert isinstance(verdict.body, RotateKeys)
        # a second rotation before the device answered the first is refused, saying why
        code = await asyncio.to_thread(main, [*base, "--id", "h0001", *broker])
        assert code == 2 and "has not answered rotation command" in capsys.readouterr().err
        code = await asyncio.to_thread(main, [*base, "--id", "h0404", *broker])
        assert code == 2 and "h0404" in capsys.readouterr().err
