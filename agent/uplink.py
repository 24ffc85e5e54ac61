"""The MQTT driver around `SyncCore`: connect, publish batches, apply acknowledgements.

An aiomqtt client is single-use, so a supervisor loop makes a new one per connection and
backs off exponentially with jitter between failures. Within a connection one TaskGroup
runs the receiver (acknowledgements) and the sender (batches, woken by new records or
freed window slots, and at least once a second to expire unanswered batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from agent.errors import RemoteError
from agent.outbox import Outbox, Stored
from agent.protocol import ack_topic, command_topic, decode_ack, records_topic
from agent.sync import SyncCore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


@dataclass(slots=True)
class UplinkStats:
    connects: int = 0
    batches_sent: int = 0
    records_sent: int = 0
    records_acked: int = 0
    records_refused: int = 0
    bad_acks: int = 0


class Uplink:
    def __init__(
        self,
        outbox: Outbox,
        broker: BrokerAddress,
        *,
        core: SyncCore | None = None,
        monotonic_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
        rng: random.Random | None = None,
        on_command: Callable[[bytes], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.on_command = on_command  # signed commands on …/down/cmd (agent/commands.py)
        self.device = outbox.device
        self.broker = broker
        self.core = core or SyncCore(first_batch_id=int(time.time() * 1000) % 2**31)
        self.stats = UplinkStats()
        self.wake = asyncio.Event()
        self._now = monotonic_ms
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()

    def on_stored(self, _stored: Stored) -> None:
        """A record was stored: send it without waiting for the next poll."""
        self.wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    async def run(self) -> None:
        """Supervise connections until `stop()`; never raises on link failures."""
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0
            except* (aiomqtt.MqttError, OSError, TimeoutError) as group:
                failures += 1
                log.debug("%s: link down: %s", self.device, group.exceptions[0])
            finally:
                self.connected.clear()
                self.core.link_down()
            if self._stopping.is_set():
                break
            delay = min(30.0, 0.25 * 2 ** min(failures, 8)) * (0.5 + self._rng.random())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _session(self) -> None:
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=f"picket-{self.device}",
            keepalive=30,
            timeout=10,
        ) as client:
            await client.subscribe(ack_topic(self.device), qos=1)
            if self.on_command is not None:
                await client.subscribe(command_topic(self.device), qos=1)
            self.stats.connects += 1
            self.connected.set()
            async with asyncio.TaskGroup() as tg:
                receiver = tg.create_task(self._receive(client), name=f"{self.device}-acks")
                await self._send(client)
                receiver.cancel()

    async def _send(self, client: aiomqtt.Client) -> None:
        topic = records_topic(self.device)
        while not self._stopping.is_set():
            self.wake.clear()
            now = self._now()
            self.core.expire(now)
            slots = self.core.free_slots()
            if slots:
                pending = self.outbox.pending(
                    slots * self.core.batch_size, skip=self.core.in_flight
                )
                batches = self.core.plan(pending, now)
                await asyncio.gather(
                    *(client.publish(topic, b.encode(), qos=1, timeout=10) for b in batches)
                )
                self.stats.batches_sent += len(batches)
                self.stats.records_sent += sum(len(b.records) for b in batches)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)

    async def _receive(self, client: aiomqtt.Client) -> None:
        commands = command_topic(self.device)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                self.stats.bad_acks += 1
                continue
            if message.topic.value == commands:
                if self.on_command is not None:
                    self.on_command(bytes(payload))
                continue
            try:
                ack = decode_ack(bytes(payload))
            except RemoteError as exc:
                self.stats.bad_acks += 1
                log.log(logging.WARNING if self.stats.bad_acks == 1 else logging.DEBUG, "%s", exc)
                continue
            settled = self.core.on_ack(ack)
            self.stats.records_acked += self.outbox.acknowledge(settled.delete)
            for seq, reason in settled.refused:
                self.outbox.refuse(seq, reason.name)
            self.stats.records_refused += len(settled.refused)
            self.wake.set()
