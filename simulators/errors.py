"""GNSS error models for ground-truth tracks: what a receiver reports, second by second.

A model is a frozen set of parameters drawn once per case (its sigma, correlation time,
what accuracy the receiver claims, how often multipath or a pocket spoils a second), and
`observe` turns a true 1 Hz trajectory into the fixes the receiver would report: one entry
per true second, None where it reports nothing. Keeping that list aligned with the truth
is deliberate: scenario code injects jumps and spoofs by replacing entries, and tests hold
each fix against the position it came from.

The error budget, per condition:

- OPEN_SKY: a first-order Gauss-Markov error per axis whose horizontal 1-sigma (DRMS, the
  quantity `Fix.accuracy_m` estimates) is `sigma_m`, 2-3 m, wandering with a correlation
  time of tens of seconds; the receiver reports about that sigma, HDOP near 1, and Doppler
  speed within a few cm/s of the truth.
- URBAN_CANYON: the same process with sigma 8-15 m (reported 8-15 m), plus multipath:
  about 2 % of seconds start an excursion of 30-80 m that lasts 1-5 s. The receiver does
  not know it is being fooled, so an excursion's fixes claim the usual accuracy.
- UNDER_COVER: open sky, plus one outage of 60-300 s with no fixes at all where the
  scenario puts the cover (an arcade at the point): from up to 20 s before the person
  arrives to the moment they leave (`draw_outage`).
- POCKET: open sky, plus white jitter of 1-2 m (RMS) per fix (body shadowing, antenna facing
  the thigh), Doppler noise of +-0.3 m/s, and occasional dropouts of 3-5 s.

These four are observed second by second (`observe`). The conditions added with issue 17
(biased urban multipath, 5 and 10 Hz receivers, a receiver that switches rate) are built in
simulators/multipath.py and simulators/rates.py on the same parameters and sampled at the
receiver's rate; the four above are left exactly as they were, seed for seed.

All randomness comes from the caller's `random.Random`; nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from agent.checkin.geo import offset
from contract.fix import Fix, FixMode

OPEN_SIGMA_M = (2.0, 3.0)
URBAN_SIGMA_M = (8.0, 15.0)
TAU_S = (20.0, 40.0)  # correlation time of the slowly wandering error
URBAN_TAU_S = (10.0, 30.0)  # multipath decorrelates faster as geometry changes
OUTLIER_RATE = 0.02  # per second, chance that a multipath excursion starts
OUTLIER_S = (1, 5)
OUTLIER_M = (30.0, 80.0)
OUTAGE_S = (60, 300)
COVER_LEAD_S = 20  # the cover's shade begins up to this long before the person arrives
POCKET_JITTER_M = (1.0, 2.0)
POCKET_DOPPLER_MPS = 0.3
DROPOUT_RATE = 0.004  # per second (about one dropout in four minutes)
DROPOUT_S = (3, 5)
ACCURACY_WANDER = 0.1  # the claimed accuracy stays within +-10 % of its mean


class Condition(enum.StrEnum):
    """A bench condition: an environment and a receiver rate (the last six: simulators/rates.py)."""

    OPEN_SKY = "open_sky"
    URBAN_CANYON = "urban_canyon"
    UNDER_COVER = "under_cover"
    POCKET = "pocket"
    URBAN_BIASED = "urban_biased"
    URBAN_BIASED_GST = "urban_biased_gst"
    OPEN_SKY_5HZ = "open_sky_5hz"
    OPEN_SKY_10HZ = "open_sky_10hz"
    URBAN_BIASED_10HZ = "urban_biased_10hz"
    RATE_SWITCH = "rate_switch"


# The conditions observed second by second by `observe` below, as before rates existed: their
# cases are the same, byte for byte, as when they were the only ones.
ONE_HZ = frozenset(
    {Condition.OPEN_SKY, Condition.URBAN_CANYON, Condition.UNDER_COVER, Condition.POCKET}
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of the true trajectory, in metres from the scenario's origin."""

    north: float
    east: float
    speed_mps: float
    course_deg: float


