"""An event's status at the center: a pure state machine whose transitions are a table.

The center's operators (and the devices, through their receipts and result reports) act on
an event; each action either moves it along the lifecycle of docs/events.md or is refused
with the reason a person reads ("event 42 is closed: it can be reopened, not dispatched").
Nothing here reads a clock or a database: the event's current state, the action, who acts
and when are passed in, and what comes back is the event's new state, the `Change`s to
store (who, when, from, to, what) and the devices to tell, so the whole lifecycle is a table
of cases in tests/test_event_lifecycle.py, and the stores (center/events/store.py) only
read the row, call `apply` and write what it says.

The table `TRANSITIONS` is the lifecycle, as code:

    reported     accept -> accepted, reject -> rejected, merge -> merged
    accepted     dispatch -> dispatched, merge -> merged
    dispatched   dispatch -> dispatched (re-dispatched), start -> in progress
    in progress  resolve -> resolved
    resolved     close -> closed, reopen -> reopened
    closed       reopen -> reopened
    reopened     dispatch -> dispatched
    rejected, merged: final

Who is told: every reporter of the event (a merged event's reporters stay with the event it
was merged into, so both are told of every later change) and the assignee once there is one
and it is a device (a team, `team:NAME`, is told through its members' own assignments).
Requests filed through Open311 have the reporter `open311`, which is no device.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from center.errors import CenterError
from contract.eventcommands import EventStatusCode

__all__ = [
    "OPEN311",
    "TEAM_PREFIX",
    "TRANSITIONS",
    "Accept",
    "Action",
    "ActionKind",
    "Change",
    "Close",
    "Dispatch",
    "EventState",
    "EventStatusCode",
    "Merge",
    "Outcome",
    "Refused",
    "Reject",
    "Reopen",
    "Resolve",
    "Start",
    "apply",
    "is_device",
    "label",
]

OPEN311 = "open311"  # the reporter of a request filed through the Open311 API
TEAM_PREFIX = "team:"  # an assignee that is a team, not a device
MAX_TEXT = 500  # characters of a reason or a result


def label(status: EventStatusCode) -> str:
    """How a person reads a status: "in progress"."""
    return status.name.lower().replace("_", " ")


class ActionKind(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    DISPATCH = "dispatch"
    START = "start"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"
    MERGE = "merge"


S, A = EventStatusCode, ActionKind
TRANSITIONS: Mapping[EventStatusCode, Mapping[ActionKind, EventStatusCode]] = {
    S.REPORTED: {A.ACCEPT: S.ACCEPTED, A.REJECT: S.REJECTED, A.MERGE: S.MERGED},
    S.ACCEPTED: {A.DISPATCH: S.DISPATCHED, A.MERGE: S.MERGED},
    S.DISPATCHED: {A.DISPATCH: S.DISPATCHED, A.START: S.IN_PROGRESS},
    S.IN_PROGRESS: {A.RESOLVE: S.RESOLVED},
    S.RESOLVED: {A.CLOSE: S.CLOSED, A.REOPEN: S.REOPENED},
    S.CLOSED: {A.REOPEN: S.REOPENED},
    S.REOPENED: {A.DISPATCH: S.DISPATCHED},
    S.REJECTED: {},
    S.MERGED: {},
}
del S, A

# How a person says each action was done to an event ("it can be reopened, not dispatched").
_DONE = {
    ActionKind.ACCEPT: "accepted",
    ActionKind.REJECT: "rejected",
    ActionKind.DISPATCH: "dispatched",
    ActionKind.START: "started",
    ActionKind.RESOLVE: "resolved",
    ActionKind.CLOSE: "closed",
    ActionKind.REOPEN: "reopened",
    ActionKind.MERGE: "merged",
}


class Refused(CenterError):
    """An action the event's status does not allow, or an action's value that is wrong; the
    message says which, in words an operator reads."""


# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accept:
    kind = ActionKind.ACCEPT


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    kind = ActionKind.REJECT


@dataclass(frozen=True, slots=True)
class Dispatch:
    assignee: str  # a device id, or `team:NAME`
    deadline_ms: int
    kind = ActionKind.DISPATCH


@dataclass(frozen=True, slots=True)
class Start:
    kind = ActionKind.START


@dataclass(frozen=True, slots=True)
class Resolve:
    result: str
    report: int | None = None  # the event number of the handler's result report
    kind = ActionKind.RESOLVE


@dataclass(frozen=True, slots=True)
class Close:
    kind = ActionKind.CLOSE


@dataclass(frozen=True, slots=True)
class Reopen:
    reason: str
    kind = ActionKind.REOPEN


@dataclass(frozen=True, slots=True)
class Merge:
    into: int  # the event this one is a duplicate of
    kind = ActionKind.MERGE


Action = Accept | Reject | Dispatch | Start | Resolve | Close | Reopen | Merge


# --- values --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventState:
    """What the lifecycle needs of an event: the rest of its row is not its business."""

    number: int
    status: EventStatusCode
    reporters: tuple[str, ...]  # the reporting device first, then those merged into it
    assignee: str | None = None
    deadline_ms: int | None = None
    merged_into: int | None = None
    reason: str | None = None  # the last rejection or reopening reason
    result: str | None = None
    result_report: int | None = None
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One stored change of one event's status (table `event_changes`)."""

    event: int
    from_: EventStatusCode
    to: EventStatusCode
    by: str
    at_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action did: the event(s) as they are now, the changes, who to tell."""

    event: EventState
    changes: tuple[Change, ...]
    notify: tuple[str, ...]  # devices, each once, in a stable order
    target: EventState | None = None  # a merge's target, now also holding the reporters


def is_device(name: str | None) -> bool:
    return bool(name) and not str(name).startswith(TEAM_PREFIX) and name != OPEN311


def _devices(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for d in group:
            if is_device(d):
                seen.setdefault(d, None)
    return tuple(seen)


def allowed(status: EventStatusCode) -> tuple[ActionKind, ...]:
    return tuple(TRANSITIONS[status])


def _state_words(event: EventState) -> str:
    if event.status is EventStatusCode.MERGED and event.merged_into is not None:
        return f"merged into event {event.merged_into}"
    return label(event.status)


def _refusal(event: EventState, action: ActionKind) -> str:
    can = [_DONE[a] for a in allowed(event.status)]
    head = f"event {event.number} is {_state_words(event)}"
    if not can:
        return f"{head}: it can no longer change, so it cannot be {_DONE[action]}"
    said = can[0] if len(can) == 1 else ", ".join(can[:-1]) + f" or {can[-1]}"
    return f"{head}: it can be {said}, not {_DONE[action]}"


def _text(what: str, text: str) -> str:
    text = text.strip()
    if not text:
        raise Refused(f"a {what} is needed (a few words the reporter will read)")
    if len(text) > MAX_TEXT:
        raise Refused(f"the {what} is {len(text)} characters; at most {MAX_TEXT}")
    return text


def apply(
    event: EventState,
    action: Action,
    *,
    by: str,
    at_ms: int,
    target: EventState | None = None,
) -> Outcome:
    """`action` done to `event` by `by` at `at_ms`; a merge needs its `target` (the event
    named by `Merge.into`, as it is now). Refused when the status does not allow it."""
    to = TRANSITIONS[event.status].get(action.kind)
    if to is None:
        raise Refused(_refusal(event, action.kind))
    if not by.strip():
        raise Refused("who acts must be named")
    new = replace(event, status=to, updated_ms=at_ms)
    detail = ""
    extra: tuple[str, ...] = ()  # devices told besides the reporters and the assignee
    done_target: EventState | None = None
    if isinstance(action, Reject):
        detail = _text("reason", action.reason)
        new = replace(new, reason=detail)
    elif isinstance(action, Reopen):
        detail = _text("reason", action.reason)
        new = replace(new, reason=detail, result=None, result_report=None)
    elif isinstance(action, Dispatch):
        new, detail, extra = _dispatch(event, new, action, at_ms)
    elif isinstance(action, Resolve):
        detail = _text("result", action.result)
        new = replace(new, result=detail, result_report=action.report)
    elif isinstance(action, Merge):
        done_target = _merged_target(event, action, target, at_ms)
        new = replace(new, merged_into=done_target.number)
        detail = f"into {done_target.number}"
        extra = done_target.reporters + _opt(done_target.assignee)
    change = Change(event.number, event.status, to, by, at_ms, detail)
    notify = _devices(new.reporters, _opt(new.assignee), extra)
    return Outcome(new, (change,), notify, done_target)


def _opt(name: str | None) -> tuple[str, ...]:
    return () if name is None else (name,)


def _dispatch(
    event: EventState, new: EventState, action: Dispatch, at_ms: int
) -> tuple[EventState, str, tuple[str, ...]]:
    who = action.assignee.strip()
    if not who or who in (TEAM_PREFIX, OPEN311):
        raise Refused("dispatch needs a device or a team (team:NAME) to send")
    if action.deadline_ms <= at_ms:
        raise Refused("the deadline must be later than now")
    relieved = event.assignee if event.assignee not in (None, who) else None
    new = replace(new, assignee=who, deadline_ms=action.deadline_ms)
    return new, f"to {who}, due {action.deadline_ms}", _opt(relieved)  # the relieved hear too


def _merged_target(
    event: EventState, action: Merge, target: EventState | None, at_ms: int
) -> EventState:
    """The event merged into, now holding the reporters of both."""
    if target is None or target.number != action.into:
        raise Refused(f"event {action.into} must be given to merge event {event.number} into")
    if target.number == event.number:
        raise Refused(f"event {event.number} cannot be merged into itself")
    if target.status in (EventStatusCode.MERGED, EventStatusCode.REJECTED, EventStatusCode.CLOSED):
        raise Refused(
            f"event {target.number} is {_state_words(target)}: nothing can be merged into it"
        )
    reporters = _unique(target.reporters + event.reporters)
    return replace(target, reporters=reporters, updated_ms=at_ms)


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
