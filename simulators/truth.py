"""The truth benchmark: every case through a fresh check-in engine, scored against its label.

The cases come from simulators/truthcases.py, each a pure function of (seed, behaviour,
condition, index) and labelled from the true track alone; this module runs each through a
fresh `CheckinEngine` and scores what came out. Precision and recall of VISITED check-ins
count only the unambiguous cases of the SCORED behaviours; the ambiguous ones (EDGE, some
corner cuts) are reported apart. A real visit's first VISITED check-in is a true one and
every other VISITED check-in a false one, so a visit checked in twice (a double) costs
precision; each condition has issue 17's goals (`goals`), and the board's goal is met when
every condition run meets them. So are JUMP and SPOOF cases, which have their own
measures: every jump is to be flagged, and the engine is meant to hold any visit near a
suspicion to UNCERTAIN. Drive-bys are at points that forbid them by speed, where any
check-in at all counts against the engine.

A `Scoreboard` takes one `Outcome` at a time, so `run_bench` keeps no case after scoring
it, and `picket bench checkins` (picket/benchcmd.py) only prints the board and its goal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.checkin.engine import CheckinEngine, CheckinEvent
from agent.checkin.motion import SuspicionEvent, SuspicionKind
from contract.records import Verdict
from simulators.errors import Condition
from simulators.truthcases import Behaviour, Case, SpoofKind, make_case

# The behaviours whose unambiguous cases count in precision and recall.
SCORED = (
    Behaviour.VISIT,
    Behaviour.SKIP,
    Behaviour.CUT_CORNER,
    Behaviour.NEXT_STREET,
    Behaviour.LINGER_OUTSIDE,
    Behaviour.CYCLE_THROUGH,
    Behaviour.DRIVE_THROUGH,
)


# -- running -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    visited: int  # VISITED check-ins at the case's point
    uncertain: int  # UNCERTAIN check-ins there
    elsewhere: int  # check-ins at the decoys (there should be none)
    suspicions: tuple[SuspicionEvent, ...]

    @property
    def checkins(self) -> int:
        return self.visited + self.uncertain

    def jump_flagged(self, window: tuple[int, int]) -> bool:
        """The first jumped fix raised a JUMP."""
        return any(s.kind is SuspicionKind.JUMP and s.time_ms == window[0] for s in self.suspicions)

    def return_flagged(self, window: tuple[int, int]) -> bool:
        return any(
            s.kind is SuspicionKind.JUMP and window[1] < s.time_ms <= window[1] + 5000
            for s in self.suspicions
        )

    @property
    def spoof_flagged(self) -> bool:
        if self.case.spoof_ms is None:
            return False
        lo, hi = self.case.spoof_ms
        return any(lo <= s.time_ms <= hi for s in self.suspicions)


def run_case(case: Case) -> Outcome:
    """A fresh engine with the case's plan, fed every fix in order, then finished."""
    engine = CheckinEngine(case.plan)
    events = []
    for f in case.fixes:
        events.extend(engine.feed(f))
    events.extend(engine.finish())
    checkins = [e for e in events if isinstance(e, CheckinEvent)]
    mine = [e for e in checkins if e.point.id == case.point.id]
    return Outcome(
        case,
        visited=sum(e.verdict is Verdict.VISITED for e in mine),
        uncertain=sum(e.verdict is Verdict.UNCERTAIN for e in mine),
        elsewhere=len(checkins) - len(mine),
        suspicions=tuple(e for e in events if isinstance(e, SuspicionEvent)),
    )


# -- the benchmark -----------------------------------------------------------------------

GOAL_PRECISION = 0.999  # of VISITED, in every condition; a double check-in counts as false
GOAL_RECALL = 0.995  # of VISITED, where the sky lets the receiver see
GOAL_RECALL_BIASED = 0.95  # of VISITED, under a facade reflection ...
GOAL_RECALL_ANY = 0.995  # ... and of VISITED or UNCERTAIN there (a person reviews the rest)
BIASED = (Condition.URBAN_BIASED, Condition.URBAN_BIASED_GST, Condition.URBAN_BIASED_10HZ)


def goals(condition: Condition) -> dict[str, float]:
    """Issue 17's goals for `condition`: measure (a `Score` property) -> its minimum."""
    if condition in BIASED:
        return {
            "precision": GOAL_PRECISION,
            "recall": GOAL_RECALL_BIASED,
            "recall_any": GOAL_RECALL_ANY,
        }
    if condition is Condition.POCKET:  # the issue sets no recall for a pocket
        return {"precision": GOAL_PRECISION}
    return {"precision": GOAL_PRECISION, "recall": GOAL_RECALL}


VISIT_CASES = 5  # visits: five times n per condition, the denominator of recall
# ... and twelve times under cover, where the sky hides about half the stays whole (reported
# apart): about 6n the receiver could see, at least the 5n of the other conditions
VISIT_CASES_UNDER_COVER = 12
EDGE_CASES = 0.2  # ambiguous visits: a fifth of n, reported apart


