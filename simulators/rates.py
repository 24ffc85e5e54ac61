"""Receivers at 1, 5 and 10 Hz, and one that switches rate mid-walk: one error, sampled.

A receiver's error is a property of the sky, the street and the antenna, not of how often
the receiver reports: at 10 Hz it reports the same wandering error ten times a second, so
consecutive fixes are nearly the same, plus a little white noise of its own per fix. So the
error is built here in time, once per case, and the receiver's epochs sample it:

- everything slow is drawn second by second from a stream of its own (`corr`): the
  Gauss-Markov wander (its value at each whole second, exactly as in simulators/errors.py,
  and a straight line between two seconds: a receiver's filter moves smoothly), the claimed
  accuracy's slow wander, multipath excursions (they start and end on whole seconds and last
  1-5 s whatever the rate, so at 10 Hz an excursion is 10-50 fixes) and dropouts; the
  facade's bias is a function of time (simulators/multipath.py);
- only the white noise per fix (`jitter_m`) and the Doppler noise come from a second stream
  (`white`), drawn epoch by epoch.

The same walk with the same seed at 1 Hz and at 10 Hz therefore has the same error at every
instant both report, up to the white part; `Observation.white` holds that part, so a test
can take it off and compare. The true track stays 1 Hz (simulators/truthcases.py); between
two seconds the person is on the straight line joining them (`truth_at`).

The conditions of the bench that use this module, and their rates:

- OPEN_SKY_5HZ, OPEN_SKY_10HZ: open sky's error (sigma 2-3 m, correlation 20-40 s) plus
  WHITE_OPEN_M (0.3-0.6 m RMS) of white noise per fix, at 5 and 10 Hz;
- URBAN_BIASED, URBAN_BIASED_GST at 1 Hz, URBAN_BIASED_10HZ at 10 Hz: simulators/multipath.py
  (the first and the last claim HDOP x UERE, the second sends GST);
- RATE_SWITCH: open sky that starts at 1 Hz and switches to 5 Hz, or starts at 10 Hz and
  switches to 1 Hz (even odds), at a moment the case chooses (about when the person reaches
  the point).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from simulators.errors import (
    ONE_HZ,
    Condition,
    ErrorModel,
    Observation,
    Sample,
    draw_excursions,
    draw_model,
    draw_silences,
    fix_at,
)
from simulators.multipath import bias_at, claimed_accuracy, draw_biased

WHITE_OPEN_M = (0.3, 0.6)
RATES_HZ = (1, 2, 5, 10)  # each divides a second into whole milliseconds
HOLD_M = 50.0  # a true step longer than this (a spoofer's teleport) is not interpolated
ACCURACY_WANDER = 0.1  # as in simulators/errors.py: the claim stays within +-10 % of its mean


def draw(condition: Condition, rng: random.Random) -> ErrorModel:
    """The parameters of one receiver in any condition, for one case."""
    if condition in ONE_HZ:
        return draw_model(condition, rng)
    if condition is Condition.URBAN_BIASED:
        return draw_biased(condition, rng, 1, gst=False)
    if condition is Condition.URBAN_BIASED_GST:
        return draw_biased(condition, rng, 1, gst=True)
    if condition is Condition.URBAN_BIASED_10HZ:
        return draw_biased(condition, rng, 10, gst=False)
    base = draw_model(Condition.OPEN_SKY, rng)
    white = rng.uniform(*WHITE_OPEN_M)
    rate, switch = {
        Condition.OPEN_SKY_5HZ: (5, None),
        Condition.OPEN_SKY_10HZ: (10, None),
    }.get(condition) or ((1, 5) if rng.random() < 0.5 else (10, 1))
    return dataclasses.replace(
        base,
        condition=condition,
        jitter_m=white,
        accuracy_m=math.hypot(base.sigma_m, white) * rng.uniform(0.9, 1.1),
        rate_hz=rate,
        switch_hz=switch,
    )


def epoch_offsets(model: ErrorModel, seconds: int, switch_s: int | None = None) -> list[int]:
    """The receiver's epochs over a true track `seconds` long, in ms from its start.

    Before `switch_s` the receiver runs at `rate_hz`, from then on at `switch_hz` (if set).
    """
    end = 1000 * (seconds - 1)
    out: list[int] = []
    t = 0
    while t <= end:
        out.append(t)
        switched = model.switch_hz is not None and switch_s is not None and t >= 1000 * switch_s
        hz = model.switch_hz if switched and model.switch_hz is not None else model.rate_hz
        if hz not in RATES_HZ:
            raise ValueError(f"a receiver rate of {hz} Hz: one of {RATES_HZ}")
        t += 1000 // hz
    return out


def truth_at(truth: Sequence[Sample], t_s: float) -> Sample:
    """Where the person is `t_s` seconds in: on the line between two true seconds."""
    i = min(int(t_s), len(truth) - 1)
    f = t_s - i
    if f <= 0.0 or i + 1 >= len(truth):
        return truth[i]
    a, b = truth[i], truth[i + 1]
    if math.hypot(b.north - a.north, b.east - a.east) > HOLD_M:
        return a
    return Sample(
        a.north + f * (b.north - a.north), a.east + f * (b.east - a.east), b.speed_mps, b.course_deg
    )


def _wander(model: ErrorModel, n: int, rng: random.Random) -> list[tuple[float, float]]:
    """The Gauss-Markov error at each whole second (as simulators/errors.py's `observe`)."""
    axis = model.sigma_m / math.sqrt(2)
    a = math.exp(-1.0 / model.tau_s)
    s = axis * math.sqrt(1 - a * a)
    gauss = rng.gauss
    err_n, err_e = gauss(0, axis), gauss(0, axis)
    out = []
    for _ in range(n):
        err_n = a * err_n + s * gauss(0, 1)
        err_e = a * err_e + s * gauss(0, 1)
        out.append((err_n, err_e))
    return out


def _claims(model: ErrorModel, n: int, rng: random.Random) -> list[float]:
    """The claimed accuracy's wander, each second, as a factor of its mean."""
    k, out = 1.0, []
    for _ in range(n):
        k = min(
            1 + ACCURACY_WANDER, max(1 - ACCURACY_WANDER, k * (1 + 0.02 * (rng.random() - 0.5)))
        )
        out.append(k)
    return out


def observe_rated(  # noqa: PLR0917 - one receiver, positional as `observe`
    model: ErrorModel,
    truth: Sequence[Sample],
    rng: random.Random,
    origin: tuple[float, float],
    t0_ms: int,
    outage: tuple[int, int] | None = None,
    switch_s: int | None = None,
) -> Observation:
    """The receiver's view of `truth` (1 Hz from `t0_ms`) at its own rate; see the docstring."""
    n = len(truth)
    corr = random.Random(rng.getrandbits(64))
    white = random.Random(rng.getrandbits(64))
    wander = _wander(model, n, corr)
    claims = _claims(model, n, corr)
    excursions = draw_excursions(model, n, corr) if model.outlier_rate else [None] * n
    missing = draw_silences(model, n, corr, outage)
    jitter = model.jitter_m / math.sqrt(2)
    dop_u, dop_g = model.doppler_uniform_mps, model.doppler_sigma_mps
    acc_lo, acc_hi = model.accuracy_bounds
    obs = Observation([], [], [], epoch_offsets(model, n, switch_s))
    for off in obs.offsets_ms:
        t = off / 1000
        i = off // 1000
        f = t - i
        w0 = wander[i]
        w1 = wander[i + 1] if f > 0 else w0
        bias = bias_at(model, t)
        wn = (white.gauss(0, jitter), white.gauss(0, jitter)) if jitter else (0.0, 0.0)
        exc = excursions[i]
        multipath = (bias[0] + (exc[0] if exc else 0.0), bias[1] + (exc[1] if exc else 0.0))
        dn = w0[0] + f * (w1[0] - w0[0]) + multipath[0] + wn[0]
        de = w0[1] + f * (w1[1] - w0[1]) + multipath[1] + wn[1]
        obs.errors.append((dn, de))
        obs.excursions.append(exc)
        obs.white.append(wn)
        obs.bias.append(bias)
        if missing[i]:
            obs.fixes.append(None)
            continue
        smp = truth_at(truth, t)
        claim = claimed_accuracy(model, model.accuracy_m * claims[i], math.hypot(*multipath))
        noise = white.uniform(-dop_u, dop_u) if dop_u else white.gauss(0, dop_g)
        obs.fixes.append(
            fix_at(
                model,
                t0_ms + off,
                origin,
                (smp.north + dn, smp.east + de),
                min(acc_hi, max(acc_lo, claim)),
                smp.speed_mps + noise,
                smp.course_deg,
                hdop=model.hdop * claims[i],
            )
        )
    return obs
