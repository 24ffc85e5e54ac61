"""`picket sim fleet`: arguments and printing around simulators/fleetrun.py.

Exit codes as everywhere in `picket`: 0 the run ended with nothing lost or duplicated and
every outbox drained, 1 it did not (the report says what), 2 bad input (a plan folder that
is not a district, a scenario that does not parse, a shard or device count out of range).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from picket.argtypes import host_port, positive_int
from picket.report import print_report

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _devices(text: str) -> int | None:
    return None if text == "all" else positive_int(text)


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not 0 < value <= 24:
        raise argparse.ArgumentTypeError(f"{text} hours: a run is above 0 and at most 24 hours")
    return value


# simulators.fieldevents' DEFAULT_EVENTS_PER_HOUR and MAX_EVENTS_PER_HOUR (not imported:
# `picket --help` stays fast; tests/test_fleet_events.py checks they agree)
EVENTS_PER_HOUR, EVENTS_PER_HOUR_MAX = 0.4, 60.0


def events_per_hour(text: str) -> float:
    """`--events-per-hour R` of `picket demo` and `picket sim fleet`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of events") from None
    if not 0 <= value <= EVENTS_PER_HOUR_MAX:
        raise argparse.ArgumentTypeError(
            f"{text} events per member-hour: give 0 (none) to {EVENTS_PER_HOUR_MAX:g}"
        )
    return value


def add_events_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--events-per-hour",
        type=events_per_hour,
        default=EVENTS_PER_HOUR,
        metavar="R",
        help="field events each member reports per hour, most with a photo "
        f"({EVENTS_PER_HOUR:g}; 0: none)",
    )


def _shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or not 0 <= int(i) < int(n):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 0 <= I < N (e.g. 0/4)")
    return int(i), int(n)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", type=Path, required=True, help="a `picket sim district` folder")
    p.add_argument("--devices", type=_devices, default=None, help="N or all (all)")
    p.add_argument("--hours", type=_hours, default=1.0, help="length of the shift (1)")
    p.add_argument("--seed", type=int, default=5, help="walkers and faults follow it (5)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (one per core)")
    p.add_argument("--scenario", type=Path, help="TOML timeline of faults (docs/scenarios.md)")
    p.add_argument("--html", type=Path, help="also write the report as a self-contained page")
    p.add_argument("--workdir", type=Path, help="keep devices, broker and center.db here")
    p.add_argument("--shard", type=_shard, default=(0, 1), help="run slice I of N (docs/fleet.md)")
    p.add_argument(
        "--broker", type=host_port, help="a shared broker (with --shard; its center runs apart)"
    )
    p.add_argument(
        "--nmea-every",
        type=int,
        default=10,
        metavar="N",
        help="every N-th device's receiver sends NMEA text to the agent's parser; the others "
        "hand the agent the fix the parser would make (10; 1: every device, 0: none)",
    )
    p.add_argument(
        "--no-docks",
        dest="docks",
        action="store_false",
        help="leave the district's drone docks out (they fly by default, not in a shard)",
    )
    add_events_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object last")


def fleet(args: argparse.Namespace) -> int:
    from picket.progress import Progress
    from simulators.fleetreport import public
    from simulators.fleetrun import FleetError, FleetOptions, run_fleet
    from simulators.roster import RosterError
    from simulators.scenario import ScenarioError

    if args.nmea_every < 0:
        print("picket: error: --nmea-every must be 0 or more", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.broker is not None and args.workdir is None:
        print("picket: error: --broker needs --workdir (the shared fleet folder)", file=sys.stderr)
        return EXIT_BAD_INPUT
    opts = FleetOptions(
        plan_dir=args.plan,
        devices=args.devices,
        hours=args.hours,
        seed=args.seed,
        workers=args.workers or 0,
        scenario=args.scenario,
        workdir=args.workdir,
        shard=args.shard,
        broker=args.broker,
        html=args.html,
        nmea_every=args.nmea_every,
        docks=args.docks,
        events_per_hour=args.events_per_hour,
    )
    try:
        report = public(asyncio.run(run_fleet(opts, Progress())))
    except (FleetError, ScenarioError, RosterError) as exc:
        print(f"picket: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_report(report, args.json)
    ok = report.get("records_lost") == 0 and report.get("records_duplicated") == 0
    ok = ok and report.get("attachments_lost", 0) == 0
    return EXIT_OK if ok and report.get("drained") else EXIT_FAILED
