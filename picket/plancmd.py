"""`picket plan check FILE`: name every problem in a plan before it goes to the devices.

A technician draws a plan in a GIS tool and runs this before sending it out; a device
that loads a bad plan refuses it, so the time to find out is here. All the checking is
`agent.checkin.planfile.check_file`; this module only prints: one problem per line (prefixed with
the file, as compilers do, so editors can jump to it), warnings marked, then a summary.
`--json` prints one object instead. Exit 0 when the plan is usable (warnings allowed),
2 when it has problems or cannot be read (bad input, as everywhere in `picket`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from agent.checkin.planfile import PlanReport, check_file

EXIT_OK, EXIT_BAD_INPUT = 0, 2  # as in picket.cli


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = sub.add_parser("plan", help="patrol plans (GeoJSON): check before sending out")
    cmds = plan.add_subparsers(dest="plan_command", required=True, metavar="COMMAND")
    c = cmds.add_parser("check", help="name every problem in a plan file (docs/plans.md)")
    c.add_argument("file", type=Path, help="the plan: a GeoJSON FeatureCollection")
    c.add_argument("--json", action="store_true", help="print one JSON object")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary(report: PlanReport) -> str:
    """The last line: what the plan holds, or how many problems it has."""
    extra = f" ({_count(len(report.warnings), 'warning')})" if report.warnings else ""
    plan = report.plan
    if plan is None:
        return _count(len(report.problems), "problem") + extra
    counts = ", ".join(
        (
            _count(len(plan.points), "point"),
            _count(len(plan.lines), "line"),
            _count(len(plan.zones), "zone"),
            _count(len(plan.assignments), "assignment"),
        )
    )
    return f"OK: {counts}; plan version {plan.version}{extra}"


def report_json(report: PlanReport) -> dict[str, object]:
    """The --json object; counts and version are null when the plan was refused."""
    plan = report.plan
    return {
        "ok": report.ok,
        "problems": report.problems,
        "warnings": report.warnings,
        "points": None if plan is None else len(plan.points),
        "lines": None if plan is None else len(plan.lines),
        "zones": None if plan is None else len(plan.zones),
        "assignments": None if plan is None else len(plan.assignments),
        "version": None if plan is None else plan.version,
    }


def check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    report = check_file(args.file)
    if args.json:
        out.write(json.dumps(report_json(report), ensure_ascii=False) + "\n")
    else:
        for problem in report.problems:
            out.write(f"{report.source}: {problem}\n")
        for warning in report.warnings:
            out.write(f"{report.source}: warning: {warning}\n")
        out.write(summary(report) + "\n")
    return EXIT_OK if report.ok else EXIT_BAD_INPUT
