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
import math
import sys
import time
from typing import TextIO

from picket.argtypes import positive_int
from picket.progress import Progress
from simulators.errors import Condition
from simulators.truth import (
    Scoreboard,
    Tally,
    case_keys,
    goals,
    run_bench,
)
from simulators.truthcases import Behaviour

DEFAULT_CASES = 200  # per behaviour and condition: 1,000 visits, 2,640 cases per condition
# (2,400 and 4,040 under cover); all ten conditions: 27,800 cases, 20 million fixes
MAX_CASES = 10_000
MEASURES = {"precision": "precision", "recall": "recall", "recall_any": "visited+uncertain"}


def _cases(text: str) -> int:
    value = positive_int(text)
    if value > MAX_CASES:
        raise argparse.ArgumentTypeError(f"{value} cases: at most {MAX_CASES:,}")
    return value


def _conditions(text: str) -> tuple[Condition, ...]:
    """A comma-separated list of conditions, each once, in the bench's order."""
    names = [n.strip() for n in text.split(",")]
    known = {c.value: c for c in Condition}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(repr, unknown)) or repr(text)}: not a condition "
            f"(one or more of {', '.join(known)}, separated by commas)"
        )
    return tuple(c for c in Condition if c.value in names)


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
        help="cases per behaviour and condition; visits get five times as many, twelve times "
        f"under cover ({DEFAULT_CASES})",
    )
    ck.add_argument(
        "--conditions",
        type=_conditions,
        default=tuple(Condition),
        metavar="C,C,…",
        help=f"the conditions to run (all): {', '.join(c.value for c in Condition)}",
    )


def checkins(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    progress = Progress()
    conditions = getattr(args, "conditions", tuple(Condition))
    total = len(case_keys(args.cases, conditions))
    t0 = time.process_time()

    def tick(done: int, of: int) -> None:
        progress.update(f"bench checkins: {done}/{of} cases", force=done == of)

    board = run_bench(args.seed, args.cases, tick, conditions)
    cpu = time.process_time() - t0
    progress.done(f"bench checkins: {total} cases, {board.fixes} fixes, {cpu:.1f} s CPU")
    if args.json:
        out.write(json.dumps(board.as_json(), sort_keys=True) + "\n")
    else:
        out.write(table(board))
    return 0 if board.goal_met else 1


def _pct(x: float) -> str:
    """Three decimals, cut rather than rounded: 99.8993 % is not shown as meeting 99.9 %."""
    return f"{math.floor(100_000 * x) / 1000:.3f} %"


def _outcomes(t: Tally) -> str:
    return f"{t.visited}/{t.uncertain}/{t.cases - t.visited - t.uncertain}"


def _goals(board: Scoreboard) -> list[str]:
    """Each condition's figures against issue 17's goals, each marked pass or FAIL."""
    lines = []
    for c, s in sorted(board.conditions.items(), key=lambda kv: list(Condition).index(kv[0])):
        met = s.goals_met(c)
        marks = [
            f"{MEASURES[k]} {_pct(s.measure(k))} ≥ {v:.1%}: {'pass' if met[k] else 'FAIL'}"
            for k, v in goals(c).items()
        ]
        lines.append(f"  {c.value:<18}" + "; ".join(marks))
    return lines


def table(board: Scoreboard) -> str:
    """The report for people: what --json says, in the same order."""
    conds = [c for c in Condition if c in board.conditions]
    lines = [
        f"picket bench checkins — seed {board.seed}, {board.cases_per_cell} cases per behaviour "
        f"and condition (visits ×5), {board.fixes:,} fixes",
        "",
        "unambiguous cases: real visits with a VISITED check-in (TP), VISITED check-ins at "
        "non-visits (FP), real visits with two or more check-ins (double: each VISITED after "
        "the first counts as false), UNCERTAIN given to real visits and to non-visits, real "
        "visits with no check-in (missed)",
        f"{'condition':<18}{'cases':>6}{'visits':>7}{'TP':>6}{'FP':>4}{'double':>7}"
        f"{'unc.vis':>8}{'unc.non':>8}{'missed':>7}{'precision':>11}{'recall':>10}{'+uncert.':>10}",
    ]
    for c in conds:
        s = board.conditions[c]
        lines.append(
            f"{c.value:<18}{s.cases:>6}{s.visits:>7}{s.tp:>6}{s.false_checkins:>4}{s.doubles:>7}"
            f"{s.uncertain:>8}{s.uncertain_non_visits:>8}{s.missed:>7}{_pct(s.precision):>11}"
            f"{_pct(s.recall):>10}{_pct(s.recall_any):>10}"
        )
    hid = [c for c in conds if board.conditions[c].hidden]
    if hid:
        lines += [
            "",
            "real visits the sky hid (fixes in fewer seconds of the stay than its "
            "dwell; not in recall): VISITED / only UNCERTAIN / none",
        ]
        for c in hid:
            s = board.conditions[c]
            rest = s.hidden - s.hidden_visited - s.hidden_uncertain
            lines.append(
                f"  {c.value:<18}{s.hidden:>6} visits  "
                f"{s.hidden_visited} / {s.hidden_uncertain} / {rest}"
            )
    lines += ["", "goals (issue 17), per condition", *_goals(board)]
    lines += ["", "by behaviour: cases with a VISITED / only UNCERTAIN / no check-in"]
    lines.append(f"{'behaviour':<16}" + "".join(f"{c.value:>19}" for c in conds))
    for b in Behaviour:
        cells = [board.cells.get((b, c), Tally()) for c in conds]
        lines.append(f"{b.value:<16}" + "".join(f"{_outcomes(t):>19}" for t in cells))
    lines += ["", "ambiguous cases (not in precision or recall), by true label"]
    for (c, visited), t in sorted(board.ambiguous.items()):
        label = "visited" if visited else "not visited"
        lines.append(f"  {c.value:<18}{label:<13}{t.cases:>6} cases  {_outcomes(t):>12}")
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
    goal = "every condition's goals above; no drive-by check-in; every jump flagged"
    lines += ["", f"goal ({goal}): {'met' if board.goal_met else 'NOT met'}", ""]
    return "\n".join(lines)


__all__ = ["DEFAULT_CASES", "add_parsers", "checkins", "table"]
