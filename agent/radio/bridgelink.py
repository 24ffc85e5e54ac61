"""The daemon's side of the radio MCU: SOS becomes an ALERT record, records become beeps.

Its `[bridge]` section (`BridgeConfig`, `parse_bridge_section`) is in agent/radio/settings.py.
`BridgeLink` runs a `firmware_bridge.host.Bridge` beside the DeviceAgent, on the daemon's
loop. Why it is shaped so:

* **An SOS is stored at once.** The SOS event arrives in a synchronous callback; the
  ALERT record (alert_body SOS, the agent's last fix, the battery percent the MCU last
  reported) is signed and appended in that callback, before anything is awaited, so no
  link trouble, slow request or crash can lose it between the press and the outbox. The
  outbox gives alerts priority 0 (the head of the upload queue) and `on_stored` wakes the
  uplink. Only then is the MCU told PATTERN_SOS_ACK: the red light means "recorded". The
  MCU sends an SOS event at every release, counting the presses of a burst; a burst
  makes one alert (a press counted as the 2nd, 3rd … of a burst within SOS_BURST_S of
  the last alert adds none). Without a known time the record carries time 0, source NONE.
* **Feedback follows the outbox, not the engine.** The DeviceAgent's `on_stored` hook is
  wrapped (device.py is not touched): a stored CHECKIN plays PATTERN_CHECKIN, a stored
  MISSED plays PATTERN_MISSED, so the guard hears what was actually recorded. Patterns go
  through a queue to one task; one older than FEEDBACK_STALE_S when the link comes back
  is dropped (a beep a minute late confuses more than it tells).
* **Low battery** is the gauge read every `battery_poll_s` (and at every link-up): at or
  below `low_battery_pct` and not charging, PATTERN_LOW_BATTERY once; it re-arms once
  the level is 5 points above the threshold or the cell charges. The last reading is
  kept in `battery` for the SOS record and for health reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.checkin.device import DeviceAgent
from agent.gnss.timekeeper import Stamp
from agent.radio.settings import BridgeConfig
from agent.store.outbox import Stored, signed
from contract.fix import TimeSource
from contract.records import AlertKind, RecordType, alert_body
from firmware_bridge import messages as m
from firmware_bridge.host import (
    BatteryReading,
    Bridge,
    BridgeError,
    BridgeOptions,
    Event,
    LinkStatus,
    LogEvent,
    RadioRx,
    SosEvent,
)

log = logging.getLogger(__name__)

SOS_BURST_S = 5.0
FEEDBACK_STALE_S = 60.0
LOW_BATTERY_HYSTERESIS = 5
FEEDBACK_FOR = {RecordType.CHECKIN: m.PATTERN_CHECKIN, RecordType.MISSED: m.PATTERN_MISSED}
MCU_LOG_LEVELS = {1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}


@dataclass(slots=True)
class LinkStats:
    alerts: int = 0
    sos_events: int = 0
    feedback_sent: int = 0
    feedback_failed: int = 0
    feedback_stale: int = 0
    low_battery_warnings: int = 0
    radio_rx: int = 0


class BridgeLink:
    """The Bridge for one DeviceAgent: `run()` until cancelled (a daemon task)."""

    def __init__(
        self,
        config: BridgeConfig,
        agent: DeviceAgent,
        *,
        clock: Callable[[], Stamp],
        options: BridgeOptions | None = None,
    ) -> None:
        self.config = config
        self.agent = agent
        self.clock = clock
        self.stats = LinkStats()
        self.battery: BatteryReading | None = None
        self.battery_at: float | None = None  # monotonic seconds of that reading
        opts = options or BridgeOptions(baud=config.baud, heartbeat_s=config.heartbeat_s)
        self.bridge = Bridge(
            config.port, on_event=self._on_event, on_link=self._on_link, options=opts
        )
        self.bridge.radio = config.radio  # sent with every handshake
        self._feedback: asyncio.Queue[tuple[int, float]] = asyncio.Queue(maxsize=32)
        self._poll_now = asyncio.Event()
        self._low_warned = False
        self._last_alert: float | None = None
        self._downstream = agent.on_stored
        agent.on_stored = self._stored

    async def run(self) -> None:
        self.bridge.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._play(), name="bridge-feedback")
                tg.create_task(self._poll_battery(), name="bridge-battery")
        finally:
            await self.bridge.close()

    # -- records → feedback ------------------------------------------------------------------

    def _stored(self, stored: Stored) -> None:
        self._downstream(stored)
        pattern = FEEDBACK_FOR.get(stored.type)
        if pattern is not None:
            self._queue(pattern)

    def _queue(self, pattern: int) -> None:
        try:
            self._feedback.put_nowait((pattern, time.monotonic()))
        except asyncio.QueueFull:  # the MCU has been away long: the oldest are stale anyway
            self._feedback.get_nowait()
            self.stats.feedback_stale += 1
            self._feedback.put_nowait((pattern, time.monotonic()))

    async def _play(self) -> None:
        while True:
            pattern, queued = await self._feedback.get()
            while True:
                if time.monotonic() - queued > FEEDBACK_STALE_S:
                    self.stats.feedback_stale += 1
                    break
                try:
                    await self.bridge.feedback(pattern)
                except BridgeError as exc:
                    self.stats.feedback_failed += 1
                    log.debug("feedback pattern %d not played yet: %s", pattern, exc)
                    await asyncio.sleep(1.0)
                    continue
                self.stats.feedback_sent += 1
                break

    # -- events -------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SosEvent):
            self._sos(event)
        elif isinstance(event, LogEvent):
            log.log(MCU_LOG_LEVELS.get(event.level, logging.INFO), "MCU: %s", event.text)
        elif isinstance(event, RadioRx):
            self.stats.radio_rx += 1
            log.debug("LoRa packet of %d bytes, %d dBm", len(event.packet), event.rssi_dbm)

    def _sos(self, event: SosEvent) -> None:
        self.stats.sos_events += 1
        now = time.monotonic()
        last = self._last_alert
        if event.presses > 1 and last is not None and now - last < SOS_BURST_S:
            log.info("SOS: press %d of the burst already recorded", event.presses)
            return
        stored = self.store_alert()
        self._last_alert = now
        log.warning("SOS pressed: ALERT record %d stored", stored.seq)
        self._queue(m.PATTERN_SOS_ACK)

    def store_alert(self) -> Stored:
        """Sign and append an SOS ALERT now: the last fix, the MCU's last battery percent."""
        agent = self.agent
        stamp = self.clock()
        time_ms = stamp.time_ms if stamp.time_ms is not None else 0
        source = stamp.source if stamp.time_ms is not None else TimeSource.NONE
        body = alert_body(
            AlertKind.SOS,
            fix=agent.last_fix,
            battery_pct=None if self.battery is None else self.battery.percent,
        )

        make = signed(
            agent.key, agent.device, RecordType.ALERT, time_ms=time_ms, source=source, body=body
        )
        stored = agent.outbox.append(make)
        agent.created[RecordType.ALERT] += 1
        self.stats.alerts += 1
        agent.on_stored(stored)  # the uplink sends it at once
        return stored

    def _on_link(self, status: LinkStatus) -> None:
        if status.up:
            self._poll_now.set()

    # -- battery ------------------------------------------------------------------------------

    async def _poll_battery(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.battery_poll_s):
                    await self._poll_now.wait()
            self._poll_now.clear()
            if not self.bridge.link.up:
                continue
            try:
                reading = await self.bridge.battery()
            except BridgeError as exc:
                log.debug("battery not read: %s", exc)
                continue
            self.battery, self.battery_at = reading, time.monotonic()
            self._check_low(reading)

    def _check_low(self, reading: BatteryReading) -> None:
        low = self.config.low_battery_pct
        if reading.charging or reading.percent >= low + LOW_BATTERY_HYSTERESIS:
            self._low_warned = False
        elif reading.percent <= low and not self._low_warned:
            self._low_warned = True
            self.stats.low_battery_warnings += 1
            log.warning("battery low: %d %% (%d mV)", reading.percent, reading.millivolts)
            self._queue(m.PATTERN_LOW_BATTERY)
