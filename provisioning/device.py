"""Minimal provisioning: a key pair per device, a config file, an entry in the registry.

The spine generates the key here on the technician's side; enrollment where the key is
generated on the device itself replaces this later (docs/provisioning.md). The private key
is written with mode 0600 before any byte of it is, so it is never readable by others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import DEVICE_ID
from provisioning.registry import Registry, RegistryError


class ProvisioningError(RegistryError):
    pass


@dataclass(frozen=True, slots=True)
class DeviceFiles:
    device: str
    directory: Path
    config: Path
    key: Path


def registry_path(fleet: Path) -> Path:
    return fleet / "registry.db"


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def provision_device(
    fleet: Path,
    device: str,
    out: Path,
    *,
    broker_host: str,
    broker_port: int,
    now_ms: int,
    center_pub: Path | None = None,
) -> DeviceFiles:
    """`center_pub`: the center's public key (provisioning/center.py), copied into the device
    folder and named in its config, so that the agent accepts the center's commands."""
    if not DEVICE_ID.fullmatch(device):
        raise ProvisioningError(
            f"device id {device!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    fleet.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    key_path = out / "device.key"
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    commands = ""
    if center_pub is not None:
        try:
            (out / "center.pub").write_bytes(center_pub.read_bytes())
        except OSError as exc:
            raise ProvisioningError(f"cannot copy the center key {center_pub}: {exc}") from exc
        commands = 'center_key = "center.pub"\n'
    config = out / "config.toml"
    config.write_text(
        f'device = "{device}"\nkey = "device.key"\noutbox = "outbox.db"\n{commands}\n'
        f'[broker]\nhost = "{broker_host}"\nport = {broker_port}\n',
        encoding="utf-8",
    )
    registry = Registry(registry_path(fleet))
    try:
        registry.add(device, public, now_ms)
    finally:
        registry.close()
    return DeviceFiles(device, out, config, key_path)