@dataclass(frozen=True, slots=True)
class ErrorModel:
    condition: Condition
    sigma_m: float  # horizontal 1-sigma (DRMS) of the wandering error; per axis sigma/sqrt 2
    tau_s: float
    accuracy_m: float  # the mean of what the receiver claims
    hdop: float
    satellites: int
    doppler_sigma_mps: float = 0.03
    doppler_uniform_mps: float = 0.0  # pocket: uniform +- noise instead of Gaussian
    jitter_m: float = 0.0  # white noise per fix, horizontal RMS (per axis jitter/sqrt 2)
    outlier_rate: float = 0.0
    dropout_rate: float = 0.0
    outage: bool = False  # one outage where the scenario puts the cover
    accuracy_bounds: tuple[float, float] = (0.0, math.inf)
    # simulators/rates.py and simulators/multipath.py: the receiver's rate (Hz), the rate it
    # switches to mid-walk (if it does), a facade reflection's bias (metres, bearing at the
    # start, turn in degrees per minute), whether the accuracy comes from GST (else HDOP x
    # UERE) and what share of the multipath error GST sees
    rate_hz: int = 1
    switch_hz: int | None = None
    bias_m: float = 0.0
    bias_bearing_deg: float = 0.0
    bias_turn_dpm: float = 0.0
    gst: bool = True
    gst_multipath: float = 0.0

    @property
    def effective_sigma_m(self) -> float:
        """Horizontal 1-sigma of everything but outliers: what distances are judged by."""
        return math.hypot(self.sigma_m, self.jitter_m)


def draw_model(condition: Condition, rng: random.Random) -> ErrorModel:
    """The parameters of one receiver in one condition for one case."""
    if condition is Condition.URBAN_CANYON:
        sigma = rng.uniform(*URBAN_SIGMA_M)
        return ErrorModel(
            condition,
            sigma_m=sigma,
            tau_s=rng.uniform(*URBAN_TAU_S),
            accuracy_m=min(URBAN_SIGMA_M[1], max(URBAN_SIGMA_M[0], sigma * rng.uniform(0.9, 1.1))),
            hdop=rng.uniform(1.8, 4.0),
            satellites=rng.randint(5, 9),
            doppler_sigma_mps=0.08,
            outlier_rate=OUTLIER_RATE,
            accuracy_bounds=URBAN_SIGMA_M,
        )
    sigma = rng.uniform(*OPEN_SIGMA_M)
    base = ErrorModel(
        condition,
        sigma_m=sigma,
        tau_s=rng.uniform(*TAU_S),
        accuracy_m=sigma * rng.uniform(0.9, 1.1),
        hdop=rng.uniform(0.8, 1.3),
        satellites=rng.randint(9, 16),
    )
    if condition is Condition.UNDER_COVER:
        return dataclasses.replace(base, outage=True)
    if condition is Condition.POCKET:
        jitter = rng.uniform(*POCKET_JITTER_M)
        return dataclasses.replace(
            base,
            jitter_m=jitter,
            accuracy_m=math.hypot(sigma, jitter) * rng.uniform(0.9, 1.1),
            doppler_uniform_mps=POCKET_DOPPLER_MPS,
            dropout_rate=DROPOUT_RATE,
            satellites=max(6, base.satellites - 3),
        )
    return base


def fix_at(  # noqa: PLR0917 - one receiver cycle, in the order a receiver states it
    model: ErrorModel,
    time_ms: int,
    origin: tuple[float, float],
    position: tuple[float, float],
    accuracy_m: float,
    speed_mps: float,
    course_deg: float,
    hdop: float | None = None,
) -> Fix:
    """The fix this model's receiver reports at `position` (metres north, east of origin).

    `hdop` defaults to the model's, scaled as the accuracy wanders from its mean.
    """
    lat, lon = offset(origin[0], origin[1], position[0], position[1])
    return Fix(
        time_ms=time_ms,
        lat=lat,
        lon=lon,
        accuracy_m=accuracy_m,
        hdop=model.hdop * accuracy_m / model.accuracy_m if hdop is None else hdop,
        alt_m=250.0,
        mode=FixMode.FIX_3D,
        satellites=model.satellites,
        speed_mps=max(0.0, speed_mps),
        course_deg=course_deg % 360.0,
        accuracy_from_gst=model.gst,
    )


@dataclass(slots=True)
class Observation:
    """What the receiver reported at each epoch (None: nothing), and why.

    An epoch is a true second here; at other rates (simulators/rates.py) `offsets_ms` says
    when each one was, from the start, and `white` and `bias` split its error.
    """

    fixes: list[Fix | None]
    errors: list[tuple[float, float]]  # (north, east) error added to each epoch's truth
    excursions: list[tuple[float, float] | None]  # each epoch's multipath offset, if any
    offsets_ms: list[int] = dataclasses.field(default_factory=list)
    white: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    bias: list[tuple[float, float]] = dataclasses.field(default_factory=list)


