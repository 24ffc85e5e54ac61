"""The LoRa gateway bridge: records heard over the radio, published to the center over MQTT.

When a handset's IP link is down its records can still leave by LoRa. A gateway radio
hears them; this bridge publishes each as a one-record batch on the device's own
`picket/v1/{device}/up/relayed`: the center verifies the signature against the device's
key and stores the record like any other, but answers nothing there (the device did not
send that batch, and a forged packet must not make it drop a record it holds); it later
answers the same record, sent again by the device over IP, as a duplicate
(docs/protocol.md: de-duplication on (device, seq)), and the device deletes it then.

**Packets** (firmware_bridge/lora.py, docs/bridge.md "LoRa packets"): one signed record per
packet, either bare (first byte 0xD2, the COSE_Sign1 tag) or after the kind byte 0x01; or a
fragment (kind 0x02) of a record longer than one packet. The bridge reassembles fragments
(one bounded `Reassembly` per gateway, on the gateway's clock) and relays the whole record
as if it had come in one packet; a message whose pieces do not all arrive in time is
dropped and counted (`incomplete`): the record still reaches the center by IP. Anything
else is malformed.

**Trust.** Anyone with a radio can transmit, so nothing in a packet is believed: the device
id is read from the record's header only to choose the topic (and must be a valid id, so a
packet can never name a wildcard or another subtree), and the center checks the signature
as for any record. The bridge holds no device keys and needs none.

**Identity.** The bridge connects with its own client certificate, common name
`picket-gateway` (`issue_gateway`); the broker's ACL lets that user write every device's
`up/relayed` and nothing else (`gateway_acl`, part of provisioning/brokerconf.py's ACL).
Batch ids start at 2^32, far above the ids a device picks (milliseconds mod 2^31, counted
up); the center answers nothing on up/relayed anyway.

**Delivery.** Packets wait in a bounded queue (oldest dropped, and counted, when full) and
are published one at a time with QoS 1; a packet whose PUBACK did not come is published
again after the reconnect (a duplicate is harmless). The PUBACK is the broker's, not the
center's: a batch published while no center is subscribed (its clean session between a
broker restart and its resubscription) is dropped by the broker. Losing one costs little:
the record is still in the device's outbox, which only the center's acknowledgement empties.

**Limit.** Protocol v1 answers refusals on the device's own `down/ack`, and the device stops
resending a sequence number named there. Through this bridge a forged packet naming a real
device and one of its pending sequence numbers earns such a refusal (BAD_SIGNATURE), which
an online device would apply to its genuine record. Relayed batches should get their own
topic, answered without refusals, before gateways are deployed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import ssl
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from center.errors import PacketError
from contract.cose import decode_sign1, strict_loads
from contract.errors import RecordError
from contract.protocol import DEVICE_ID, PREFIX, Batch, relayed_topic
from contract.records import Key
from firmware_bridge import messages
from firmware_bridge.lora import KIND_FRAGMENT, KIND_RECORD, Reassembly, split_packet
from provisioning.fleet import GATEWAY_CN, Fleet, service_tls

log = logging.getLogger(__name__)


BATCH_ID_BASE = 1 << 32  # above every batch id a device picks (agent/uplink/mqtt.py default_core)
DEFAULT_QUEUE = 4096  # packets held while the broker is unreachable


def gateway_acl() -> str:
    """The broker ACL lines for the gateway (to append to provisioning/brokerconf.acl_text)."""
    return (
        "\n# the LoRa gateway bridge: relays records it heard to any device's up/records\n"
        f"user {GATEWAY_CN}\n"
        f"topic write {PREFIX}/+/up/relayed\n"
    )


def issue_gateway(fleet: Fleet, out: Path, now_ms: int) -> Path:
    """The gateway's client certificate and key (made here, like the center's), with the CA,
    in `out`: gateway.crt, gateway.key, ca.crt."""
    return fleet.issue_service(GATEWAY_CN, "gateway", out, now_ms)


def gateway_tls(folder: Path) -> ssl.SSLContext:
    """The client TLS context from an `issue_gateway` folder."""
    return service_tls(folder, "gateway")


def route(packet: bytes) -> tuple[str, bytes]:
    """(device, record) of a heard packet: the device the record claims, unverified, only
    to choose its topic. Raises PacketError when the packet is not a record whose header
    names a valid device id (a fragment is not: `LoraGateway.heard` reassembles those)."""
    try:
        kind, record = split_packet(packet)
    except ValueError as exc:
        raise PacketError(str(exc)) from exc
    if kind != KIND_RECORD:
        raise PacketError(f"packet kind {kind} is not a whole record")
    return route_record(record)


def route_record(record: bytes) -> tuple[str, bytes]:
    """`route` for a record without its packet's kind byte (a reassembled one)."""
    try:
        payload = strict_loads(decode_sign1(record).payload)
    except RecordError as exc:
        raise PacketError(f"not a record: {exc}") from exc
    # Key 2 only, not the whole header (contract.records.peek_device): a record type newer than
    # this bridge is still routed, and the center, which knows it or not, decides.
    device = payload.get(Key.DEVICE) if isinstance(payload, Mapping) else None
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise PacketError(f"record names {str(device)[:70]!r}, not a device id")
    return device, record


