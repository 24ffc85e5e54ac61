"""Argument types of `picket bridge …`: what a value typed on the command line may be,
refused by argparse (exit 2, naming the flag) before a port is opened. Kept apart from
picket/bridgecmd.py as picket/provisionargs.py is from provisioncmd.py: the rules read as
one list, the commands as another. Counts are bounded, so that a typed 10**23 is refused
rather than started.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from picket.argtypes import positive_int

__all__ = ["MAX_FRAMES", "MAX_PINGS", "Version", "board", "count", "rate", "seconds", "version"]

Version = tuple[int, int, int]

MAX_PINGS, MAX_FRAMES = 100_000, 10_000_000


def count(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if (value := positive_int(text)) > limit:
            raise argparse.ArgumentTypeError(f"{value} is more than {limit:,}")
        return value

    return parse


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 0.1:
        raise argparse.ArgumentTypeError(f"bit error rate {text} must be in [0, 0.1)")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 60.0:
        raise argparse.ArgumentTypeError(f"{text} s must be above 0 and at most 60")
    return value


def version(text: str) -> Version:
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and int(p) <= 255 for p in parts):
        raise argparse.ArgumentTypeError(f"version {text!r} must be X.Y.Z, each 0-255")
    return int(parts[0]), int(parts[1]), int(parts[2])


def board(text: str) -> str:
    if not text or not text.isascii() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"board {text!r} must be a printable ASCII name")
    return text
