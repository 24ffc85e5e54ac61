"""The MCU's payloads read into values (values.py): pure functions, bytes in, a value out.

messages.py holds the layouts and is shared with the MicroPython firmware, so it stays
free of dataclasses; the host's reading of those layouts into typed values lives here,
apart from the driver, so it can be tested on bytes alone. A payload of the wrong length
raises `ValueError` (messages.unpack); a field of an unexpected type `BridgeError`; an
event that makes no sense `ValueError`, `struct.error` or `UnicodeDecodeError`, which the
driver counts as malformed and drops.
"""

from __future__ import annotations

import struct

from firmware_bridge import messages as m
from firmware_bridge.errors import BridgeError
from firmware_bridge.values import (
    BatteryReading,
    BootEvent,
    Event,
    LogEvent,
    McuInfo,
    McuStatus,
    RadioRx,
    SosEvent,
)

__all__ = ["battery_reading", "hello_info", "ints", "mcu_status", "parse_event", "time_on_air"]


def ints(values: tuple[object, ...]) -> tuple[int, ...]:
    """`values` as ints; BridgeError if any is not one."""
    out = tuple(v for v in values if isinstance(v, int))
    if len(out) != len(values):
        raise BridgeError("unexpected field types")
    return out


def hello_info(body: bytes) -> McuInfo:
    """HELLO's answer after the status byte (its protocol is not checked here)."""
    proto, a, b, c, boot, cause, caps = ints(m.unpack(m.HELLO_RESPONSE, body))
    return McuInfo(proto, (a, b, c), boot, cause, caps)


def time_on_air(body: bytes) -> int:
    """RADIO_SEND's answer: the packet's time on air in ms."""
    (toa,) = ints(m.unpack("<I", body))
    return toa


def battery_reading(body: bytes) -> BatteryReading:
    mv, pct, charging = ints(m.unpack(m.BATTERY_RESPONSE, body))
    return BatteryReading(mv, pct, bool(charging))


def mcu_status(body: bytes) -> McuStatus:
    a, b, c, uptime, pending, busy, budget = ints(m.unpack(m.STATUS_RESPONSE, body))
    return McuStatus((a, b, c), uptime, bool(pending), bool(busy), budget)


def parse_event(etype: int, payload: bytes) -> Event:
    """An event frame's type and payload → the event `on_event` receives."""
    if etype == m.BOOT:
        proto, a, b, c, boot, cause = ints(m.unpack(m.BOOT_EVENT, payload))
        return BootEvent(McuInfo(proto, (a, b, c), boot, cause))
    if etype == m.RADIO_RX:
        head = struct.calcsize(m.RX_HEAD)
        rssi, snr_q = ints(m.unpack(m.RX_HEAD, payload[:head]))
        return RadioRx(payload[head:], rssi, snr_q / 4)
    if etype == m.SOS:
        presses, held = ints(m.unpack(m.SOS_EVENT, payload))
        return SosEvent(presses, held)
    if etype == m.LOG:
        if not payload:
            raise ValueError("empty LOG event")
        return LogEvent(payload[0], payload[1:].decode("utf-8", "replace"))
    raise ValueError(f"unknown event type {etype:#x}")
