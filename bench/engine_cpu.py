"""Check-in engine CPU per fix: the district's 631 points against a city of 100,000.

Run: .venv/bin/python bench/engine_cpu.py [--seed S] [--stops N] [--repeat R]

The same long walk (a patrol visiting N points of the district in turn, standing at each
for its dwell, seen through the open-sky error model at 1 Hz) is fed to a fresh engine
holding (a) the district: 631 points over 10 km x 10 km, and (b) a city: the same district
inside 99,369 more points over 60 km x 60 km. The city's points stay outside the district
square, so the walk sees the same neighbourhood in both plans and the ratio isolates plan
size (the engine finds points through a uniform grid, so it should be near 1). Times are
CPU (time.process_time) for feeding the fixes, the best of R runs; building the engine
(the grid) is reported apart. Both runs must produce the same check-ins. Then the same walk
seen by a 10 Hz receiver (open sky at 10 Hz, simulators/rates.py: the same kind of error,
ten fixes a second) fed to the district's engine: CPU per fix and per second of walk, against
the 1 Hz walk's. Last, the CPU time to generate the demo's small district
(simulators/district.py), which `picket demo` builds before anything else runs.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.checkin.engine import CheckinEngine, CheckinEvent
from agent.checkin.geo import offset
from agent.checkin.plan import Plan, Point
from contract.fix import Fix
from simulators.district import generate_district
from simulators.errors import Condition, Sample, draw_model, observe
from simulators.rates import draw, observe_rated

CENTER = (29.265, 106.255)
DISTRICT_POINTS, DISTRICT_M = 631, 10_000.0
CITY_POINTS, CITY_M = 100_000, 60_000.0
MARGIN_M = 60.0  # keeps a point's circle (radius up to 40 m) inside its grid cell


def _jittered(
    rng: random.Random, n: int, side_m: float, keep_out_m: float = 0.0
) -> list[tuple[float, float]]:
    """`n` spots in a square `side_m` across (centred), at most one per cell of a grid with
    a tenth of its cells to spare, none in the central square `keep_out_m` across."""
    share = 1 - (keep_out_m / side_m) ** 2
    k = math.ceil(math.sqrt(n / 0.9 / share))
    cell = side_m / k
    half = keep_out_m / 2 + cell / 2
    cells = [
        (i, j)
        for i in range(k)
        for j in range(k)
        if max(abs((i + 0.5) * cell - side_m / 2), abs((j + 0.5) * cell - side_m / 2)) >= half
    ]
    jitter = cell / 2 - MARGIN_M
    return [
        (
            (i + 0.5) * cell - side_m / 2 + rng.uniform(-jitter, jitter),
            (j + 0.5) * cell - side_m / 2 + rng.uniform(-jitter, jitter),
        )
        for i, j in rng.sample(cells, n)
    ]


def _points(rng: random.Random, spots: list[tuple[float, float]], prefix: str) -> list[Point]:
    pts = []
    for k, (north, east) in enumerate(spots):
        lat, lon = offset(*CENTER, north, east)
        pts.append(
            Point(
                f"{prefix}{k:06d}",
                lat,
                lon,
                radius_m=round(rng.uniform(20.0, 40.0), 1),
                dwell_s=float(rng.randint(30, 120)),
            )
        )
    return pts


def plans(seed: int) -> tuple[Plan, Plan, list[tuple[float, float]]]:
    rng = random.Random(seed)
    spots = _jittered(rng, DISTRICT_POINTS, DISTRICT_M)
    district = _points(rng, spots, "D")
    others = _points(rng, _jittered(rng, CITY_POINTS - DISTRICT_POINTS, CITY_M, DISTRICT_M), "C")
    return Plan(1, tuple(district)), Plan(1, tuple(district + others)), spots


def walk(
    seed: int, spots: list[tuple[float, float]], plan: Plan, stops: int, rate_hz: int = 1
) -> list[Fix]:
    """A patrol from point to nearest unvisited point, standing dwell + 30 s at each."""
    rng = random.Random(seed + 1)
    here = spots[0]
    todo = list(range(1, len(spots)))
    samples: list[Sample] = []
    for _ in range(stops):
        k = min(todo, key=lambda i: math.dist(here, spots[i]))
        todo.remove(k)
        target, pace = spots[k], rng.uniform(1.1, 1.5)
        d = math.dist(here, target)
        course = math.degrees(math.atan2(target[1] - here[1], target[0] - here[0])) % 360
        for s in range(1, max(1, int(d / pace)) + 1):
            f = s / max(1, int(d / pace))
            pos = (here[0] + (target[0] - here[0]) * f, here[1] + (target[1] - here[1]) * f)
            samples.append(Sample(pos[0], pos[1], pace, course))
        dwell = plan.points[k].dwell_s
        samples += [Sample(target[0], target[1], 0.0, course)] * int(dwell + 30)
        here = target
    if rate_hz == 1:
        model = draw_model(Condition.OPEN_SKY, rng)
        obs = observe(model, samples, rng, CENTER, 1_767_225_600_000)
    else:
        model = draw(Condition.OPEN_SKY_10HZ, rng)
        obs = observe_rated(model, samples, rng, CENTER, 1_767_225_600_000)
    return [f for f in obs.fixes if f is not None]


def feed(plan: Plan, fixes: list[Fix]) -> tuple[float, float, list[tuple[str, int]]]:
    """(CPU s to build the engine, CPU s to feed the fixes, the check-ins)."""
    t0 = time.process_time()
    engine = CheckinEngine(plan)
    t1 = time.process_time()
    events = []
    for f in fixes:
        events.extend(engine.feed(f))
    events.extend(engine.finish())
    t2 = time.process_time()
    checkins = [(e.point.id, e.arrival_ms) for e in events if isinstance(e, CheckinEvent)]
    return t1 - t0, t2 - t1, checkins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stops", type=int, default=60, help="points the walk visits (60)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per plan; the best counts (3)")
    args = ap.parse_args()
    district, city, spots = plans(args.seed)
    fixes = walk(args.seed, spots, district, args.stops)
    print(f"walk: {len(fixes):,} fixes ({len(fixes) / 3600:.1f} h at 1 Hz), {args.stops} stops")
    results = {}
    for name, plan in (("district", district), ("city", city)):
        runs = [feed(plan, fixes) for _ in range(args.repeat)]
        build = min(r[0] for r in runs)
        best = min(r[1] for r in runs)
        results[name] = (best, runs[0][2])
        print(
            f"{name:<9}{len(plan.points):>8,} points  {1e6 * best / len(fixes):7.1f} µs/fix"
            f"  (engine built in {1e3 * build:,.0f} ms; {len(runs[0][2])} check-ins)"
        )
    ratio = results["city"][0] / results["district"][0]
    same = results["city"][1] == results["district"][1]
    print(f"ratio city / district: {ratio:.2f}  (same check-ins: {'yes' if same else 'NO'})")
    fast = walk(args.seed, spots, district, args.stops, rate_hz=10)
    runs = [feed(district, fast) for _ in range(args.repeat)]
    best10 = min(r[1] for r in runs)
    seconds = len(fixes)  # the 1 Hz walk: one fix per second
    print(
        f"10 Hz walk: {len(fast):,} fixes, district {1e6 * best10 / len(fast):7.1f} µs/fix"
        f"  ({1e6 * best10 / seconds:.1f} µs per second of walk against"
        f" {1e6 * results['district'][0] / seconds:.1f} at 1 Hz; {len(runs[0][2])} check-ins"
        f" against {len(results['district'][1])})"
    )
    demo = []
    for _ in range(args.repeat):
        t0 = time.process_time()
        small = generate_district(args.seed)
        demo.append(time.process_time() - t0)
    print(
        f"demo district: {len(small.points)} points, {len(small.lines)} lines,"
        f" generated in {1e3 * min(demo):,.1f} ms"
    )


if __name__ == "__main__":
    main()
