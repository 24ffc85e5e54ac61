"""Mutation score of the modules that hold Picket's promises, as a benchmark (issue 16).

Run: .venv/bin/python bench/mutation.py --run [--fresh] [--max-children N]   (mutmut, then figures)
     .venv/bin/python bench/mutation.py [--json] [--survivors [--diff]]    (figures of the last run)
     .venv/bin/python bench/mutation.py --run --rerun-survivors      (after new tests: only those)

A mutant is the code with one small change (a `<` made `<=`, a constant moved by one, an `and`
made `or`, a call's argument dropped); the tests kill it when at least one of them fails. A
mutant that survives is a change of behaviour no test notices, or a change that is no change
at all (an equivalent mutant). The tool is mutmut 3, configured under `[tool.mutmut]` in
pyproject.toml: it copies the packages into `mutants/` (in .gitignore) and mutates only the
copy, so the tree others are working in is never edited; it records which tests reach each
function and runs only those against each mutant, in forked children.

mutmut runs in a child process of this script that first loads a Hypothesis profile of its
own: derandomized (the property tests draw the same examples for every mutant, so a kill is
the same on every run), no deadline and no health checks (the machine is shared; slowness is
not a failure). mutmut keeps its results in `mutants/`: a second `--run` tests only mutants it
has not tested yet (or whose function changed); `--fresh` starts again from nothing, and
`--rerun-survivors` tests again every mutant that survived or had no test, which is how a new
test's kills are counted.

mutmut runs pytest several times in one process (stats, then the clean run of the selected
tests by node id). pytest keeps the ids it made for a `parametrize` given `ids=` and escapes
them again when it collects the module a second time, so a test id holding a backslash or a
non-ASCII character (`ids=str` over bytes) is "not found" the second time and mutmut stops
with BadTestExecutionCommandsException, although the test passes in a process of its own.
Give such parameters plain ASCII ids (tests/test_frame_edges.py uses `ids=bytes.hex`).

The table has one row per mutated module: mutants, killed, survived, timed out, no tests (no
selected test reaches the function), other (suspicious, segfault), unchecked (a run stopped
before it came to them), and "equivalent": survivors listed in
docs/testing.md (## Mutation benchmark) as changes that cannot be observed. Score = (killed +
timed out) / (mutants - unchecked - equivalent). The exit status is non-zero only when the
tool fails or there are no results to read.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
DOCS = ROOT / "docs" / "testing.md"
HEADING = "## Mutation benchmark"
GOAL = 90.0

# mutmut's exit codes per mutant (mutmut/stats.py), folded into the columns printed here.
KILLED = {1: "killed", 3: "killed"}
SURVIVED = {0: "survived"}
TIMED_OUT = {36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout"}
NO_TESTS = {5: "no tests", 33: "no tests"}
COLUMNS = ("killed", "survived", "timeout", "no tests", "other", "unchecked")
LIVE = ("survived", "no tests")  # what a test could still kill


def status(code: int | None) -> str:
    for table in (KILLED, SURVIVED, TIMED_OUT, NO_TESTS):
        if code in table:
            return table[code]
    if code is None:
        return "unchecked"  # the run was stopped before it came to this mutant
    return "other"  # suspicious, segfault, skipped, caught by a type check


@dataclass
class Row:
    module: str
    mutants: int
    counts: Counter[str]
    equivalent: int
    survivors: list[str]

    @property
    def score(self) -> float | None:
        """Percent of the mutants judged (checked, not equivalent) that a test found."""
        judged = self.mutants - self.equivalent - self.counts["unchecked"]
        found = self.counts["killed"] + self.counts["timeout"]
        return 100.0 * found / judged if judged else None

    def as_dict(self) -> dict[str, object]:
        return {
            "module": self.module,
            "mutants": self.mutants,
            **{c.replace(" ", "_"): self.counts[c] for c in COLUMNS},
            "equivalent": self.equivalent,
            "score": None if self.score is None else round(self.score, 1),
            "survivors": self.survivors,
        }


def equivalents(docs: Path = DOCS) -> set[str]:
    """Mutant names listed as equivalent under the benchmark's heading: every `name` in
    backticks on a line that starts with "- "."""
    if not docs.exists():
        return set()
    text = docs.read_text(encoding="utf-8")
    start = text.find(HEADING)
    if start < 0:
        return set()
    section = text[start + len(HEADING) :]
    end = section.find("\n## ")
    section = section if end < 0 else section[:end]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("- "):
            names.update(re.findall(r"`([\w.ǁ]+__mutmut_\d+)`", line))
    return names


def exit_codes(meta: Path) -> dict[str, int | None]:
    """A module's results; mutmut rewrites the file while it runs, so a torn read is retried."""
    for _ in range(50):
        try:
            codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
            return codes
        except json.JSONDecodeError:
            time.sleep(0.1)
    raise SystemExit(f"{meta}: not JSON")


