"""What every `picket provision …` and `picket agent enroll | install` handler shares: its
two errors, and the steps that turn a file, a fleet folder or a label into one of them.

The commands read files a person named and write files a person will carry to another
machine, so a refusal must name the file and the reason, and it must come before any work:
`check_writable` refuses an output path before keys are made, `checked_plan` runs the
agent's own plan checks before a device is given a plan it would refuse. A step raises
`Refused` (bad input, exit 2) or `Failed` (the disk refused a write, exit 1); the handler,
wrapped in picket.errors.cli_handler, prints it as `picket: error: …`.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.checkin.planfile import check_file
from contract.keyfiles import write_public
from picket.errors import CliFailure, CliInputError
from provisioning.fleet import Fleet
from provisioning.label import LabelError, write_label
from provisioning.registry import RegistryError

__all__ = [
    "Failed",
    "Refused",
    "check_label_folder",
    "check_writable",
    "checked_plan",
    "now_ms",
    "open_fleet",
    "plural",
    "read_input",
    "utc",
    "write_device_label",
    "write_output",
]


class Refused(CliInputError):
    """Input refused: printed as `picket: error: …`, exit code 2."""


class Failed(CliFailure):
    """The work failed (a write to disk): printed as `picket: error: …`, exit code 1."""


def now_ms() -> int:
    return int(time.time() * 1000)


def utc(ms: int | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime(fmt)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@contextmanager
def open_fleet(folder: Path) -> Iterator[Fleet]:
    try:
        fleet = Fleet(folder)
    except RegistryError as exc:
        raise Refused(str(exc)) from exc
    try:
        yield fleet
    finally:
        fleet.close()


def read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise Refused(f"no {what} at {path}") from None
    except OSError as exc:
        raise Refused(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def check_writable(path: Path) -> None:
    """Refuse an output file whose folder is missing before any work is done."""
    if not path.parent.is_dir():
        raise Refused(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise Refused(f"cannot write {path}: it is a folder")
    if path.exists() and not path.is_file():  # /dev/null: an atomic write would replace it
        raise Refused(f"cannot write {path}: it is not a regular file (name a file to write)")


def check_label_folder(folder: Path | None, flag: str = "--label") -> None:
    """Refuse a --label folder that cannot be written before the device is registered: a
    label that fails afterwards leaves the device enrolled and the command failed."""
    if folder is None:
        return
    if folder.exists() and not folder.is_dir():
        raise Refused(f"{flag} {folder} is a file, not a folder: name a folder for the label")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise Refused(f"cannot write the label into {folder}: {existing} is not a writable folder")


def write_output(path: Path, data: bytes) -> None:
    try:
        write_public(path, data)
    except OSError as exc:
        raise Failed(f"writing {path} failed: {exc.strerror or exc}") from exc


def checked_plan(path: Path | None) -> bytes | None:
    """The plan file's bytes, after the agent's own checks (a device must not get a plan it
    would refuse)."""
    if path is None:
        return None
    report = check_file(path)
    if report.plan is None:
        raise Refused(f"plan {path}: " + "; ".join(report.problems))
    return read_input(path, "plan")


def write_device_label(device: str, key_fingerprint: str, out: Path) -> tuple[Path, Path]:
    try:
        return write_label(device, key_fingerprint, out, stem=device)
    except LabelError as exc:
        raise Refused(str(exc)) from exc
    except OSError as exc:
        raise Failed(f"writing the label into {out} failed: {exc.strerror or exc}") from exc
