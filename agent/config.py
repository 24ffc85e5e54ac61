"""The device's one TOML file, decoded once into a typed value and passed explicitly.

Secrets stay in files referenced by path (the signing key), never in the config itself.
Relative paths are resolved against the config file's folder, so a provisioned device
directory can be moved as a whole. Every problem is reported with the key that caused it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import LocalError
from agent.protocol import DEVICE_ID


class ConfigError(LocalError):
    pass


@dataclass(frozen=True, slots=True)
class AgentConfig:
    device: str
    key_path: Path
    outbox_path: Path
    broker_host: str
    broker_port: int

    def load_key(self) -> Ed25519PrivateKey:
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"signing key {self.key_path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {self.key_path}: not an Ed25519 private key")
        return key


def _get(table: dict[str, object], key: str, kind: type, where: str) -> object:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def load_config(path: Path) -> AgentConfig:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    where = str(path)
    base = path.parent
    device = str(_get(doc, "device", str, where))
    if not DEVICE_ID.fullmatch(device):
        raise ConfigError(f"{where}: 'device' {device!r} is not a valid device id")
    broker = _get(doc, "broker", dict, where)
    assert isinstance(broker, dict)
    port = int(_get(broker, "port", int, f"{where} [broker]"))  # type: ignore[call-overload]
    if not 0 < port < 65536:
        raise ConfigError(f"{where} [broker]: 'port' {port} is out of range")
    return AgentConfig(
        device=device,
        key_path=base / str(_get(doc, "key", str, where)),
        outbox_path=base / str(doc.get("outbox", "outbox.db")),
        broker_host=str(_get(broker, "host", str, f"{where} [broker]")),
        broker_port=port,
    )
