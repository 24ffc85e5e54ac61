"""The LoRa radio medium for simulations: who hears which packet, and which collide.

Radios (handsets) transmit; gateways listen at fixed positions. A transmission occupies
its channel (frequency, spreading factor, bandwidth: other spreading factors are treated
as orthogonal) for its time on air, computed by firmware_bridge/lora.py exactly as the
MCU computes it. When it ends, each gateway on that channel either gets it or does not:

- **collision**: another transmission on the same channel overlapped it in time at that
  gateway; both are lost unless one is at least `capture_db` (6 dB) stronger there, in
  which case the stronger one survives (capture effect) — with several interferers, a
  packet survives only if it beats every one of them by the margin;
- **link**: otherwise it arrives with the probability `delivery_probability` gives for
  its SNR (`link_budget`: log-distance path loss), drawn from the medium's seeded RNG.

On top of the mean path loss each (radio, gateway) pair gets a fixed log-normal shadowing
(`shadowing_db`, σ in dB, drawn from the seed and the two names: a house in the way stays
in the way) and each packet a fresh fading term (`fading_db`). Both default to 0, so a
plain medium is the bare link model. Given the seed and the same calls, a run repeats
exactly, packet for packet.

Time is passed in (`now_ms`), never read: `advance(now_ms)` settles the transmissions
that have ended and returns what the gateways received, so a test drives the medium on a
virtual clock, and `run_air` drives it in real time for asyncio code (it sleeps until the
next transmission ends and hands each reception to a callback). Times must not go
backwards: a transmission starts at the `now_ms` it was sent, so when `advance` settles
one, everything that could overlap it is already known.

A radio may carry a `DutyCycle` (the firmware's), and refuses a packet the budget does
not allow, as the MCU answers DUTY_CYCLE; and it cannot send while it is still sending
(BUSY).

Positions are metres east and north of an origin (`Metres`), or latitude and longitude
(`LatLon`), projected onto a local plane around the first `LatLon` given (agent/checkin/geo.py:
accurate to well under a metre over a district).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.checkin.geo import to_local
from firmware_bridge.lora import (
    MAX_PACKET,
    DutyCycle,
    delivery_probability,
    link_budget,
    time_on_air_ms,
)
from simulators.simerror import SimulatorError

DEFAULT_FREQ_HZ = 470_300_000  # the first CN470 uplink channel
DEFAULT_CAPTURE_DB = 6.0


class Metres(NamedTuple):
    east: float
    north: float


class LatLon(NamedTuple):
    lat: float
    lon: float


Position = Metres | LatLon


class Channel(NamedTuple):
    """What two transmissions must share to collide."""

    freq_hz: int
    sf: int
    bw_hz: int


class MediumError(SimulatorError):
    """A radio could not send: unknown, busy, over its duty cycle, or the packet too big."""


class Busy(MediumError):
    pass


class OverBudget(MediumError):
    pass


@dataclass(slots=True)
class Radio:
    name: str
    at: Metres
    channel: Channel
    tx_dbm: float = 14.0
    cr: int = 5
    preamble: int = 8
    duty: DutyCycle | None = None
    busy_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    at: Metres
    channels: frozenset[Channel] | None = None  # None: every channel (a multi-SF concentrator)

    def hears(self, channel: Channel) -> bool:
        return self.channels is None or channel in self.channels


@dataclass(slots=True)
class Transmission:
    radio: str
    packet: bytes
    channel: Channel
    start_ms: int
    end_ms: int
    rssi_dbm: dict[str, float]  # at each gateway that listens on the channel
    snr_db: dict[str, float]
    settled: bool = False

    def overlaps(self, other: Transmission) -> bool:
        return (
            self.channel == other.channel
            and self.start_ms < other.end_ms
            and other.start_ms < self.end_ms
        )


@dataclass(frozen=True, slots=True)
class Reception:
    """A packet a gateway received, with what its radio measured."""

    gateway: str
    radio: str
    packet: bytes
    rssi_dbm: float
    snr_db: float
    start_ms: int
    end_ms: int


@dataclass(slots=True)
class MediumStats:
    transmissions: int = 0
    delivered: int = 0
    collided: int = 0  # (transmission, gateway) pairs lost to an overlapping transmission
    too_weak: int = 0  # … lost to the link (the SNR draw)
    by_gateway: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class LinkModel:
    """The parameters of firmware_bridge.lora.link_budget, for every link of a medium."""

    path_loss_exponent: float = 3.0
    ref_loss_db: float | None = None  # None: free space at 1 m
    noise_figure_db: float = 6.0
    gain_db: float = 0.0


class Medium:
    def __init__(
        self,
        seed: int,
        *,
        link: LinkModel | None = None,
        capture_db: float = DEFAULT_CAPTURE_DB,
        shadowing_db: float = 0.0,
        fading_db: float = 0.0,
        origin: LatLon | None = None,
    ) -> None:
        self.seed = seed
        self.link = link or LinkModel()
        self.capture_db = capture_db
        self.shadowing_db = shadowing_db
        self.fading_db = fading_db
        self.origin = origin
        self.stats = MediumStats()
        self.radios: dict[str, Radio] = {}
        self.gateways: dict[str, Gateway] = {}
        self.on_transmit: Callable[[Transmission], None] | None = None  # run_air's wake-up
        self._rng = random.Random(seed)
        self._air: list[Transmission] = []  # unsettled, and settled ones still overlappable
        self._shadow: dict[tuple[str, str], float] = {}
        self._now_ms: int | None = None

    # -- set-up ----------------------------------------------------------------------------

    def _metres(self, at: Position) -> Metres:
        if isinstance(at, Metres):
            return at
        if self.origin is None:
            self.origin = at
        north, east = to_local(self.origin.lat, self.origin.lon, at.lat, at.lon)
        return Metres(east, north)

    def add_radio(
        self,
        name: str,
        at: Position,
        *,
        sf: int = 9,
        bw_hz: int = 125_000,
        freq_hz: int = DEFAULT_FREQ_HZ,
        tx_dbm: float = 14.0,
        cr: int = 5,
        preamble: int = 8,
        duty: DutyCycle | None = None,
    ) -> Radio:
        if name in self.radios or name in self.gateways:
            raise ValueError(f"a node named {name!r} is already on the medium")
        time_on_air_ms(0, sf, bw_hz, cr, preamble)  # refuses settings the radio would
        channel = Channel(freq_hz, sf, bw_hz)
        radio = Radio(name, self._metres(at), channel, tx_dbm, cr, preamble, duty)
        self.radios[name] = radio
        return radio

    def add_gateway(
        self, name: str, at: Position, *, channels: set[Channel] | None = None
    ) -> Gateway:
        if name in self.radios or name in self.gateways:
            raise ValueError(f"a node named {name!r} is already on the medium")
        gw = Gateway(name, self._metres(at), None if channels is None else frozenset(channels))
        self.gateways[name] = gw
        return gw

    def move(self, name: str, at: Position) -> None:
        """A handset walked: later transmissions leave from `at`."""
        self.radios[name].at = self._metres(at)

    def distance_m(self, a: Metres, b: Metres) -> float:
        return math.hypot(a.east - b.east, a.north - b.north)

    def shadowing(self, radio: str, gateway: str) -> float:
        """The fixed extra loss (dB, may be negative) of one link, from the seed and names."""
        if self.shadowing_db == 0.0:
            return 0.0
        key = (radio, gateway)
        if key not in self._shadow:
            rng = random.Random(f"{self.seed}:{radio}:{gateway}")  # str seeds hash stably
            self._shadow[key] = rng.gauss(0.0, self.shadowing_db)
        return self._shadow[key]

    # -- the air ---------------------------------------------------------------------------

    def _clock(self, now_ms: int) -> None:
        if self._now_ms is not None and now_ms < self._now_ms:
            raise ValueError(f"time went backwards: {now_ms} after {self._now_ms}")
        self._now_ms = now_ms

    def transmit(self, radio_name: str, packet: bytes, now_ms: int) -> Transmission:
        """Start sending `packet` from `radio_name` at `now_ms`; raises MediumError when the
        radio cannot (unknown, still sending, over its duty cycle, packet too big)."""
        self._clock(now_ms)
        radio = self.radios.get(radio_name)
        if radio is None:
            raise MediumError(f"no radio named {radio_name!r}")
        if not 0 < len(packet) <= MAX_PACKET:
            raise MediumError(f"a packet of {len(packet)} bytes; LoRa carries 1-{MAX_PACKET}")
        if now_ms < radio.busy_until_ms:
            raise Busy(f"{radio_name} is sending until {radio.busy_until_ms}")
        ch = radio.channel
        toa = time_on_air_ms(len(packet), ch.sf, ch.bw_hz, radio.cr, radio.preamble)
        if radio.duty is not None:
            if not radio.duty.allowed(now_ms, toa):
                raise OverBudget(
                    f"{radio_name}: {toa} ms on air exceeds the duty cycle budget "
                    f"({radio.duty.budget_ms(now_ms)} ms left)"
                )
            radio.duty.record(now_ms, toa)
        rssi: dict[str, float] = {}
        snr: dict[str, float] = {}
        link = self.link
        for gw in self.gateways.values():
            if not gw.hears(ch):
                continue
            r, s = link_budget(
                self.distance_m(radio.at, gw.at),
                radio.tx_dbm,
                ch.sf,
                ch.bw_hz,
                freq_hz=ch.freq_hz,
                path_loss_exponent=link.path_loss_exponent,
                ref_loss_db=link.ref_loss_db,
                noise_figure_db=link.noise_figure_db,
                gain_db=link.gain_db,
            )
            extra = self.shadowing(radio.name, gw.name)
            if self.fading_db:
                extra += self._rng.gauss(0.0, self.fading_db)
            rssi[gw.name], snr[gw.name] = r - extra, s - extra
        tx = Transmission(radio.name, bytes(packet), ch, now_ms, now_ms + toa, rssi, snr)
        radio.busy_until_ms = tx.end_ms
        self._air.append(tx)
        self.stats.transmissions += 1
        if self.on_transmit is not None:
            self.on_transmit(tx)
        return tx

    def next_end_ms(self) -> int | None:
        """When the next unsettled transmission ends (None: the air is quiet)."""
        return min((t.end_ms for t in self._air if not t.settled), default=None)

    def advance(self, now_ms: int) -> list[Reception]:
        """Settle every transmission that has ended by `now_ms`; what the gateways got, in
        the order the transmissions ended (then by gateway name)."""
        self._clock(now_ms)
        done = sorted(
            (t for t in self._air if not t.settled and t.end_ms <= now_ms),
            key=lambda t: (t.end_ms, t.start_ms, t.radio),
        )
        out: list[Reception] = []
        for tx in done:
            tx.settled = True
            rivals = [o for o in self._air if o is not tx and o.overlaps(tx)]
            for gw_name in sorted(tx.rssi_dbm):
                got = self._settle(tx, gw_name, rivals)
                if got is not None:
                    out.append(got)
        # A settled transmission matters only while an unsettled one could overlap it; new
        # ones start at `now_ms` or later.
        unsettled = [t.start_ms for t in self._air if not t.settled]
        keep_from = min(unsettled, default=now_ms)
        self._air = [t for t in self._air if not t.settled or t.end_ms > keep_from]
        return out

    def _settle(self, tx: Transmission, gw: str, rivals: list[Transmission]) -> Reception | None:
        mine = tx.rssi_dbm[gw]
        if any(mine < o.rssi_dbm[gw] + self.capture_db for o in rivals):
            self.stats.collided += 1
            return None
        if self._rng.random() >= delivery_probability(tx.snr_db[gw], tx.channel.sf):
            self.stats.too_weak += 1
            return None
        self.stats.delivered += 1
        self.stats.by_gateway[gw] += 1
        return Reception(gw, tx.radio, tx.packet, mine, tx.snr_db[gw], tx.start_ms, tx.end_ms)


def wall_ms() -> int:
    return int(time.monotonic() * 1000)


async def run_air(
    medium: Medium,
    deliver: Callable[[Reception], None],
    stop: asyncio.Event,
    *,
    clock: Callable[[], int] = wall_ms,
) -> None:
    """Drive `medium` in real time until `stop`: sleep until the next transmission ends (or a
    new one starts), then hand each reception to `deliver`. Transmissions must be stamped
    with the same `clock`."""
    wake = asyncio.Event()
    medium.on_transmit = lambda _tx: wake.set()
    try:
        while not stop.is_set():
            for got in medium.advance(clock()):
                deliver(got)
            wake.clear()
            end = medium.next_end_ms()
            delay = 1.0 if end is None else max(0.0, (end - clock()) / 1000)
            waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await w
    finally:
        medium.on_transmit = None
