"""The event lifecycle at the center (center/events/lifecycle.py) against docs/events.md.

The oracle is a list written by hand from the lifecycle in docs/events.md, not read from
the code's table: every (status, action) pair of the 9 × 8 is tried, the ones on the list
must move the event to the listed status with one stored change (who, when, what), and
every other one must be refused with a message that names the event, its status and the
action asked. The doc's own table is checked against the same list, so the doc, the list
and the code cannot drift apart unnoticed. Who is told of a change (the reporters, merged
ones included, and a device assignee; never a team or the Open311 reporter) is checked on
hand-made events.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from center.events import lifecycle as lc
from center.events.lifecycle import EventState, Refused
from contract.eventcommands import EventStatusCode as S

ROOT = Path(__file__).resolve().parents[1]
T = 1_772_323_200_000

# docs/events.md, "The lifecycle at the center", written out by hand: status, action, next.
LIFECYCLE = {
    ("reported", "accept"): "accepted",
    ("reported", "reject"): "rejected",
    ("reported", "merge"): "merged",
    ("accepted", "dispatch"): "dispatched",
    ("accepted", "merge"): "merged",
    ("dispatched", "dispatch"): "dispatched",
    ("dispatched", "start"): "in progress",
    ("in progress", "resolve"): "resolved",
    ("resolved", "close"): "closed",
    ("resolved", "reopen"): "reopened",
    ("closed", "reopen"): "reopened",
    ("reopened", "dispatch"): "dispatched",
}
STATUSES = {
    "reported": S.REPORTED,
    "accepted": S.ACCEPTED,
    "rejected": S.REJECTED,
    "dispatched": S.DISPATCHED,
    "in progress": S.IN_PROGRESS,
    "resolved": S.RESOLVED,
    "closed": S.CLOSED,
    "reopened": S.REOPENED,
    "merged": S.MERGED,
}
PAST = {
    "accept": "accepted",
    "reject": "rejected",
    "dispatch": "dispatched",
    "start": "started",
    "resolve": "resolved",
    "close": "closed",
    "reopen": "reopened",
    "merge": "merged",
}
TARGET = EventState(7, S.ACCEPTED, ("h0009",), assignee="team:street")


def action(name: str) -> lc.Action:
    actions: dict[str, lc.Action] = {
        "accept": lc.Accept(),
        "reject": lc.Reject("not in our district"),
        "dispatch": lc.Dispatch("h0002", T + 3_600_000),
        "start": lc.Start(),
        "resolve": lc.Resolve("rubbish taken away", 12),
        "close": lc.Close(),
        "reopen": lc.Reopen("still there"),
        "merge": lc.Merge(7),
    }
    return actions[name]


def event(status: str, **kw: object) -> EventState:
    return EventState(42, STATUSES[status], ("h0001",), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", list(STATUSES))
@pytest.mark.parametrize("name", list(PAST))
def test_every_status_and_action_is_allowed_or_refused_as_the_doc_says(
    status: str, name: str
) -> None:
    before = event(status)
    to = LIFECYCLE.get((status, name))
    if to is None:
        with pytest.raises(Refused) as err:
            lc.apply(before, action(name), by="op", at_ms=T, target=TARGET)
        text = str(err.value)
        assert text.startswith(f"event 42 is {status}: "), text
        assert PAST[name] in text.split(": ", 1)[1], text
        allowed = [PAST[a] for (s, a) in LIFECYCLE if s == status]
        assert all(a in text for a in allowed), text
        return
    out = lc.apply(before, action(name), by="op", at_ms=T, target=TARGET)
    assert out.event.status is STATUSES[to]
    assert out.event.updated_ms == T
    (change,) = out.changes
    assert (change.event, change.from_, change.to, change.by, change.at_ms) == (
        42,
        STATUSES[status],
        STATUSES[to],
        "op",
        T,
    )
    assert "h0001" in out.notify  # the reporter hears of every change


def test_the_doc_states_the_same_lifecycle() -> None:
    text = (ROOT / "docs/events.md").read_text(encoding="utf-8")
    section = text.split("## The lifecycle at the center", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w[\w ]*?) \| (\w+) \| (\w[\w ]*?) \|$", section, re.M)
    found = {(s, a): t for s, a, t in rows if s != "status"}
    assert found == LIFECYCLE


def test_a_refusal_says_what_can_be_done() -> None:
    with pytest.raises(Refused, match=r"^event 42 is closed: it can be reopened, not dispatched$"):
        lc.apply(event("closed"), lc.Dispatch("h0002", T + 1), by="op", at_ms=T)
    with pytest.raises(Refused, match=r"event 42 is merged into event 7: it can no longer change"):
        lc.apply(event("merged", merged_into=7), lc.Reopen("again"), by="op", at_ms=T)


def test_values_are_kept_and_checked() -> None:
    out = lc.apply(
        event("accepted"), lc.Dispatch("team:街道综合执法", T + 60_000), by="op", at_ms=T
    )
    assert (out.event.assignee, out.event.deadline_ms) == ("team:街道综合执法", T + 60_000)
    assert out.notify == ("h0001",)  # a team is no device
    with pytest.raises(Refused, match="later than now"):
        lc.apply(event("accepted"), lc.Dispatch("h0002", T), by="op", at_ms=T)
    with pytest.raises(Refused, match="reason is needed"):
        lc.apply(event("reported"), lc.Reject("   "), by="op", at_ms=T)
    with pytest.raises(Refused, match="at most 500"):
        lc.apply(event("in progress"), lc.Resolve("x" * 501), by="op", at_ms=T)
    done = lc.apply(event("in progress"), lc.Resolve(" swept ", 12), by="op", at_ms=T)
    assert (done.event.result, done.event.result_report) == ("swept", 12)
    back = lc.apply(done.event, lc.Reopen("still dirty"), by="op", at_ms=T + 1)
    assert (back.event.reason, back.event.result) == ("still dirty", None)


def test_the_assignee_device_is_told_and_a_relieved_one_too() -> None:
    first = lc.apply(event("accepted"), lc.Dispatch("h0002", T + 10), by="op", at_ms=T)
    assert first.notify == ("h0001", "h0002")
    again = lc.apply(first.event, lc.Dispatch("h0003", T + 20), by="op", at_ms=T + 1)
    assert set(again.notify) == {"h0001", "h0003", "h0002"}
    start = lc.apply(again.event, lc.Start(), by="h0003", at_ms=T + 2)
    assert start.notify == ("h0001", "h0003")


def test_a_merge_keeps_both_reporters_told() -> None:
    target = EventState(7, S.DISPATCHED, ("h0009",), assignee="h0004", deadline_ms=T + 99)
    out = lc.apply(event("reported"), lc.Merge(7), by="op", at_ms=T, target=target)
    assert (out.event.status, out.event.merged_into) == (S.MERGED, 7)
    assert out.target is not None and out.target.reporters == ("h0009", "h0001")
    assert out.target.status is S.DISPATCHED  # the target goes on where it was
    assert set(out.notify) == {"h0001", "h0009", "h0004"}
    # a later change of the target tells the merged report's reporter as well
    later = lc.apply(out.target, lc.Start(), by="h0004", at_ms=T + 5)
    assert set(later.notify) == {"h0009", "h0001", "h0004"}


def test_a_merge_into_itself_or_a_finished_event_is_refused() -> None:
    with pytest.raises(Refused, match="into itself"):
        lc.apply(event("reported"), lc.Merge(42), by="op", at_ms=T, target=event("accepted"))
    closed = EventState(7, S.CLOSED, ("h0009",))
    with pytest.raises(Refused, match="event 7 is closed: nothing can be merged into it"):
        lc.apply(event("reported"), lc.Merge(7), by="op", at_ms=T, target=closed)


def test_an_open311_reporter_is_never_told() -> None:
    filed = EventState(5, S.REPORTED, ("open311",))
    assert lc.apply(filed, lc.Accept(), by="op", at_ms=T).notify == ()
