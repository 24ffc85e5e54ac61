"""The host's retry policy (firmware_bridge/retry.py), without a port, a loop or a clock.

Each case is what happens to one request, as the driver reports it, with the time it saw
it, and what the policy told the driver to do each time; a RESEND is followed by sending
again at that moment, as the driver does. The defaults are the driver's (`BridgeOptions`):
an attempt waits 0.5 s, and 3 retries follow the first attempt. Then the same rules as
properties over any sequence of events, and the request ids.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge.retry import (
    RETRY,
    Action,
    Attempts,
    Decision,
    Ids,
    Outcome,
    Retry,
    retry_class,
)
from firmware_bridge.values import BridgeOptions

OPTIONS = BridgeOptions()
TIMEOUT_S = OPTIONS.timeout_s  # 0.5
RETRIES = OPTIONS.retries  # 3

REPLY, GARBLED, TIMEOUT, RESET = Outcome.REPLY, Outcome.GARBLED, Outcome.TIMEOUT, Outcome.RESET
WAIT, RESEND, DONE = Action.WAIT, Action.RESEND, Action.DONE
UNCERTAIN, GIVE_UP, RESYNC = Action.UNCERTAIN, Action.GIVE_UP, Action.RESYNC


def drive(
    retry: Retry,
    events: list[tuple[Outcome, float]],
    *,
    retries: int = RETRIES,
    sent_at: float = 0.0,
) -> tuple[list[Action], Attempts]:
    """Send at `sent_at`, report `events`; what the policy said to each, and the policy."""
    attempts = Attempts(retry, timeout_s=TIMEOUT_S, retries=retries)
    first = attempts.sent(sent_at)
    assert first == Decision(WAIT, sent_at + TIMEOUT_S)
    said = []
    for outcome, now in events:
        decision = attempts.on(outcome, now)
        said.append(decision.action)
        if decision.action is RESEND:
            attempts.sent(now)
    return said, attempts


def timeouts(n: int, start: float = 0.0) -> list[tuple[Outcome, float]]:
    """`n` attempts in a row that each ran out exactly at their deadline."""
    return [(TIMEOUT, start + TIMEOUT_S * (i + 1)) for i in range(n)]


CASES = [
    pytest.param(
        Retry.IDEMPOTENT,
        [(REPLY, 0.1)],
        [DONE],
        1,
        id="an answer in time is the answer",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(TIMEOUT, 0.5), (REPLY, 0.6)],
        [RESEND, DONE],
        2,
        id="silence: sent again after the timeout, and the late answer is taken",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        timeouts(4),
        [RESEND, RESEND, RESEND, GIVE_UP],
        4,
        id="silence: 3 retries, then given up after 4 attempts (2.0 s)",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(GARBLED, 0.05), (REPLY, 0.1)],
        [RESEND, DONE],
        2,
        id="a garbled answer is asked again at once, without waiting out the timeout",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(GARBLED, 0.01), (GARBLED, 0.02), (GARBLED, 0.03), (GARBLED, 0.04)],
        [RESEND, RESEND, RESEND, GIVE_UP],
        4,
        id="garbled every time: resent 3 times, then given up",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(TIMEOUT, 0.3), (TIMEOUT, 0.49), (TIMEOUT, 0.5)],
        [WAIT, WAIT, RESEND],
        2,
        id="a timeout reported early is waited out: never resent before 0.5 s",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(GARBLED, 0.2), (TIMEOUT, 0.5), (TIMEOUT, 0.7)],
        [RESEND, WAIT, RESEND],
        3,
        id="the timeout runs from the latest send (0.2 s + 0.5 s), not the first",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(RESET, 0.2)],
        [RESYNC],
        1,
        id="the MCU restarted: the request fails and is never resent",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(TIMEOUT, 0.5), (RESET, 0.6)],
        [RESEND, RESYNC],
        2,
        id="a restart during a retry ends the request too",
    ),
    pytest.param(
        Retry.IF_SILENT,
        [(GARBLED, 0.05)],
        [UNCERTAIN],
        1,
        id="RADIO_SEND answered garbled: uncertain, never sent twice",
    ),
    pytest.param(
        Retry.IF_SILENT,
        [(TIMEOUT, 0.5), (TIMEOUT, 1.0), (REPLY, 1.1)],
        [RESEND, RESEND, DONE],
        3,
        id="RADIO_SEND with nothing back: sent again, it never reached the MCU",
    ),
    pytest.param(
        Retry.IF_SILENT,
        [(TIMEOUT, 0.5), (GARBLED, 0.6)],
        [RESEND, UNCERTAIN],
        2,
        id="RADIO_SEND: silence, then a garbled answer to the retry is uncertain",
    ),
    pytest.param(
        Retry.IF_SILENT,
        timeouts(4),
        [RESEND, RESEND, RESEND, GIVE_UP],
        4,
        id="RADIO_SEND: silence every time is given up after 4 attempts",
    ),
    pytest.param(
        Retry.NEVER,
        [(TIMEOUT, 0.5)],
        [GIVE_UP],
        1,
        id="never retried: given up at the first timeout",
    ),
    pytest.param(
        Retry.NEVER,
        [(GARBLED, 0.1)],
        [UNCERTAIN],
        1,
        id="never retried: a garbled answer is uncertain",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [(REPLY, 0.1), (TIMEOUT, 0.5), (GARBLED, 0.6)],
        [DONE, DONE, DONE],
        1,
        id="once answered, nothing later changes it",
    ),
    pytest.param(
        Retry.IDEMPOTENT,
        [*timeouts(4), (REPLY, 2.1)],
        [RESEND, RESEND, RESEND, GIVE_UP, GIVE_UP],
        4,
        id="an answer after giving up does not revive the request",
    ),
]


@pytest.mark.parametrize(("retry", "events", "expected", "sends"), CASES)
def test_decisions(
    retry: Retry, events: list[tuple[Outcome, float]], expected: list[Action], sends: int
) -> None:
    said, attempts = drive(retry, events)
    assert said == expected
    assert attempts.attempts == sends


def test_no_retries_means_one_attempt() -> None:
    said, attempts = drive(Retry.IDEMPOTENT, [(GARBLED, 0.1)], retries=0)
    assert said == [GIVE_UP]
    assert attempts.attempts == 1


def test_wait_names_the_deadline_of_the_attempt_in_flight() -> None:
    attempts = Attempts(Retry.IDEMPOTENT, timeout_s=TIMEOUT_S, retries=RETRIES)
    assert attempts.sent(10.0) == Decision(WAIT, 10.5)
    assert attempts.on(TIMEOUT, 10.2) == Decision(WAIT, 10.5)
    assert attempts.on(TIMEOUT, 10.5) == Decision(RESEND)
    assert attempts.sent(10.51) == Decision(WAIT, 10.51 + TIMEOUT_S)
    assert attempts.final is None
    assert attempts.on(REPLY, 10.6) == Decision(DONE)
    assert attempts.final == Decision(DONE)


def test_retry_classes() -> None:
    """Only RADIO_SEND and FW_COMMIT may have acted when their answer is garbled."""
    idempotent = [m.HELLO, m.PING, m.RADIO_CONFIG, m.FEEDBACK, m.BATTERY, m.STATUS]
    assert all(retry_class(t) is Retry.IDEMPOTENT for t in [*idempotent, m.FW_BEGIN, m.FW_CHUNK])
    assert retry_class(m.RADIO_SEND) is Retry.IF_SILENT
    assert retry_class(m.FW_COMMIT) is Retry.IF_SILENT
    assert set(RETRY) == {m.RADIO_SEND, m.FW_COMMIT}


# --- the same rules, over any sequence of events ------------------------------------------

EVENTS = st.lists(
    st.tuples(st.sampled_from(list(Outcome)), st.floats(min_value=0.0, max_value=0.6)),
    max_size=20,
)


@given(
    retry=st.sampled_from(list(Retry)), steps=EVENTS, retries=st.integers(min_value=0, max_value=5)
)
def test_policy_invariants(retry: Retry, steps: list[tuple[Outcome, float]], retries: int) -> None:
    attempts = Attempts(retry, timeout_s=TIMEOUT_S, retries=retries)
    now = 0.0
    deadline = attempts.sent(now).deadline
    final: Decision | None = None
    for outcome, gap in steps:
        now += gap
        assert deadline is not None
        decision = attempts.on(outcome, now)
        if final is not None:
            assert decision == final  # an outcome, once decided, stands
            continue
        assert attempts.attempts <= retries + 1  # never more than 1 + retries sends
        if decision.action is RESEND:
            assert outcome is not RESET  # the MCU forgot it: never sent again
            assert outcome is not REPLY
            if outcome is TIMEOUT:
                assert now >= deadline  # never before the timeout
            if outcome is GARBLED:
                assert retry is Retry.IDEMPOTENT  # a RADIO_SEND may be on the air
            deadline = attempts.sent(now).deadline
        elif decision.action is WAIT:
            assert outcome is TIMEOUT and now < deadline
            assert decision.deadline == deadline
        else:
            final = decision
            assert attempts.final == decision
            if outcome is REPLY:
                assert decision.action is DONE
            if outcome is RESET:
                assert decision.action is RESYNC


# --- request ids --------------------------------------------------------------------------


def test_ids_run_1_to_255_and_wrap() -> None:
    ids = Ids()
    assert [ids.take(m.PING) for _ in range(256)] == [*range(1, 256), 1]


def test_a_radio_send_never_takes_the_previous_radio_sends_id() -> None:
    ids = Ids()
    first = ids.take(m.RADIO_SEND)
    for _ in range(254):  # every other id once: the next in turn is the RADIO_SEND's again
        ids.take(m.PING)
    assert first == 1
    assert ids.take(m.RADIO_SEND) == 2  # 1 skipped: the MCU may remember its answer to 1
    assert ids.take(m.PING) == 3
