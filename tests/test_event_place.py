"""Where a report says it is: the picked place, else a fresh fix, else unknown (docs/events.md)."""

from __future__ import annotations

from agent.events.report import FIX_FRESH_MS, Picked, current_place
from contract.fix import Fix

NOW = 1_780_000_000_000


def fix_at(time_ms: int | None) -> Fix:
    return Fix(time_ms, 29.2651234, 106.2551234, accuracy_m=4.2)


def test_a_picked_place_wins_over_any_fix() -> None:
    picked = Picked(29.26, 106.25)
    assert current_place(picked, fix_at(NOW), NOW) is picked
    assert current_place(picked, None, None) is picked


def test_a_fix_a_minute_old_is_where_the_member_is_and_one_older_is_not() -> None:
    assert current_place(None, fix_at(NOW - 60_000), NOW) == fix_at(NOW - 60_000)
    assert current_place(None, fix_at(NOW - 60_001), NOW) is None  # walked on since
    assert FIX_FRESH_MS == 60_000  # the documented minute


def test_without_a_fix_or_a_time_the_place_is_unknown() -> None:
    assert current_place(None, None, NOW) is None
    assert current_place(None, fix_at(None), NOW) is None
    assert current_place(None, fix_at(NOW), None) is None


def test_a_fix_a_minute_ahead_of_the_clock_is_taken_and_one_further_is_not() -> None:
    assert current_place(None, fix_at(NOW + 60_000), NOW) == fix_at(NOW + 60_000)
    assert current_place(None, fix_at(NOW + 60_001), NOW) is None  # a clock in trouble
