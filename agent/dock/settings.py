"""The `[dock]` section of a device's config: the agent is a drone dock (docs/docks.md).

    [dock]
    mavlink = "udp://0.0.0.0:14550"   # where the drone's telemetry arrives (agent/dock/mavurl.py)
    drone_address = "192.168.4.2:14555"  # where mission uploads and commands go
    drone = "D01"                     # the drone's id: every aerial check-in names it
    home = [52.52, 13.405, 35.0]      # the pad: lat, lon, metres above sea level
    wind_limit_mps = 10.0             # optional
    wind = 4.0                        # optional: a fixed wind (m/s), or a path to a file
                                      # holding the latest reading (read at every tick)
    wind_max_age_s = 300.0            # optional: an older wind file is no reading at all
    reserve_pct = 20.0                # optional
    plan = "aerial.geojson"           # optional: the aerial plan (docs/plans.md); without it
                                      # the config's top-level `plan`

`load_config` (agent/config.py) calls `parse_dock_section`; `read_wind` is called by the
running dock (agent/dock/run.py) at every tick. This module imports no driver (the URL is
checked by agent/dock/mavurl.py, not by the MAVLink decoder or source), so decoding a
config loads neither pymavlink nor a socket; the drivers import their settings from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from agent.dock.mavurl import MavlinkError, parse_mavlink_url
from agent.errors import ConfigError

__all__ = ["DockSection", "parse_dock_section", "read_wind"]

_KEYS = {
    "mavlink",
    "drone_address",
    "drone",
    "home",
    "wind_limit_mps",
    "wind",
    "wind_max_age_s",
    "reserve_pct",
    "plan",
}


@dataclass(frozen=True, slots=True)
class DockSection:
    mavlink: str
    drone_address: tuple[str, int]
    drone: str
    home: tuple[float, float, float]
    plan_path: Path | None  # None: the config's top-level plan
    wind_limit_mps: float = 10.0
    wind_mps: float | None = None
    wind_path: Path | None = None
    reserve_pct: float = 20.0
    wind_max_age_s: float = 300.0


def _number(table: dict[str, object], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: {key!r} must be a non-negative number, got {value!r}")
    return float(value)


def _address(value: object, where: str) -> tuple[str, int]:
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return host.strip("[]"), int(port)
    raise ConfigError(f"{where}: 'drone_address' must be \"host:port\", got {value!r}")


def _home(home: object, where: str) -> tuple[float, float, float]:
    if (
        not isinstance(home, list)
        or len(home) != 3
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in home)
        or not (-90 <= home[0] <= 90 and -180 <= home[1] <= 180)
    ):
        raise ConfigError(f"{where}: 'home' must be [lat, lon, altitude m], got {home!r}")
    return float(home[0]), float(home[1]), float(home[2])


def parse_dock_section(raw: object, base: Path, where: str) -> DockSection | None:
    if raw is None:
        return None
    w = f"{where} [dock]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [dock] must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{w}: unknown key(s) {', '.join(map(repr, unknown))}")
    for key in ("mavlink", "drone_address", "drone", "home"):
        if key not in raw:
            raise ConfigError(f"{w}: missing key {key!r}")
    mavlink, drone, plan = raw["mavlink"], raw["drone"], raw.get("plan")
    if not isinstance(mavlink, str):
        raise ConfigError(f"{w}: 'mavlink' must be a URL string")
    try:
        parse_mavlink_url(mavlink)
    except MavlinkError as exc:
        raise ConfigError(f"{w}: 'mavlink': {exc}") from exc
    if not isinstance(drone, str) or not drone:
        raise ConfigError(f"{w}: 'drone' must be the drone's id")
    if plan is not None and not isinstance(plan, str):
        raise ConfigError(f"{w}: 'plan' must be a path")
    home = _home(raw["home"], w)
    wind = raw.get("wind")
    wind_mps: float | None = None
    wind_path: Path | None = None
    if isinstance(wind, str):
        wind_path = base / wind
    elif wind is not None:
        wind_mps = _number(raw, "wind", 0.0, w)
    reserve = _number(raw, "reserve_pct", 20.0, w)
    if reserve >= 100:
        raise ConfigError(f"{w}: 'reserve_pct' must be below 100")
    return DockSection(
        mavlink=mavlink,
        drone_address=_address(raw["drone_address"], w),
        drone=drone,
        home=home,
        plan_path=None if plan is None else base / plan,
        wind_limit_mps=_number(raw, "wind_limit_mps", 10.0, w),
        wind_mps=wind_mps,
        wind_path=wind_path,
        reserve_pct=reserve,
        wind_max_age_s=_max_age(raw, w),
    )


def _max_age(raw: dict[str, object], where: str) -> float:
    age = _number(raw, "wind_max_age_s", 300.0, where)
    if age == 0:
        raise ConfigError(f"{where}: 'wind_max_age_s' must be above 0")
    return age


def read_wind(section: DockSection, now_s: float | None = None) -> float | None:
    """The wind now: the fixed value, or the file's number. None: no reading — the file is
    unreadable, or older than `wind_max_age_s` by its modification time against the system
    clock (`now_s`, default now): a sensor that stopped writing must not keep a calm day."""
    if section.wind_path is None:
        return section.wind_mps
    try:
        path = section.wind_path
        age = (time.time() if now_s is None else now_s) - path.stat().st_mtime
        if age > section.wind_max_age_s:
            return None
        value = float(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return value if value >= 0 else None
