"""What the host driver takes and gives: settings, the MCU's answers and events, counters.

They live apart from `Bridge` (host.py) because they are plain values with no port, task
or clock behind them: a caller, a test or the agent's config decoder builds and reads them
without opening anything. payloads.py turns a payload's bytes into them; messages.py and
docs/bridge.md say what the fields mean on the wire.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import NamedTuple

from firmware_bridge import messages as m

__all__ = [
    "DEFAULT_BAUD",
    "NAMES",
    "RESET_CAUSES",
    "BatteryReading",
    "BootEvent",
    "BridgeOptions",
    "BridgeStats",
    "Event",
    "LinkStatus",
    "LogEvent",
    "McuInfo",
    "McuStatus",
    "RadioConfig",
    "RadioRx",
    "SosEvent",
    "UpdateResult",
    "Version",
    "parse_port",
    "version_text",
]

Version = tuple[int, int, int]

NAMES = {
    m.HELLO: "HELLO",
    m.PING: "PING",
    m.RADIO_CONFIG: "RADIO_CONFIG",
    m.RADIO_SEND: "RADIO_SEND",
    m.FEEDBACK: "FEEDBACK",
    m.BATTERY: "BATTERY",
    m.FW_BEGIN: "FW_BEGIN",
    m.FW_CHUNK: "FW_CHUNK",
    m.FW_COMMIT: "FW_COMMIT",
    m.STATUS: "STATUS",
    m.BOOT: "BOOT",
    m.RADIO_RX: "RADIO_RX",
    m.SOS: "SOS",
    m.LOG: "LOG",
}
RESET_CAUSES = {
    m.RESET_POWER_ON: "power-on",
    m.RESET_WATCHDOG: "watchdog",
    m.RESET_SOFT: "soft reset",
    m.RESET_ROLLBACK: "rollback",
}
DEFAULT_BAUD = 115200


def version_text(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def parse_port(port: str) -> tuple[str, int]:
    """ "/dev/ttyACM0" or "serial:///dev/ttyACM0?baud=115200" → (path, baud or 0)."""
    if "://" not in port:
        return port, 0
    url = urllib.parse.urlsplit(port)
    if url.scheme != "serial" or url.netloc or not url.path:
        raise ValueError(f"{port!r}: expected a device path or serial:///dev/…?baud=N")
    query = urllib.parse.parse_qs(url.query)
    baud = query.pop("baud", ["0"])[-1]
    if query or not baud.isdigit():
        raise ValueError(f"{port!r}: the only parameter is baud=N")
    return urllib.parse.unquote(url.path), int(baud)


# --- what the driver is given ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RadioConfig:
    """RADIO_CONFIG's fields; the defaults are the firmware's own start-up settings."""

    freq_hz: int = 470_300_000
    sf: int = 9
    bw_hz: int = 125_000
    cr: int = 5  # 5-8 for 4/5-4/8
    power_dbm: int = 14
    preamble: int = 8
    sync: int = 0x12

    def payload(self) -> bytes:
        return m.pack(
            m.RADIO_CONFIG_FMT,
            self.freq_hz,
            self.sf,
            self.bw_hz,
            self.cr,
            self.power_dbm,
            self.preamble,
            self.sync,
        )


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    baud: int = DEFAULT_BAUD
    timeout_s: float = 0.5  # one attempt
    retries: int = 3  # attempts after the first
    heartbeat_s: float = 5.0
    ready_wait_s: float = 5.0  # how long a request waits for the link to come (back) up
    backoff_max_s: float = 5.0
    commit_timeout_s: float = 10.0  # FW_COMMIT until the new image's BOOT
    confirm_s: float = 12.0  # the new image must not roll back within this long
    chunk: int = m.FW_CHUNK_MAX


# --- what the MCU answers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class McuInfo:
    """What HELLO (or a BOOT event) says about the MCU."""

    protocol: int
    version: Version
    boot_count: int
    reset_cause: int
    caps: int = 0

    @property
    def reset_cause_name(self) -> str:
        return RESET_CAUSES.get(self.reset_cause, f"cause {self.reset_cause}")


class BatteryReading(NamedTuple):
    millivolts: int
    percent: int
    charging: bool


@dataclass(frozen=True, slots=True)
class McuStatus:
    version: Version
    uptime_s: int
    update_pending: bool
    radio_busy: bool
    tx_budget_ms: int


@dataclass(frozen=True, slots=True)
class UpdateResult:
    previous: Version
    version: Version
    boot_count: int
    size: int
    chunks: int
    seconds: float


# --- what the MCU says unasked: events, as `on_event` receives them -------------------------


@dataclass(frozen=True, slots=True)
class BootEvent:
    info: McuInfo


@dataclass(frozen=True, slots=True)
class RadioRx:
    packet: bytes
    rssi_dbm: int
    snr_db: float


@dataclass(frozen=True, slots=True)
class SosEvent:
    presses: int
    held_ms: int


@dataclass(frozen=True, slots=True)
class LogEvent:
    level: int
    text: str


Event = BootEvent | RadioRx | SosEvent | LogEvent


# --- what the driver reports about itself ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkStatus:
    up: bool
    detail: str


@dataclass(slots=True)
class BridgeStats:
    frames_sent: int = 0
    frames_received: int = 0  # well-formed frames, responses and events
    bad_frames: int = 0  # CRC, stuffing or length wrong (the decoder's count)
    oversize: int = 0
    dropped_bytes: int = 0
    requests: int = 0
    retries: int = 0
    timeouts: int = 0  # attempts that got no answer in time
    garbled: int = 0  # attempts answered by a frame that did not decode
    stale_responses: int = 0  # answers nobody waited for (late, or duplicated by a retry)
    malformed: int = 0  # frames that decoded but made no sense (no status byte, bad event)
    events: int = 0
    resyncs: int = 0  # MCU restarts noticed (BOOT, or a new boot_count in HELLO)
    reconnects: int = 0  # port opened again after the first time
    link_ups: int = 0
    link_downs: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
