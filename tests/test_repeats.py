"""snnconv.repeats: the seeds of a configuration, and its mean and spread (the sweep's use of them is in
test_sweep.py::test_repeats_run_each_configuration_with_k_seeds_and_the_front_takes_their_mean)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from snnconv import pareto_plots, pareto_tables, repeats
from snnconv.config import TrialConfig
from snnconv.sweep_spec import SweepSpec, validate_spec


def test_seeds_follow_the_configurations_own():
    config = TrialConfig(seed=7)
    seeded = repeats.seed_configs(config, 3)
    assert [c.seed for c in seeded] == [7, 8, 9] and config.seed == 7  # the given config is left alone
    assert all(c.model == config.model for c in seeded)
    with pytest.raises(ValueError):
        repeats.seed_configs(config, 0)


def test_the_summary_is_the_mean_and_the_spread_of_the_seeds():
    seeds = [{"val_acc_op": 90.0, "t_op": 8.0, "omega": 2.0, "val_acc_op_low": 85.0, "snn_acc_t": 1.0},
             {"val_acc_op": 92.0, "t_op": 10.0, "omega": 4.0, "val_acc_op_low": 88.0, "snn_acc_t": 2.0},
             {"val_acc_op": 97.0, "t_op": 12.0, "omega": 3.0, "only_here": 1.0, "snn_acc_t": 3.0}]
    summary = repeats.summarise(seeds)
    assert summary["val_acc_op"] == pytest.approx(93.0) and summary["t_op"] == pytest.approx(10.0)
    assert summary["val_acc_op_std"] == pytest.approx(np.std([90, 92, 97], ddof=1))  # n - 1
    assert (summary["val_acc_op_min"], summary["val_acc_op_max"]) == (90.0, 97.0)
    assert summary["omega"] == pytest.approx(3.0) and "omega_std" not in summary  # spread: the listed metrics
    # not averaged: a single run's interval, a metric not every seed has, the curves' last values
    assert "val_acc_op_low" not in summary and "only_here" not in summary and "snn_acc_t" not in summary
    # one seed never reached its latency: the mean is not a latency either
    never = repeats.summarise([{"t_op": 4.0}, {"t_op": math.inf}])
    assert never["t_op"] == math.inf and "t_op_std" not in never
    assert repeats.summarise([{"acc_op": 50.0}])["acc_op_std"] == 0.0


def test_mean_curves_keep_the_steps_every_seed_has():
    assert repeats.mean_curve([{1: 10.0, 2: 20.0, 3: 30.0}, {1: 20.0, 2: 40.0}]) == {1: 15.0, 2: 30.0}
    assert repeats.mean_curve([]) == {}


def test_the_fronts_draw_a_configurations_spread_and_a_single_runs_interval():
    runs = pd.DataFrame({"val_acc_op": [90.0, 80.0], "val_acc_op_std": [1.5, np.nan],
                         "val_acc_op_low": [np.nan, 75.0], "val_acc_op_high": [np.nan, 84.0],
                         "val_acc_op_min": [88.0, np.nan], "val_acc_op_max": [92.0, np.nan]})
    bars = pareto_plots.accuracy_interval(runs, "val_acc_op")
    assert bars.tolist() == [[88.5, 91.5], [75.0, 84.0]]
    rows = runs.to_dict("records")
    assert pareto_tables.interval_text(rows[0], "val_acc_op") == "± 1.50 (88.0–92.0)"
    assert pareto_tables.interval_text(rows[1], "val_acc_op") == "[75.0, 84.0]"


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_repeats_are_refused(value):
    from snnconv.config import ConfigError

    spec = SweepSpec(trial={"model": "small", "data": {"name": "digits"}}, repeats=value)
    with pytest.raises(ConfigError, match="repeats: must be a whole number of seeds"):
        validate_spec(spec)
