"""Which faults the demo injects, and when: a pure plan drawn from the seed.

`picket demo --faults broker-kill,agent-kill,…` names kinds; `plan_faults` turns them into
moments on the shift's virtual clock, which devices they hit and how long they last, all
from the seed, so a run can be repeated fault for fault. `run_faults` carries the plan out
against a `FaultTarget`, the demo's fleet, which owns the broker, the center process, the
agents and the proxies (simulators/demo.py), on the demo's `VirtualClock`.

Moments fall between 10 % and 80 % of the shift, so every fault is over, and every device
back, before the shift ends and the outboxes drain. Durations of what runs in real time (a
broker or center down) are in wall seconds; how long a device is off, or a link is down,
is in simulated seconds and also held for a minimum of wall time, so that the real-time
uplinks notice at all while the virtual clock runs a hundred times faster.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from simulators.proxy import LinkProxy
from simulators.simerror import SimulatorError


class FaultKind(enum.StrEnum):
    BROKER_KILL = "broker-kill"  # kill -9 of Mosquitto, restarted on the same port after a pause
    BROKER_OUTAGE = "broker-outage"  # Mosquitto down for several simulated minutes
    AGENT_KILL = "agent-kill"  # agents abandoned as by kill -9, restarted from their outbox
    CENTER_KILL = "center-kill"  # SIGKILL of the center process, restarted
    LINK_FLAP = "link-flap"  # a device's connection cut and restored, repeatedly
    HALF_OPEN = "half-open"  # a device's connection silently stops forwarding


ROUTED = frozenset({FaultKind.LINK_FLAP, FaultKind.HALF_OPEN})  # need the device behind a proxy
HALF_OPEN_WAIT_S = 10.0  # a device not connected when half-open strikes: wait for it this long


class FaultError(SimulatorError, ValueError):
    """--faults names something that is not a fault kind."""


def parse_faults(text: str) -> tuple[FaultKind, ...]:
    """'broker-kill,agent-kill' → kinds, in order, without repeats; '' → none."""
    out: list[FaultKind] = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        try:
            kind = FaultKind(name)
        except ValueError:
            valid = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault {name!r}; valid faults: {valid}") from None
        if kind not in out:
            out.append(kind)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injection: `kind` at `at_ms` after the shift starts, on `devices` (indices)."""

    kind: FaultKind
    at_ms: int
    devices: tuple[int, ...] = ()
    sim_ms: int = 0  # how long, in simulated time (a device off, a link refused)
    wall_s: float = 0.0  # how long at least, in wall time
    repeat: int = 1  # link-flap: cuts in a row, sim_ms apart


@dataclass(frozen=True, slots=True)
class FaultPlan:
    faults: tuple[Fault, ...]
    routed: frozenset[int]  # devices whose uplink goes through a LinkProxy

    @property
    def kinds(self) -> frozenset[FaultKind]:
        return frozenset(f.kind for f in self.faults)


