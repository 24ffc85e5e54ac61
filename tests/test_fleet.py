"""The fleet runner on a real-scale district, small slices of it, with faults (CI's fleet).

Each run is the real thing: a TLS Mosquitto, the center as its own process, worker
processes running the real agent code; the assertions are what an integrator reads off
the report. The whole district for an hour is the benchmark (README), not a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.pytest_fleet import FleetRun
from simulators.scenario import ScenarioError

pytestmark = pytest.mark.integration


def clean(report: dict[str, Any]) -> None:
    assert report["records_lost"] == 0, "records lost"
    assert report["records_duplicated"] == 0, "records stored twice"
    assert report["drained"]
    assert report["records_delivered"] == report["records_verified"] == report["records_created"]


def test_a_quiet_quarter_hour_records_every_stay(fleet_run: FleetRun) -> None:
    report = fleet_run(devices=30, hours=0.25)
    clean(report)
    assert report["devices"] == 30
    assert set(report["members_by_tier"]) == {"street", "community", "grid"}  # spread evenly
    assert report["checkins_expected"] > 0
    assert report["checkins_recorded"] == report["checkins_expected"]
    assert all(n == 0 for n in report["missed_by_tier"].values())
    assert report["latency_samples"] == report["checkins_recorded"]
    assert 0 <= report["latency_p50_s"] <= report["latency_p95_s"] <= report["latency_p99_s"]
    assert report["speedup"] > 0  # how much faster than real time is a figure, not a promise
    page = Path(report["html"]).read_text(encoding="utf-8")
    for part in ("district map", "Coverage per line", "latency", "Missed check-ins per tier"):
        assert part in page


def test_the_district_docks_fly_in_the_fleet_run_and_are_audited(fleet_run: FleetRun) -> None:
    report = fleet_run(devices=10, hours=0.25, docks=True)
    clean(report)  # the docks' records are in records_created and audited with the rest
    assert report["devices"] == 10  # the walkers' figures leave the docks out
    assert report["docks"] == 2
    assert report["missions_flown"] >= 1
    assert report["aerial_checkins_expected"] > 0
    assert report["aerial_checkins_recorded"] == report["aerial_checkins_expected"]
    assert report["dock_commands_sent"] >= 2 and report["dock_commands_unanswered"] == 0


def test_a_field_day_of_faults_loses_and_duplicates_nothing(fleet_run: FleetRun) -> None:
    report = fleet_run(
        """
        [[fault]]
        kind = "broker-outage"
        at = "3m"
        for = "2m"

        [[fault]]
        kind = "center-restart"
        at = "6m"
        for = "1m"

        [[fault]]
        kind = "power-cut"
        devices = 0.1
        at = "4m"
        for = "2m"
        clock_reset = true

        [[fault]]
        kind = "dead-spot"
        zones = ["Z001", "Z002", "Z003", "Z004", "Z005", "Z006", "Z007", "Z008"]
        at = "0m"
        for = "10m"

        [[fault]]
        kind = "duplicates"
        devices = 0.2
        at = "9m"

        [[fault]]
        kind = "broker-kill"
        at = "11m"
        """,
        devices=40,
        hours=0.25,
    )
    clean(report)
    injected = report["faults_injected"]
    for kind in ("broker-outage", "center-restart", "power-cut", "duplicates", "broker-kill"):
        assert injected.get(kind) == 1, kind
    assert report["duplicates_suppressed"] > 0  # the repeated deliveries were recognised
    # a power cut forgets the stay in progress; everything recorded still arrived
    assert report["checkins_recorded"] <= report["checkins_expected"]


def test_gnss_faults_show_in_the_check_ins(fleet_run: FleetRun) -> None:
    zones = [f"Z{i:03d}" for i in range(1, 181)]
    report = fleet_run(
        f"""
        [[fault]]
        kind = "gnss-outage"
        zones = {zones!r}
        at = "0m"
        for = "15m"
        """.replace("'", '"'),
        devices=20,
        hours=0.25,
    )
    clean(report)
    assert report["faults_injected"] == {"gnss-outage": 1}
    assert report["checkins_recorded"] < report["checkins_expected"]  # no sky, no check-in


def test_a_wrong_scenario_is_refused_before_anything_runs(fleet_run: FleetRun) -> None:
    with pytest.raises(ScenarioError, match=r"fault 1 \(dead-spot\): zones not in the plan: Z999"):
        fleet_run('[[fault]]\nkind = "dead-spot"\nzones = ["Z999"]\nat = "1m"\nfor = "1m"\n')
    with pytest.raises(ScenarioError, match="'kind' must be one of"):
        fleet_run('[[fault]]\nkind = "meteor"\nat = "1m"\n')
    with pytest.raises(ScenarioError, match="not inside the run"):
        fleet_run('[[fault]]\nkind = "broker-kill"\nat = "2h"\n', hours=0.25)
