"""LoRa as the fallback uplink, end to end with real parts: while MQTT is down, check-ins
and an SOS alert leave through the MCU (the firmware logic behind a pty), cross the
simulated radio medium to a gateway, which relays them over TLS to the real center; when
IP comes back the device sends them again and the center stores nothing twice."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.store.outbox import Builder, Outbox
from agent.uplink.lorafallback import LoraFallback
from agent.uplink.mqtt import BrokerAddress, Uplink, UplinkOptions
from center.lora_gateway import LoraGateway, gateway_tls, issue_gateway
from contract.records import RecordType, alert_body
from firmware_bridge.host import Bridge
from simulators.broker import free_port
from simulators.lora_medium import Medium, Metres, Reception, run_air
from simulators.mcusim import McuSim
from tests.peers import TlsFleet, now_ms, running_center, signed, wait_for

pytestmark = pytest.mark.integration

QUICK = UplinkOptions(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.1, backoff_max_s=0.5)


def record(key: Ed25519PrivateKey, device: str, rtype: RecordType, point: str = "P1") -> Builder:
    body = {16: point} if rtype is RecordType.CHECKIN else alert_body()
    return signed(key, device, rtype, body)


def rows(db: Path) -> list[tuple[str, int]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT device, seq FROM records ORDER BY seq").fetchall()
    finally:
        con.close()


async def test_checkins_and_an_alert_reach_the_center_by_lora_while_mqtt_is_down(
    tls_fleet: TlsFleet, tmp_path: Path
) -> None:
    cfg = tls_fleet.device("h0001")
    key = cfg.load_key()
    db = tls_fleet.root / "center.db"
    medium = Medium(seed=3)
    medium.add_radio("h0001", Metres(0, 0), sf=9)
    medium.add_gateway("gw1", Metres(400, 300))  # half a kilometre: well within SF9's reach
    gw_dir = issue_gateway(tls_fleet.fleet, tmp_path / "gateway-tls", now_ms())
    gateway = LoraGateway(
        tls_fleet.broker.host, tls_fleet.broker.port, tls=gateway_tls(gw_dir), name="gw1"
    )
    sim = McuSim(tmp_path / "mcu", on_send=lambda p, _t: medium.transmit("h0001", p, now_ms()))
    sim.start()
    box = Outbox(cfg.outbox_path, cfg.device)
    box.begin_boot()
    stop = asyncio.Event()

    def heard(got: Reception) -> None:
        gateway.heard(got.packet)

    center = tls_fleet.center_context()
    try:
        async with (
            running_center(tls_fleet.root, tls_fleet.registry, tls_fleet.broker, tls=center) as svc,
            Bridge(str(sim.link)) as bridge,
            asyncio.TaskGroup() as tg,
        ):
            tg.create_task(gateway.run())
            air = tg.create_task(run_air(medium, heard, stop, clock=now_ms))
            # the handset's IP link is down: its broker address answers nothing
            dead = Uplink(box, BrokerAddress("127.0.0.1", free_port()), options=QUICK)
            fallback = LoraFallback(bridge, dead.connected.is_set, after_s=0)
            tg.create_task(dead.run())
            radio = tg.create_task(fallback.run())
            stored = [box.append(record(key, "h0001", RecordType.CHECKIN, f"P{i}")) for i in (1, 2)]
            stored.append(box.append(record(key, "h0001", RecordType.ALERT)))
            for s in stored:
                fallback.on_stored(s)
            await wait_for(lambda: len(rows(db)) == 3, 30, "three records relayed by LoRa")
            assert fallback.stats.sent == 3 and fallback.stats.airtime_ms > 3 * 600  # SF9
            assert gateway.stats.forwarded == 3
            assert box.depth() == 3  # nothing deleted: only the center's ack over IP deletes
            dead.stop()
            # IP is back: the device sends everything itself; the center has it already
            live = Uplink(
                box,
                BrokerAddress(cfg.broker_host, cfg.broker_port),
                options=replace(QUICK, tls=cfg.tls),
            )
            tg.create_task(live.run())
            await wait_for(lambda: box.depth() == 0, 20, "the outbox to drain over IP")
            assert svc.ingest.stats.duplicates == 3 and svc.ingest.stats.stored == 3
            assert rows(db) == [("h0001", 1), ("h0001", 2), ("h0001", 3)]
            live.stop()
            radio.cancel()
            gateway.stop()
            stop.set()
            await air
    finally:
        box.close()
        sim.stop()
