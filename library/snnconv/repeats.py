"""Repeats: one drawn configuration run with K seeds, summarised by its mean and its spread.

A front drawn from one seed per configuration mixes the settings' effect with the seed's luck.
With ``--repeats K`` every configuration the search draws runs K times, with seeds
``seed, seed + 1, ..., seed + K - 1`` (stage 1 and stage 2 both: the seed is part of the stage-1
key). In MLflow the configuration is one run under the sweep (what the fronts, the report and
Optuna read) and its K seed runs are nested under it, each a complete trial (metrics, curves, model,
per-image results). The configuration run logs:

* the **mean** over its seeds of every metric all of them logged, under the same name (``val_acc_op``,
  ``t_op``, ``energy_op_mj``, ...), and of every stepped curve at every step they all have;
* the **spread** of the operating point and the ANN: ``<metric>_std`` (sample standard deviation,
  n - 1 in the denominator), ``<metric>_min`` and ``<metric>_max`` for :data:`SPREAD_METRICS`;
* ``repeats`` (param) = K.

The 95 % Wilson intervals of single runs are not averaged (their mean is no interval); the fronts
draw each configuration's mean with ± its standard deviation across seeds instead. Nothing here
knows MLflow or Ray.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

#: the stepped accuracy curves (step = t) averaged over the seeds
CURVES = ("snn_acc_t", "val_snn_acc_t", "if_snn_acc_t", "val_if_snn_acc_t")
#: the metrics whose spread across seeds the configuration run logs (``_std``, ``_min``, ``_max``)
SPREAD_METRICS = ("val_acc_op", "acc_op", "t_op", "energy_op_mj", "val_ann_acc", "ann_acc")
#: metrics a mean would misstate: single-run intervals and bookkeeping
NOT_AVERAGED = ("val_acc_op_low", "val_acc_op_high", "acc_op_low", "acc_op_high", "val_ann_acc_low",
                "val_ann_acc_high", "ann_acc_low", "ann_acc_high", "tracking_seconds")


def seed_configs(config: Any, repeats: int) -> list[Any]:
    """``repeats`` copies of the trial config ``config`` with seeds ``config.seed + k``, k = 0 .. repeats - 1."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}")
    configs = []
    for offset in range(repeats):
        seeded = copy.deepcopy(config)
        seeded.seed = config.seed + offset
        configs.append(seeded)
    return configs


def summarise(metrics: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The configuration's metrics from its seeds' (one mapping per seed): the mean of every finite metric
    all seeds have (except :data:`NOT_AVERAGED`), and ``_std`` / ``_min`` / ``_max`` of :data:`SPREAD_METRICS`.
    A metric that is infinite for a seed (a latency never reached) has an infinite mean."""
    if not metrics:
        raise ValueError("summarise needs the metrics of at least one seed")
    shared = set(metrics[0]).intersection(*metrics[1:]) - set(NOT_AVERAGED) - set(CURVES)  # curves: mean_curve
    summary: dict[str, float] = {}
    for key in sorted(shared):
        values = [float(seed[key]) for seed in metrics]
        if any(math.isnan(v) for v in values):
            continue
        summary[key] = math.inf if any(math.isinf(v) for v in values) else statistics.fmean(values)
        if key in SPREAD_METRICS and all(math.isfinite(v) for v in values):
            summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[f"{key}_min"], summary[f"{key}_max"] = min(values), max(values)
    return summary


def mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Step -> the mean over the seeds' curves (step -> value) at each step all of them have."""
    if not curves:
        return {}
    steps = set(curves[0]).intersection(*curves[1:])
    return {step: statistics.fmean(float(curve[step]) for curve in curves) for step in sorted(steps)}
