"""The `[bridge]` section of a device's config: the radio MCU on a serial port.

    [bridge]                       # optional section: the radio MCU on a serial port
    port = "/dev/ttyACM0"          # or serial:///dev/serial/by-id/…?baud=115200
    baud = 115200                  # default
    heartbeat_s = 5.0              # PING when the line was idle this long (default 5)
    low_battery_pct = 20           # warn (buzzer, amber) at or below this, not charging
    battery_poll_s = 60.0          # how often the battery gauge is read
    [bridge.radio]                 # optional: LoRa settings, sent again after every MCU reset
    freq_hz = 470300000            # sf, bw_hz, cr (5-8), power_dbm, preamble, sync as well

`load_config` (agent/config.py) calls `parse_bridge_section`; the running link
(agent/radio/bridgelink.py) takes the `BridgeConfig` it returns. The section lives apart
from the link so that decoding a config does not load the link, the daemon's agent or
the records it signs: a typed value and its parser, text in, value or `ConfigError` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from contract.serialport import STANDARD_BAUDS
from firmware_bridge.values import DEFAULT_BAUD, RadioConfig, parse_port

__all__ = ["RADIO_KEYS", "BridgeConfig", "parse_bridge_section"]

RADIO_KEYS = ("freq_hz", "sf", "bw_hz", "cr", "power_dbm", "preamble", "sync")


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    port: str
    baud: int = DEFAULT_BAUD
    heartbeat_s: float = 5.0
    low_battery_pct: int = 20
    battery_poll_s: float = 60.0
    radio: RadioConfig | None = None


def parse_bridge_section(table: object, base: Path, where: str) -> BridgeConfig | None:
    """The `[bridge]` table of the config (None when absent); ConfigError when wrong.

    A relative port path is taken from the config's folder, like every other path.
    """

    if table is None:
        return None
    at = f"{where} [bridge]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [bridge] must be a table")
    allowed = {"port", "baud", "heartbeat_s", "low_battery_pct", "battery_poll_s", "radio"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(map(repr, unknown))}")
    port = table.get("port")
    if not isinstance(port, str) or not port:
        raise ConfigError(f"{at}: 'port' must be a device path like \"/dev/ttyACM0\"")
    try:
        path, url_baud = parse_port(port)
    except ValueError as exc:
        raise ConfigError(f"{at}: 'port' {exc}") from exc
    if "://" not in port and not Path(path).is_absolute():
        port = str(base / path)
    baud = _number(table, "baud", int, url_baud or DEFAULT_BAUD, at)
    if url_baud and "baud" in table and baud != url_baud:
        raise ConfigError(f"{at}: 'baud' {baud} contradicts the port's baud={url_baud}")
    if baud not in STANDARD_BAUDS:
        raise ConfigError(
            f"{at}: 'baud' {baud} is not one of {', '.join(map(str, STANDARD_BAUDS))}"
        )
    heartbeat = float(_number(table, "heartbeat_s", float, 5.0, at))
    poll = float(_number(table, "battery_poll_s", float, 60.0, at))
    low = int(_number(table, "low_battery_pct", int, 20, at))
    if not 0.5 <= heartbeat <= 3600 or not 1 <= poll <= 86_400:
        raise ConfigError(f"{at}: 'heartbeat_s' must be 0.5-3600, 'battery_poll_s' 1-86400")
    if not 0 <= low <= 100:
        raise ConfigError(f"{at}: 'low_battery_pct' must be 0-100")
    radio = _radio(table.get("radio"), at)
    return BridgeConfig(port, int(baud), heartbeat, low, poll, radio)


def _radio(table: object, at: str) -> RadioConfig | None:

    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: 'radio' must be a table [bridge.radio]")
    extra = sorted(set(table) - set(RADIO_KEYS))
    if extra:
        raise ConfigError(f"{at}.radio: unknown key(s) {', '.join(map(repr, extra))}")
    defaults = RadioConfig()
    values = {
        k: int(_number(table, k, int, getattr(defaults, k), f"{at}.radio")) for k in RADIO_KEYS
    }
    return RadioConfig(**values)


def _number(table: dict[str, object], key: str, kind: type, default: float, at: str) -> float:

    value = table.get(key, default)
    ok = isinstance(value, int | float) if kind is float else isinstance(value, int)
    if not ok or isinstance(value, bool):
        raise ConfigError(f"{at}: {key!r} must be {kind.__name__}, got {value!r}")
    assert isinstance(value, int | float)
    return value
