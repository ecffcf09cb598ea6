"""The operating-point rule (t_op, converged) on hand-made acc(t) curves."""

from __future__ import annotations

import doctest

import pytest

from snnconv import operating_point
from snnconv.operating_point import IF_STEPS, convergence_start, if_operating_point, is_converged, operating_step


def test_monotone_curve_settles_where_it_enters_the_band():
    curve = [20.0, 50.0, 80.0, 90.0, 95.5, 96.0, 96.5, 96.8]        # T_max = 8, final 96.8
    # 95.5 (t = 5) is 1.3 below the final 96.8: outside a 1-point band, so t_op is 6
    assert operating_step(curve, 1.0) == 6
    assert operating_step(curve, 1.3) == 5                            # inside a 1.3-point band
    assert operating_step(curve, 0.0) == 8
    assert is_converged(curve, 1.3) is False and convergence_start(8) == 4


def test_overshooting_curve_waits_until_the_overshoot_is_over():
    # the demo case: near the ANN at t = 5, overshoots to 98.9 % at t = 9, settles at 96.7 % by t = 32
    curve = [60.0, 80.0, 88.0, 92.0, 94.4, 96.0, 97.5, 98.5, 98.9, 98.6, 98.2, 98.0, 97.8]
    curve += [97.6] * 6 + [97.0] * 6 + [96.7] * 7
    assert len(curve) == 32
    # first t after which every value stays within 1 point of 96.7: 97.8 (t=13) is 1.1 above -> t_op = 14
    assert operating_step(curve, 1.0) == 14
    assert curve[14 - 1] == 97.6 and abs(curve[14 - 1] - curve[-1]) <= 1.0
    assert operating_step(curve, 1.0) != 5                              # not the first t near the final value
    assert is_converged(curve, 1.0) is True                             # window t = 16..32 stays in the band


def test_curve_that_never_converges():
    curve = [10.0 * t for t in range(1, 11)]                            # still rising by 10 points a step
    assert operating_step(curve, 1.0) == 10
    assert is_converged(curve, 1.0) is False


def test_curve_converged_at_t_equal_one():
    curve = [93.3, 93.0, 93.8, 93.3]
    assert operating_step(curve, 1.0) == 1
    assert is_converged(curve, 1.0) is True
    assert operating_step([88.0], 1.0) == 1 and is_converged([88.0], 1.0) is True


def test_tolerance_is_inclusive_and_checked():
    assert operating_step([95.0, 96.0], 1.0) == 1                       # exactly 1 point away counts as within
    assert operating_step([100 * 2 / 3, 100 * 5 / 7], 100 * 5 / 7 - 100 * 2 / 3) == 1  # float slack
    with pytest.raises(ValueError, match="tolerance"):
        operating_step([1.0, 2.0], -1.0)
    with pytest.raises(ValueError, match="at least one step"):
        operating_step([], 1.0)


def test_if_operating_point_reads_test_and_energy_at_the_validation_t_op():
    val = [50.0, 70.0, 91.0, 90.0]
    test = [40.0, 75.0, 88.0, 89.0]
    point = if_operating_point(val, test, 1.0, energy_at=lambda t: 0.5 * t)
    assert (point.t_op, point.val_acc_op, point.acc_op, point.energy_op_mj) == (3.0, 91.0, 88.0, 1.5)
    assert point.converged is False and point.kind == IF_STEPS             # t_op 3 > ceil(4 / 2)
    with pytest.raises(ValueError, match="differ in length"):
        if_operating_point(val, test[:3], 1.0, energy_at=float)


def test_module_doctests():
    assert doctest.testmod(operating_point).failed == 0