def read_results(only: list[str]) -> list[Row]:
    """One row per mutated module, from mutmut's `.meta` files in mutants/."""
    judged_equivalent = equivalents()
    rows = []
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        module = meta.relative_to(MUTANTS).as_posix().removesuffix(".meta")
        if only and module not in only:
            continue
        codes = exit_codes(meta)
        counts = Counter(status(c) for c in codes.values())
        survivors = sorted(k for k, c in codes.items() if status(c) in LIVE)
        equivalent = sum(
            1 for k, c in codes.items() if status(c) in LIVE and k in judged_equivalent
        )
        rows.append(Row(module, len(codes), counts, equivalent, survivors))
    return rows


def total(rows: list[Row]) -> Row:
    counts: Counter[str] = Counter()
    for r in rows:
        counts.update(r.counts)
    return Row(
        "all",
        sum(r.mutants for r in rows),
        counts,
        sum(r.equivalent for r in rows),
        [s for r in rows for s in r.survivors],
    )


def report(rows: list[Row], seconds: float | None) -> None:
    width = max(len(r.module) for r in rows)
    head: tuple[str, ...] = (
        "mutants",
        "killed",
        "survived",
        "timed out",
        "no tests",
        "other",
        "unchecked",
    )
    head = (*head, "equiv.", "score")
    print(f"{'module':<{width}}  " + "  ".join(f"{h:>9}" for h in head))
    for r in [*rows, total(rows)]:
        cells = [r.mutants, *(r.counts[c] for c in COLUMNS), r.equivalent]
        score = "—" if r.score is None else f"{r.score:.1f}%"
        mark = "" if r.score is None or r.score >= GOAL else "  < 90 %"
        print(
            f"{r.module:<{width}}  " + "  ".join(f"{c:>9}" for c in cells) + f"  {score:>9}{mark}"
        )
    if seconds is not None:
        print(f"\nrun took {seconds / 60:.1f} min")


def module_glob(module: str) -> str:
    """`contract/records.py` → the mutmut name pattern of its mutants, `contract.records.*`."""
    return module.removesuffix(".py").replace("/", ".") + ".*"


def run_tool(args: list[str], quiet: bool) -> int:
    """mutmut in a child process (this file with --tool), from the repository's root."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--tool", *args]
    out = sys.stderr if quiet else None
    return subprocess.run(cmd, cwd=ROOT, stdout=out, check=False).returncode


def tool(args: list[str]) -> None:
    """Runs in the child: the Hypothesis profile first, then mutmut's own command line."""
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "mutation",
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    settings.load_profile("mutation")
    from mutmut.__main__ import cli

    if args[:1] == ["show"]:  # one child for many diffs
        for name in args[1:]:
            cli.main(args=["show", name], prog_name="mutmut", standalone_mode=False)
        return
    cli.main(args=args, prog_name="mutmut")


def run(a: argparse.Namespace) -> int:
    """mutmut over everything (or `--module`s), or again over the survivors."""
    if a.fresh:
        shutil.rmtree(MUTANTS, ignore_errors=True)
    names = [module_glob(m) for m in a.module]
    if a.rerun_survivors:
        judged_equivalent = equivalents()
        names = [s for r in read_results(a.module) for s in r.survivors]
        names = [s for s in names if s not in judged_equivalent]
        if not names:
            print("no survivors to test again", file=sys.stderr)
            return 0
    return run_tool(["run", "--max-children", str(a.max_children), *names], a.json)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run mutmut first (else read its results)")
    ap.add_argument("--fresh", action="store_true", help="with --run: delete mutants/ first")
    ap.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="with --run: test again every mutant that survived or had no test",
    )
    ap.add_argument("--module", action="append", default=[], help="e.g. contract/records.py")
    ap.add_argument("--max-children", type=int, default=2, help="forked test processes")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--survivors", action="store_true", help="list surviving mutants' names")
    ap.add_argument("--diff", action="store_true", help="with --survivors: show each change")
    ap.add_argument("--tool", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.tool is not None:
        tool(a.tool)
        return 0
    seconds = None
    if a.run:
        start = time.monotonic()
        code = run(a)
        if code != 0:
            print(f"mutmut failed (exit status {code})", file=sys.stderr)
            return 2
        seconds = time.monotonic() - start
    rows = read_results(a.module)
    if not rows:
        print("no results in mutants/: run with --run first", file=sys.stderr)
        return 2
    if a.json:
        print(
            json.dumps(
                {
                    "modules": [r.as_dict() for r in rows],
                    "total": total(rows).as_dict() | {"survivors": None},
                    "seconds": seconds,
                },
                indent=1,
            )
        )
        return 0
    report(rows, seconds)
    if a.survivors:
        judged_equivalent = equivalents()
        left = [s for r in rows for s in r.survivors if s not in judged_equivalent]
        print(f"\n{len(left)} survivors not listed as equivalent:")
        if a.diff:
            run_tool(["show", *left], quiet=False)
        else:
            for s in left:
                print(f"  {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
