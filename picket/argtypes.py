"""Argument types shared by the `picket` sub-commands: one wording for every refusal."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from contract.keyfiles import too_open


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def host_port(text: str) -> tuple[str, int]:
    """A broker's address, HOST:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:1883)")
    return host, int(port)


def tls_dir(text: str) -> Path:
    """A folder from `picket provision center`: ca.crt, center.crt and center.key, the key
    readable by its owner alone (refused here, before anything starts, as contract/tls.py
    would refuse it later)."""
    folder = Path(text)
    missing = [n for n in ("ca.crt", "center.crt", "center.key") if not (folder / n).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(
            f"{text} lacks {', '.join(missing)} (make it with `picket provision center`)"
        )
    try:
        problem = too_open(folder / "center.key", "TLS key")
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"{folder / 'center.key'}: {exc.strerror or exc}"
        ) from None
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return folder


def center_tls(folder: Path | None) -> ssl.SSLContext | None:
    """The center's client TLS context from a `tls_dir` folder (None: plain MQTT)."""
    if folder is None:
        return None
    from provisioning.fleet import service_tls

    return service_tls(folder, "center")
