"""LoRa as the fallback uplink: while IP is down, alerts and check-ins also leave by radio.

The MQTT uplink stays the one reliable path: a record leaves the outbox only when the
center acknowledges it there. LoRa is best effort on top: once the IP link has been down
for `after_s`, every new alert and check-in is also sent as one radio packet
(firmware_bridge/lora.py `record_packet`: each fits one frame) through the MCU to a gateway,
which relays it to the center (center/lora_gateway.py); when IP comes back the device
sends it again and the center answers it as a duplicate. So nothing depends on the radio
getting through, and the center learns of an SOS or a check-in minutes earlier.

Airtime is scarce (about 45 check-ins an hour at SF9 under a 1 % duty cycle; bench/lora_toa.py):
alerts go first, then the newest check-ins; a packet the MCU refuses for its duty cycle
waits and is tried again, and the queue keeps at most `max_queue` packets (the oldest
check-ins are dropped first; they still go by IP). Records stored while IP is up are
never sent by radio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.store.outbox import Stored
from contract.records import RecordType
from firmware_bridge.host import Bridge, BridgeError, DutyCycleExceeded
from firmware_bridge.lora import record_packet

log = logging.getLogger(__name__)

SENT_BY_RADIO = (RecordType.ALERT, RecordType.CHECKIN)


@dataclass(slots=True)
class FallbackStats:
    queued: int = 0
    sent: int = 0
    airtime_ms: int = 0
    duty_waits: int = 0
    failed: int = 0
    dropped: int = 0  # check-ins pushed out of a full queue (they still go by IP)


@dataclass(slots=True)
class LoraFallback:
    bridge: Bridge
    ip_up: Callable[[], bool]  # e.g. the uplink's `connected.is_set`
    after_s: float = 30.0
    max_queue: int = 64
    retry_s: float = 5.0
    stats: FallbackStats = field(default_factory=FallbackStats)
    _alerts: list[bytes] = field(default_factory=list)
    _checkins: list[bytes] = field(default_factory=list)
    _down_since: float | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
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
        if stored.type not in SENT_BY_RADIO or not self.ip_down_long():
            return
        if stored.type is RecordType.ALERT:
            self._alerts.append(stored.raw)
        else:
            self._checkins.append(stored.raw)
        self.stats.queued += 1
        while len(self._alerts) + len(self._checkins) > self.max_queue and self._checkins:
            self._checkins.pop(0)
            self.stats.dropped += 1
        self._wake.set()

    def _next(self) -> bytes | None:
        if self._alerts:
            return self._alerts[0]
        return self._checkins[-1] if self._checkins else None

    def _sent(self, raw: bytes) -> None:
        if self._alerts and self._alerts[0] is raw:
            self._alerts.pop(0)
        elif raw in self._checkins:
            self._checkins.remove(raw)

    async def run(self) -> None:
        while True:
            raw = self._next()
            if raw is None or self.ip_up():
                if self.ip_up():  # IP is back: it delivers everything; the radio queue goes
                    self._alerts.clear()
                    self._checkins.clear()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                continue
            try:
                toa = await self.bridge.send_packet(record_packet(raw))
            except DutyCycleExceeded:
                self.stats.duty_waits += 1
                await asyncio.sleep(self.retry_s)
                continue
            except BridgeError as exc:
                self.stats.failed += 1
                log.debug("LoRa fallback: %s", exc)
                await asyncio.sleep(self.retry_s)
                continue
            self._sent(raw)
            self.stats.sent += 1
            self.stats.airtime_ms += toa
