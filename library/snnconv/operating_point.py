"""The operating point of a trial: the one latency at which its accuracy is claimed (no Ray, no MLflow).

A point on a Pareto front says "this accuracy, at this latency". For a rate-coded IF network the
accuracy after t steps, acc(t), can rise, overshoot and settle, so the accuracy at T_max and "the
first t near the ANN" are not one claim. The rule here picks the latency from the **validation**
curve only, and reads the test accuracy at that same t:

* ``t_op`` = the smallest t such that the validation accuracy at every t' >= t stays within
  ``tolerance`` percentage points (inclusive) of the validation accuracy at T_max;
* ``converged`` = the validation curve over [ceil(T_max / 2), T_max] stays within ``tolerance`` of its
  value at T_max, i.e. ``t_op <= ceil(T_max / 2)``. An unconverged trial's T_max is too short to
  say where the curve settles: raise T_max.

PASCAL (qcfs trials) is exact: its accuracy does not depend on a number of steps, so its operating
point is its energy-normalised T_eff with PASCAL's exact accuracies (``snnconv.pipeline``).

>>> operating_step([50.0, 90.0, 99.0, 97.0, 96.5], tolerance=1.0)
4
>>> is_converged([50.0, 90.0, 99.0, 97.0, 96.5], tolerance=1.0)
False
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: slack for comparing percentages computed from integer counts (they are exact to ~1e-13)
_SLACK = 1e-9


def operating_step(val_curve: Sequence[float], tolerance: float = 1.0) -> int:
    """``t_op`` (1-based step) of the validation curve ``val_curve[t-1]`` (percent), see the module docstring.

    >>> operating_step([10.0, 60.0, 80.0, 80.0], tolerance=1.0)   # monotone: settles at t = 3
    3
    >>> operating_step([90.0, 90.0], tolerance=0.0)               # converged at t = 1
    1
    """
    if len(val_curve) == 0:
        raise ValueError("operating_step needs a curve with at least one step")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be zero or positive (percentage points), got {tolerance!r}")
    final = float(val_curve[-1])
    t_op = len(val_curve)
    for t in range(len(val_curve), 0, -1):  # walk back while the curve stays in the band
        if abs(float(val_curve[t - 1]) - final) > tolerance + _SLACK:
            break
        t_op = t
    return t_op


def convergence_start(t_max: int) -> int:
    """The first step of the window [ceil(T_max / 2), T_max] that ``converged`` checks."""
    return max(1, math.ceil(t_max / 2))


def is_converged(val_curve: Sequence[float], tolerance: float = 1.0) -> bool:
    """Whether the validation curve stays within ``tolerance`` of its last value over the second half."""
    return operating_step(val_curve, tolerance) <= convergence_start(len(val_curve))


@dataclass(frozen=True)
class OperatingPoint:
    """One trial's claim: ``val_acc_op`` / ``acc_op`` (percent, validation / test) reached at ``t_op``.

    ``t_op`` is in IF time steps for a rate-coded curve and PASCAL's T_eff for qcfs (``kind`` says
    which); ``energy_op_mj`` is the energy per image (mJ) of inference stopped at the operating point.
    """

    t_op: float
    val_acc_op: float
    acc_op: float
    energy_op_mj: float
    converged: bool
    kind: str


#: ``OperatingPoint.kind`` values and how a label names their latency
IF_STEPS = "if_steps"
PASCAL_T_EFF = "pascal_t_eff"
KIND_LABELS = {IF_STEPS: "IF time steps", PASCAL_T_EFF: "PASCAL T_eff"}


def if_operating_point(val_curve: Sequence[float], test_curve: Sequence[float], tolerance: float,
                       energy_at: Callable[[int], float]) -> OperatingPoint:
    """The operating point of a rate-coded IF trial from its validation and test acc(t) curves
    (same length T_max, percent); ``energy_at(t)`` gives the energy per image (mJ) after t steps."""
    if len(val_curve) != len(test_curve):
        raise ValueError(f"validation and test curves differ in length: {len(val_curve)} and {len(test_curve)}")
    t_op = operating_step(val_curve, tolerance)
    return OperatingPoint(t_op=float(t_op), val_acc_op=float(val_curve[t_op - 1]),
                          acc_op=float(test_curve[t_op - 1]), energy_op_mj=float(energy_at(t_op)),
                          converged=t_op <= convergence_start(len(val_curve)), kind=IF_STEPS)
