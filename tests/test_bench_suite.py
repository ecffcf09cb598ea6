"""Every benchmark runs in quick mode and writes the JSON fields the suite summarises.

Timings are never asserted: only that the figures exist, are numbers, and reach the summary table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as suite

ROOT = Path(__file__).resolve().parents[1]


def run_module(name: str, out: Path) -> dict:
    completed = subprocess.run([sys.executable, "-m", f"bench.{name}", "--quick", "--out", str(out)], cwd=ROOT,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_sweep_benchmark_quick(tmp_path):
    data = run_module("bench_sweep", tmp_path / "bench_sweep.json")
    assert {"machine", "device", "versions", "date"} <= set(data["evidence"])
    overhead, cache = data["overhead"], data["cache"]
    for key in ("wall_s", "trial_compute_s", "ideal_s", "overhead", "tracking_s", "start_s", "tune_s", "finish_s"):
        assert isinstance(overhead[key], float), key
    assert overhead["finished"] == overhead["trials"] == 4
    assert cache["shared"]["stage1_trainings"] == 1 and cache["retrain"]["stage1_trainings"] == 4
    assert cache["speedup"] > 0 and set(data["met"]) == {"overhead", "overhead_64", "cache_speedup"}
    assert data["overhead_64"] is None  # 64 trials in the full run only
    assert data["targets"]["cache_speedup"] == pytest.approx(0.8 * cache["speedup_bound"])
    # S1 of the bound: the retraining sweep's mean stage-1 training; S2: a trial loading stage 1
    s1, s2, n = cache["retrain"]["stage1_s"], cache["shared"]["cached_trial_s"], 4
    assert cache["speedup_bound"] == pytest.approx((s1 + s2) / (s2 + s1 / n))
    # each sweep started its own Ray; its start is left out of the wall time, the phases make up the rest
    for row in (overhead, cache["shared"], cache["retrain"]):
        assert row["ray_s"] > 0
        assert row["wall_s"] == pytest.approx(row["start_s"] + row["stage1_phase_s"] + row["tune_s"] + row["finish_s"],
                                              abs=0.5)
    rows = suite.summary_rows("bench_sweep", data)
    assert [row["measure"] for row in rows] == ["overhead over the trials' own compute",
                                                "speed-up of the shared stage-1 cache"]


@pytest.mark.slow
def test_pareto_benchmark_quick(tmp_path):
    data = run_module("pareto", tmp_path / "pareto.json")
    assert data["quick"] and all(row["agree"] for row in data["rows"])
    assert suite.summary_rows("pareto", data)[0]["value"] > 0


def test_every_committed_result_file_summarises(tmp_path):
    """The committed full-run results feed the README table; the table block is rewritten in place."""
    columns, rows, evidence, details = suite.summary_table(quick=False)
    names = {facts["benchmark"] for facts in evidence}
    assert {"bench_if", "bench_pascal", "bench_sweep", "pareto"} <= names
    assert all(len(row) == len(columns) for row in rows) and len(rows) >= 7
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{suite.START}\nSTALE TABLE\n{suite.END}\nafter\n")
    assert {row[0] for row in details} == names and all(len(row) == 3 for row in details)
    assert suite.update_readme(suite.markdown(columns, rows, evidence, details), readme)
    text = readme.read_text()
    assert "STALE TABLE" not in text and text.startswith("before") and text.endswith("after\n")
    assert "| benchmark | measure | value | target | status |" in text


@pytest.mark.ray
def test_gpu_share_benchmark_says_when_it_cannot_run(tmp_path):
    import torch

    data = run_module("bench_gpu_share", tmp_path / "gpu.json")
    if torch.cuda.is_available():
        assert data["throughput_ratio"] > 0 and "GPU" in data["evidence"]["device"]
    else:
        assert data["skipped"] == "no CUDA device" and "CPU" in data["evidence"]["device"]
