"""The fleet run's report: one JSON object for machines, one HTML page for people.

Everything is computed from what the run left behind — the workers' accounts of what each
device created and when (wall clock), and the center's database, read back and audited —
never from what the runner intended. The HTML page is self-contained (inline SVG and CSS,
the district map embedded), so it opens offline and can be attached to a CI run.

It reads the workers' typed finals (simulators/fleetwire.py) and plain figures of the run,
never the runner's options, so it imports nothing of simulators/fleetrun.py, which calls it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2

from agent.checkin.plan import Plan
from center.audit import Audit
from contract.records import CheckinKey, RecordType
from simulators.fleetwire import DeviceFinal, Final


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _received(center_db: Path) -> tuple[dict[tuple[str, int], int], dict[str, set[str]]]:
    """(device, seq) → when the center stored it; device → points it checked in at."""
    con = sqlite3.connect(f"file:{center_db}?mode=ro", uri=True)
    try:
        received: dict[tuple[str, int], int] = {}
        points: dict[str, set[str]] = defaultdict(set)
        for device, seq, rtype, raw, at in con.execute(
            "SELECT device, seq, type, raw, received_ms FROM records"
        ):
            received[(device, seq)] = at
            if rtype == RecordType.CHECKIN:
                body = cbor2.loads(cbor2.loads(raw).value[2])
                points[device].add(str(body.get(CheckinKey.POINT)))
        return received, points
    finally:
        con.close()


def build_report(
    *,
    hours: float,
    seed: int,
    shard: tuple[int, int],
    plan: Plan,
    finals: Sequence[Final],
    found: Audit | None,
    center_db: Path | None,
    center_stats: Mapping[str, Any],
    injected: Mapping[str, int],
    drained: bool,
    wall_s: float,
    setup_s: float,
    shift_s: float,
    workers: int,
    simulated_s: float,
    docks: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The report of a run of `hours` (`shard`: this one's (i, n)); `center_stats` is what
    the center printed when it stopped, `docks` the docks' own figures (fleetdocks.py)."""
    # the audit counts every device's records; the walkers' figures leave the docks out
    created = {d.id: d.last_seq for f in finals for d in f.devices}
    devices = [d for f in finals for d in f.devices if d.tier != "dock"]
    # a shard's center runs elsewhere: what it received is audited there
    received, points_by_device = _received(center_db) if center_db else ({}, {})
    latencies: list[float] = []
    for f in finals:
        if f.latency_file is None:
            continue  # the docks' entry (simulators/fleetdocks.py)
        for device, seq, made_ms in json.loads(Path(f.latency_file).read_text()):
            at = received.get((device, seq))
            if at is not None:
                latencies.append(max(0, at - made_ms) / 1000)
    latencies.sort()
    expected_by_tier: Counter[str] = Counter()
    recorded_by_tier: Counter[str] = Counter()
    for d in devices:
        expected_by_tier[d.tier] += len(d.visits)
        recorded_by_tier[d.tier] += d.checkins
    sim_s = simulated_s  # the shift, and the overtime members took to finish their point
    cpu_s = sum(f.cpu_s for f in finals)
    device_hours = len(devices) * sim_s / 3600
    report: dict[str, Any] = {
        "devices": len(devices),
        "hours": hours,
        "seed": seed,
        "workers": workers,
        "shard": f"{shard[0]}/{shard[1]}",
        "points": len(plan.points),
        "lines": len(plan.lines),
        "zones": len(plan.zones),
        "members_by_tier": dict(sorted(Counter(d.tier for d in devices).items())),
        "checkins_expected": sum(expected_by_tier.values()),
        "checkins_recorded": sum(recorded_by_tier.values()),
        "checkins_by_tier": dict(sorted(recorded_by_tier.items())),
        "missed_by_tier": {
            t: max(0, expected_by_tier[t] - recorded_by_tier[t]) for t in sorted(expected_by_tier)
        },
        "missed_records": sum(d.missed for d in devices),
        "suspicions": sum(d.suspicions for d in devices),
        "records_created": sum(created.values()),
        "records_delivered": found.delivered if found else None,
        "records_verified": found.verified if found else None,
        "records_lost": found.lost(created) if found else None,
        "records_duplicated": found.duplicated if found else None,
        "duplicates_by_kind": dict(found.duplicates_by_kind) if found else None,
        "batches_redelivered": found.batches_redelivered if found else None,
        "records_refused": found.refused if found else None,
        "duplicates_suppressed": int(center_stats.get("duplicates", 0)),
        "nmea_errors": sum(d.nmea_errors for d in devices),
        "devices_parsing_nmea": sum(1 for d in devices if d.nmea),
        "drained": drained,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_p99_s": percentile(latencies, 99),
        "latency_samples": len(latencies),
        "simulated_seconds": sim_s,
        "setup_seconds": round(setup_s, 1),
        "shift_wall_seconds": round(shift_s, 1),
        "wall_seconds": round(wall_s, 1),
        "speedup": round(sim_s / wall_s, 1) if wall_s > 0 else None,
        "cpu_seconds_workers": round(cpu_s, 1),
        "cpu_ms_per_device_hour": round(1000 * cpu_s / device_hours, 1) if device_hours else None,
        "peak_rss_mib_workers": round(sum(f.peak_rss_kib for f in finals) / 1024),
        "faults_injected": dict(sorted(injected.items())),
        "docks": 0,
        "aerial_checkins_expected": 0,
        "aerial_checkins_recorded": 0,
        "missions_flown": 0,
        "missions_refused": 0,
    }
    report.update(docks or {})
    report["_coverage"] = _coverage(plan, devices, points_by_device)
    report["_latencies"] = latencies
    return report


