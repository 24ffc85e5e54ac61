"""Ground-truth scenarios: each behaviour is what its label says, each error model has the
statistics it claims, a seed replays byte for byte, and a small benchmark meets the goal
(the check-in engine against simulated ground truth, run in CI)."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import pickle
import random
import statistics

import pytest

from agent.checkin.geo import to_local
from contract.fix import Fix
from picket import benchcmd
from simulators.errors import (
    DROPOUT_S,
    ONE_HZ,
    OUTAGE_S,
    OUTLIER_M,
    OUTLIER_RATE,
    OUTLIER_S,
    POCKET_DOPPLER_MPS,
    Condition,
    Sample,
    draw_model,
    observe,
)
from simulators.rates import truth_at
from simulators.truth import run_bench, run_case
from simulators.truthcases import (
    CYCLE_MPS,
    DRIVE_MPS,
    JUMP_M,
    JUMP_S,
    ORIGIN,
    SPOOF_FROM_M,
    Behaviour,
    Case,
    SpoofKind,
    make_case,
)

N = 12  # cases per behaviour and condition in the label tests


def cases(behaviour: Behaviour, conditions: tuple[Condition, ...] = tuple(Condition)) -> list[Case]:
    return [make_case(7, behaviour, c, i) for c in conditions for i in range(N)]


def true_distances(case: Case) -> list[float]:
    return [math.hypot(s.north, s.east) for s in case.truth]


def sigma(case: Case) -> float:
    return case.model.effective_sigma_m


def longest_run(flags: list[bool]) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def second(case: Case, fix: Fix) -> int:
    assert fix.time_ms is not None
    return (fix.time_ms - case.t0_ms) // 1000


def fix_error_m(case: Case) -> list[tuple[float, float, int]]:
    """(north error, east error, ms from the start) of every fix against the true track."""
    out = []
    for f in case.fixes:
        assert f.time_ms is not None
        ms = f.time_ms - case.t0_ms
        n, e = to_local(*ORIGIN, f.lat, f.lon)
        true = truth_at(case.truth, ms / 1000)
        out.append((n - true.north, e - true.east, ms))
    return out


# --------------------------------------------------------------------------- determinism


def test_a_seed_replays_every_case_exactly() -> None:
    for b in Behaviour:
        for c in Condition:
            assert pickle.dumps(make_case(3, b, c, 5)) == pickle.dumps(make_case(3, b, c, 5))
    assert make_case(3, Behaviour.VISIT, Condition.URBAN_CANYON, 5) != make_case(
        4, Behaviour.VISIT, Condition.URBAN_CANYON, 5
    )


def test_a_seed_replays_the_report() -> None:
    a, b = run_bench(11, 1).as_json(), run_bench(11, 1).as_json()
    assert a == b
    assert run_bench(12, 1).as_json() != a


# --------------------------------------------------------------------------- labels


def test_visit_stands_close_to_the_centre_for_the_dwell_and_a_margin() -> None:
    for case in cases(Behaviour.VISIT):
        p = case.point
        inner = max(0.0, p.radius_m - 2 * sigma(case) - 3)
        assert case.visited and case.unambiguous
        assert case.stand_m is not None and case.stand_m <= inner
        near = [d <= inner + 0.5 for d in true_distances(case)]  # +0.5: a standing person sways
        assert longest_run(near) >= p.dwell_s + 20
        still = [s.speed_mps == 0.0 for s in case.truth]
        assert longest_run(still) == case.stand_s >= p.dwell_s + 20


@pytest.mark.parametrize(
    "behaviour", [Behaviour.SKIP, Behaviour.NEXT_STREET, Behaviour.LINGER_OUTSIDE]
)
def test_non_visits_keep_their_distance(behaviour: Behaviour) -> None:
    for case in cases(behaviour):
        assert not case.visited and case.unambiguous
        far = case.point.radius_m + 3 * sigma(case) + 10
        assert min(true_distances(case)) >= far
    if behaviour is Behaviour.NEXT_STREET:  # a street: it passes within a few metres of `far`
        assert all(
            min(true_distances(c)) <= c.point.radius_m + 3 * sigma(c) + 16 for c in cases(behaviour)
        )


def test_linger_stands_twice_the_dwell_just_outside() -> None:
    for case in cases(Behaviour.LINGER_OUTSIDE):
        still = [s.speed_mps == 0.0 for s in case.truth]
        assert longest_run(still) == round(2 * case.point.dwell_s)
        distances = true_distances(case)
        stood = [distances[i] for i in range(1, len(distances)) if case.truth[i].speed_mps == 0]
        assert max(stood) <= case.point.radius_m + 3 * sigma(case) + 16


def test_cut_corner_crosses_the_radius_without_stopping() -> None:
    for case in cases(Behaviour.CUT_CORNER):
        p = case.point
        assert min(true_distances(case)) < p.radius_m  # it does cross
        assert longest_run([s.speed_mps < 0.5 for s in case.truth[1:]]) <= 1  # never stops
        reach = p.radius_m + 2 * sigma(case) + 3
        near = sum(d <= reach for d in true_distances(case))
        assert case.unambiguous == (near <= p.dwell_s - 20)
    assert sum(c.unambiguous for c in cases(Behaviour.CUT_CORNER)) >= N  # most are usable


def test_cycling_and_driving_pass_at_their_speeds() -> None:
    for case in cases(Behaviour.CYCLE_THROUGH):
        moving = [s.speed_mps for s in case.truth[1:-1]]
        assert CYCLE_MPS[0] * 0.8 <= statistics.median(moving) <= CYCLE_MPS[1] * 1.2
        assert case.drive_by == (case.index % 2 == 0)
    stopped = 0
    for case in cases(Behaviour.DRIVE_THROUGH):
        assert case.drive_by and case.point.max_speed_mps == 2.5 and not case.visited
        speeds = [s.speed_mps for s in case.truth]
        assert DRIVE_MPS[0] * 0.95 <= max(speeds) <= DRIVE_MPS[1] * 1.01
        assert min(true_distances(case)) < case.point.radius_m  # through the point
        stops = [s.speed_mps == 0.0 for s in case.truth[1:]]
        assert longest_run(stops) <= 15  # short stops only
        inside = [
            s.speed_mps == 0.0 and d <= case.point.radius_m
            for s, d in zip(case.truth[1:], true_distances(case)[1:], strict=True)
        ]
        assert sum(stops) == sum(inside)  # every stop is inside the radius
        stopped += any(stops)
    assert stopped >= N  # stop-and-go about half the time


def test_jumps_teleport_kilometres_for_seconds_and_come_back() -> None:
    for case in cases(Behaviour.JUMP):
        assert len(case.jumps) == 1
        first, last = case.jumps[0]
        assert JUMP_S[0] <= (last - first) // 1000 + 1 <= JUMP_S[1]
        lo, hi = first - case.t0_ms, last - case.t0_ms
        errors = {ms: math.hypot(n, e) for n, e, ms in fix_error_m(case)}
        jumped = [d for ms, d in errors.items() if lo <= ms <= hi]
        assert jumped and all(JUMP_M[0] - 100 <= d <= JUMP_M[1] + 100 for d in jumped)
        before = [d for ms, d in errors.items() if lo - 1000 <= ms < lo]
        after = [d for ms, d in errors.items() if hi < ms <= hi + 1000]
        assert before and after and max(before + after) < 200  # tracked before and after
        assert case.visited == (case.index % 2 == 0)


def test_spoofs_move_the_position_but_never_the_person() -> None:
    for case in cases(Behaviour.SPOOF):
        assert case.spoof is SpoofKind(list(SpoofKind)[case.index % 3]) and not case.visited
        assert min(true_distances(case)) >= SPOOF_FROM_M[0] - 1
        assert case.spoof_ms is not None
        lo, hi = case.spoof_ms
        spoofed = [f for f in case.fixes if f.time_ms is not None and lo <= f.time_ms <= hi]
        assert spoofed and all(f.speed_mps == 0.0 for f in spoofed)
        reported = [math.hypot(*to_local(*ORIGIN, f.lat, f.lon)) for f in spoofed]
        assert min(reported) < case.point.radius_m  # the receiver shows the point


def test_edge_cases_are_labelled_from_the_truth_and_kept_apart() -> None:
    for case in cases(Behaviour.EDGE):
        assert not case.unambiguous
        assert case.stand_m is not None
        assert case.visited == (
            case.stand_m <= case.point.radius_m and case.stand_s >= case.point.dwell_s
        )


# --------------------------------------------------------------------------- error models


def standing(seconds: int) -> list[Sample]:
    return [Sample(0.0, 0.0, 0.0, 0.0)] * seconds


def walking(seconds: int, speed: float = 1.4) -> list[Sample]:
    return [Sample(speed * i, 0.0, speed, 0.0) for i in range(seconds)]


@pytest.mark.parametrize("condition", sorted(ONE_HZ))
def test_the_wandering_error_has_the_models_sigma(condition: Condition) -> None:
    rng = random.Random(5)
    for _ in range(4):
        model = draw_model(condition, rng)
        lo, hi = (8.0, 15.0) if condition is Condition.URBAN_CANYON else (2.0, 3.0)
        assert lo <= model.sigma_m <= hi
        assert lo * 0.85 <= model.accuracy_m <= (hi if lo == 8.0 else math.hypot(hi, 2) * 1.1)
        obs = observe(model, standing(20_000), rng, ORIGIN, 0)
        plain = [
            n * n + e * e for (n, e), x in zip(obs.errors, obs.excursions, strict=True) if x is None
        ]
        rms = math.sqrt(statistics.fmean(plain))
        assert rms == pytest.approx(model.effective_sigma_m, rel=0.15)
        fixes = [f for f in obs.fixes if f is not None]
        claimed = statistics.fmean(f.accuracy_m or 0.0 for f in fixes)
        assert claimed == pytest.approx(model.accuracy_m, rel=0.1)  # it says what it is
        if condition is not Condition.URBAN_CANYON:
            assert all(0.7 <= (f.hdop or 0) <= 1.5 for f in fixes)


def test_urban_multipath_excursions() -> None:
    rng = random.Random(9)
    model = draw_model(Condition.URBAN_CANYON, rng)
    n = 200_000
    obs = observe(model, standing(n), rng, ORIGIN, 0)
    lengths: list[int] = []
    run = 0
    for i, x in enumerate(obs.excursions):
        if x is not None:
            assert OUTLIER_M[0] <= math.hypot(*x) <= OUTLIER_M[1]
            same = i > 0 and obs.excursions[i - 1] == x
            if not same and run:
                lengths.append(run)
                run = 0
            run += 1
        elif run:
            lengths.append(run)
            run = 0
    assert all(OUTLIER_S[0] <= k <= OUTLIER_S[1] for k in lengths)
    clean = n - sum(lengths)
    assert len(lengths) / clean == pytest.approx(OUTLIER_RATE, rel=0.1)  # ~2 % of seconds start one
    assert statistics.fmean(lengths) == pytest.approx(3.0, rel=0.1)


def test_under_cover_loses_every_fix_for_minutes() -> None:
    for case in cases(Behaviour.VISIT, (Condition.UNDER_COVER,)):
        seconds = [second(case, f) for f in case.fixes]
        gaps = [b - a - 1 for a, b in itertools.pairwise(seconds) if b - a > 1]
        assert len(gaps) == 1
        assert OUTAGE_S[0] <= gaps[0] <= OUTAGE_S[1]
        assert seconds[-1] == len(case.truth) - 1  # fixes come back before the end


def test_pocket_jitter_doppler_and_dropouts() -> None:
    rng = random.Random(4)
    model = draw_model(Condition.POCKET, rng)
    assert 1.0 <= model.jitter_m <= 2.0
    n = 20_000
    obs = observe(model, walking(n), rng, ORIGIN, 0)
    steps = [math.hypot(b[0] - a[0], b[1] - a[1]) ** 2 for a, b in itertools.pairwise(obs.errors)]
    # second-to-second change: two independent jitters, plus a little Gauss-Markov drift
    assert math.sqrt(statistics.fmean(steps)) == pytest.approx(
        math.sqrt(2) * model.jitter_m, rel=0.2
    )
    fixes = [f for f in obs.fixes if f is not None]
    doppler = [(f.speed_mps or 0.0) - 1.4 for f in fixes]
    assert max(map(abs, doppler)) <= POCKET_DOPPLER_MPS + 1e-9
    assert statistics.pstdev(doppler) == pytest.approx(POCKET_DOPPLER_MPS / math.sqrt(3), rel=0.1)
    gaps: list[int] = []
    run = 0
    for f in obs.fixes:
        if f is None:
            run += 1
        elif run:
            gaps.append(run)
            run = 0
    assert gaps and all(DROPOUT_S[0] <= g <= 2 * DROPOUT_S[1] for g in gaps)
    assert 1 / 600 < len(gaps) / n < 1 / 100  # occasional: one every few minutes


def test_open_sky_doppler_follows_the_truth() -> None:
    rng = random.Random(2)
    model = draw_model(Condition.OPEN_SKY, rng)
    obs = observe(model, walking(3_000), rng, ORIGIN, 0)
    errors = [(f.speed_mps or 0.0) - 1.4 for f in obs.fixes if f is not None]
    assert max(map(abs, errors)) < 0.2


# --------------------------------------------------------------------------- the engine


def test_the_engine_against_each_behaviour_once() -> None:
    """One case of each, spelled out: what a reader would check by hand."""
    visit = run_case(make_case(1, Behaviour.VISIT, Condition.OPEN_SKY, 0))
    assert visit.visited == 1 and visit.elsewhere == 0
    drive = run_case(make_case(1, Behaviour.DRIVE_THROUGH, Condition.URBAN_CANYON, 0))
    assert drive.checkins == 0
    jump = run_case(make_case(1, Behaviour.JUMP, Condition.POCKET, 1))
    assert jump.jump_flagged(jump.case.jumps[0])
    spoof = run_case(make_case(1, Behaviour.SPOOF, Condition.OPEN_SKY, 0))  # a teleport
    assert spoof.spoof_flagged and spoof.visited == 0


def test_a_small_benchmark_meets_the_goal() -> None:
    """The ground-truth scenario test: 30 cases per behaviour and condition (150 visits), in
    the two conditions the engine has met its goal in since version 1."""
    out = io.StringIO()
    chosen = (Condition.OPEN_SKY, Condition.URBAN_CANYON)
    args = argparse.Namespace(json=True, seed=1, cases=30, conditions=chosen)
    code = benchcmd.checkins(args, out)
    report = json.loads(out.getvalue())
    assert report["goal_met"] is True and code == 0
    assert set(report["conditions"]) == {"open_sky", "urban_canyon"}  # what was chosen, only
    for c in ("open_sky", "urban_canyon"):
        s = report["conditions"][c]
        assert s["visits"] == s["tp"] == 150 and s["fp"] == 0 and s["double_checkins"] == 0
        assert s["goals"]["precision"] == {"min": 0.999, "value": 1.0, "met": True}
        assert s["goals"]["recall"] == {"min": 0.995, "value": 1.0, "met": True}
    assert report["drive_bys"]["cases"] == 2 * 30 + 2 * 15 and report["drive_bys"]["checkins"] == 0
    assert report["jumps"]["injected"] == report["jumps"]["flagged"] == 2 * 30
    assert report["spoofs"]["cases"] == 2 * 30
    assert report["decoy_checkins"] == 0


def test_the_table_for_people() -> None:
    board = run_bench(1, 1)
    text = benchcmd.table(board)
    for c in Condition:
        assert c.value in text
    for b in Behaviour:
        assert b.value in text
    assert "goal (" in text
