"""Field events in `picket sim fleet`: a small slice of the real-scale district reports
events with photos from its worker processes, over the TLS broker, and the center's desk
closes every one; the report's figures are what an integrator reads (docs/fleet.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from center.events.store import EventDb, EventQuery, list_events
from contract.eventcommands import EventStatusCode
from simulators.fleetreport import public
from simulators.fleetrun import FleetOptions, run_fleet
from simulators.progress import QUIET

pytestmark = pytest.mark.integration


async def test_fleet_members_report_events_that_arrive_whole_and_are_closed(
    fleet_district: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    opts = FleetOptions(
        fleet_district,
        devices=6,
        hours=0.25,
        seed=5,
        workers=2,
        workdir=work,
        docks=False,
        events_per_hour=8,  # 1.5 member-hours: about a dozen reports
    )
    report = public(await run_fleet(opts, QUIET))
    assert report["drained"]
    assert report["records_lost"] == 0 and report["records_duplicated"] == 0
    assert report["records_delivered"] == report["records_verified"] == report["records_created"]
    assert report["events_per_hour"] == 8
    reported = report["events_reported"]
    assert reported >= 1
    assert report["events_delivered"] == reported
    assert report["attachments_reported"] >= 1
    assert report["attachments_lost"] == 0
    assert report["attachments_delivered"] == report["attachments_reported"]
    assert report["events_closed"] == reported
    # both workers' members report: the events at the center name devices of each
    db = EventDb(work / "center.db", readonly=True)
    try:
        with db.read() as sql:
            rows = list_events(sql, EventQuery())
    finally:
        db.close()
    assert len(rows) == reported
    assert all(r.status is EventStatusCode.CLOSED for r in rows)
    assert len({r.device for r in rows}) >= 2


async def test_a_fleet_without_events_reports_none(fleet_district: Path, tmp_path: Path) -> None:
    opts = FleetOptions(
        fleet_district, devices=2, hours=0.1, workers=1, workdir=tmp_path / "run",
        docks=False, events_per_hour=0,
    )  # fmt: skip
    report = public(await run_fleet(opts, QUIET))
    assert report["drained"] and report["records_lost"] == 0
    assert report["events_reported"] == report["events_delivered"] == 0
    assert report["attachments_reported"] == report["attachments_lost"] == 0
