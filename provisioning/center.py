"""The center's command-signing key: one Ed25519 key pair per fleet.

FLEET/center.key holds the private key (PEM, PKCS#8, mode 0600 from its first byte) and
only the center's dispatching tools read it. FLEET/center.pub holds the public key (PEM,
SubjectPublicKeyInfo, readable by `openssl pkey -pubin`); provisioning copies it into each
device folder, whose config names it (`center_key = "center.pub"`), and the agent verifies
every command with it (docs/commands.md). The agent also accepts the raw 32 bytes.

`create_center_key` is idempotent: a fleet keeps its key (devices trust exactly it), and a
missing public file is written again from the private key.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.keyfiles import too_open, write_private
from provisioning.registry import ProvisioningError

__all__ = ["center_key_path", "center_public_path", "create_center_key", "load_center_key"]


def center_key_path(fleet: Path) -> Path:
    return fleet / "center.key"


def center_public_path(fleet: Path) -> Path:
    return fleet / "center.pub"


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def create_center_key(fleet: Path) -> Path:
    """Make the fleet's center key pair unless it exists; returns the public key's path."""
    fleet.mkdir(parents=True, exist_ok=True)
    path = center_key_path(fleet)
    if path.exists():
        key = load_center_key(fleet)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            write_private(path, pem)
        except OSError as exc:
            raise ProvisioningError(f"cannot write {path}: {exc}") from exc
    public = center_public_path(fleet)
    want = _public_pem(key)
    try:
        if not public.exists() or public.read_bytes() != want:
            public.write_bytes(want)
    except OSError as exc:
        raise ProvisioningError(f"cannot write {public}: {exc}") from exc
    return public


def load_center_key(fleet: Path) -> Ed25519PrivateKey:
    """The fleet's command-signing key; refused if anyone but its owner could read it."""
    path = center_key_path(fleet)
    try:
        problem = too_open(path, "center key")
        if problem is not None:
            raise ProvisioningError(problem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ProvisioningError(
            f"no center key at {path} (make it with `picket center key --fleet {path.parent}`; "
            "a new fleet gets one from `picket provision init`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"center key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvisioningError(f"center key {path}: not an Ed25519 private key")
    return key
