"""What a `picket sim dock` run is judged by: the drone's ground truth against the center's records.

Kept apart from the run (simulators/docksim.py) because it reads no clock and drives no
peer: the expected check-ins come from the drone's true track (`SimDrone.track`, without
GNSS error), the recorded ones from the center's database after the fact, and the rest is
counting. A fleet run (simulators/fleetdocks.py) judges its docks with the same functions.

A point's check-in is expected for every stay inside its radius and altitude band lasting
its dwell; a recorded check-in matches a stay at that point when its arrival falls inside it
(`slack_ms` early is allowed: the dock's time moves in steps), each stay once.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.checkin.geo import distance_m
from agent.checkin.plan import Plan
from center.commands import Receipt
from contract.errors import RecordError
from contract.records import CheckinKey, Outcome, RecordType, open_record
from provisioning.registry import Registry
from simulators.flight import TruthSample

__all__ = [
    "Stay",
    "aerial_checkins",
    "expected_checkins",
    "match_checkins",
    "record_types",
    "refusals_by_kind",
]


@dataclass(frozen=True, slots=True)
class Stay:
    """Ground truth: the drone inside a point's radius and band, from `start_ms` to `end_ms`."""

    point: str
    start_ms: int
    end_ms: int


def expected_checkins(track: list[TruthSample], plan: Plan, points: list[str]) -> list[Stay]:
    """Stays inside radius and band that last a point's dwell, from the drone's true track."""
    stays: list[Stay] = []
    for pid in points:
        p = plan.point(pid)
        low = -math.inf if p.alt_min_m is None else p.alt_min_m
        high = math.inf if p.alt_max_m is None else p.alt_max_m
        first: int | None = None
        last = 0
        for s in [*track, None]:
            inside = (
                s is not None
                and low <= s.alt_m <= high
                and distance_m(s.lat, s.lon, p.lat, p.lon) <= p.radius_m
            )
            if inside and s is not None:
                first = s.time_ms if first is None else first
                last = s.time_ms
            elif first is not None:
                if last - first >= p.dwell_s * 1000:
                    stays.append(Stay(pid, first, last))
                first = None
    return sorted(stays, key=lambda x: x.start_ms)


def aerial_checkins(db: Path, registry: Path, drone: str) -> list[tuple[str, int]]:
    """(point, arrival) of the check-ins at the center that verify and name `drone`."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    reg = Registry(registry, readonly=True)
    try:
        out = []
        rows = con.execute(
            "SELECT device, raw FROM records WHERE type = ? ORDER BY device, seq",
            (int(RecordType.CHECKIN),),
        ).fetchall()
        for device, raw in rows:
            key = reg.public_key(device)
            if key is None:
                continue
            try:
                rec = open_record(raw, key)
            except RecordError:
                continue
            point = rec.body.get(CheckinKey.POINT)
            if rec.body.get(CheckinKey.DRONE) == drone and isinstance(point, str):
                out.append((point, rec.header.time_ms))
        return out
    finally:
        con.close()
        reg.close()


def match_checkins(truth: list[Stay], recorded: list[tuple[str, int]], *, slack_ms: int) -> int:
    """Recorded check-ins whose arrival falls in an expected stay at that point (each once)."""
    left = list(truth)
    matched = 0
    for point, arrival in recorded:
        for s in left:
            if s.point == point and s.start_ms - slack_ms <= arrival <= s.end_ms:
                left.remove(s)
                matched += 1
                break
    return matched


def record_types(db: Path) -> dict[str, int]:
    """How many records of each type the center holds, by name."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT type, count(*) FROM records GROUP BY type").fetchall()
    finally:
        con.close()
    names = {int(t): t.name.lower() for t in RecordType}
    return {names.get(int(t), str(t)): int(n) for t, n in sorted(rows)}


def refusals_by_kind(answers: Sequence[Receipt]) -> Counter[str]:
    """The refused commands, by the kind of their reason."""
    return Counter(_reason_kind(r.reason or "") for r in answers if r.outcome is Outcome.REFUSED)


def _reason_kind(reason: str) -> str:
    """A refusal's reason without its figures: how the report groups them."""
    for word in ("battery", "wind", "drone not ready", "line", "point"):
        if reason.startswith(word):
            return word
    return reason
