"""Accuracy statistics (``snnconv.metrics``): the Wilson interval against known values, and held out
against the score test it inverts."""

from __future__ import annotations

import math

import pytest

from snnconv.metrics import wilson_interval


@pytest.mark.parametrize("accuracy, images, expected", [
    (50.0, 100, (40.383, 59.617)),  # the textbook case
    (0.0, 10, (0.0, 27.753)),  # not empty at 0 %
    (100.0, 10, (72.247, 100.0)),  # nor at 100 %
])
def test_wilson_interval_matches_known_values(accuracy, images, expected):
    assert wilson_interval(accuracy, images) == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("correct, images", [(1, 7), (168, 180), (349, 360), (5000, 10000)])
def test_wilson_interval_is_where_the_score_test_stops_rejecting(correct, images):
    """Held-out check: the Wilson interval is the set of true accuracies p0 that a score test at 5 % does not
    reject, |p - p0| <= z sqrt(p0 (1 - p0) / n); found here by bisection, not by the closed form."""
    from snnconv.metrics import Z95

    p = correct / images

    def inside(p0: float) -> bool:
        return abs(p - p0) <= Z95 * math.sqrt(p0 * (1 - p0) / images)

    def edge(outside: float, within: float) -> float:
        for _ in range(100):
            middle = (outside + within) / 2
            outside, within = (outside, middle) if inside(middle) else (middle, within)
        return within

    low, high = wilson_interval(100.0 * p, images)
    assert low == pytest.approx(100 * edge(0.0, p), abs=1e-9)
    assert high == pytest.approx(100 * edge(1.0, p), abs=1e-9)
