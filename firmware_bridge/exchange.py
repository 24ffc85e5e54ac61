"""One request's attempts on the event loop: send, wait for the answer, ask retry.py, repeat.

retry.py decides and reads no clock; the driver (host.py) owns the port. Between them sits
this small piece of asyncio: waiting, up to the deadline the policy gave, for whichever
comes first (the answer, set on `Pending.future` by the reader, or a frame that did not
decode, flagged on `Pending.garbled`), telling the policy what became of the attempt with
the loop's time, and counting it. It raises nothing of its own: the request's fate is the
`Decision` it returns, and the driver turns that into the answer or an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from firmware_bridge.retry import Action, Attempts, Decision, Outcome
from firmware_bridge.values import BridgeStats

__all__ = ["Pending", "listen", "run"]


@dataclass(slots=True)
class Pending:
    """The request in flight, as the reader sees it."""

    type: int
    id: int
    future: asyncio.Future[tuple[int, bytes]]  # (status, body), or McuReset / LinkDown
    garbled: asyncio.Event = field(default_factory=asyncio.Event)  # a broken frame came


async def run(
    pending: Pending,
    attempts: Attempts,
    send: Callable[[], Awaitable[None]],
    stats: BridgeStats,
) -> Decision:
    """`send` the request, again as long as the policy says RESEND; its final decision."""
    loop = asyncio.get_running_loop()
    while True:
        pending.garbled.clear()
        await send()
        decision = attempts.sent(loop.time())
        while decision.action is Action.WAIT:
            outcome = await listen(pending, decision.deadline)
            decision = attempts.on(outcome, loop.time())
            if outcome is Outcome.GARBLED:
                stats.garbled += 1
            elif outcome is Outcome.TIMEOUT and decision.action is not Action.WAIT:
                stats.timeouts += 1
        if decision.action is not Action.RESEND:
            return decision
        stats.retries += 1


async def listen(pending: Pending, deadline: float | None) -> Outcome:
    """What became of the attempt by `deadline` (the loop's clock)."""
    garbled = asyncio.ensure_future(pending.garbled.wait())
    try:
        async with asyncio.timeout_at(deadline):
            done, _ = await asyncio.wait(
                (pending.future, garbled), return_when=asyncio.FIRST_COMPLETED
            )
    except TimeoutError:  # silence: the request most likely never arrived
        return Outcome.TIMEOUT
    finally:
        garbled.cancel()
    if pending.future not in done:
        # A broken frame: give a whole answer that follows right behind it a moment.
        await asyncio.sleep(0)
        if not pending.future.done():
            return Outcome.GARBLED  # most likely the answer itself, broken
    if pending.future.exception() is not None:
        return Outcome.RESET  # the MCU restarted, or the port dropped
    return Outcome.REPLY
