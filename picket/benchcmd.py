"""`picket bench checkins`: the check-in engine against simulated ground truth.

The scenarios live in simulators/truthcases.py, the engine runs and the scoring in
simulators/truth.py (pure, seeded); this module only turns a `Scoreboard` into a table
for people or one JSON object for machines, and the goal into the exit code: 0 when it is
met, 1 when it is not. Progress goes to stderr. picket/cli.py wires `add_parsers` and
`checkins` in.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from picket.argtypes import positive_int
from picket.progress import Progress
from simulators.errors import Condition
from simulators.truth import (
    GOAL_CONDITIONS,
    GOAL_PRECISION,
    GOAL_RECALL,
    Scoreboard,
    Tally,
    case_keys,
    run_bench,
)
from simulators.truthcases import Behaviour

DEFAULT_CASES = 500  # per behaviour and condition: 1,000 visits per condition, ~70 s here
MAX_CASES = 10_000  # ~25 minutes here


def _cases(text: str) -> int:
    value = positive_int(text)
    if value > MAX_CASES:
        raise argparse.ArgumentTypeError(f"{value} cases: at most {MAX_CASES:,}")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="measure the agent against simulated ground truth")
    cmds = bench.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    ck = cmds.add_parser(
        "checkins",
        help="precision and recall of check-ins, drive-bys, jumps and spoofing",
        description="Walkers with known intent, seen through GNSS error models, through a "
        "fresh check-in engine each. Exit 0 when the goal is met, 1 when not.",
    )
    ck.add_argument("--json", action="store_true", help="print one JSON object")
    ck.add_argument("--seed", type=int, default=1, help="seed of every case (1)")
    ck.add_argument(
        "--cases",
        type=_cases,
        default=DEFAULT_CASES,
        help=f"cases per behaviour and condition; visits get twice as many ({DEFAULT_CASES})",
    )


def checkins(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    progress = Progress()
    total = len(case_keys(args.cases))
    t0 = time.process_time()

    def tick(done: int, of: int) -> None:
        progress.update(f"bench checkins: {done}/{of} cases", force=done == of)

    board = run_bench(args.seed, args.cases, tick)
    cpu = time.process_time() - t0
    progress.done(f"bench checkins: {total} cases, {board.fixes} fixes, {cpu:.1f} s CPU")
    if args.json:
        out.write(json.dumps(board.as_json(), sort_keys=True) + "\n")
    else:
        out.write(table(board))
    return 0 if board.goal_met else 1


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _outcomes(t: Tally) -> str:
    return f"{t.visited}/{t.uncertain}/{t.cases - t.visited - t.uncertain}"


def table(board: Scoreboard) -> str:
    """The report for people: what --json says, in the same order."""
    conds = list(Condition)
    lines = [
        f"picket bench checkins — seed {board.seed}, {board.cases_per_cell} cases per behaviour "
        f"and condition (visits ×2), {board.fixes:,} fixes",
        "",
        "unambiguous cases, VISITED check-ins (UNCERTAIN counts as a miss, shown apart)",
        f"{'condition':<14}{'cases':>7}{'ambig.':>8}{'TP':>7}{'FP':>5}{'FN':>6}{'uncert.':>9}"
        f"{'precision':>11}{'recall':>10}",
    ]
    for c in conds:
        s = board.conditions.get(c)
        if s is None:
            continue
        lines.append(
            f"{c.value:<14}{s.cases:>7}{s.ambiguous:>8}{s.tp:>7}{s.fp:>5}{s.fn:>6}{s.uncertain:>9}"
            f"{_pct(s.precision):>11}{_pct(s.recall):>10}"
        )
    lines += ["", "by behaviour: cases with a VISITED / only UNCERTAIN / no check-in"]
    lines.append(f"{'behaviour':<16}" + "".join(f"{c.value:>16}" for c in conds))
    for b in Behaviour:
        cells = [board.cells.get((b, c), Tally()) for c in conds]
        lines.append(f"{b.value:<16}" + "".join(f"{_outcomes(t):>16}" for t in cells))
    lines += ["", "ambiguous cases (not in precision or recall), by true label"]
    for (c, visited), t in sorted(board.ambiguous.items()):
        label = "visited" if visited else "not visited"
        lines.append(f"  {c.value:<14}{label:<13}{t.cases:>6} cases  {_outcomes(t):>12}")
    jv = board.jump_cases.get(True, Tally())
    jn = board.jump_cases.get(False, Tally())
    lines += [
        "",
        f"drive-bys at points that forbid them: {board.drive_by.cases} cases, "
        f"{board.drive_by_checkins} check-ins of any verdict",
        f"jumps: {board.jumps_injected} injected, {board.jumps_flagged} flagged "
        f"(the jump back: {board.returns_flagged}); walks with a jump, visited label "
        f"{_outcomes(jv)}, not visited {_outcomes(jn)}",
    ]
    spoofs = sorted(board.spoofs.items())
    n_spoof = sum(t.cases for _, t in spoofs)
    lines.append(
        f"spoofs: {n_spoof} cases, {sum(board.spoofs_flagged.values())} flagged during the spoof, "
        f"{sum(t.visited for _, t in spoofs)} VISITED check-ins, "
        f"{sum(t.uncertain for _, t in spoofs)} UNCERTAIN"
    )
    for kind, t in spoofs:
        lines.append(
            f"  {kind.value:<11}{t.cases:>6} cases  flagged {board.spoofs_flagged.get(kind, 0):>5}"
            f"  VISITED {t.visited:>5}  UNCERTAIN {t.uncertain:>5}"
        )
    if board.decoy_checkins:
        lines.append(f"check-ins at decoy points far away: {board.decoy_checkins}")
    goal = (
        f"precision ≥ {GOAL_PRECISION:.1%} and recall ≥ {GOAL_RECALL:.1%} in "
        f"{' and '.join(c.value for c in GOAL_CONDITIONS)}; no drive-by check-in; every jump "
        "flagged"
    )
    lines += ["", f"goal ({goal}): {'met' if board.goal_met else 'NOT met'}", ""]
    return "\n".join(lines)


__all__ = ["DEFAULT_CASES", "add_parsers", "checkins", "table"]
