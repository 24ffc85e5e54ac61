"""`picket checkin detect`: run the check-in engine over a recorded track, offline.

The same engine the agent runs, fed the fixes of an NMEA log in order, so a technician can
see what a device would have recorded for a walk (and why not), and the truth benchmark's
tracks can be checked by hand. One JSON object per event with --json, a table otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from agent.checkin.engine import CheckinEngine, CheckinEvent, Event, MissedEvent
from agent.checkin.planfile import load_plan
from agent.gnss.nmea import NmeaParser
from agent.gnss.report import iso_time
from contract.fix import Fix
from picket.gps import GpsInputError, date_arg, log_lines


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ck = sub.add_parser("checkin", help="the check-in engine, offline").add_subparsers(
        dest="checkin_command", required=True, metavar="COMMAND"
    )
    d = ck.add_parser("detect", help="events a device would record for a track")
    d.add_argument("--plan", type=Path, required=True, help="plan (GeoJSON, docs/plans.md)")
    d.add_argument("--nmea", type=Path, required=True, help="the track: an NMEA log")
    d.add_argument("--json", action="store_true", help="one JSON object per event")
    d.add_argument("--device", help="use this device's assignments (windows, missed points)")
    d.add_argument("--team", help="the device's team, for team assignments")
    d.add_argument("--date", type=date_arg, help="shift date for --device (default: the track's)")


def event_json(e: Event) -> dict[str, object]:
    if isinstance(e, CheckinEvent):
        return {
            "type": "checkin",
            "point": e.point.id,
            "verdict": "visited" if e.verdict == 0 else "uncertain",
            "arrive": iso_time(e.arrival_ms),
            "depart": iso_time(e.departure_ms),
            "dwell_s": e.dwell_s,
            "fixes": e.fixes_inside,
            "max_speed_mps": round(e.max_speed_mps, 2),
            "line": e.line,
            "suspect": e.suspect,
            "lat": round(e.best_fix.lat, 7),
            "lon": round(e.best_fix.lon, 7),
            "hacc_m": None if e.best_fix.accuracy_m is None else round(e.best_fix.accuracy_m, 2),
        }
    if isinstance(e, MissedEvent):
        return {
            "type": "missed",
            "point": e.point.id,
            "line": e.line,
            "window_start": iso_time(e.window_start_ms),
            "window_end": iso_time(e.window_end_ms),
            "time": iso_time(e.time_ms),
        }
    return {
        "type": "suspect",
        "kind": e.kind.value,
        "point": None,
        "time": iso_time(e.time_ms),
        "lat": round(e.fix.lat, 7),
        "lon": round(e.fix.lon, 7),
        "detail": e.detail,
    }


def _row(j: dict[str, object]) -> str:
    if j["type"] == "checkin":
        return (
            f"checkin  {j['point']:<10} {j['verdict']:<9} {j['arrive']} → {j['depart']}  "
            f"dwell {j['dwell_s']:.0f} s  fixes {j['fixes']}  line {j['line'] or '-'}"
        )
    if j["type"] == "missed":
        window = f"{j['window_start']} → {j['window_end']}"
        return f"missed   {j['point']:<10} line {j['line']}  window {window}"
    return f"suspect  {j['kind']:<10} {j['time']}  {j['detail']}"


def _fixes(path: Path) -> list[Fix]:
    """The track's fixes; the log is streamed with a line cap (picket.gps.log_lines)."""
    parser = NmeaParser()
    out: list[Fix] = []
    for line in log_lines(path):
        out.extend(parser.feed(line))
    return out + parser.flush()


def detect(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    fixes = _fixes(args.nmea)
    agenda = []
    if args.device:
        first = next((f.time_ms for f in fixes if f.time_ms is not None), None)
        date = args.date or (
            None if first is None else
            (dt.datetime.fromtimestamp(first / 1000, dt.UTC)
             + dt.timedelta(minutes=plan.utc_offset_min)).date()
        )  # fmt: skip
        if date is None:
            raise GpsInputError("the track has no dated fix: give --date")
        agenda = plan.agenda(date, args.device, args.team)
    engine = CheckinEngine(plan, agenda)
    events: list[Event] = []
    for fix in fixes:
        events.extend(engine.feed(fix))
    last = max((f.time_ms for f in fixes if f.time_ms is not None), default=None)
    events.extend(engine.finish(last))
    for e in events:
        j = event_json(e)
        print(json.dumps(j) if args.json else _row(j))
    s = engine.stats
    print(
        f"{args.nmea}: {len(fixes)} fixes, {s.ignored} unusable, {s.late} late, "
        f"{sum(isinstance(e, CheckinEvent) for e in events)} check-ins",
        file=sys.stderr,
    )
    return 0
