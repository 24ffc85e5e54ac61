"""Argument types shared by the `picket` sub-commands: one wording for every refusal."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def tls_dir(text: str) -> Path:
    """A folder from `picket provision center`: ca.crt, center.crt and center.key."""
    folder = Path(text)
    missing = [n for n in ("ca.crt", "center.crt", "center.key") if not (folder / n).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(
            f"{text} lacks {', '.join(missing)} (make it with `picket provision center`)"
        )
    return folder


def center_tls(folder: Path | None) -> ssl.SSLContext | None:
    """The center's client TLS context from a `tls_dir` folder (None: plain MQTT)."""
    if folder is None:
        return None
    from agent.uplink import UplinkTls

    return UplinkTls(folder / "ca.crt", folder / "center.crt", folder / "center.key").context()