def case_count(behaviour: Behaviour, n: int, condition: Condition | None = None) -> int:
    if behaviour is Behaviour.VISIT:
        k = VISIT_CASES_UNDER_COVER if condition is Condition.UNDER_COVER else VISIT_CASES
        return k * n
    if behaviour is Behaviour.EDGE:
        return max(1, round(EDGE_CASES * n))
    return n


def case_keys(
    n: int, conditions: Sequence[Condition] = tuple(Condition)
) -> list[tuple[Behaviour, Condition, int]]:
    """The cases of a run with `n` per behaviour and condition (5n visits, 12n under cover,
    n/5 EDGE ones)."""
    return [(b, c, i) for c in conditions for b in Behaviour for i in range(case_count(b, n, c))]


@dataclass(slots=True)
class Tally:
    """Outcomes of some cases: how many got a VISITED check-in, only UNCERTAIN, or none."""

    cases: int = 0
    visited: int = 0
    uncertain: int = 0

    def add(self, o: Outcome) -> None:
        self.cases += 1
        self.visited += o.visited > 0
        self.uncertain += o.visited == 0 and o.uncertain > 0

    def as_json(self) -> dict[str, int]:
        none = self.cases - self.visited - self.uncertain
        return {
            "cases": self.cases,
            "visited": self.visited,
            "uncertain": self.uncertain,
            "none": none,
        }


@dataclass(slots=True)
class Score:
    """Check-ins against the unambiguous cases of one condition.

    A real visit's first VISITED check-in is a true one; every other VISITED check-in is a
    false one: at a non-visit, and the second and later at one real visit (a double
    check-in: the center would count two visits). Precision is of VISITED check-ins, recall
    of real visits.
    """

    cases: int = 0
    ambiguous: int = 0
    visits: int = 0  # real visits
    tp: int = 0  # real visits with a VISITED check-in
    false_checkins: int = 0  # VISITED check-ins at non-visits
    doubles: int = 0  # real visits with two or more check-ins of any verdict
    double_visited: int = 0  # VISITED check-ins after a real visit's first: false ones
    fn: int = 0  # real visits without a VISITED check-in
    uncertain: int = 0  # of those, the ones with an UNCERTAIN check-in
    uncertain_non_visits: int = 0  # non-visits with an UNCERTAIN check-in (and no VISITED)
    hidden: int = 0  # real visits the sky hid (Case.hidden): apart from recall
    hidden_visited: int = 0  # of those, with a VISITED check-in (true, and lucky)
    hidden_uncertain: int = 0  # of those, with only an UNCERTAIN check-in

    @property
    def fp(self) -> int:
        return self.false_checkins + self.double_visited

    @property
    def missed(self) -> int:
        """Real visits with no check-in at all."""
        return self.fn - self.uncertain

    @property
    def precision(self) -> float:
        true = self.tp + self.hidden_visited
        return true / (true + self.fp) if true + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.visits if self.visits else 1.0

    @property
    def recall_any(self) -> float:
        """Real visits with a check-in of either verdict."""
        return (self.tp + self.uncertain) / self.visits if self.visits else 1.0

    def add(self, o: Outcome) -> None:
        if not o.case.unambiguous:
            self.ambiguous += 1
            return
        self.cases += 1
        if o.case.hidden:
            self.hidden += 1
            self.hidden_visited += o.visited > 0
            self.hidden_uncertain += o.visited == 0 and o.uncertain > 0
            self.double_visited += max(0, o.visited - 1)
            self.doubles += o.checkins > 1
        elif o.case.visited:
            self.visits += 1
            self.tp += o.visited > 0
            self.double_visited += max(0, o.visited - 1)
            self.doubles += o.checkins > 1
            self.fn += o.visited == 0
            self.uncertain += o.visited == 0 and o.uncertain > 0
        else:
            self.false_checkins += o.visited
            self.uncertain_non_visits += o.visited == 0 and o.uncertain > 0

    def measure(self, name: str) -> float:
        values = {"precision": self.precision, "recall": self.recall, "recall_any": self.recall_any}
        return values[name]

    def goals_met(self, condition: Condition) -> dict[str, bool]:
        return {k: self.measure(k) >= v for k, v in goals(condition).items()}

    def as_json(self, condition: Condition) -> dict[str, object]:
        met = self.goals_met(condition)
        return {
            "cases": self.cases,
            "ambiguous": self.ambiguous,
            "visits": self.visits,
            "non_visits": self.cases - self.visits,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "uncertain": self.uncertain,
            "true_checkins": self.tp,
            "false_checkins": self.false_checkins,
            "double_checkins": self.doubles,
            "double_visited_checkins": self.double_visited,
            "uncertain_visits": self.uncertain,
            "uncertain_non_visits": self.uncertain_non_visits,
            "missed": self.missed,
            "hidden_visits": self.hidden,
            "hidden_visited": self.hidden_visited,
            "hidden_uncertain": self.hidden_uncertain,
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "recall_any": round(self.recall_any, 6),
            "goals": {
                k: {"min": v, "value": round(self.measure(k), 6), "met": met[k]}
                for k, v in goals(condition).items()
            },
            "goal_met": all(met.values()),
        }


