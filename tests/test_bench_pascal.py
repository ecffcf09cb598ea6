"""Smoke test of ``python -m bench.bench_pascal --quick``: it runs and writes the JSON fields."""

from __future__ import annotations

import json

import pytest
import torch

from bench import bench_pascal


@pytest.mark.slow
def test_quick_mode_writes_the_figures(tmp_path, capsys):
    out = tmp_path / "bench_pascal.json"
    threads = torch.get_num_threads()
    try:
        assert bench_pascal.main(["--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert {"machine", "torch_threads", "torch", "python", "date"} <= set(result["header"])
    assert result["config"]["levels"] == bench_pascal.VGG16_LEVELS and result["config"]["t_max"] == 8
    assert set(result["ms"]) == {"ann", "exact", "spike", "spike64"} and all(v > 0 for v in result["ms"].values())
    assert set(result["ratio_to_ann"]) == set(result["min_ratio_to_ann"]) == {"exact", "spike", "spike64"}
    assert set(result["meets_targets"]) == {"exact", "spike"}
    assert result["exact_equals_ann"] is True
    assert result["synops_per_image"] > 0 and result["first_layer_macs_per_image"] == 32 * 32 * 64 * 27
    printed = capsys.readouterr().out
    assert "x ANN" in printed and "spike" in printed
