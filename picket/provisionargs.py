"""Argument types of `picket provision …` and `picket agent enroll`: what a value typed on
the command line may be, refused by argparse (exit 2, naming the flag) before any file is
touched.

Hosts, names and ids end up in config.toml, certificates and the registry, so they are held
to the same characters the steps below accept; a device id is checked by the registry's own
rule (provisioning.fleet.check_device_id), so the CLI cannot accept an id the fleet would
refuse. Kept apart from picket/provisioncmd.py so that module reads as the list of commands
and their flags, and these rules read as one list of what is accepted.
"""

from __future__ import annotations

import argparse
import re

from provisioning.fleet import DEFAULT_BROKER_PORT, check_device_id
from provisioning.registry import RegistryError

__all__ = [
    "DEFAULT_BROKER",
    "batch_count",
    "device_id",
    "fact",
    "fleet_fingerprint",
    "host",
    "host_port",
    "ids",
    "name",
    "port",
    "width",
]

DEFAULT_BROKER = ("127.0.0.1", DEFAULT_BROKER_PORT)  # `provision init` without --broker
MAX_FACT = 200  # contract/enrollment.py refuses longer fact values
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_\[\]-]{0,252}")
FLEET_FP = re.compile(r"[0-9a-f]{32}")
MAX_BATCH = 100_000  # devices in one `provision batch`
MAX_WIDTH = 12  # digits of a batch's numbers (ids are at most 64 characters)


def host(text: str) -> str:
    # Hosts end up in config.toml and certificates: letters, digits and . : _ - [ ] only.
    if not HOST.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or address")
    return text


def host_port(text: str) -> tuple[str, int]:
    where, sep, number = text.rpartition(":")
    if not sep or not where or not number.isdigit() or not 0 < int(number) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8883)")
    return host(where), int(number)


def port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _whole(text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high:,}")
    return int(text)


def batch_count(text: str) -> int:
    return _whole(text, 1, MAX_BATCH)


def width(text: str) -> int:
    return _whole(text, 1, MAX_WIDTH)


def device_id(text: str) -> str:
    try:
        check_device_id(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def name(text: str) -> str:
    """A team's or fleet's name: written into config.toml and certificates, so id-like."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return text


def ids(text: str) -> list[str]:
    named = [t.strip() for t in text.split(",") if t.strip()]
    if not named:
        raise argparse.ArgumentTypeError("name at least one id, separated by commas")
    for device in named:
        device_id(device)
    if len(set(named)) != len(named):
        dup = next(i for i in named if named.count(i) > 1)
        raise argparse.ArgumentTypeError(f"id {dup!r} is named twice")
    return named


def fact(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (for example site=depot-3)")
    if len(key) > MAX_FACT or len(value) > MAX_FACT:
        raise argparse.ArgumentTypeError(f"fact {key[:40]!r}: at most {MAX_FACT} characters")
    return key, value


def fleet_fingerprint(text: str) -> str:
    """As `provision init` prints it; spaces, case and dashes are forgiven when typed."""
    digits = re.sub(r"[\s-]", "", text).lower()
    if not FLEET_FP.fullmatch(digits):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fleet fingerprint (32 hex digits, as `picket provision init` "
            "prints it: xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx)"
        )
    return "-".join(digits[i : i + 4] for i in range(0, 32, 4))
