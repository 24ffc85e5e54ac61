"""Biased, slowly turning urban multipath: what a facade reflection does to a receiver.

In a street canyon the error is not white. A satellite seen only by its reflection off one
facade (non-line-of-sight) lengthens its pseudorange by metres to tens of metres, and the
position solution absorbs most of that into a shift that keeps its direction for as long as
the geometry holds: minutes, for a person walking a block or standing at a corner, turning
slowly as the satellites move and the person moves along the facade. On top of it the rest
of the error wanders with a correlation time of a minute or more. The model, per case:

- a bias of BIAS_M (6-12 m), constant in size, whose bearing starts anywhere and turns at
  BIAS_TURN_DPM (2-12 degrees a minute, either way): after five minutes it points at most
  60 degrees away from where it started;
- a Gauss-Markov wander of horizontal 1-sigma WANDER_SIGMA_M (3-6 m) with a correlation time
  of WANDER_TAU_S (60-180 s);
- white noise of WHITE_M (0.8-1.5 m RMS) per fix, and the urban canyon's excursions (2 % of
  seconds start one of 30-80 m for 1-5 s, simulators/errors.py).

What the receiver claims. Without GST its accuracy is HDOP x UERE_M (agent/gnss/nmea.py), with
HDOP 1.5-3 (4.5-9 m): geometry alone, blind to the bias by construction. With GST (NMEA's
GBS/GST family: sigma of latitude and longitude) the claim is the receiver's own a posteriori
estimate, built from the post-fit pseudorange residuals. A reflection's delay on one satellite
splits in two: the part that lies in the span of the geometry (position and clock) moves the
solution and leaves no residual; only the rest shows. For a single faulty range the residual
is (1 - h) times its delay, h being that satellite's leverage (the hat matrix's diagonal,
4/n on average over n satellites), while the position moves by the fault times its "slope"
(Parkinson and Axelrad 1988; Brown 1992, on RAIM): so the residual RMS, and with it GST,
grows with multipath but does not measure the shift it caused, and a receiver's filter
smooths and down-weights what it does see. Reported comparisons of u-blox and smartphone
accuracy estimates with true errors in urban canyons find them optimistic by a factor of
about two to three. Modelled that way: GST claims hypot(wander claim, k x |multipath|) with k
GST_MULTIPATH (0.25-0.5) of the current bias plus excursion, the wander claim being the
wander's sigma within +-10 %. GST is partly informative: it grows when the reflection is
strong and during an excursion, and it still reports a quarter to a half of what the
reflection does.

Only the wander and the white noise enter the labels' margins (simulators/truthcases.py):
the bias is the systematic error the engine must not be fooled by. So a person lingering
outside stands 1.5-2.7 radii from the centre, where a bias towards the point brings
the positions to the radius.

All randomness comes from the caller's `random.Random`; nothing here reads a clock.
"""

from __future__ import annotations

import math
import random

from agent.gnss.nmea import UERE_M
from simulators.errors import OUTLIER_RATE, Condition, ErrorModel

BIAS_M = (6.0, 12.0)
BIAS_TURN_DPM = (2.0, 12.0)  # degrees per minute, either way
WANDER_SIGMA_M = (3.0, 6.0)
WANDER_TAU_S = (60.0, 180.0)
WHITE_M = (0.8, 1.5)
HDOP = (1.5, 3.0)
GST_MULTIPATH = (0.25, 0.5)
ACCURACY_SPREAD = 0.1  # the GST claim's mean: the wander's sigma within +-10 %


def draw_biased(condition: Condition, rng: random.Random, rate_hz: int, gst: bool) -> ErrorModel:
    """The parameters of one urban receiver under a facade reflection, for one case."""
    sigma = rng.uniform(*WANDER_SIGMA_M)
    hdop = rng.uniform(*HDOP)
    bias = rng.uniform(*BIAS_M)
    bearing = rng.uniform(0.0, 360.0)
    turn = rng.uniform(*BIAS_TURN_DPM) * rng.choice((-1.0, 1.0))
    share = rng.uniform(*GST_MULTIPATH) if gst else 0.0
    claim = sigma * rng.uniform(1 - ACCURACY_SPREAD, 1 + ACCURACY_SPREAD) if gst else hdop * UERE_M
    return ErrorModel(
        condition,
        sigma_m=sigma,
        tau_s=rng.uniform(*WANDER_TAU_S),
        accuracy_m=claim,
        hdop=hdop,
        satellites=rng.randint(5, 9),
        doppler_sigma_mps=0.08,
        jitter_m=rng.uniform(*WHITE_M),
        outlier_rate=OUTLIER_RATE,
        rate_hz=rate_hz,
        bias_m=bias,
        bias_bearing_deg=bearing,
        bias_turn_dpm=turn,
        gst=gst,
        gst_multipath=share,
    )


def bias_at(model: ErrorModel, t_s: float) -> tuple[float, float]:
    """The reflection's (north, east) shift `t_s` seconds into the walk: (0, 0) without one."""
    if not model.bias_m:
        return 0.0, 0.0
    b = math.radians(model.bias_bearing_deg + model.bias_turn_dpm * t_s / 60.0)
    return model.bias_m * math.cos(b), model.bias_m * math.sin(b)


def claimed_accuracy(model: ErrorModel, wander_claim_m: float, multipath_m: float) -> float:
    """What the receiver says its accuracy is, given the size of its multipath error now."""
    if not model.gst_multipath:
        return wander_claim_m
    return math.hypot(wander_claim_m, model.gst_multipath * multipath_m)
