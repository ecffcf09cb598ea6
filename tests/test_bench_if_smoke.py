"""Smoke test of ``python -m bench.bench_if --quick``: it runs and writes the JSON it promises (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_if_quick_writes_its_json(tmp_path):
    out = tmp_path / "bench_if.json"
    completed = subprocess.run([sys.executable, "-m", "bench.bench_if", "--quick", "--threads", "1", "--out", str(out)],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "ratio" in completed.stdout and "torch threads" in completed.stdout
    result = json.loads(out.read_text())
    assert set(result["header"]) == {"machine", "torch threads", "versions", "date"}
    assert result["config"]["quick"] is True and result["config"]["steps"] == 4
    assert set(result["timings"]) == {"ann_rnl", "ann_relu", "snn", "snn_cached", "snn_no_fold"}
    for key in ("timings", "timings_default_malloc"):
        assert set(result[key]) == set(result["timings"])
        for row in result[key].values():
            assert len(row["seconds"]) == 1 and row["median_s"] > 0 and row["ratio_to_ann_rnl"] > 0
            assert row["page_faults_per_call"] >= 0
    assert result["time_ratio"] == result["timings"]["snn"]["ratio_to_ann_rnl"]
    assert result["time_ratio_default_malloc"] == result["timings_default_malloc"]["snn"]["ratio_to_ann_rnl"]
    assert result["time_target"] == 1.05 and result["memory_target"] == 2.0
    memory = result["memory"]
    assert memory is not None, "the memory probe failed"
    for part in ("ann_forward", "ann_relu_forward", "snn_simulation", "snn_cached_simulation"):
        assert memory[part]["total_mib"] > 0 and memory[part]["working_mib"] >= 0
    # VGG16 at batch 2: 284672 membrane values per image, float32
    assert abs(memory["membranes"]["mib"] - 284672 * 2 * 4 / 2**20) < 1e-6
    assert result["memory_ratio_total"] > 0