def rx_packet(event_payload: bytes) -> tuple[bytes, int, float]:
    """(packet, RSSI dBm, SNR dB) of the MCU's RADIO_RX event (firmware_bridge/messages.py)."""
    head = struct.calcsize(messages.RX_HEAD)
    if len(event_payload) <= head:
        raise PacketError("RADIO_RX event without a packet")
    rssi, snr_q = messages.unpack(messages.RX_HEAD, event_payload[:head])
    assert isinstance(rssi, int) and isinstance(snr_q, int)
    return bytes(event_payload[head:]), rssi, snr_q / 4


@dataclass(slots=True)
class GatewayStats:
    heard: int = 0  # packets handed in
    forwarded: int = 0  # published, PUBACK received
    malformed: int = 0  # not a record with a valid device id: not forwarded
    dropped: int = 0  # queued, then pushed out by newer packets while the broker was away
    connects: int = 0
    link_losses: int = 0
    fragments: int = 0  # fragment packets among those heard (not in as_dict: see below)
    reassembled: int = 0  # records whose fragments all arrived
    by_device: collections.Counter[str] = field(default_factory=collections.Counter)
    last_error: str = ""

    def as_dict(self) -> dict[str, int]:
        """The relay's counters (fragments: `fragments`, `reassembled`, and the gateway's
        `reassembly` counts what it dropped and refused)."""
        return {
            "heard": self.heard,
            "forwarded": self.forwarded,
            "malformed": self.malformed,
            "dropped": self.dropped,
            "connects": self.connects,
            "link_losses": self.link_losses,
        }