def draw_excursions(
    model: ErrorModel, n: int, rng: random.Random
) -> list[tuple[float, float] | None]:
    """Multipath: per second, the excursion's offset, or None outside one."""
    out: list[tuple[float, float] | None] = [None] * n
    i = 0
    while i < n:
        if rng.random() < model.outlier_rate:
            length = rng.randint(*OUTLIER_S)
            bearing, size = rng.uniform(0, 2 * math.pi), rng.uniform(*OUTLIER_M)
            for k in range(i, min(n, i + length)):
                out[k] = (size * math.cos(bearing), size * math.sin(bearing))
            i += length
        else:
            i += 1
    return out


def draw_outage(
    model: ErrorModel, rng: random.Random, cover_at: int, stay_s: int = 0
) -> tuple[int, int] | None:
    """UNDER_COVER: the [start, end) seconds of the outage the cover at `cover_at` causes,
    for a person who stays `stay_s` seconds there (0: passes by).

    The shade begins anywhere from 20 s before `cover_at` (the arcade reaches out along the
    way in) to the moment the person leaves (they step under it part-way through the stay)
    and lasts 60-300 s, whether or not the person is still standing there by then. For a
    pass (`stay_s` 0) the draw is what it was before stays were told apart.
    """
    if not model.outage:
        return None
    if stay_s:
        start = max(0, cover_at - COVER_LEAD_S + rng.randint(0, COVER_LEAD_S + stay_s))
    else:  # the draw from before stays were told apart: passes keep their cases
        start = max(0, cover_at - rng.randint(0, COVER_LEAD_S))
    return start, start + rng.randint(*OUTAGE_S)


def draw_silences(
    model: ErrorModel, n: int, rng: random.Random, outage: tuple[int, int] | None
) -> list[bool]:
    """Seconds with no fix at all: pocket dropouts, and the cover's outage."""
    missing = [False] * n
    if model.dropout_rate:
        i = 0
        while i < n:
            if rng.random() < model.dropout_rate:
                length = rng.randint(*DROPOUT_S)
                missing[i : i + length] = [True] * len(missing[i : i + length])
                i += length
            else:
                i += 1
    if outage is not None:
        missing[outage[0] : outage[1]] = [True] * len(missing[outage[0] : outage[1]])
    return missing


def observe(  # noqa: PLR0917 - the scenario's positional call reads as a sentence
    model: ErrorModel,
    truth: Sequence[Sample],
    rng: random.Random,
    origin: tuple[float, float],
    t0_ms: int,
    outage: tuple[int, int] | None = None,
) -> Observation:
    """The receiver's view of `truth` (1 Hz from `t0_ms`), positions relative to `origin`.

    `outage` is a [start, end) range of seconds with no fix at all (see `draw_outage`).
    """
    n = len(truth)
    axis = model.sigma_m / math.sqrt(2)
    a = math.exp(-1.0 / model.tau_s)
    s = axis * math.sqrt(1 - a * a)
    gauss, uniform = rng.gauss, rng.uniform
    err_n, err_e = gauss(0, axis), gauss(0, axis)
    excursions: list[tuple[float, float] | None] = (
        draw_excursions(model, n, rng) if model.outlier_rate else [None] * n
    )
    missing = draw_silences(model, n, rng, outage)
    acc, acc_lo, acc_hi = model.accuracy_m, *model.accuracy_bounds
    wander_lo = model.accuracy_m * (1 - ACCURACY_WANDER)
    wander_hi = model.accuracy_m * (1 + ACCURACY_WANDER)
    jitter = model.jitter_m / math.sqrt(2)
    dop_u, dop_g = model.doppler_uniform_mps, model.doppler_sigma_mps
    fixes: list[Fix | None] = []
    errors: list[tuple[float, float]] = []
    for i, smp in enumerate(truth):
        err_n = a * err_n + s * gauss(0, 1)
        err_e = a * err_e + s * gauss(0, 1)
        acc = min(wander_hi, max(wander_lo, acc * (1 + 0.02 * (rng.random() - 0.5))))
        dn, de = err_n, err_e
        if jitter:
            dn += gauss(0, jitter)
            de += gauss(0, jitter)
        exc = excursions[i]
        if exc is not None:
            dn += exc[0]
            de += exc[1]
        errors.append((dn, de))
        if missing[i]:
            fixes.append(None)
            continue
        noise = uniform(-dop_u, dop_u) if dop_u else gauss(0, dop_g)
        fixes.append(
            fix_at(
                model,
                t0_ms + 1000 * i,
                origin,
                (smp.north + dn, smp.east + de),
                min(acc_hi, max(acc_lo, acc)),
                smp.speed_mps + noise,
                smp.course_deg,
            )
        )
    return Observation(fixes, errors, excursions, [1000 * i for i in range(n)])
