"""The one rule for private key files: only their owner may read them.

Every reader of a private key (the device's signing and TLS keys, the fleet's CA and center
keys) asks `too_open` before loading it, so the refusal reads the same everywhere."""

from __future__ import annotations

import stat
from pathlib import Path


def too_open(path: Path, what: str) -> str | None:
    """Why `path` must not be used (anyone but its owner could read it), or None.
    `what` names the key in the message ("signing key", "CA key"). OSError if it cannot
    be looked at."""
    mode = path.stat().st_mode
    if not mode & 0o077:
        return None
    return (
        f"{what} {path}: permissions {stat.S_IMODE(mode):04o} are too open; only its owner "
        f"may read it (chmod 600 {path})"
    )
