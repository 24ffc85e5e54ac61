"""Field events in `picket demo`: members report what they find, most with a photo, the
center's desk handles every report through to closed, and nothing reported is lost.

The demo runs for real (provisioned devices, TLS Mosquitto, the center as its own process,
each agent's uplink and uploader); the end is checked as an operator would: the report's
figures, and the center's events read back with `picket center events` (the photos
exported as files and opened as pictures).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from center.events import lifecycle
from center.events.catalogue import load
from center.events.store import AttachmentRow, EventRow
from contract.eventcommands import EventStatusCode
from picket import fleetcmd
from picket.progress import Progress
from simulators import fieldevents
from simulators.demo import DemoError, DemoOptions, run_demo
from simulators.fieldevents import NOTES, next_action, plan_reports

HOUR = 3_600_000
T0 = 1_772_323_200_000


def picket(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picket", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- the plan: a rate per member-hour, drawn from the seed ---------------------------------------


def test_reports_come_at_the_rate_asked_mostly_with_photos() -> None:
    members = 500
    plans = [
        plan_reports(
            random.Random(i),
            rate_per_hour=0.4,
            start_ms=T0,
            end_ms=T0 + 2 * HOUR,
            categories=[1, 4],
        )
        for i in range(members)
    ]
    reports = [p for plan in plans for p in plan]
    # 1,000 member-hours at 0.4 an hour: 400 expected, a Poisson count (σ = 20)
    assert 300 <= len(reports) <= 500
    assert all(T0 <= p.at_ms < T0 + 2 * HOUR for p in reports)
    assert all(plan == sorted(plan, key=lambda p: p.at_ms) for plan in plans)
    assert {p.category for p in reports} == {1, 4}
    with_photo = sum(1 for p in reports if p.photos)
    assert 0.6 * len(reports) <= with_photo < len(reports)  # most, not all
    notes = [p.note for p in reports if p.note is not None]
    assert 0 < len(notes) < len(reports) and set(notes) <= set(NOTES)
    # each member's pictures are new ones: no photo is reported twice
    for plan in plans:
        pictures = [n for p in plan for n in p.photos]
        assert len(pictures) == len(set(pictures))


def test_the_same_seed_plans_the_same_reports_and_rate_zero_plans_none() -> None:
    def plan(seed: int, rate: float) -> list[fieldevents.PlannedReport]:
        return plan_reports(
            fieldevents.member_rng(seed, 3),
            rate_per_hour=rate,
            start_ms=T0,
            end_ms=T0 + 50 * HOUR,
            categories=[1, 2, 3],
        )

    assert plan(7, 0.4) == plan(7, 0.4)
    assert plan(7, 0.4) != plan(8, 0.4)
    assert plan(7, 0.0) == []


def test_the_cli_default_rate_is_the_simulators_and_bad_rates_are_refused() -> None:
    assert fleetcmd.EVENTS_PER_HOUR == fieldevents.DEFAULT_EVENTS_PER_HOUR
    assert fleetcmd.EVENTS_PER_HOUR_MAX == fieldevents.MAX_EVENTS_PER_HOUR
    for bad in ("-1", "many", "61"):
        done = picket("demo", "--devices", "1", "--minutes", "1", "--events-per-hour", bad)
        assert done.returncode == 2, done.stderr
        assert "--events-per-hour" in done.stderr and "Traceback" not in done.stderr


async def test_run_demo_refuses_a_rate_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="events-per-hour"):
        await run_demo(
            DemoOptions(devices=1, minutes=1, events_per_hour=-0.5), Progress(quiet=True)
        )


# --- the desk: accept once the photos are in, then through to closed ------------------------------


def _row(status: EventStatusCode, number: int = 5) -> EventRow:
    return EventRow(
        number, "h0001", 3, 1, 1, 0, 0, 0, None, None, T0, T0, None, None, status,
        None, None, None, None, None, None, None, T0,
    )  # fmt: skip


def test_the_desk_waits_for_the_photos_then_takes_an_event_to_closed() -> None:
    cat = load()
    photo = AttachmentRow(5, b"\1" * 32, 1, 1000, 400, False, None)
    assert next_action(_row(EventStatusCode.REPORTED), [photo], cat, T0) is None
    whole = AttachmentRow(5, b"\1" * 32, 1, 1000, 1000, True, None)
    state = _row(EventStatusCode.REPORTED).state()
    seen = []
    for step in range(10):
        row = _row(state.status)
        action = next_action(row, [whole], cat, T0 + step)
        if action is None:
            break
        state = lifecycle.apply(state, action, by="desk", at_ms=T0 + step).event
        seen.append(state.status)
    assert seen == [
        EventStatusCode.ACCEPTED,
        EventStatusCode.DISPATCHED,
        EventStatusCode.IN_PROGRESS,
        EventStatusCode.RESOLVED,
        EventStatusCode.CLOSED,
    ]
    team = next(c.team for c in cat.categories if c.code == 1)
    assert state.assignee == f"team:{team}"  # the category's team
    assert state.result


# --- the whole loop, in the demo -----------------------------------------------------------------


@pytest.mark.integration
async def test_demo_events_reach_the_center_whole_and_are_closed(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    report = await run_demo(
        DemoOptions(devices=4, minutes=20, seed=3, workdir=work, events_per_hour=6),
        Progress(quiet=True),
    )
    assert report["drained"] is True
    assert report["records_lost"] == 0 and report["records_duplicated"] == 0
    assert report["records_delivered"] == report["records_created"] == report["records_verified"]
    reported = report["events_reported"]
    assert isinstance(reported, int) and reported >= 1
    assert report["events_delivered"] == reported
    assert report["attachments_lost"] == 0
    attachments = report["attachments_reported"]
    assert isinstance(attachments, int) and attachments >= 1
    assert report["attachments_delivered"] == attachments
    assert report["events_closed"] == reported  # the desk took every one through

    # what the operator sees: every event closed, each photo exported opens as a picture
    listed = picket("center", "events", "list", "--db", work / "center.db", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["events"]
    assert len(rows) == reported
    assert {r["status"] for r in rows} == {"closed"}
    assert {r["device"] for r in rows} <= {f"h{i:04d}" for i in range(1, 5)}
    assert all(r["note"] in (None, *NOTES) for r in rows)  # a note arrived whole, or none
    photos = 0
    for r in rows:
        out = tmp_path / f"export-{r['number']}"
        out.mkdir()
        shown = picket(
            "center", "events", "show", str(r["number"]), "--db", work / "center.db",
            "--export", out, "--json",
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert [c["to"] for c in doc["changes"]][-1] == "closed"
        assert all(a["complete"] and a["held"] == a["size"] for a in doc["attachments"])
        digests = {a["sha256"] for a in doc["attachments"] if a["kind"] == 1}
        for f in sorted(out.glob("*.jpg")):
            data = f.read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                assert img.format == "JPEG" and max(img.size) <= 1600
            assert hashlib.sha256(data).hexdigest() in digests
            photos += 1
    assert photos >= 1  # most reports carry a photo
