"""`picket sim …`: the simulators from the command line (`district`, `fleet`, `dock`).

The group is a table: each sub-command is one `SimCommand` (its name, help, how it adds its
arguments and the function that runs it), so adding `fleet` or `dock` is one entry in
`COMMANDS` and nothing else here changes; picket/cli.py calls `add_parsers(sub)` and merges
`HANDLERS` into its dispatch table. All the work is in simulators/: this module only checks
arguments, times the run and prints (a table for people, one JSON object with `--json`).
Exit codes as everywhere in `picket`: 0 done, 1 the work failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeAlias

from picket import dockcmd, fleetcmd

__all__ = ["COMMANDS", "HANDLERS", "SimCommand", "add_parsers", "district"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2  # as in picket.cli

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:  # not subscriptable at run time
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


@dataclass(frozen=True, slots=True)
class SimCommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler


def _district_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, required=True, help="the district is a function of it")
    p.add_argument("--out", type=Path, required=True, help="directory to write the files into")
    p.add_argument("--no-river", action="store_true", help="a district without the river")
    p.add_argument("--no-map", action="store_true", help="skip map.svg and map.png")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def district(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Generate the full-scale district into args.out (docs/district.md)."""
    from simulators.bigdistrict import GenerationError, generate
    from simulators.districtfiles import counts, write_district

    out = out or sys.stdout
    target: Path = args.out
    if target.exists() and not target.is_dir():
        print(f"picket: error: --out {target} exists and is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    started = time.perf_counter()
    try:
        d = generate(args.seed, river=not args.no_river)
    except GenerationError as exc:  # a generator bug for this seed, not the user's input
        print(f"picket: error: seed {args.seed}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        files = write_district(d, target)
        generated = time.perf_counter()
        if not args.no_map:
            from simulators.districtmap import write_map

            files += write_map(d, target)
    except OSError as exc:
        print(f"picket: error: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    done = time.perf_counter()
    report: dict[str, object] = {
        **counts(d),
        "seed": args.seed,
        "out": str(target),
        "files": sorted(f.name for f in files),
        "seconds": round(done - started, 3),
        "generate_seconds": round(generated - started, 3),
        "map_seconds": round(done - generated, 3),
    }
    if args.json:
        out.write(json.dumps(report, sort_keys=True) + "\n")
    else:
        c = counts(d)
        members = c["members"]
        assert isinstance(members, dict)
        rows = [
            ("zones", c["zones"]),
            ("points", c["points"]),
            ("lines", c["lines"]),
            ("members", ", ".join(f"{v} {k}" for k, v in members.items())),
            ("docks", c["docks"]),
            ("files", ", ".join(sorted(f.name for f in files))),
            ("seconds", f"{done - started:.2f}"),
        ]
        out.write(f"district seed {args.seed} in {target}\n")
        for k, v in rows:
            out.write(f"  {k:<8} {v}\n")
    return EXIT_OK


COMMANDS: tuple[SimCommand, ...] = (
    SimCommand(
        "district",
        "generate the full-scale district: plan, members, map (docs/district.md)",
        _district_arguments,
        district,
    ),
    SimCommand(
        "fleet",
        "run every device of a district through a shift, with faults (docs/fleet.md)",
        fleetcmd.add_arguments,
        fleetcmd.fleet,
    ),
    SimCommand(
        "dock",
        "one drone dock with its simulated drone, a TLS broker and the center (docs/commands.md)",
        dockcmd.add_arguments,
        dockcmd.dock,
    ),
)

HANDLERS: dict[tuple[str, str | None], Handler] = {("sim", c.name): c.run for c in COMMANDS}


def add_parsers(sub: SubParsers) -> None:
    sim = sub.add_parser("sim", help="simulators: the district, the fleet, a drone dock")
    cmds = sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND")
    for c in COMMANDS:
        c.add_arguments(cmds.add_parser(c.name, help=c.help, description=c.help))