def plan_faults(kinds: Iterable[FaultKind], *, devices: int, shift_ms: int, seed: int) -> FaultPlan:
    rng = random.Random(f"faults-{seed}")
    kinds = tuple(kinds)
    occurrences = max(1, round(shift_ms / 1_800_000))  # one per half hour of shift
    share = max(1, round(devices * 0.1))  # a tenth of the fleet, at least one device
    routed = (
        frozenset(rng.sample(range(devices), min(devices, share)))
        if ROUTED & set(kinds)
        else frozenset()
    )

    def moment() -> int:
        return int(shift_ms * rng.uniform(0.10, 0.80))

    faults: list[Fault] = []
    for kind in kinds:
        for _ in range(occurrences):
            at = moment()
            if kind is FaultKind.BROKER_KILL:
                faults.append(Fault(kind, at, wall_s=rng.uniform(0.5, 2.0)))
            elif kind is FaultKind.BROKER_OUTAGE:
                minutes = rng.uniform(3.0, 8.0)
                faults.append(Fault(kind, at, sim_ms=int(minutes * 60_000), wall_s=3.0))
            elif kind is FaultKind.CENTER_KILL:
                faults.append(Fault(kind, at, wall_s=rng.uniform(0.5, 2.0)))
            elif kind is FaultKind.AGENT_KILL:
                hit = tuple(sorted(rng.sample(range(devices), min(devices, share))))
                off = int(rng.uniform(30, 180) * 1000)
                faults.append(Fault(kind, at, hit, sim_ms=off, wall_s=0.5))
            elif kind is FaultKind.LINK_FLAP:
                hit = tuple(sorted(rng.sample(sorted(routed), max(1, len(routed) // 2 + 1))))
                gap = int(rng.uniform(20, 60) * 1000)
                faults.append(
                    Fault(kind, at, hit, sim_ms=gap, wall_s=0.3, repeat=rng.randint(3, 6))
                )
            else:  # HALF_OPEN
                hit = tuple(sorted(rng.sample(sorted(routed), max(1, len(routed) // 2 + 1))))
                faults.append(Fault(kind, at, hit))
    faults.sort(key=lambda f: (f.at_ms, f.kind.value))
    return FaultPlan(tuple(faults), routed)


# --- carrying a plan out -------------------------------------------------------------------


@dataclass(slots=True)
class VirtualClock:
    """The shift's simulated time (ms since the shift began), as the demo advances it.

    `until` waits for a moment of it; once `finish` is called (the shift is over) every
    wait returns at once, so whatever a fault still has to restore, it restores now.
    """

    now_ms: int = 0
    finished: bool = False
    _waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def advance(self, now_ms: int) -> None:
        self.now_ms = now_ms
        while self._waiters and self._waiters[0][0] <= now_ms:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    def finish(self) -> None:
        self.finished = True
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def until(self, at_ms: int) -> None:
        if self.finished or self.now_ms >= at_ms:
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (at_ms, next(self._order), fut))
        await fut

    async def hold(self, sim_ms: int, wall_s: float) -> None:
        """Let `sim_ms` of simulated time and at least `wall_s` of wall time pass."""
        await asyncio.gather(self.until(self.now_ms + sim_ms), asyncio.sleep(wall_s))


class FaultTarget(Protocol):
    """What the demo's fleet can be made to suffer."""

    async def kill_broker(self) -> None: ...
    async def start_broker(self) -> None: ...
    async def kill_center(self) -> None: ...
    async def start_center(self) -> None: ...
    def kill_agent(self, device: int) -> bool: ...  # False: it was not running
    def start_agent(self, device: int) -> None: ...
    def proxy(self, device: int) -> LinkProxy: ...


async def run_faults(plan: FaultPlan, target: FaultTarget, clock: VirtualClock) -> Counter[str]:
    """Inject every fault of `plan` at its moment and restore what it broke; returns what
    was injected, by kind (agent-kill and link-flap count devices hit, per occurrence)."""
    done: Counter[str] = Counter({k.value: 0 for k in plan.kinds})
    broker, center = asyncio.Lock(), asyncio.Lock()  # one fault at a time on each

    async def agent_off(f: Fault, device: int) -> None:
        if target.kill_agent(device):
            done[f.kind.value] += 1
            await clock.hold(f.sim_ms, f.wall_s)
            target.start_agent(device)

    async def flap(f: Fault, device: int) -> None:
        proxy = target.proxy(device)
        for _ in range(f.repeat):
            proxy.refuse(True)
            proxy.cut()
            done[f.kind.value] += 1
            await clock.hold(f.sim_ms // 4, f.wall_s)  # down a quarter of the gap
            proxy.refuse(False)
            await clock.hold(f.sim_ms - f.sim_ms // 4, f.wall_s)

    async def go_silent(f: Fault, device: int) -> None:
        """Silence the device's connection; if it has none just now, the next one it makes
        (within HALF_OPEN_WAIT_S)."""
        proxy = target.proxy(device)
        deadline = time.monotonic() + HALF_OPEN_WAIT_S
        while not (silenced := proxy.silence()):
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)
        done[f.kind.value] += silenced

    async def one(f: Fault) -> None:
        await clock.until(f.at_ms)
        if f.kind in (FaultKind.BROKER_KILL, FaultKind.BROKER_OUTAGE):
            async with broker:
                await target.kill_broker()
                done[f.kind.value] += 1
                await clock.hold(f.sim_ms, f.wall_s)
                await target.start_broker()
        elif f.kind is FaultKind.CENTER_KILL:
            async with center:
                await target.kill_center()
                done[f.kind.value] += 1
                await asyncio.sleep(f.wall_s)
                await target.start_center()
        elif f.kind is FaultKind.HALF_OPEN:
            async with asyncio.TaskGroup() as tg:
                for d in f.devices:
                    tg.create_task(go_silent(f, d), name=f"{f.kind.value}-{d}")
        else:
            async with asyncio.TaskGroup() as tg:
                for d in f.devices:
                    job = agent_off(f, d) if f.kind is FaultKind.AGENT_KILL else flap(f, d)
                    tg.create_task(job, name=f"{f.kind.value}-{d}")

    async with asyncio.TaskGroup() as tg:
        for f in plan.faults:
            tg.create_task(one(f), name=f"fault-{f.kind.value}-{f.at_ms}")
    return done
