"""Key files, written and read the same way by the device and the technician's tools.

Only their owner may read private key files: every reader of one (the device's signing and TLS
keys, the fleet's CA and center keys) asks `too_open` before loading it, so the refusal reads
the same everywhere; `write_private` creates them 0600 from the first byte. Both writers
replace the file atomically after an fsync, so a power cut leaves the old key or the new one."""

from __future__ import annotations

import errno
import os
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


def check_replaceable(path: Path) -> None:
    """OSError unless `path` is absent or a regular file: an atomic write replaces what is
    there, and a device (/dev/null), a folder or a socket must never be replaced by a file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise OSError(errno.EEXIST, "exists and is not a regular file; name a new file", str(path))


def write_private(path: Path, data: bytes) -> None:
    """Write a secret: mode 0600 from creation, replacing `path` atomically."""
    check_replaceable(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (certificate, CRL, bundle), replacing `path` atomically."""
    check_replaceable(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