class LoraGateway:
    """`heard(packet)` from the radio side (sync, never blocks); `run()` publishes."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        name: str = "gw",
        queue_max: int = DEFAULT_QUEUE,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        backoff_max_s: float = 10.0,
        rng: random.Random | None = None,
        reassembly: Reassembly | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.client_id = f"{GATEWAY_CN}:{name}"  # ':' is in no device id: never a device's
        self.stats = GatewayStats()
        self.connected = asyncio.Event()
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=queue_max)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._ids = itertools.count(BATCH_ID_BASE)
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self.reassembly = reassembly or Reassembly()
        self._clock_ms = clock_ms or _monotonic_ms

    @property
    def pending(self) -> int:
        """Packets heard and not yet forwarded."""
        return len(self._queue)

    @property
    def incomplete(self) -> int:
        """Fragmented messages given up before their last piece came (lost, or too late):
        those older than the reassembly's max age now are counted too."""
        self.reassembly.expire(self._clock_ms())
        return self.reassembly.dropped

    def heard(self, packet: bytes) -> bool:
        """A packet the gateway radio received; False when it is malformed (a record, or a
        fragment, that cannot be true). A fragment is held until its message is whole, then
        the record is forwarded. Call it from the event loop `run` is on (it wakes the
        publisher)."""
        self.stats.heard += 1
        self.reassembly.expire(self._clock_ms())
        try:
            got = self._take(packet)
        except PacketError as exc:
            self.stats.malformed += 1
            level = logging.WARNING if self.stats.malformed == 1 else logging.DEBUG
            log.log(level, "gateway: dropped a packet of %d bytes: %s", len(packet), exc)
            return False
        if got is None:
            return True  # a piece of a message still incomplete
        device, record = got
        if len(self._queue) == self._queue.maxlen:
            self.stats.dropped += 1
        self._queue.append((device, record))
        self._wake.set()
        return True

    def _take(self, packet: bytes) -> tuple[str, bytes] | None:
        """(device, record) to forward, None for a fragment that completes nothing yet."""
        try:
            if packet[:1] != bytes((KIND_FRAGMENT,)):
                return route_record(split_packet(packet)[1])
            self.stats.fragments += 1  # the reassembly checks it, and counts what it refuses
            record = self.reassembly.add(packet, self._clock_ms())
        except ValueError as exc:
            raise PacketError(str(exc)) from exc
        if record is None:
            return None
        self.stats.reassembled += 1
        return route_record(record)

    def heard_rx_event(self, event_payload: bytes) -> bool:
        """`heard` for a RADIO_RX event payload from the gateway's MCU."""
        try:
            packet, _rssi, _snr = rx_packet(event_payload)
        except (PacketError, ValueError) as exc:
            self.stats.heard += 1
            self.stats.malformed += 1
            log.debug("gateway: bad RADIO_RX event: %s", exc)
            return False
        return self.heard(packet)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Publish until `stop()`, reconnecting with backoff; never raises on link failures."""
        failures = 0
        while not self._stop.is_set():
            connects = self.stats.connects
            try:
                await self._session()
            except* (aiomqtt.MqttError, OSError, TimeoutError) as group:
                exc = group.exceptions[0]
                self.stats.link_losses += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.log(
                    logging.WARNING if failures == 0 else logging.DEBUG,
                    "gateway: broker link down: %s",
                    self.stats.last_error,
                )
            finally:
                self.connected.clear()
            if self._stop.is_set():
                break
            me = asyncio.current_task()  # a cancellation a failing TaskGroup dropped (3.11)
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            failures = 1 if self.stats.connects > connects else failures + 1
            delay = min(self._backoff_max_s, 0.25 * 2 ** min(failures, 16))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * (0.5 + self._rng.random())):
                    await self._stop.wait()

    async def _session(self) -> None:
        async with aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            keepalive=self._keepalive_s,
            timeout=self._timeout_s,
            tls_context=self.tls,
        ) as client:
            self.stats.connects += 1
            self.connected.set()
            log.info("gateway %s connected to %s:%d", self.client_id, self.host, self.port)
            async with asyncio.TaskGroup() as tg:
                # Nothing is subscribed: iterating only notices a dropped connection at once,
                # where an idle publisher would notice it at its next packet.
                watch = tg.create_task(_until_dropped(client), name="gateway-watch")
                await self._forward(client)
                watch.cancel()

    async def _forward(self, client: aiomqtt.Client) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            while self._queue and not self._stop.is_set():
                device, record = self._queue[0]
                batch = Batch(next(self._ids), (record,))
                await client.publish(
                    relayed_topic(device), batch.encode(), qos=1, timeout=self._timeout_s
                )
                # Still the head unless the queue overflowed while we waited for the PUBACK.
                if self._queue and self._queue[0] == (device, record):
                    self._queue.popleft()
                self.stats.forwarded += 1
                self.stats.by_device[device] += 1
            if not self._stop.is_set():
                await self._wake.wait()


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


async def _until_dropped(client: aiomqtt.Client) -> None:
    async for _message in client.messages:
        pass
