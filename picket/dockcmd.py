"""`picket sim dock`: arguments and printing around simulators/docksim.py.

Kept apart from picket/simcmd.py (which lists it in its COMMANDS table) so that the group
module stays a table; the simulator is imported only when the command runs, as every
sub-command does, to keep `picket --help` fast. Exit codes as everywhere in `picket`: 0 the
run ended with every expected aerial check-in recorded, nothing lost or duplicated and the
outbox drained; 1 it did not (the report says what); 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from picket.argtypes import positive_int
from picket.report import print_report

__all__ = ["add_arguments", "dock"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not 0 < value <= 24 * 60:
        raise argparse.ArgumentTypeError(f"{text} minutes: a run is above 0 and at most a day")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--minutes", type=_minutes, default=30.0, help="commands are sent this long (30)"
    )
    p.add_argument("--seed", type=int, default=3, help="district, wind and commands follow it (3)")
    p.add_argument("--dock", type=positive_int, default=1, help="which dock of the district (1)")
    p.add_argument(
        "--every", type=positive_int, default=240, metavar="S",
        help="the center sends a FLY_LINE every S simulated seconds, from minute 1 (240)",
    )  # fmt: skip
    p.add_argument("--workdir", type=Path, help="keep the fleet, broker, dock and center.db here")
    p.add_argument("--json", action="store_true", help="print one JSON object last")


def dock(args: argparse.Namespace) -> int:
    from picket.progress import Progress
    from simulators.docksim import (
        DockSimError,
        DockSimOptions,
        DockSimOptionsError,
        run_dock_sim,
    )

    opts = DockSimOptions(
        minutes=args.minutes,
        seed=args.seed,
        dock=args.dock,
        every_s=args.every,
        workdir=args.workdir,
    )
    try:
        report = asyncio.run(run_dock_sim(opts, Progress()))
    except DockSimOptionsError as exc:
        print(f"picket: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DockSimError as exc:
        print(f"picket: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print_report(report, args.json)
    ok = (
        report.get("records_lost") == 0
        and report.get("records_duplicated") == 0
        and report.get("aerial_checkins_recorded") == report.get("aerial_checkins_expected")
        and report.get("aerial_checkins_matched") == report.get("aerial_checkins_expected")
        and report.get("drained") is True
    )
    return EXIT_OK if ok else EXIT_FAILED
