"""Smoke test of ``python -m bench.bench_if --quick``: it runs and writes the JSON it promises, with
the SpikingJelly peer rows when the peer is installed and 'not installed' markers when it is hidden
(no timing checks)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("ann_rnl", "ann_relu", "snn", "snn_cached", "snn_no_fold")
PEER = ("sj_multistep", "sj_singlestep")
MEASURES = ["time / (T x ANN forward)", "time / SpikingJelly best", "peak memory / one ANN forward",
            "spike counts agree with SpikingJelly"]


def run_quick(out: Path, hide_peer: bool) -> tuple[str, dict]:
    env = dict(os.environ, SNNCONV_BENCH_HIDE_SPIKINGJELLY="1" if hide_peer else "0")
    completed = subprocess.run([sys.executable, "-m", "bench.bench_if", "--quick", "--threads", "1", "--out", str(out)],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout, json.loads(out.read_text())


def check_common_fields(stdout: str, result: dict, timed: set[str]) -> None:
    assert "ratio" in stdout and "torch threads" in stdout
    assert set(result["header"]) == {"machine", "device", "versions", "date"}
    assert result["config"]["quick"] is True and result["config"]["steps"] == 4
    assert set(result["timings"]) == timed
    for key in ("timings", "timings_default_malloc"):
        assert set(result[key]) == timed
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
    assert [row["variant"] for row in result["table"]] == ["ann_rnl", "ann_relu", *PEER, "snn", "snn_cached",
                                                           "snn_no_fold"]
    snn = next(row for row in result["table"] if row["variant"] == "snn")
    assert snn["seconds"] == result["timings"]["snn"]["min_s"]
    assert snn["ratio_to_t_ann"] == pytest.approx(result["timings"]["snn"]["ratio_of_minima"])
    profiled = set(result["profile"])
    assert {"ann_rnl", "snn"} <= profiled and profiled - {"ann_rnl", "snn"} <= set(PEER)
    convolutions = [event for event in result["profile"]["snn"] if "convolution" in event["op"]]
    assert convolutions and convolutions[0]["calls"] == 13 * 4  # 13 convs x T = 4 steps
    summary = result["summary"]
    assert [entry["measure"] for entry in summary] == MEASURES
    for entry in summary:
        assert entry["benchmark"] == "IF simulation (RNL), VGG16 T=32" and entry["target"].startswith("<= ")
    assert summary[0]["value"] == snn["ratio_to_t_ann"] and summary[0]["met"] == (snn["ratio_to_t_ann"] <= 1.05)
    assert summary[2]["value"] == pytest.approx(result["memory_ratio_working"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("spikingjelly") is None, reason="spikingjelly (.[bench]) not installed")
def test_bench_if_quick_with_the_peer(tmp_path):
    stdout, result = run_quick(tmp_path / "bench_if.json", hide_peer=False)
    check_common_fields(stdout, result, set(OURS + PEER))
    assert result["peer"]["installed"] is True and set(result["profile"]) == {"ann_rnl", "snn", *PEER}
    for part in ("sj_multistep_simulation", "sj_singlestep_simulation"):
        assert result["memory"][part]["working_mib"] >= 0
    for row in result["table"]:
        assert isinstance(row["seconds"], float) and isinstance(row["ratio_to_peer_best"], float)
    assert min(row["ratio_to_peer_best"] for row in result["table"] if row["variant"] in PEER) == 1.0
    agreement = result["agreement"]
    assert agreement["status"] == "measured" and len(agreement["layers"]) == 15  # 13 convs + 2 hidden linears
    for variant in PEER:
        assert len(agreement["spikes"][variant]) == 15
        assert agreement["modes"][variant]["acc_curve_equal"] is True
    # the same network and weights on the same batch: the counts agree (exactly, at this size)
    assert agreement["agree"] is True and agreement["max_rel_diff_spikes"] <= agreement["tolerance"]
    assert agreement["max_rel_diff_output_sums"] <= agreement["tolerance"]
    assert sum(agreement["spikes"]["snnconv"]) > 0
    summary = result["summary"]
    assert isinstance(summary[1]["value"], float) and isinstance(summary[1]["met"], bool)
    assert summary[3]["value"] == agreement["max_rel_diff_spikes"] and summary[3]["met"] is True


@pytest.mark.slow
def test_bench_if_quick_without_the_peer(tmp_path):
    stdout, result = run_quick(tmp_path / "bench_if.json", hide_peer=True)
    check_common_fields(stdout, result, set(OURS))
    assert "not installed" in stdout
    assert result["peer"]["installed"] is False
    assert result["agreement"] == {"status": "not installed"}
    for row in result["table"]:
        if row["variant"] in PEER:
            assert row["seconds"] == row["ratio_to_t_ann"] == row["peak_working_mib"] == "not installed"
        else:
            assert row["ratio_to_peer_best"] == "not installed" and isinstance(row["seconds"], float)
    summary = result["summary"]
    assert summary[1]["value"] == "not installed" and summary[1]["met"] is None
    assert summary[3]["value"] == "not installed" and summary[3]["met"] is None
    assert isinstance(summary[0]["met"], bool) and isinstance(summary[2]["met"], bool)


@pytest.mark.skipif(importlib.util.find_spec("spikingjelly") is None, reason="spikingjelly (.[bench]) not installed")
def test_peer_network_reproduces_simulate_and_the_check_sees_a_wrong_reset():
    """The peer built from the converted VGG16 fires exactly like ``simulate`` (both modes); the same
    network with SpikingJelly's hard reset (v -> 0 after a spike) does not, so the check can fail."""
    import torch

    from bench import bench_if
    from snnconv.convert import to_if
    from snnconv.neurons import if_neurons
    from snnconv.simulate import simulate

    sj = bench_if.import_peer()
    steps, device = 3, torch.device("cpu")
    rnl, images, labels = bench_if.build_rnl(2, device)
    snn = to_if(rnl)
    ours = simulate(snn, [(images, labels)], steps)
    expected = [ours.spike_counts[name] * 2 for name, _ in if_neurons(snn)]
    for mode in ("m", "s"):
        net = bench_if.peer_network(snn, mode, sj)
        nodes = [module for module in net if isinstance(module, sj.neuron.IFNode)]
        assert [node.v_threshold for node in nodes] == [module.threshold for _, module in if_neurons(snn)]
        totals, hooks = bench_if.count_spikes(nodes)
        _, correct = bench_if.peer_simulate(net, images, labels, steps, mode, sj)
        for hook in hooks:
            hook.remove()
        assert totals == expected
        assert (correct.double() * 50.0).tolist() == ours.acc_curve
        for node in nodes:
            node.v_reset = 0.0  # hard reset: a different neuron
        totals, hooks = bench_if.count_spikes(nodes)
        bench_if.peer_simulate(net, images, labels, steps, mode, sj)
        worst = max(bench_if.relative_difference(a, b) for a, b in zip(totals, expected))
        assert worst > 10 * bench_if.AGREEMENT_TOLERANCE
    with pytest.raises(ValueError, match="converted VGG"):
        bench_if.peer_network(rnl.features, "m", sj)
    with pytest.raises(ValueError, match="step_mode"):
        bench_if.peer_network(snn, "x", sj)
