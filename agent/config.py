"""The device's one TOML file, decoded once into a typed value and passed explicitly.

Secrets stay in files referenced by path (the signing key), never in the config itself.
Relative paths are resolved against the config file's folder, so a provisioned device
directory can be moved as a whole. Every problem is reported with the key that caused it,
and unknown keys are refused (a typo must not silently fall back to a default). A room's
own section is parsed by that room's settings module (agent/radio/settings.py,
agent/dock/settings.py), which imports no driver, so decoding a config opens nothing.

    device = "h0001"
    key = "device.key"            # Ed25519 private key, PEM (PKCS#8)
    outbox = "outbox.db"          # default
    plan = "plan.geojson"         # optional: patrol points (docs/plans.md)
    team = "T01"                  # optional: the device's team, for team assignments
    center_key = "center.pub"     # optional: the center's Ed25519 public key (PEM, or the
                                  # raw 32 bytes); with it the agent accepts signed commands
                                  # (docs/commands.md), without it it subscribes to none

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca = "ca.crt"                 # optional: with it the link is TLS, the broker must present
                                  # a certificate from this CA (docs/provisioning.md)
    cert = "device.crt"           # optional: the device's client certificate
    cert_key = "device.key"       # its EC private key (0600)

    [gnss]                        # optional section
    source = "gpsd://127.0.0.1:2947"   # default; see docs/gnss.md for serial/tcp/file
    not_before = 2026-01-01       # default: a GNSS date before this is week-rollover suspect

    [bridge]                      # optional: the radio co-processor (agent/radio/settings.py)
    [dock]                        # optional: this device is a drone dock (agent/dock/settings.py,
                                  # docs/docks.md); it needs `center_key`, and reads GNSS only
                                  # when [gnss] is given (the dock's own receiver: time)
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.dock.settings import DockSection, parse_dock_section
from agent.errors import ConfigError
from agent.radio.settings import BridgeConfig, parse_bridge_section
from contract.keyfiles import too_open
from contract.protocol import DEVICE_ID
from contract.tls import BrokerTls

__all__ = [
    "DEFAULT_GNSS",
    "DEFAULT_NOT_BEFORE",
    "AgentConfig",
    "ConfigError",  # defined in agent.errors (the section parsers raise it too)
    "load_config",
    "read_center_key",
]

DEFAULT_GNSS = "gpsd://127.0.0.1:2947"
# No GNSS date before this can be right for this software: it was released after it.
DEFAULT_NOT_BEFORE = dt.date(2026, 1, 1)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    device: str
    key_path: Path
    outbox_path: Path
    broker_host: str
    broker_port: int
    plan_path: Path | None = None
    team: str | None = None
    gnss_source: str = DEFAULT_GNSS
    not_before: dt.date = DEFAULT_NOT_BEFORE
    center_key_path: Path | None = None
    tls: BrokerTls | None = None
    bridge: BridgeConfig | None = None
    dock: DockSection | None = None
    gnss_given: bool = True  # a [gnss] section is in the file (a dock reads GNSS only then)

    def load_center_key(self) -> Ed25519PublicKey | None:
        """The key that signs commands (None: no `center_key`, commands are not accepted)."""
        path = self.center_key_path
        return None if path is None else read_center_key(path)

    def load_key(self) -> Ed25519PrivateKey:
        """Read the signing key once; refuse it if anyone but its owner could read it."""
        try:
            problem = too_open(self.key_path, "signing key")
            if problem is not None:
                raise ConfigError(problem)
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"signing key {self.key_path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {self.key_path}: not an Ed25519 private key")
        return key


def read_center_key(path: Path) -> Ed25519PublicKey:
    """The center's Ed25519 public key: PEM, or the raw 32 bytes."""
    try:
        data = path.read_bytes()
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"center key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"center key {path}: not an Ed25519 public key")
    return key