@dataclass(slots=True)
class Scoreboard:
    """Everything `picket bench checkins` reports, accumulated one outcome at a time."""

    seed: int
    cases_per_cell: int
    fixes: int = 0
    conditions: dict[Condition, Score] = field(default_factory=dict)
    cells: dict[tuple[Behaviour, Condition], Tally] = field(default_factory=dict)
    ambiguous: dict[tuple[Condition, bool], Tally] = field(default_factory=dict)
    drive_by: Tally = field(default_factory=Tally)
    jump_cases: dict[bool, Tally] = field(default_factory=dict)
    jumps_injected: int = 0
    jumps_flagged: int = 0
    returns_flagged: int = 0
    spoofs: dict[SpoofKind, Tally] = field(default_factory=dict)
    spoofs_flagged: dict[SpoofKind, int] = field(default_factory=dict)
    decoy_checkins: int = 0

    def add(self, o: Outcome) -> None:
        c, b = o.case.condition, o.case.behaviour
        self.fixes += len(o.case.fixes)
        self.decoy_checkins += o.elsewhere
        self.cells.setdefault((b, c), Tally()).add(o)
        if b in SCORED:
            self.conditions.setdefault(c, Score()).add(o)
        if not o.case.unambiguous:
            self.ambiguous.setdefault((c, o.case.visited), Tally()).add(o)
        if o.case.drive_by:
            self.drive_by.add(o)
        for window in o.case.jumps:
            self.jumps_injected += 1
            self.jumps_flagged += o.jump_flagged(window)
            self.returns_flagged += o.return_flagged(window)
        if b is Behaviour.JUMP:
            self.jump_cases.setdefault(o.case.visited, Tally()).add(o)
        if o.case.spoof is not None:
            self.spoofs.setdefault(o.case.spoof, Tally()).add(o)
            flagged = self.spoofs_flagged.get(o.case.spoof, 0)
            self.spoofs_flagged[o.case.spoof] = flagged + o.spoof_flagged

    @property
    def drive_by_checkins(self) -> int:
        return self.drive_by.visited + self.drive_by.uncertain

    @property
    def goal_met(self) -> bool:
        """Every condition run meets its goals; no drive-by check-in; every jump flagged."""
        return (
            all(all(s.goals_met(c).values()) for c, s in self.conditions.items())
            and self.drive_by_checkins == 0
            and self.jumps_flagged == self.jumps_injected
        )

    def as_json(self) -> dict[str, object]:
        spoofs = {
            k.value: {**t.as_json(), "flagged": self.spoofs_flagged.get(k, 0)}
            for k, t in sorted(self.spoofs.items())
        }
        return {
            "seed": self.seed,
            "cases_per_cell": self.cases_per_cell,
            "fixes": self.fixes,
            "conditions": {c.value: s.as_json(c) for c, s in sorted(self.conditions.items())},
            "behaviours": {
                b.value: {
                    c.value: t.as_json() for (bb, c), t in sorted(self.cells.items()) if bb is b
                }
                for b in Behaviour
            },
            "ambiguous": {
                f"{c.value}/{'visited' if v else 'not_visited'}": t.as_json()
                for (c, v), t in sorted(self.ambiguous.items())
            },
            "drive_bys": {"cases": self.drive_by.cases, "checkins": self.drive_by_checkins},
            "jumps": {
                "injected": self.jumps_injected,
                "flagged": self.jumps_flagged,
                "returns_flagged": self.returns_flagged,
                "walks": {
                    ("visited" if v else "not_visited"): t.as_json()
                    for v, t in sorted(self.jump_cases.items())
                },
            },
            "spoofs": {
                "cases": sum(t.cases for t in self.spoofs.values()),
                "flagged": sum(self.spoofs_flagged.values()),
                "visited_checkins": sum(t.visited for t in self.spoofs.values()),
                "uncertain_checkins": sum(t.uncertain for t in self.spoofs.values()),
                "by_kind": spoofs,
            },
            "decoy_checkins": self.decoy_checkins,
            "goal": {
                "conditions": {c.value: goals(c) for c in sorted(self.conditions)},
                "drive_by_checkins_max": 0,
                "all_jumps_flagged": True,
            },
            "goal_met": self.goal_met,
        }


def run_bench(
    seed: int,
    n: int,
    progress: Callable[[int, int], None] | None = None,
    conditions: Sequence[Condition] = tuple(Condition),
) -> Scoreboard:
    """Build, run and score every case of a run; `progress(done, total)` now and then."""
    keys = case_keys(n, conditions)
    board = Scoreboard(seed, n)
    for k, (b, c, i) in enumerate(keys):
        board.add(run_case(make_case(seed, b, c, i)))
        if progress is not None and (k % 200 == 0 or k == len(keys) - 1):
            progress(k + 1, len(keys))
    return board
