"""The command replay floor, kept where losing the outbox cannot reset it.

The outbox's `commands` table says which command numbers were answered (docs/commands.md),
but a damaged outbox is moved aside and a deleted one is gone: a command still valid and
still retained at the broker would then be carried out a second time. So the highest
number answered is also written, after each answer's commit, to a small file next to the
device's keys (`command.floor`: JSON, temp file, fsync, rename, fsync of the folder), and
the floor is the higher of the two. Written after the commit, the file can only be behind
the outbox (a kill between the two), never ahead of an answer that was not stored; the
executor brings it level at start. A file that cannot be believed (not UTF-8 JSON, another
device's, not a number in 0..FLOOR_MAX) is logged and read as 0: the outbox's floor stands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agent.errors import StorageError
from agent.store.recovery import write_durably

log = logging.getLogger(__name__)

FLOOR_NAME = "command.floor"
FLOOR_MAX = 2**63 - 1  # what SQLite can hold; the contract bounds command numbers lower
_SIZE_MAX = 4096


def read_floor(path: Path, device: str) -> int:
    """The highest command number recorded at `path` for `device` (0: none, or unreadable)."""
    try:
        with path.open("rb") as f:
            data = f.read(_SIZE_MAX + 1)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.error("command floor %s cannot be read (%s): the outbox's floor stands", path, exc)
        return 0
    try:
        if len(data) > _SIZE_MAX:
            raise ValueError(f"over {_SIZE_MAX} bytes")
        d = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        owner, number = d["device"], d["last_command"]
        if owner != device:
            raise ValueError(f"it belongs to device {str(owner)[:80]!r}, not {device!r}")
        if type(number) is not int or not 0 <= number <= FLOOR_MAX:
            raise ValueError(f"last_command {str(number)[:40]} is not an integer in range")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        log.error("command floor %s is unreadable (%s): the outbox's floor stands", path, exc)
        return 0
    return number


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def write_floor(path: Path, device: str, number: int) -> None:
    """Atomically replace the floor at `path`: temp file, fsync, rename, fsync the folder."""
    data = json.dumps({"device": device, "last_command": number}) + "\n"
    try:
        write_durably(path, data)
    except OSError as exc:
        raise StorageError(f"command floor {path}: cannot write: {exc}") from exc
