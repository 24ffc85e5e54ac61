"""Who walks what, and when: the members of a generated district (members.csv).

A member is a device id (`s0001`, `c0001`, `g0001` by tier), its tier, its team, the line it
walks and a date-less shift (`day 08:00-16:00`). The file is CSV because it is a flat
table that people open in a spreadsheet and tools read without a schema; it is kept apart
from the plan because a plan's assignments carry a date, and the roster is the same every
day: `assignments(members, date)` turns it into one day's plan assignments. This module is
small and free of the generator on purpose: the fleet runner needs only `members(dir)`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.checkin.plan import Assignment, Tier
from simulators.simerror import SimulatorError

__all__ = [
    "MEMBERS_FILE",
    "MEMBER_COLUMNS",
    "SHIFTS",
    "Member",
    "RosterError",
    "Shift",
    "assignments",
    "clock",
    "members",
    "members_text",
]

MEMBERS_FILE = "members.csv"
MEMBER_COLUMNS = ("device", "tier", "team", "line", "shift", "start", "end")
MINUTES_PER_DAY = 1440


class RosterError(SimulatorError, ValueError):
    """members.csv is missing or a row of it is not a member."""


def clock(minutes: int) -> str:
    """ "08:00" for 480; "24:00" for the end of the day."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class Shift:
    """A date-less shift: minutes after local midnight, 0 <= start < end <= 1440."""

    name: str
    start_min: int
    end_min: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_min < self.end_min <= MINUTES_PER_DAY:
            raise ValueError(f"shift {self.name!r}: {self.start_min}..{self.end_min} minutes")

    @property
    def minutes(self) -> int:
        return self.end_min - self.start_min

    def text(self) -> tuple[str, str]:
        return clock(self.start_min), clock(self.end_min)


SHIFTS = {
    "day": Shift("day", 8 * 60, 16 * 60),
    "evening": Shift("evening", 16 * 60, 24 * 60),
    "night": Shift("night", 0, 8 * 60),
}


@dataclass(frozen=True, slots=True)
class Member:
    """A patrol member's device, and what it walks when."""

    device: str
    tier: Tier
    team: str
    line: str
    shift: Shift


def members_text(crew: Iterable[Member]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MEMBER_COLUMNS)
    for m in crew:
        w.writerow((m.device, m.tier.value, m.team, m.line, m.shift.name, *m.shift.text()))
    return buf.getvalue()


def _minutes(text: str) -> int:
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(hh) == 2 and len(mm) == 2):
        raise ValueError(f"{text!r} is not HH:MM")
    if int(mm) > 59:
        raise ValueError(f"{text!r} is not HH:MM")
    return int(hh) * 60 + int(mm)


def _member(row: list[str]) -> Member:
    if len(row) != len(MEMBER_COLUMNS):
        raise ValueError(f"{len(row)} fields, not {len(MEMBER_COLUMNS)}")
    device, tier, team, line, shift, start, end = row
    if not all((device, team, line, shift)):
        raise ValueError("an empty device, team, line or shift")
    try:
        member_tier = Tier(tier)
    except ValueError:
        raise ValueError(f"unknown tier {tier!r}") from None
    return Member(device, member_tier, team, line, Shift(shift, _minutes(start), _minutes(end)))


def members(plan_dir: Path) -> list[Member]:
    """The members of a generated district, from `plan_dir`/members.csv, in file order."""
    path = plan_dir / MEMBERS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterError(f"{path}: cannot read: {exc}") from exc
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(header) != MEMBER_COLUMNS:
        raise RosterError(f"{path}: the first line must be {','.join(MEMBER_COLUMNS)}")
    out: list[Member] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        try:
            member = _member(row)
        except ValueError as exc:
            raise RosterError(f"{path}: line {n}: {exc}") from None
        if member.device in seen:
            raise RosterError(
                f"{path}: line {n}: device {member.device} is already on line {seen[member.device]}"
            )
        seen[member.device] = n
        out.append(member)
    return out


def assignments(crew: Iterable[Member], date: dt.date) -> tuple[Assignment, ...]:
    """One day's plan assignments: every member walks its line on `date` (local)."""
    return tuple(Assignment(lines=(m.line,), date=date, device=m.device) for m in crew)