def _coverage(
    plan: Plan, devices: Sequence[DeviceFinal], points_by_device: Mapping[str, set[str]]
) -> list[dict[str, Any]]:
    """Per line: its points, and which of them some member of the line checked in at."""
    seen: dict[str, set[str]] = defaultdict(set)
    walkers: Counter[str] = Counter()
    for d in devices:
        seen[d.line].update(points_by_device.get(d.id, set()))
        walkers[d.line] += 1
    out = []
    for line in plan.lines:
        if not walkers[line.id]:
            continue
        pts = list(dict.fromkeys(line.point_ids))
        hit = [p for p in pts if p in seen[line.id]]
        out.append(
            {
                "line": line.id,
                "members": walkers[line.id],
                "points": len(pts),
                "visited": len(hit),
                "not_visited": [p for p in pts if p not in seen[line.id]],
            }
        )
    return out


def public(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without its bulky internals (what --json prints)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def _histogram_svg(values: Sequence[float], width: int = 640, height: int = 200) -> str:
    if not values:
        return "<p>No check-in reached the center.</p>"
    top = max(values) or 1.0
    bins = 30
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v / top * bins))] += 1
    peak = max(counts)
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 20 - c / peak * (height - 40):.1f}" '
        f'width="{bar - 1:.1f}" height="{c / peak * (height - 40):.1f}" fill="#3572a5"/>'
        for i, c in enumerate(counts)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{rects}'
        f'<text x="0" y="{height - 4}" font-size="11">0 s</text>'
        f'<text x="{width - 60}" y="{height - 4}" font-size="11">{top:.1f} s</text></svg>'
    )


def write_html(
    report: Mapping[str, Any],
    plan: Plan,
    finals: Sequence[Final],
    plan_dir: Path,
    out: Path,
) -> Path:
    del finals
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in public(report).items()
    )
    cover = sorted(report["_coverage"], key=lambda c: (c["visited"] / c["points"], c["line"]))
    lines_html = "".join(
        f"<tr><td>{c['line']}</td><td>{c['members']}</td><td>{c['visited']}/{c['points']}</td>"
        f"<td>{html.escape(', '.join(c['not_visited'][:12]))}"
        f"{' …' if len(c['not_visited']) > 12 else ''}</td></tr>"
        for c in cover
    )
    full = sum(1 for c in cover if c["visited"] == c["points"])
    map_svg = plan_dir / "map.svg"
    picture = (
        '<img alt="district map" style="max-width:100%" src="data:image/svg+xml;base64,'
        + base64.b64encode(map_svg.read_bytes()).decode()
        + '">'
        if map_svg.exists()
        else "<p>(no map.svg in the plan folder)</p>"
    )
    lat = report["_latencies"]
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Picket fleet run: {report["devices"]} devices, {report["hours"]} h</title>
<style>body{{font:14px sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}
.ok{{color:#080}}.bad{{color:#b00}}</style></head><body>
<h1>Fleet run: {report["devices"]} devices, {report["hours"]} h, seed {report["seed"]}</h1>
<p class="{"ok" if report["records_lost"] == 0 and report["records_duplicated"] == 0 else "bad"}">
{report["records_lost"]} records lost, {report["records_duplicated"]} duplicated;
{report["checkins_recorded"]} of {report["checkins_expected"]} expected check-ins recorded;
{report["speedup"]}× real time.</p>
<h2>District</h2>{picture}
<h2>Check-in to center latency (wall clock)</h2>
<p>p50 {report["latency_p50_s"]} s · p95 {report["latency_p95_s"]} s ·
p99 {report["latency_p99_s"]} s over {len(lat)} check-ins</p>{_histogram_svg(lat)}
<h2>Coverage per line</h2><p>{full} of {len(cover)} walked lines had every point checked in
during the run; the least covered first. Points not visited are the missed points.</p>
<table><tr><th>line</th><th>members</th><th>points visited</th><th>not visited</th></tr>
{lines_html}</table>
<h2>Missed check-ins per tier</h2><table><tr><th>tier</th><th>expected − recorded</th></tr>
{"".join(f"<tr><td>{t}</td><td>{n}</td></tr>" for t, n in report["missed_by_tier"].items())}
</table><h2>All figures</h2><table>{rows}</table></body></html>"""
    out.write_text(page, encoding="utf-8")
    del plan
    return out
