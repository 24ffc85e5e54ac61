"""`picket center status`: which devices are online, what the center holds of each.

Reads the center database alone (SQLite path or postgresql:// URL), read-only, so it runs
beside live centers: per device online or offline, last seen, records, last sequence
number, missing sequence numbers (gaps), forks and the last reported outbox depth, then
the totals. All the work is `center.status`; this module parses arguments and prints.

Exit codes as everywhere in `picket`: 0 done, 2 bad input (a database that is missing,
not a center's, or unreachable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from center.errors import CenterDbError
from center.status import DEFAULT_ONLINE_WINDOW_MS, as_json, read_status, render

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2  # as in picket.cli
MAX_WINDOW_MIN = 366 * 24 * 60


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not 0 < value <= MAX_WINDOW_MIN:
        raise argparse.ArgumentTypeError(
            f"{text} must be a number of minutes above 0 and at most {MAX_WINDOW_MIN:,} (a year)"
        )
    return value


def add_parser(center: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `status` to the `center` command's sub-commands."""
    st = center.add_parser("status", help="devices online, last seen, gaps, forks, outbox depth")
    st.add_argument(
        "--db", required=True, help="center database: a SQLite path or a postgresql:// URL"
    )
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.add_argument(
        "--online-window",
        type=_minutes,
        default=DEFAULT_ONLINE_WINDOW_MS / 60_000,
        metavar="MINUTES",
        help="a device without a state message is online if heard from within this (10)",
    )


def status(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    now_ms: int | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        found = read_status(args.db, now, round(args.online_window * 60_000))
    except CenterDbError as exc:
        err.write(f"picket: error: {exc}\n")
        return EXIT_BAD_INPUT
    if args.json:
        out.write(json.dumps(as_json(found), sort_keys=True) + "\n")
    else:
        out.write(render(found))
    return EXIT_OK
