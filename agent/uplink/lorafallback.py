"""LoRa as the fallback uplink: while IP is down, alerts, event reports and check-ins also
leave by radio.

The MQTT uplink stays the one reliable path: a record leaves the outbox only when the
center acknowledges it there. LoRa is best effort on top: once the IP link has been down
for `after_s`, every new alert, event report and check-in is also sent through the MCU to a
gateway, which relays it to the center (center/lora_gateway.py); when IP comes back the
device sends it again and the center answers it as a duplicate. So nothing depends on the
radio getting through, and the center learns of an SOS, a reported hazard or a check-in
minutes earlier.

A record that fits one packet goes as one (firmware_bridge/lora.py `record_packet`); a
longer one, such as an event report listing its photos' digests, goes as fragments
(`fragment_packets`, each its own RADIO_SEND, message ids counted up from a random start),
which the gateway reassembles. A fragment lost on the way costs the whole record by radio,
not the record: it still goes by IP.

Airtime is scarce (about 45 check-ins an hour at SF9 under a 1 % duty cycle; bench/lora_toa.py):
alerts go first (oldest first), then event reports (oldest first), then the newest
check-ins. Once a record's first fragment is on the air its other fragments follow back to
back, the next one as soon as the previous one has left the air; only an alert goes in
between. A packet the MCU refuses for its duty cycle waits and is tried again, and the queue
keeps at most `max_queue` packets (the oldest check-ins are dropped first, then the oldest
event reports not yet begun; alerts never: they all still go by IP). Records stored while
IP is up are never sent by radio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.store.outbox import Stored
from contract.records import RecordType
from firmware_bridge import messages
from firmware_bridge.host import Bridge, BridgeError, DutyCycleExceeded, StatusError
from firmware_bridge.lora import fragment_packets

log = logging.getLogger(__name__)

SENT_BY_RADIO = (RecordType.ALERT, RecordType.EVENT, RecordType.CHECKIN)


@dataclass(slots=True)
class FallbackStats:
    queued: int = 0  # records queued for the radio
    sent: int = 0  # records whose every packet went on the air
    fragments: int = 0  # fragment packets on the air (a record in 3 fragments: 3)
    airtime_ms: int = 0
    duty_waits: int = 0
    busy_waits: int = 0  # the MCU still sending the previous packet
    failed: int = 0
    dropped: int = 0  # records pushed out of a full queue (they still go by IP)


@dataclass(slots=True)
class _Message:
    """One record on its way: its packets, and how many of them are on the air."""

    raw: bytes
    packets: list[bytes]
    sent: int = 0

    @property
    def left(self) -> int:
        return len(self.packets) - self.sent


@dataclass(slots=True)
class LoraFallback:
    bridge: Bridge
    ip_up: Callable[[], bool]  # e.g. the uplink's `connected.is_set`
    after_s: float = 30.0
    max_queue: int = 64  # packets, fragments counted one by one
    retry_s: float = 5.0
    busy_s: float = 0.02  # the wait after the MCU answered "radio busy"
    stats: FallbackStats = field(default_factory=FallbackStats)
    _alerts: list[_Message] = field(default_factory=list)
    _events: list[_Message] = field(default_factory=list)
    _checkins: list[_Message] = field(default_factory=list)
    _down_since: float | None = None
    _air_free: float = 0.0  # monotonic time the last packet sent leaves the air
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _message_id: int = field(default_factory=lambda: random.getrandbits(32))
    monotonic: Callable[[], float] = time.monotonic

    def ip_down_long(self) -> bool:
        if self.ip_up():
            self._down_since = None
            return False
        now = self.monotonic()
        if self._down_since is None:
            self._down_since = now
        return now - self._down_since >= self.after_s

    def on_stored(self, stored: Stored) -> None:
        """Hook for every stored record (chain it after the uplink's)."""
        rtype = stored.type
        if rtype not in SENT_BY_RADIO or not self.ip_down_long():
            return
        self._message_id = (self._message_id + 1) & 0xFFFFFFFF
        try:
            message = _Message(stored.raw, fragment_packets(stored.raw, self._message_id))
        except ValueError as exc:  # longer than any record should be: it goes by IP only
            log.warning("LoRa fallback: record %d not sent by radio: %s", stored.seq, exc)
            return
        if rtype is RecordType.ALERT:
            self._alerts.append(message)
        elif rtype is RecordType.EVENT:
            self._events.append(message)
        else:
            self._checkins.append(message)
        self.stats.queued += 1
        self._bound()
        self._wake.set()

    def _bound(self) -> None:
        """Drop the oldest check-ins, then the oldest event reports not begun, while the
        queue holds more than `max_queue` packets."""
        queues = (self._alerts, self._events, self._checkins)
        over = sum(m.left for q in queues for m in q) - self.max_queue
        for q in (self._checkins, self._events):
            for m in [m for m in q if m.sent == 0]:
                if over <= 0:
                    return
                q.remove(m)
                over -= m.left
                self.stats.dropped += 1

    def _next(self) -> _Message | None:
        if self._alerts:
            return self._alerts[0]
        for m in (*self._events, *self._checkins):
            if m.sent:  # begun: its other fragments follow back to back
                return m
        if self._events:
            return self._events[0]
        return self._checkins[-1] if self._checkins else None

    def _done(self, message: _Message) -> None:
        for q in (self._alerts, self._events, self._checkins):
            if message in q:
                q.remove(message)
                return

    async def run(self) -> None:
        while True:
            message = self._next()
            if message is None or self.ip_up():
                if self.ip_up():  # IP is back: it delivers everything; the radio queue goes
                    self._alerts.clear()
                    self._events.clear()
                    self._checkins.clear()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                continue
            on_air = self._air_free - self.monotonic()
            if on_air > 0:  # our previous packet is still on the air; then choose again
                await asyncio.sleep(on_air)
                continue
            packet = message.packets[message.sent]
            try:
                toa = await self.bridge.send_packet(packet)
            except DutyCycleExceeded:
                self.stats.duty_waits += 1
                await asyncio.sleep(self.retry_s)
                continue
            except StatusError as exc:
                if exc.status != messages.BUSY:
                    self._failed(exc)
                    await asyncio.sleep(self.retry_s)
                    continue
                self.stats.busy_waits += 1
                await asyncio.sleep(self.busy_s)
                continue
            except BridgeError as exc:
                self._failed(exc)
                await asyncio.sleep(self.retry_s)
                continue
            self._air_free = self.monotonic() + toa / 1000
            self.stats.airtime_ms += toa
            if len(message.packets) > 1:
                self.stats.fragments += 1
            message.sent += 1
            if message.left == 0:
                self._done(message)
                self.stats.sent += 1

    def _failed(self, exc: BridgeError) -> None:
        self.stats.failed += 1
        log.debug("LoRa fallback: %s", exc)
