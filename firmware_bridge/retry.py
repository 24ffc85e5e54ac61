"""When the host sends a request again, and when it stops: a pure policy, time passed in.

The host has one request in flight at a time (host.py); what it does when the answer does
not come is decided here, by `Attempts`, and only here. An `Attempts` holds no port, clock
or task: the driver tells it what became of the attempt and when (`now`, the event loop's
clock, in seconds) and does what it is told, so each rule below is a row of a table that
tests/test_bridge_retry.py checks without a port.

* **An attempt waits `timeout_s`** from the moment its frame went out (`sent(now)`). A
  TIMEOUT reported before then is WAIT, with the deadline: never resent early.
* **Idempotent requests** (HELLO, PING, RADIO_CONFIG, FEEDBACK, BATTERY, STATUS, FW_BEGIN,
  and FW_CHUNK, which the firmware acknowledges again when it already wrote that chunk)
  are sent again with the *same id* after a timeout, or at once when a garbled frame
  arrives while the answer is due (most likely the answer itself: no point waiting out the
  timeout). Because the id is the same, a late answer to the first attempt satisfies the
  second one. Ids run 1-255 and wrap (`Ids`; 0 is the MCU's events).
* **RADIO_SEND is not idempotent** (each copy costs airtime and duty cycle), nor is
  FW_COMMIT (it resets the MCU): they are sent again, with the same id, only when nothing
  at all came back, i.e. the request most likely never reached the MCU; if a garbled frame
  came instead of the answer, the MCU may have acted (a packet may be on the air):
  UNCERTAIN, which the driver raises as `SendUncertain`. The same id lets a firmware that
  remembers its last RADIO_SEND answer a repeat from memory instead of transmitting twice;
  so that it never takes a new packet for a repeat, a RADIO_SEND never gets the id of the
  RADIO_SEND before it.
* **After 1 + `retries` attempts** the request is given up: GIVE_UP, which the driver
  raises as `BridgeTimeout`, and the MCU is asked who it is (HELLO) before it is trusted
  again: it may have restarted with its BOOT lost.
* **RESET** (the MCU restarted, or the port dropped, while the answer was due) is RESYNC:
  the MCU forgot the request, so it is never sent again; it fails with the error that said
  so (`McuReset`, `LinkDown`) and the keeper resynchronises before anything else goes out.
* **REPLY is DONE.** Once an outcome is decided it stands: a reply after GIVE_UP does not
  revive the request (the driver counts it as a stale response).

The table, by the request's retry class and what became of the attempt:

                  TIMEOUT (due)   GARBLED     REPLY   RESET
    IDEMPOTENT    RESEND          RESEND      DONE    RESYNC
    IF_SILENT     RESEND          UNCERTAIN   DONE    RESYNC
    NEVER         GIVE_UP         UNCERTAIN   DONE    RESYNC

and a RESEND with no attempt left is GIVE_UP.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from firmware_bridge import messages as m

__all__ = ["RETRY", "Action", "Attempts", "Decision", "Ids", "Outcome", "Retry", "retry_class"]


class Retry(enum.Enum):
    """A request's retry class."""

    IDEMPOTENT = "idempotent"  # again on timeout or on a garbled answer
    IF_SILENT = "if-silent"  # again only when nothing at all came back
    NEVER = "never"


RETRY: Mapping[int, Retry] = {
    m.RADIO_SEND: Retry.IF_SILENT,
    m.FW_COMMIT: Retry.IF_SILENT,  # resets the MCU: once it answered, do not ask again
}


def retry_class(rtype: int) -> Retry:
    """The retry class of a request type: IDEMPOTENT unless RETRY says otherwise."""
    return RETRY.get(rtype, Retry.IDEMPOTENT)


