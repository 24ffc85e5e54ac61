"""The simulators are the ground truth the engine is tested against: test them as a user would."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import statistics
from dataclasses import dataclass

import pynmea2
import pytest

from agent.checkin.geo import distance_m, to_local
from agent.checkin.plan import Line, Plan
from simulators.district import generate_district
from simulators.nmea import checksum, gga, rmc
from simulators.walker import Visit, Walker

T0 = 1_767_223_800_000  # 2025-12-31T23:30:00Z: the shift crosses midnight and a new year
SHIFT_MS = 3_600_000
KNOT = 1852.0 / 3600.0


def seg_dist(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    ax, ay, bx, by, px, py = *a, *b, *p
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


# --------------------------------------------------------------------------- district


def test_district_is_deterministic_and_seed_dependent() -> None:
    assert generate_district(42) == generate_district(42)
    assert generate_district(42) != generate_district(43)
    assert generate_district(42).points != generate_district(43).points


@pytest.mark.parametrize("seed", range(12))
def test_district_points(seed: int) -> None:
    plan = generate_district(seed)
    assert plan.version == 1
    assert [p.id for p in plan.points] == [f"P{i:03d}" for i in range(1, 25)]
    for p in plan.points:
        assert 20.0 <= p.radius_m <= 30.0
        assert p.radius_m == round(p.radius_m, 1)
        assert 60 <= p.dwell_s <= 120
        assert p.dwell_s == int(p.dwell_s)
        north, east = to_local(29.265, 106.255, p.lat, p.lon)
        assert abs(north) <= 1260 and abs(east) <= 1260  # a ~2.5 km x 2.5 km square
    for a, b in itertools.combinations(plan.points, 2):
        assert distance_m(a.lat, a.lon, b.lat, b.lon) >= 150.0


@pytest.mark.parametrize("seed", range(12))
def test_district_lines_keep_clear_of_other_points(seed: int) -> None:
    plan = generate_district(seed)
    assert [line.id for line in plan.lines] == [f"L{i:02d}" for i in range(1, 7)]
    assert len({frozenset(line.point_ids) for line in plan.lines}) == 6
    lat0, lon0 = plan.points[0].lat, plan.points[0].lon
    xy = {p.id: to_local(lat0, lon0, p.lat, p.lon) for p in plan.points}
    for line in plan.lines:
        ids = line.point_ids
        assert 4 <= len(ids) <= 6
        assert len(set(ids)) == len(ids)
        for a, b in zip(ids, ids[1:] + ids[:1], strict=True):  # includes the closing segment
            for p in plan.points:
                if p.id not in (a, b):
                    assert seg_dist(xy[p.id], xy[a], xy[b]) > p.radius_m + 25.0, (line, a, b, p)
        for a, b in itertools.pairwise(ids):
            assert math.dist(xy[a], xy[b]) <= 700.0


def test_district_honours_arguments() -> None:
    # how long it takes is bench/engine_cpu.py's figure ("demo district")
    plan = generate_district(7)
    small = generate_district(7, n_points=12, n_lines=3, center=(30.0, 120.0))
    assert len(small.points) == 12 and len(small.lines) == 3
    assert all(distance_m(30.0, 120.0, p.lat, p.lon) < 1800 for p in small.points)
    assert plan != small


# --------------------------------------------------------------------------- nmea


def test_checksum_matches_the_textbook_example() -> None:
    body = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert checksum(body) == "47"
    assert checksum("") == "00"


def test_sentences_are_well_formed_and_round_trip() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        t = rng.randrange(1_600_000_000_000, 1_900_000_000_000)
        lat, lon = rng.uniform(-89.9, 89.9), rng.uniform(-179.9, 179.9)
        speed, course = rng.uniform(0, 5), rng.uniform(0, 359.9)
        g = gga(t, lat, lon, satellites=11, hdop=1.23, altitude_m=251.7)
        r = rmc(t, lat, lon, speed_mps=speed, course_deg=course)
        for s in (g, r):
            assert s.startswith("$GN") and s.endswith("\r\n")
            body, star, cs = s[1:-2].rpartition("*")
            assert star == "*" and cs == checksum(body)
        mg, mr = pynmea2.parse(g, check=True), pynmea2.parse(r, check=True)
        when = dt.datetime.fromtimestamp(t // 10 / 100, tz=dt.UTC)
        for m in (mg, mr):
            assert distance_m(lat, lon, m.latitude, m.longitude) < 0.02
            assert m.timestamp == when.timetz()
        assert (mg.gps_qual, mg.num_sats, mg.horizontal_dil) == (1, "11", "1.23")
        assert float(mg.altitude) == 251.7
        assert mr.datetime == when
        assert mr.status == "A" and mr.mode_indicator == "A"
        assert abs(mr.spd_over_grnd * KNOT - speed) < 0.01
        assert abs(mr.true_course - course) < 0.06


def test_sentence_edge_cases() -> None:
    last_cs_of_day = 1_767_225_599_999  # 2025-12-31T23:59:59.999Z truncates, never rounds up
    assert gga(last_cs_of_day, 29.5, 106.0).startswith(
        "$GNGGA,235959.99,2930.00000,N,10600.00000,E,"
    )
    s = rmc(last_cs_of_day, -33.9, -70.65, speed_mps=0.0, course_deg=359.99, valid=False)
    m = pynmea2.parse(s, check=True)
    assert (m.status, m.lat_dir, m.lon_dir, m.datestamp) == ("V", "S", "W", dt.date(2025, 12, 31))
    assert m.true_course == 0.0
    assert gga(0, 0.0, 0.0, talker="GP").startswith("$GPGGA,000000.00,0000.00000,N,00000.00000,E,")


# --------------------------------------------------------------------------- walker


@dataclass
class Run:
    plan: Plan
    line: Line
    walker: Walker
    seconds: list[int]  # now_ms of each tick that produced bytes
    data: list[bytes]
    truth: list[tuple[float, float]]
    done_ms: int


def run(seed: int, line_index: int = 0, shift_ms: int = SHIFT_MS, district: int = 3) -> Run:
    plan = generate_district(district)
    line = plan.lines[line_index]
    walker = Walker(f"dev-{seed}", plan, line, random.Random(seed), T0, T0 + shift_ms)
    seconds, data, truth = [], [], []
    now = T0
    while now < T0 + shift_ms + 3_600_000:
        out = walker.tick(now)
        if walker.done:
            assert out == b""
            break
        seconds.append(now)
        data.append(out)
        truth.append(walker.true_position)
        now += 1000
    assert walker.done, "the walker never finished"
    assert walker.tick(now + 1000) == b""
    return Run(plan, line, walker, seconds, data, truth, now)


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    return [run(seed, line_index=seed % 6) for seed in range(6)]


def parsed(r: Run) -> list[tuple[pynmea2.GGA, pynmea2.RMC]]:
    out = []
    for chunk in r.data:
        lines = chunk.decode("ascii").split("\r\n")
        assert len(lines) == 3 and lines[2] == ""
        g, m = (pynmea2.parse(s, check=True) for s in lines[:2])
        assert isinstance(g, pynmea2.GGA) and isinstance(m, pynmea2.RMC)
        assert g.talker == m.talker == "GN"
        out.append((g, m))
    return out


def test_walker_is_deterministic() -> None:
    a, b, c = run(11), run(11), run(12)
    assert a.data == b.data and a.walker.visits == b.walker.visits
    assert a.data != c.data


def test_walker_sentences_parse_and_match_the_clock(runs: list[Run]) -> None:
    for r in runs:
        for now, (g, m) in zip(r.seconds, parsed(r), strict=True):
            assert m.datetime == dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC)
            assert g.timestamp == m.timestamp
            assert (g.latitude, g.longitude) == (m.latitude, m.longitude)
            assert g.gps_qual == 1 and m.status == "A"
            assert 0.8 <= float(g.horizontal_dil) <= 1.4
            assert 8 <= int(g.num_sats) <= 14
            assert 230 <= float(g.altitude) <= 270


def test_reported_error_is_bounded_and_plausible(runs: list[Run]) -> None:
    norths, easts = [], []
    for r in runs:
        for (lat, lon), (g, _) in zip(r.truth, parsed(r), strict=True):
            assert distance_m(lat, lon, g.latitude, g.longitude) <= 7.0
            n, e = to_local(lat, lon, g.latitude, g.longitude)
            norths.append(n)
            easts.append(e)
    for errors in (norths, easts):
        assert 1.0 < statistics.pstdev(errors) < 3.0
        # correlated, not white: consecutive errors differ far less than sigma
        assert statistics.fmean(abs(a - b) for a, b in itertools.pairwise(errors)) < 0.6


def test_walker_starts_away_from_every_point(runs: list[Run]) -> None:
    for r in runs:
        lat, lon = r.truth[0]
        first = r.plan.point(r.line.point_ids[0])
        assert 99.0 <= distance_m(lat, lon, first.lat, first.lon) <= 201.0
        for p in r.plan.points:
            assert distance_m(lat, lon, p.lat, p.lon) > p.radius_m + 25.0


def test_visits_follow_the_line_and_honour_dwell(runs: list[Run]) -> None:
    for r in runs:
        line = r.line
        visits = r.walker.visits
        assert len(visits) >= 3
        n = len(line.point_ids)
        assert [v.point_id for v in visits] == [line.point_ids[i % n] for i in range(len(visits))]
        for v in visits:
            p = r.plan.point(v.point_id)
            assert (
                p.dwell_s * 1000 + 20_000
                <= v.departure_ms - v.arrival_ms
                <= p.dwell_s * 1000 + 61_000
            )
        for a, b in itertools.pairwise(visits):
            assert a.departure_ms < b.arrival_ms


def test_walker_stands_at_the_point_while_dwelling(runs: list[Run]) -> None:
    for r in runs:
        index = {now: i for i, now in enumerate(r.seconds)}
        fixes = parsed(r)
        for v in r.walker.visits:
            p = r.plan.point(v.point_id)
            for now in range(v.arrival_ms, v.departure_ms + 1, 1000):
                lat, lon = r.truth[index[now]]
                assert distance_m(lat, lon, p.lat, p.lon) <= 3.0
                g, _ = fixes[index[now]]
                assert distance_m(g.latitude, g.longitude, p.lat, p.lon) < p.radius_m
        # speed is zero exactly while dwelling: one still run per visit
        still = [m.spd_over_grnd == 0 for _, m in fixes]
        runs_of_still = sum(1 for a, b in itertools.pairwise([False, *still]) if b and not a)
        assert runs_of_still == len(r.walker.visits)


def test_walking_speed_is_a_walking_pace(runs: list[Run]) -> None:
    for r in runs:
        fixes = parsed(r)
        speeds = [m.spd_over_grnd * KNOT for _, m in fixes if m.spd_over_grnd > 0]
        assert speeds and all(0.995 <= s <= 1.605 for s in speeds)
        moving = [
            distance_m(*r.truth[i], *r.truth[i + 1])
            for i in range(len(fixes) - 1)
            if fixes[i][1].spd_over_grnd > 0 and fixes[i + 1][1].spd_over_grnd > 0
        ]
        assert all(d <= 1.61 for d in moving)
        assert 1.0 <= statistics.median(moving) <= 1.6


def test_walker_finishes_after_shift_end_clear_of_points(runs: list[Run]) -> None:
    for r in runs:
        assert r.done_ms >= T0 + SHIFT_MS
        lat, lon = r.walker.true_position
        for p in r.plan.points:
            assert distance_m(lat, lon, p.lat, p.lon) > 2 * p.radius_m
        assert r.walker.visits[-1].departure_ms < r.done_ms


def test_walker_never_stops_mid_dwell() -> None:
    full = run(21, shift_ms=2 * SHIFT_MS)
    first = full.walker.visits[0]
    cut = run(21, shift_ms=first.arrival_ms + 5_000 - T0)  # shift ends 5 s into the first dwell
    assert cut.walker.visits == [first]
    assert cut.done_ms > first.departure_ms
    assert cut.data == full.data[: len(cut.data)]


def test_walker_done_immediately_when_shift_already_over() -> None:
    plan = generate_district(3)
    walker = Walker("d", plan, plan.lines[0], random.Random(1), T0, T0)
    ticks = 0
    while not walker.done and ticks < 600:
        walker.tick(T0 + ticks * 1000)
        ticks += 1
    assert walker.done and walker.visits == []
    lat, lon = walker.true_position
    assert all(distance_m(lat, lon, p.lat, p.lon) > 2 * p.radius_m for p in plan.points)


def test_visit_is_a_plain_value() -> None:
    assert Visit("P001", 1, 2) == Visit("P001", 1, 2)
