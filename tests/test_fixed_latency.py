"""snnconv.fixed_latency: the papers' table (accuracy at fixed latencies, chosen on validation) and the
published figures beside it; the published figures of the presets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snnconv.config import ConfigError
from snnconv.fixed_latency import FIXED_STEPS, fixed_latency_table, parse_published
from snnconv.metrics import wilson_interval
from snnconv.sweep_spec import load_spec

ROOT = Path(__file__).resolve().parents[1]

GOOD = {"label": "paper", "method": "qcfs", "source": "Someone et al. 2022, Table 2", "accuracy": {2: 91.0, 4: 94.0},
        "ann": 95.5}


def test_published_figures_are_parsed():
    (item,) = parse_published([GOOD], ["rnl", "qcfs"])
    assert (item.label, item.method, item.ann, dict(item.accuracy)) == ("paper", "qcfs", 95.5, {2: 91.0, 4: 94.0})
    assert parse_published(None, ["rnl"]) == [] and parse_published([], ["rnl"]) == []


@pytest.mark.parametrize("change,message", [
    ({"method": "rnl"}, r"published\[0\].method: must be one of the sweep's methods \(qcfs\)"),
    ({"source": " "}, r"published\[0\].source: must be non-empty text"),
    ({"accuracy": {0: 50.0}}, r"published\[0\].accuracy: time steps must be integers >= 1"),
    ({"accuracy": {"4": 50.0}}, r"time steps must be integers"),
    ({"accuracy": {4: 120.0}}, r"published\[0\].accuracy\[4\]: must be an accuracy in percent"),
    ({"ann": "high"}, r"published\[0\].ann: must be an accuracy in percent"),
    ({"table": 2}, r"published\[0\]: unknown key 'table'"),
    ({"accuracy": {}, "ann": None}, r"needs accuracy .* or ann"),
])
def test_bad_published_figures_are_refused_with_one_line(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_published([{**GOOD, **change}], ["qcfs"])


def _table():
    runs = pd.DataFrame({
        "run_id": ["r1", "r2", "q1", "q2", "f1"], "run_name": ["rnl_1", "rnl_2", "qcfs_1", "qcfs_2", "rnl_failed"],
        "status": ["FINISHED", "FINISHED", "FINISHED", "FINISHED", "FAILED"],
        "method": ["rnl", "rnl", "qcfs", "qcfs", "rnl"], "test_images": ["360"] * 5,
        "val_ann_acc": [90.0, 92.0, 93.0, 91.0, 99.0], "ann_acc": [91.0, 90.5, 92.5, 94.0, 99.0],
        "t_op": [6.0, 4.0, 3.214, 2.5, 1.0], "val_acc_op": [85.0, 80.0, 93.0, 91.0, 99.0],
        "acc_op": [84.0, 82.0, 92.5, 94.0, 99.0]})
    steps = range(1, 9)
    curves = {  # r1 leads r2 on validation from t = 3 on, but r2 is better on test everywhere
        "val_snn_acc_t": {"r1": pd.Series([10, 20, 70, 80, 85, 86, 86, 86], index=steps, dtype=float),
                          "r2": pd.Series([30, 40, 60, 70, 78, 80, 80, 80], index=steps, dtype=float)},
        "snn_acc_t": {"r1": pd.Series([11, 21, 69, 79, 84, 85, 85, 85], index=steps, dtype=float),
                      "r2": pd.Series([31, 41, 71, 81, 88, 89, 90, 90], index=steps, dtype=float)},
        "val_if_snn_acc_t": {"q1": pd.Series([50, 60, 70, 80], index=range(1, 5), dtype=float)},  # T_max 4
        "if_snn_acc_t": {"q1": pd.Series([51, 61, 71, 81], index=range(1, 5), dtype=float)},
    }
    return runs, curves


def test_each_row_chooses_on_validation_and_reports_test_with_its_interval():
    runs, curves = _table()
    repo = {"label": "repo", "method": "qcfs", "source": "a README", "accuracy": {4: 93.0}}
    published = parse_published([GOOD, repo], ["rnl", "qcfs"])
    table = fixed_latency_table(runs, curves, published).set_index(["method", "latency"])
    # rnl at T = 2: r2 leads on validation (40 > 20); at T = 4: r1 does (80 > 70), although r2 is better on test
    assert table.loc[("rnl", "T = 2 IF steps"), "run"] == "rnl_2"
    row = table.loc[("rnl", "T = 4 IF steps")]
    assert (row["run"], row["val acc"], row["test acc"]) == ("rnl_1", 80.0, 79.0)
    low, high = wilson_interval(79.0, 360)
    assert row["test 95% CI"] == f"{low:.1f}–{high:.1f}"
    # beyond every run's T_max: no run
    assert table.loc[("rnl", "T = 16 IF steps"), "run"] == "-" and math.isnan(table.loc[("rnl", "T = 16 IF steps"),
                                                                                        "test acc"])
    assert [latency for method, latency in table.index if method == "rnl"] == \
        ["ANN"] + [f"T = {t} IF steps" for t in FIXED_STEPS]
    # the ANN row: the best validation ANN (the failed run takes no part)
    assert (table.loc[("rnl", "ANN"), "run"], table.loc[("rnl", "ANN"), "test acc"]) == ("rnl_2", 90.5)
    # qcfs: its rate-coded comparison curve at T, the published figures beside it, ours minus theirs
    row = table.loc[("qcfs", "T = 4 IF steps")]
    assert (row["run"], row["test acc"]) == ("qcfs_1", 81.0)
    assert row["published"] == "94.00 [paper]; 93.00 [repo]"
    assert row["ours − published"] == "-13.00 [paper]; -12.00 [repo]"
    assert table.loc[("qcfs", "T = 8 IF steps"), "published"] == "-"
    assert table.loc[("qcfs", "ANN"), "published"] == "95.50 [paper]"
    # and one row per PASCAL T_eff present, its operating point
    pascal = table.loc["qcfs"].loc[["PASCAL T_eff 2.50", "PASCAL T_eff 3.21"]]
    assert list(pascal["run"]) == ["qcfs_2", "qcfs_1"] and list(pascal["test acc"]) == [94.0, 92.5]


def test_a_table_without_curves_or_published_figures_still_has_its_rows():
    runs, _ = _table()
    table = fixed_latency_table(runs, {})
    assert (table["published"] == "-").all()
    assert set(table.loc[table["latency"].str.startswith("T = "), "run"]) == {"-"}
    assert len(table) == 2 * (1 + len(FIXED_STEPS)) + 2


@pytest.mark.parametrize("preset", ["cifar10-vgg16", "cifar100-vgg16", "mnist"])
def test_the_presets_published_figures_are_valid_and_cited(preset):
    spec = load_spec(preset, presets_dir=ROOT / "configs", validate=False)  # the data folders are not here
    published = parse_published(spec.published, spec.methods)
    assert published, f"{preset} names no published figures"
    for item in published:
        assert len(item.source) > 30 and any(word in item.source for word in ("github.com", "Table", "README"))
        assert all(np.isfinite(value) for value in item.accuracy.values())
