"""NIR export and the peer re-run: a digits trial's SNN written as a NIR file
(``snnconv.nir``), read back unchanged, run again in snnTorch from that file, and the command
``analysis/export.py`` on a real MLflow store. Two tiny trials (rnl and qcfs) trained once for the
module (``slow``: about 25 s in all)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from snnconv import nir as snnconv_nir  # `nir` below is the NIR package itself
from snnconv import tracking, trial_record
from snnconv.config import TrialConfig, apply_overrides
from snnconv.convert import to_if
from snnconv.layers import activation_factory
from snnconv.logged_model import load_test_split
from snnconv.models import build_model
from snnconv.nir.__main__ import main as export_command
from snnconv.pipeline import TrialResult, run_trial
from snnconv.sweep_spec import trial_params

nir = pytest.importorskip("nir", reason="the nir extra is not installed (pip install -e '.[nir]')")
pytest.importorskip("snntorch", reason="the nir extra is not installed (pip install -e '.[nir]')")

STEPS = 16
TINY = {"model": "small", "device": "cpu", "data.name": "digits", "stage1.epochs": 2, "stage1.lr": 0.05,
        "rnl.epochs": 1, "rnl.inspect_interval": 5, "rnl.t_max": STEPS, "qcfs.stage1_levels": 4,
        "qcfs.finetune_epochs": 1, "qcfs.t_max": STEPS}


@dataclass
class Trial:
    result: TrialResult
    metadata: dict
    graph: object  # the NIR graph as read back from its file
    path: Path


@pytest.fixture(scope="module")
def trials(tmp_path_factory, one_thread) -> dict[str, Trial]:
    folder = tmp_path_factory.mktemp("nir")
    trials = {}
    for method in ("rnl", "qcfs"):
        config = apply_overrides(TrialConfig(), {**TINY, "method": method, "cache_dir": str(folder / "cache")})
        result = run_trial(config)
        path = snnconv_nir.write_nir(snnconv_nir.to_nir(result.model, result.model_metadata), folder / f"{method}.nir")
        trials[method] = Trial(result, result.model_metadata, snnconv_nir.read_nir(path), path)
    return trials


def _same_value(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[key], b[key]) for key in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rnl", "qcfs"])
def test_nir_read_gives_back_the_written_graph(trials, method):
    trial = trials[method]
    written = snnconv_nir.to_nir(trial.result.model, trial.metadata)
    read = trial.graph
    assert set(read.nodes) == set(written.nodes)
    assert sorted(read.edges) == sorted(written.edges)
    for name, node in written.nodes.items():
        assert type(read.nodes[name]) is type(node), name
        assert _same_value(read.nodes[name].to_dict(), node.to_dict()), name  # weights, thresholds, metadata
    assert _same_value(read.metadata, written.metadata)
    types = [type(written.nodes[name]).__name__ for name in _path(written)]
    assert types == ["Input", "Conv2d", "IF", "Conv2d", "IF", "AvgPool2d", "Conv2d", "IF", "AvgPool2d",
                     "Flatten", "Affine", "IF", "Affine", "Output"]


def _path(graph) -> list[str]:
    """The node names from input to output of a chain graph."""
    following = dict(graph.edges)
    names = ["input"]
    while names[-1] in following:
        names.append(following[names[-1]])
    return names


@pytest.mark.slow
def test_the_graph_holds_the_trials_if_network(trials):
    for method, trial in trials.items():
        model, graph = trial.result.model.cpu().eval(), trial.graph
        if_nodes = [graph.nodes[name] for name in _path(graph) if type(graph.nodes[name]).__name__ == "IF"]
        thresholds = [float(np.unique(node.v_threshold)[0]) for node in if_nodes]
        assert thresholds == pytest.approx(trial.metadata["thresholds"], rel=1e-6)  # float32 in the file
        for node, threshold in zip(if_nodes, thresholds):
            assert np.all(node.r == 1) and np.all(node.v_reset == 0)
            assert node.metadata["reset"] == "subtract" and node.metadata["fires_at"] == "v >= v_threshold"
            assert float(node.metadata["v_init"]) == pytest.approx(0.0 if method == "rnl" else threshold / 2, rel=1e-6)
        folded = fuse_conv_bn_eval(model.features[0], model.features[1])  # conv + BN of the first layer
        np.testing.assert_allclose(graph.nodes["features_0"].weight, folded.weight.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(graph.nodes["features_0"].bias, folded.bias.detach().numpy(), rtol=1e-5, atol=1e-7)
        second = fuse_conv_bn_eval(model.features[3], model.features[4])
        amplitude = 1.0 if method == "rnl" else thresholds[0]  # a qcfs spike carries lambda: folded here
        np.testing.assert_allclose(graph.nodes["features_3"].weight, second.weight.detach().numpy() * amplitude,
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(graph.nodes["features_3"].bias, second.bias.detach().numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rnl", "qcfs"])
def test_snntorch_rerun_of_the_file_matches_snnconv(trials, method):
    """The target: identical predictions at every t, identical spike counts. Each variant that
    changes one setting diverges, by the amount docs/export.md shows."""
    trial = trials[method]
    loader = load_test_split(trial.metadata)
    results = snnconv_nir.compare_with_snntorch(trial.result.model, trial.metadata, trial.graph, loader, STEPS)
    aligned = results["aligned"]
    assert (aligned.images, aligned.steps) == (360, STEPS)
    assert aligned.pred_agreement == 1.0 and aligned.first_disagreement is None
    assert aligned.max_spike_rel_diff <= 1e-6
    assert all(own > 0 and peer == pytest.approx(own, rel=1e-6) for own, peer in aligned.spikes.values())
    # what NIR's IF fields alone say (reset to 0, v(0) = 0) and the importer's leak change the network
    for variant in ("nir_fields_only", "importer_beta"):
        assert results[variant].pred_agreement < 0.95 and results[variant].max_spike_rel_diff > 0.1, variant
    # the importer's immediate reset differs only once a membrane stays above threshold after a reset
    assert 0.95 <= results["importer_reset_delay"].pred_agreement < 1.0
    assert 0 < results["importer_reset_delay"].max_spike_rel_diff < 0.05
    if method == "rnl":  # rnl starts at v(0) = 0 anyway
        assert results["v_init_zero"].pred_agreement == 1.0 and results["v_init_zero"].max_spike_rel_diff <= 1e-6
    else:  # qcfs starts at lambda / 2, which NIR's IF cannot say
        assert results["v_init_zero"].pred_agreement < 0.95
    # and snnconv's own run is the trial's: its curve at t is the accuracy of the predictions at t
    own = snnconv_nir.run_snnconv(snnconv_nir.if_network(trial.result.model, trial.metadata), loader, STEPS)
    labels = torch.cat([labels for _, labels in loader])
    curve = trial.result.curves["snn_acc_t" if method == "rnl" else "if_snn_acc_t"]
    accuracy = (own.predictions == labels[:, None]).double().mean(0) * 100
    assert accuracy.tolist() == pytest.approx(curve, abs=1e-9)


@pytest.mark.slow
def test_snntorchs_importer_as_made_does_not_run_the_graph(trials):
    network = snnconv_nir.import_snntorch(trials["rnl"].graph)
    with pytest.raises((TypeError, RuntimeError)):
        network(torch.rand(2, 1, 8, 8))


def test_a_residual_network_is_refused_with_the_reason():
    model = build_model("resnet18", activation_factory("rnl"), num_classes=10, in_channels=3, image_size=32)
    metadata = {"method": "rnl", "v_init": "zero", "t_max": 8, "input_shape": [3, 32, 32], "num_classes": 10}
    with pytest.raises(ValueError, match="feed-forward chains.*residual addition"):
        snnconv_nir.to_nir(model, metadata)
    assert to_if(model) is not None  # it does convert; only NIR export refuses it


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "snntorch", None)  # as if not installed: importing it raises ImportError
    code = export_command(["0123abcd", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err == ("error: NIR export needs the 'snntorch' package: pip install -e '.[nir]'  "
                   "(nir, nirtorch and snntorch)\n")
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------------------------------------
# the command, on a real store


@pytest.fixture(scope="module")
def store(trials, new_mlflow_store):
    uri = new_mlflow_store("store").uri
    tracker = tracking.start_sweep(uri, "snnconv", "sweep-tiny", {}, {tracking.SELECT_ON_TAG: "val"})
    run_ids = {}
    for method, trial in trials.items():
        config = apply_overrides(TrialConfig(), {**TINY, "method": method})
        start = tracking.start_trial(tracker, f"{method}_0", f"{method}_0", trial_params(config))
        trial_record.log_trial_result(tracker, start.run_id, trial.result, {})
        tracking.end_trial(tracker, start.run_id)
        run_ids[method] = start.run_id
    bare = tracking.start_trial(tracker, "bare", "rnl_bare", {"method": "rnl"})
    bare_result = TrialResult(**{**trials["rnl"].result.__dict__, "model": None})
    trial_record.log_trial_result(tracker, bare.run_id, bare_result, {})
    tracking.end_trial(tracker, bare.run_id)
    run_ids["bare"] = bare.run_id
    tracking.end_sweep(tracker)
    return uri, run_ids


@pytest.mark.slow
def test_export_command_writes_reruns_and_logs_on_the_run(store, tmp_path, capsys):
    uri, run_ids = store
    out = tmp_path / "export"
    code = export_command([run_ids["qcfs"], "--tracking-uri", uri, "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert (out / "model.nir").is_file() and (out / "agreement.md").is_file()
    assert "aligned                predictions equal 1.0000, max spike-count rel. diff 0.00e+00" in stdout
    client = tracking.client_for(uri)
    run = client.get_run(run_ids["qcfs"])
    assert run.info.status == "FINISHED"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "nir")}
    assert artifacts == {"nir/model.nir", "nir/agreement.md"}
    metrics = run.data.metrics
    assert metrics["nir_pred_agreement"] == 1.0 and metrics["nir_max_spike_rel_diff"] == 0.0
    assert metrics["nir_pred_agreement.v_init_zero"] < 0.95 and "nir_pred_agreement.aligned" not in metrics
    logged = Path(client.download_artifacts(run.info.run_id, "nir/model.nir", str(tmp_path)))
    assert _same_value(nir.read(str(logged)).to_dict(), nir.read(str(out / "model.nir")).to_dict())
    table = (out / "agreement.md").read_text()
    assert "| `aligned` |" in table and "| 1.0000 | 0.00e+00 | none |" in table


@pytest.mark.slow
def test_export_command_refuses_bad_input_before_writing(store, tmp_path, capsys):
    uri, run_ids = store
    out = tmp_path / "out"
    cases = {
        ("0" * 32,): "error: ",
        (run_ids["bare"],): "has no logged model",
        (run_ids["rnl"], "--steps", "0"): "error: --steps must be at least 1, got 0",
        (run_ids["rnl"], "--max-images", "-3"): "error: --max-images must be at least 1, got -3",
    }
    for argv, message in cases.items():
        code = export_command([*argv, "--tracking-uri", uri, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, (argv, err)
        assert not out.exists()
    code = export_command([run_ids["rnl"], "--tracking-uri", f"sqlite:///{tmp_path / 'none' / 'x.db'}"])
    assert code == 2 and capsys.readouterr().err.startswith("error: ")
    assert math.isfinite(tracking.client_for(uri).get_run(run_ids["rnl"]).data.metrics["acc_op"])


def test_the_agreement_tables_in_the_docs_name_the_codes_variants():
    """docs/export.md's tables come from agreement.md files: their rows are the code's variants with
    the code's descriptions, and the aligned row shows the target met."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    for method in ("rnl", "qcfs"):
        start, end = f"<!-- nir:agreement:{method}:start -->\n", f"<!-- nir:agreement:{method}:end -->"
        table = text[text.index(start) + len(start):text.index(end)]
        rows = [line for line in table.splitlines() if line.startswith("| `")]
        cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
        assert [cell[0].strip("`") for cell in cells] == list(snnconv_nir.PEER_VARIANTS), method
        assert [cell[1] for cell in cells] == [snnconv_nir.VARIANT_CAUSES[v] for v in snnconv_nir.PEER_VARIANTS]
        assert cells[0][2:] == ["1.0000", "0.00e+00", "none"], method
        assert table.splitlines()[0] == snnconv_nir.agreement_table({}).splitlines()[0]