def _tls(broker: dict[str, object], base: Path, where: str) -> BrokerTls | None:
    paths: dict[str, Path] = {}
    for name in ("ca", "cert", "cert_key"):
        value = broker.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name!r} must be a path")
        paths[name] = base / value
    if not paths:
        return None
    if "ca" not in paths:
        raise ConfigError(f"{where}: 'cert' needs 'ca' (the CA that signed the broker)")
    if ("cert" in paths) != ("cert_key" in paths):
        raise ConfigError(f"{where}: 'cert' and 'cert_key' go together")
    key = paths.get("cert_key")
    if key is not None:
        try:
            problem = too_open(key, "TLS key")
        except OSError as exc:
            raise ConfigError(f"{where}: 'cert_key' {key}: {exc}") from exc
        if problem is not None:
            raise ConfigError(problem)
    return BrokerTls(paths["ca"], paths.get("cert"), key)


def _get(table: dict[str, object], key: str, kind: type, where: str) -> object:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _only(table: dict[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _dock(doc: dict[str, object], base: Path, where: str) -> DockSection | None:
    dock = parse_dock_section(doc.get("dock"), base, where)
    if dock is None:
        return None
    if doc.get("center_key") is None:
        raise ConfigError(
            f"{where} [dock]: a dock flies only what the center signs: set 'center_key'"
        )
    if dock.plan_path is None and doc.get("plan") is None:
        raise ConfigError(f"{where} [dock]: no aerial plan: set 'plan' here or at the top")
    if dock.plan_path is not None and doc.get("plan") is not None:
        raise ConfigError(f"{where}: 'plan' is given twice (at the top and in [dock]): keep one")
    return dock


def _plan_path(base: Path, plan: str | None, dock: DockSection | None) -> Path | None:
    """The plan the agent runs: the top-level one, or a dock's aerial plan."""
    if plan is not None:
        return base / plan
    return None if dock is None else dock.plan_path


def load_config(path: Path) -> AgentConfig:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    where = str(path)
    base = path.parent
    allowed = {"device", "key", "outbox", "plan", "team", "center_key", "broker", "gnss"}
    allowed |= {"bridge", "dock"}
    _only(doc, allowed, where)
    device = str(_get(doc, "device", str, where))
    if not DEVICE_ID.fullmatch(device):
        raise ConfigError(f"{where}: 'device' {device!r} is not a valid device id")
    broker = _get(doc, "broker", dict, where)
    assert isinstance(broker, dict)
    _only(broker, {"host", "port", "ca", "cert", "cert_key"}, f"{where} [broker]")
    port = _get(broker, "port", int, f"{where} [broker]")
    assert isinstance(port, int)
    if not 0 < port < 65536:
        raise ConfigError(f"{where} [broker]: 'port' {port} is out of range")
    gnss = doc.get("gnss", {})
    if not isinstance(gnss, dict):
        raise ConfigError(f"{where}: [gnss] must be a table")
    _only(gnss, {"source", "not_before"}, f"{where} [gnss]")
    source = gnss.get("source", DEFAULT_GNSS)
    if not isinstance(source, str):
        raise ConfigError(f"{where} [gnss]: 'source' must be a URL string")
    not_before = gnss.get("not_before", DEFAULT_NOT_BEFORE)
    if isinstance(not_before, dt.datetime) or not isinstance(not_before, dt.date):
        raise ConfigError(f"{where} [gnss]: 'not_before' must be a date like 2026-01-01")
    team = doc.get("team")
    if team is not None and not isinstance(team, str):
        raise ConfigError(f"{where}: 'team' must be text")
    plan = doc.get("plan")
    if plan is not None and not isinstance(plan, str):
        raise ConfigError(f"{where}: 'plan' must be a path")
    center_key = doc.get("center_key")
    if center_key is not None and not isinstance(center_key, str):
        raise ConfigError(f"{where}: 'center_key' must be a path")
    outbox = doc.get("outbox", "outbox.db")
    if not isinstance(outbox, str):
        raise ConfigError(f"{where}: 'outbox' must be a path")
    dock = _dock(doc, base, where)
    return AgentConfig(
        device=device,
        key_path=base / str(_get(doc, "key", str, where)),
        outbox_path=base / outbox,
        broker_host=str(_get(broker, "host", str, f"{where} [broker]")),
        broker_port=port,
        plan_path=_plan_path(base, plan, dock),
        team=team,
        gnss_source=source,
        not_before=not_before,
        center_key_path=None if center_key is None else base / center_key,
        tls=_tls(broker, base, f"{where} [broker]"),
        bridge=parse_bridge_section(doc.get("bridge"), base, where),
        dock=dock,
        gnss_given="gnss" in doc,
    )
