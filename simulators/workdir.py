"""Where a simulated run keeps its files (the demo, `picket sim dock`, the fleet): the folder
the user named, made if missing and refused if an earlier run's center is in it (its records
would mix with this run's) or if it is a file, or a temporary folder that goes with the run."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path


def run_folder(
    stack: contextlib.ExitStack,
    wanted: Path | None,
    prefix: str,
    error: type[Exception],
    *,
    temp_parent: str | None = None,
    reuse: bool = False,
) -> Path:
    """`wanted`, or a temporary folder (in `temp_parent`) removed when `stack` closes;
    `error` is raised for a folder that already holds a run, unless `reuse`."""
    if wanted is None:
        made = tempfile.TemporaryDirectory(prefix=prefix, dir=temp_parent)
        return Path(stack.enter_context(made))
    try:
        str(wanted).encode("utf-8")
    except UnicodeEncodeError:
        raise error(
            f"{wanted!r} is not UTF-8: the broker's configuration cannot name it; "
            "use a folder whose name is UTF-8"
        ) from None
    if wanted.exists() and not wanted.is_dir():
        raise error(f"{wanted} is not a folder: name a new or empty folder for the run's files")
    try:
        wanted.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot make folder {wanted}: {exc.strerror or exc}") from exc
    if (wanted / "center.db").exists() and not reuse:
        raise error(f"{wanted} already holds a run (center.db); use a new folder")
    return wanted
