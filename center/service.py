"""`picket center run`: the MQTT driver around `Ingest`.

Like the agent's uplink, a supervisor makes a new aiomqtt client per connection and backs
off between failures, so a broker restart costs a reconnect, never the process. Keys come
from the registry and are cached; an unknown device triggers one re-read (a device
provisioned after the center started is accepted without a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.protocol import ALL_RECORDS, ack_topic, device_of_topic
from center.ingest import Ingest
from center.store import CenterStore
from provisioning.registry import Registry

log = logging.getLogger(__name__)


class KeyCache:
    def __init__(self, registry_path: Path, min_reload_s: float = 2.0) -> None:
        self.registry_path = registry_path
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._misses: dict[str, float] = {}
        self._min_reload_s = min_reload_s

    def __call__(self, device: str) -> Ed25519PublicKey | None:
        key = self._keys.get(device)
        if key is not None:
            return key
        now = time.monotonic()
        if now - self._misses.get(device, -1e9) < self._min_reload_s:
            return None
        self._misses[device] = now
        reg = Registry(self.registry_path, readonly=True)
        try:
            key = reg.public_key(device)
        finally:
            reg.close()
        if key is not None:
            self._keys[device] = key
        return key


class CenterService:
    def __init__(self, db: Path, registry: Path, host: str, port: int) -> None:
        self.store = CenterStore(db)
        self.ingest = Ingest(self.store, KeyCache(registry))
        self.host, self.port = host, port
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    async with asyncio.TaskGroup() as tg:
                        session = tg.create_task(self._session(), name="center-session")
                        stopper = tg.create_task(self._stop.wait(), name="center-stop")
                        await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
                        session.cancel()
                        stopper.cancel()
                    failures = 0
                except* (aiomqtt.MqttError, OSError, TimeoutError) as eg:
                    failures += 1
                    log.warning("broker link down: %s", eg.exceptions[0])
                self.ready.clear()
                delay = min(10.0, 0.2 * 2 ** min(failures, 6)) * (0.5 + random.random())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
        finally:
            self.store.close()

    async def _session(self) -> None:
        async with aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"picket-center-{random.getrandbits(32):08x}",
            keepalive=30,
            timeout=10,
        ) as client:
            await client.subscribe(ALL_RECORDS, qos=1)
            self.ready.set()
            log.info("center subscribed to %s on %s:%d", ALL_RECORDS, self.host, self.port)
            async for message in client.messages:
                payload = message.payload
                topic = message.topic.value
                raw = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
                ack = self.ingest.handle(topic, raw, int(time.time() * 1000))
                if ack is not None:
                    await client.publish(ack_topic(device_of_topic(topic)), ack.encode(), qos=1)
