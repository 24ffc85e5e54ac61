"""The visit rules' statistics against plain oracles: a weighted median or percentile is the
same statistic over a list in which each value is repeated for its weight, and the bias
allowance is the median of what each fix's claimed accuracy may hide (docs/engine.md,
"Visits and verdicts"). Written to kill the mutants bench/mutation.py found alive in
agent/checkin/visits.py."""

from __future__ import annotations

import math
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checkin.visits import (
    BIAS_PER_GST_M,
    BIAS_PER_HDOP_M,
    bias_allowance,
    weighted_median,
    weighted_p90,
)
from contract.fix import Fix

VALUES = st.lists(
    st.tuples(st.integers(-1000, 1000).map(lambda n: n / 4), st.integers(1, 6)),
    min_size=1,
    max_size=12,
)


def expanded(pairs: list[tuple[float, int]]) -> list[float]:
    """Each value repeated for its weight."""
    return [x for x, w in pairs for _ in range(w)]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(VALUES)
def test_the_weighted_median_is_the_median_of_the_repeated_values(
    pairs: list[tuple[float, int]],
) -> None:
    xs, ws = [x for x, _ in pairs], [w for _, w in pairs]
    assert weighted_median(xs, ws) == statistics.median(expanded(pairs))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(VALUES)
def test_the_weighted_p90_is_the_ceil_nine_tenths_smallest_of_the_repeated_values(
    pairs: list[tuple[float, int]],
) -> None:
    xs, ws = [x for x, _ in pairs], [w for _, w in pairs]
    flat = sorted(expanded(pairs))
    assert weighted_p90(xs, ws) == flat[math.ceil(0.9 * len(flat)) - 1]


def test_weighted_statistics_by_hand() -> None:
    # a value standing for most of the time outweighs several brief ones
    assert weighted_median([1.0, 2.0, 3.0, 50.0], [1, 1, 1, 10]) == 50.0
    assert weighted_median([50.0, 1.0], [1, 1]) == 25.5  # even total: halfway
    assert weighted_median([3.0, 1.0, 2.0], [2, 1, 1]) == 2.5
    assert weighted_median([7.0], [1000]) == 7.0
    assert math.isnan(weighted_median([], []))
    assert weighted_p90([5.0, 1.0], [1, 9]) == 1.0  # 90 % of the weight at or below 1
    assert weighted_p90([5.0, 1.0], [2, 8]) == 5.0
    assert weighted_p90([4.0, 3.0, 2.0, 1.0], [1, 1, 1, 1]) == 4.0  # ceil(3.6) = 4th
    assert weighted_p90([], []) == 0.0


def fix(accuracy: float | None, gst: bool = False) -> Fix:
    return Fix(1_000, 29.5, 106.5, accuracy_m=accuracy, accuracy_from_gst=gst)


def test_the_bias_allowance_is_the_median_of_what_each_claim_may_hide() -> None:
    assert BIAS_PER_HDOP_M > BIAS_PER_GST_M  # HDOP cannot see a facade's reflection; GST can
    assert bias_allowance([fix(6.0)]) == 6.0 * BIAS_PER_HDOP_M
    assert bias_allowance([fix(6.0, gst=True)]) == 6.0 * BIAS_PER_GST_M
    hdop = [fix(a) for a in (2.0, 10.0, 4.0)]
    assert bias_allowance(hdop) == 4.0 * BIAS_PER_HDOP_M  # the median, not the mean or max
    mixed = [fix(8.0), fix(8.0, gst=True)]
    assert bias_allowance(mixed) == (8.0 * BIAS_PER_HDOP_M + 8.0 * BIAS_PER_GST_M) / 2
    assert bias_allowance([fix(None), fix(None), fix(4.0)]) == 0.0  # no claim hides nothing