class Ids:
    """Request ids 1-255, wrapping; a RADIO_SEND never gets the previous RADIO_SEND's id."""

    __slots__ = ("_last_send", "_next")

    def __init__(self) -> None:
        self._next = 1
        self._last_send = 0

    def take(self, rtype: int) -> int:
        fid = self._next
        if rtype == m.RADIO_SEND and fid == self._last_send:
            fid = fid % 255 + 1  # never the previous RADIO_SEND's id: it may be remembered
        self._next = fid % 255 + 1
        if rtype == m.RADIO_SEND:
            self._last_send = fid
        return fid


class Outcome(enum.Enum):
    """What became of an attempt, as the driver saw it."""

    REPLY = "reply"  # the answer with the request's id and type
    GARBLED = "garbled"  # a frame that did not decode, and no whole answer right behind it
    TIMEOUT = "timeout"  # the wait ran out
    RESET = "reset"  # the MCU restarted or the port dropped: the request failed under us


class Action(enum.Enum):
    """What the driver does next."""

    WAIT = "wait"  # keep waiting for the answer, until `Decision.deadline`
    RESEND = "resend"  # send the same frame (same id) again, then report `sent(now)`
    DONE = "done"  # the answer came: hand it over
    UNCERTAIN = "uncertain"  # fail: the MCU may have acted (SendUncertain)
    GIVE_UP = "give-up"  # fail (BridgeTimeout), and check the MCU with a HELLO
    RESYNC = "resync"  # fail with the reset's error; never resend; the keeper resyncs


FINAL = frozenset({Action.DONE, Action.UNCERTAIN, Action.GIVE_UP, Action.RESYNC})


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    deadline: float | None = None  # WAIT: the answer is due by then (None: nothing sent)


_ON_OUTCOME: Mapping[tuple[Retry, Outcome], Action] = {
    (Retry.IDEMPOTENT, Outcome.TIMEOUT): Action.RESEND,
    (Retry.IDEMPOTENT, Outcome.GARBLED): Action.RESEND,
    (Retry.IF_SILENT, Outcome.TIMEOUT): Action.RESEND,
    (Retry.IF_SILENT, Outcome.GARBLED): Action.UNCERTAIN,
    (Retry.NEVER, Outcome.TIMEOUT): Action.GIVE_UP,
    (Retry.NEVER, Outcome.GARBLED): Action.UNCERTAIN,
    **{(retry, Outcome.REPLY): Action.DONE for retry in Retry},
    **{(retry, Outcome.RESET): Action.RESYNC for retry in Retry},
}


class Attempts:
    """The attempts of one request: report each send and what became of it, in order."""

    __slots__ = ("_final", "attempts", "deadline", "retries", "retry", "timeout_s")

    def __init__(self, retry: Retry, *, timeout_s: float, retries: int) -> None:
        self.retry = retry
        self.timeout_s = timeout_s
        self.retries = retries  # attempts after the first
        self.attempts = 0  # frames sent so far, the first included
        self.deadline: float | None = None  # the current attempt's answer is due by then
        self._final: Decision | None = None

    @property
    def final(self) -> Decision | None:
        """The outcome once decided (DONE, UNCERTAIN, GIVE_UP, RESYNC); None before."""
        return self._final

    def sent(self, now: float) -> Decision:
        """The request's frame went out (again) at `now`: WAIT for the answer until the deadline."""
        if self._final is not None:
            return self._final
        self.attempts += 1
        self.deadline = now + self.timeout_s
        return Decision(Action.WAIT, self.deadline)

    def on(self, outcome: Outcome, now: float) -> Decision:
        """What to do about `outcome`, seen at `now`."""
        if self._final is not None:
            return self._final
        if outcome is Outcome.TIMEOUT and (self.deadline is None or now < self.deadline):
            return Decision(Action.WAIT, self.deadline)  # not due yet: never before the timeout
        action = _ON_OUTCOME[self.retry, outcome]
        if action is Action.RESEND and self.attempts > self.retries:
            action = Action.GIVE_UP
        decision = Decision(action)
        if action in FINAL:
            self._final = decision
        return decision
