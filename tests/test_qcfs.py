"""QCFS activation (sections 1 and 6), layerwise L (lists, profiles, AL policy), AL and T_eff
(sections 3.10, 3.11), the layerwise fine-tune and the QCFS + PASCAL trial on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from snnconv.config import ConfigError, TrialConfig, apply_overrides
from snnconv.data import load_data
from snnconv.layers import QCFS
from snnconv.levels import PASCAL_LISTS, PROFILES, levels_from_al, profile_levels
from snnconv.methods.qcfs import validate_level_list
from snnconv.metrics import al_metric, al_per_layer, pascal_r, qcfs_omega, t_eff, t_eff_layer, t_eff_table
from snnconv.models import activation_layers, build_model, get_levels, set_levels, weight_layers
from snnconv.pipeline import run_trial
from snnconv.train import finetune_levels

VGG16_PASCAL = [8, 4, 4, 1, 4, 4, 1, 1, 1, 1, 1, 4, 8, 8, 8]


def qcfs_model(name: str, levels: list[int] | None = None, image_size: int = 32) -> torch.nn.Module:
    return build_model(name, lambda: QCFS(8, 8.0), num_classes=10, in_channels=3, image_size=image_size,
                       levels=levels)


# ---------------------------------------------------------------------------------------------
# the activation


def test_forward_vectors():
    layer = QCFS(levels=4, threshold=2.0)
    z = torch.tensor([-0.1, 0.2, 0.25, 0.7, 0.76, 1.75, 2.3])
    assert layer(z).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 2.0, 2.0]  # 0.25 is a boundary: rounds up


@pytest.mark.parametrize("levels, threshold", [(1, 1.0), (4, 2.0), (16, 8.0), (2, 0.3)])
def test_outputs_lie_on_the_levels(levels, threshold):
    out = QCFS(levels, threshold)(torch.randn(10000) * threshold)
    steps = out / (threshold / levels)
    assert torch.allclose(steps, steps.round(), atol=1e-5)
    assert out.min() >= 0 and out.max() <= threshold + 1e-6
    assert len(torch.unique(out)) == levels + 1


@pytest.mark.parametrize("z, dz, dlam", [(0.7, 1.0, -0.10), (2.3, 0.0, 1.0), (-0.1, 0.0, 0.0)])
def test_gradients(z, dz, dlam):
    layer = QCFS(levels=4, threshold=2.0)
    x = torch.tensor(z, requires_grad=True)
    layer(x).backward()
    assert x.grad.item() == pytest.approx(dz)
    assert layer.threshold.grad.item() == pytest.approx(dlam)


def test_threshold_is_a_trainable_parameter_per_layer():
    model = qcfs_model("small", image_size=8)
    thresholds = [layer.module.threshold for layer in activation_layers(model)]
    assert all(isinstance(t, torch.nn.Parameter) and t.requires_grad for t in thresholds)
    assert len({id(t) for t in thresholds}) == len(thresholds)


def test_constant_input_if_equals_qcfs_when_t_equals_l():
    """Section 6: an IF with theta = lambda, v(0) = lambda/2, T = L and constant input z spikes
    QCFS(z) / lambda * T times (float64; the inputs avoid rounding boundaries)."""
    threshold, levels = 2.0, 4
    z = torch.linspace(-1, 3, 4001, dtype=torch.float64) + 1e-7
    membrane = torch.full_like(z, threshold / 2)
    spikes = torch.zeros_like(z)
    for _ in range(levels):
        membrane += z
        fire = membrane >= threshold
        membrane -= fire * threshold
        spikes += fire
    assert torch.equal(spikes * threshold / levels, QCFS(levels, threshold).double()(z))


# ---------------------------------------------------------------------------------------------
# per-layer L


def test_build_model_with_levels_list():
    model = qcfs_model("vgg16", VGG16_PASCAL)
    assert get_levels(model) == VGG16_PASCAL
    assert [layer.module.levels for layer in activation_layers(model)] == VGG16_PASCAL


def test_wrong_length_list_is_refused_with_names():
    model = qcfs_model("small", image_size=8)
    with pytest.raises(ValueError) as error:
        set_levels(model, [4, 4])
    message = str(error.value)
    assert "4 QCFS layers" in message and "features.2, features.5, features.9, classifier.2" in message
    with pytest.raises(ConfigError) as error:
        validate_level_list("vgg16", [8] * 14, "qcfs.levels")
    message = str(error.value)
    assert "15 activation layers" in message and "14 entries" in message
    assert "features.2" in message and "classifier.5" in message
    with pytest.raises(ConfigError, match=r"qcfs.levels\[1\] \(features.5\): L = 3"):
        validate_level_list("small", [4, 3, 4, 4], "qcfs.levels")


def test_config_refuses_unknown_profile_with_the_known_ones():
    with pytest.raises(ConfigError) as error:
        apply_overrides(TrialConfig(), {"method": "qcfs", "qcfs.levels": "zigzag"})
    assert "'zigzag'" in str(error.value)
    assert all(name in str(error.value) for name in (*PROFILES, "al"))
    with pytest.raises(ConfigError, match="vgg16, resnet18 only"):
        apply_overrides(TrialConfig(), {"method": "qcfs", "model": "small", "qcfs.levels": "pascal"})
    with pytest.raises(ConfigError, match="stage1_levels"):
        apply_overrides(TrialConfig(), {"method": "qcfs", "qcfs.levels": "al", "qcfs.stage1_levels": 3})
    with pytest.raises(ConfigError, match="snn_dtype"):
        apply_overrides(TrialConfig(), {"qcfs.snn_dtype": "float16"})
    config = apply_overrides(TrialConfig(), {"method": "qcfs", "model": "vgg16", "qcfs.levels": "pascal"})
    assert config.qcfs.levels == "pascal"


def test_profiles():
    assert profile_levels("uniform", "small", 4, 8) == [8, 8, 8, 8]
    assert profile_levels("pascal", "vgg16", 15, 8) == PASCAL_LISTS["vgg16"]
    assert profile_levels("pascal", "resnet18", 17, 4) == [4, 4, 4, 1, 4, 4, 4, 1, 4, 1, 1, 1, 1, 1, 1, 1, 4]
    assert profile_levels("halve-middle", "vgg16", 15, 8) == [8] * 5 + [4] * 5 + [8] * 5
    assert profile_levels("front-heavy", "small", 4, 4) == [4, 2, 2, 1]
    assert profile_levels("back-heavy", "small", 4, 4) == [1, 2, 2, 4]
    assert profile_levels("front-heavy", "small", 2, 1) == [1, 1]  # never below 1
    for name in PROFILES:  # every profile gives a valid list for every model it applies to
        for model in ("small", "vgg16", "resnet18", "resnet34"):
            if name == "pascal" and model not in PASCAL_LISTS:
                continue
            count = len(activation_layers(qcfs_model(model))) if model != "small" else 4
            validate_level_list(model, profile_levels(name, model, count, 8))
    with pytest.raises(ValueError, match="known profiles"):
        profile_levels("zigzag", "small", 4, 8)


def test_al_policy():
    assert levels_from_al([41.4375, 24.83, 6.32, math.nan, 30.0], [20.0, 30.0, 40.0], 8) == [1, 4, 8, 8, 4]
    assert levels_from_al([100.0] * 3, [1.0, 2.0, 3.0, 4.0, 5.0], 16) == [1, 1, 1]
    assert levels_from_al([5.0, 50.0], [], 4) == [4, 4]


# ---------------------------------------------------------------------------------------------
# AL metric (section 3.10)


@pytest.mark.parametrize("values, expected", [
    ([0.0] * 60 + [0.25] * 10 + [0.5] * 10 + [0.75] * 10 + [1.0] * 10, 41.4375),
    ([0.0] * 80 + [1.0] * 20, 24.8333),
    ([0.0] * 50 + [0.5] * 30 + [1.0] * 20, 6.3246),
])
def test_al_vectors(values, expected):
    assert al_metric(torch.tensor(values)) == pytest.approx(expected, abs=1e-4)
    assert al_metric(np.array(values, dtype=np.float32)) == pytest.approx(expected, abs=1e-4)


def test_al_undefined_and_bad_input():
    assert math.isnan(al_metric(np.repeat(np.arange(5.0), 200)))  # uniform histogram [200]*5
    assert math.isnan(al_metric([]))
    with pytest.raises(ValueError, match="num_bins"):
        al_metric([0.0, 1.0], num_bins=3)
    with pytest.raises(ValueError, match="NaN"):
        al_metric([0.0, float("nan")])


def test_al_per_layer_uses_each_layers_outputs():
    torch.manual_seed(0)
    model = build_model("small", lambda: QCFS(4, 1.0), num_classes=10, in_channels=1, image_size=8)
    batches = [torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)]
    values = al_per_layer(model, batches)
    assert list(values) == [layer.name for layer in activation_layers(model)]
    outputs = []
    handle = model.features[2].register_forward_hook(lambda m, i, o: outputs.append(o.flatten()))
    model.eval()(torch.cat(batches))
    handle.remove()
    assert values["features.2"] == pytest.approx(al_metric(outputs[0]))


# ---------------------------------------------------------------------------------------------
# T_eff (section 3.11)


def test_t_eff_vectors():
    assert t_eff_layer(8, 4 / 81) == pytest.approx(16.4956, abs=1e-4)
    assert t_eff_layer(4, 1 / 432) == pytest.approx(4.1284, abs=1e-4)
    assert t_eff_layer(5, 0.0) == 5.0
    # the authors' VGG constants (FC2 = 1/384 where the fan-in rule gives 1/3072) with the 15 L values
    authors_r = ([4 / 81, 1 / 432, 1 / 432, 1 / 864, 1 / 864, 1 / 1728, 1 / 1728, 1 / 1728]
                 + [1 / 3456] * 5 + [1 / 384] * 2)
    assert np.mean([t_eff_layer(t, r) for t, r in zip(VGG16_PASCAL, authors_r)]) == pytest.approx(4.544, abs=1e-3)
    with pytest.raises(ValueError):
        t_eff_layer(0, 0.1)


def test_r_comes_from_the_models_fan_in():
    model = qcfs_model("vgg16", VGG16_PASCAL)
    rows = t_eff_table(model)
    fan_ins = [27, 576, 576, 1152, 1152, 2304, 2304, 2304, 4608, 4608, 4608, 4608, 4608, 512, 4096]
    assert [row.fan_in for row in rows] == fan_ins
    assert rows[0].r == pytest.approx(4 / 81) and rows[1].r == pytest.approx(1 / 432)
    assert [row.steps for row in rows] == VGG16_PASCAL
    assert [row.name for row in rows] == [layer.name for layer in weight_layers(model)][:15]  # read-out left out
    expected = np.mean([t_eff_layer(t, pascal_r(f)) for t, f in zip(VGG16_PASCAL, fan_ins)])
    assert t_eff(model) == pytest.approx(expected) and t_eff(model) == pytest.approx(4.5088, abs=1e-4)
    with_readout = t_eff_table(model, include_readout=True)
    assert with_readout[-1].name == "classifier.7" and with_readout[-1].steps == 8


def test_t_eff_resnet_shortcuts_take_the_output_neurons_l():
    levels = [4, 4, 4, 1, 4, 4, 4, 1, 4, 1, 1, 1, 1, 1, 1, 1, 4]
    model = qcfs_model("resnet18", levels)
    rows = {row.name: row for row in t_eff_table(model)}
    assert rows["layers.2.shortcut.0"].steps == rows["layers.2.conv2"].steps == levels[6]
    assert rows["layers.2.shortcut.0"].fan_in == 64
    assert "head.3" not in rows and len(rows) == 20  # stem + 16 block convs + 3 shortcuts
    ones = qcfs_model("resnet18", [1] * 17)  # T = 1: a PASC-IF does 5T - 2 = 3 neuron operations
    assert t_eff(ones) == pytest.approx(np.mean([(1 + 3 * row.r) / (1 + row.r) for row in t_eff_table(ones)]))


def test_qcfs_omega():
    torch.manual_seed(0)
    model = build_model("small", lambda: QCFS(4, 1.0), num_classes=10, in_channels=1, image_size=8)
    value = qcfs_omega(model, [torch.randn(8, 1, 8, 8)])
    assert value >= 1.0 - 1e-6 and math.isfinite(value)
    # a saturated layer (every output = lambda, rate 1) has k = 1
    saturated = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), QCFS(2, 1e-3))
    torch.nn.init.ones_(saturated[1].weight)
    assert qcfs_omega(saturated, [torch.ones(5, 4)]) == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# fine-tune and the trial


def test_finetune_levels_sets_levels_and_trains():
    config = TrialConfig()
    data = load_data(config.data)
    torch.manual_seed(0)
    model = build_model("small", lambda: QCFS(8, 1.0), num_classes=10, in_channels=1, image_size=8)
    before = [p.detach().clone() for p in model.parameters()]
    history = finetune_levels(model, [2, 1, 16, 4], data.train, config.stage1, torch.device("cpu"),
                              epochs=1, lr=0.05)
    assert get_levels(model) == [2, 1, 16, 4] and len(history) == 1 and not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert finetune_levels(model, [1, 1, 1, 1], data.train, config.stage1, torch.device("cpu"), epochs=0, lr=0.1) == []
    with pytest.raises(ValueError, match="expected one L per layer"):
        finetune_levels(model, [1, 1], data.train, config.stage1, torch.device("cpu"), epochs=1, lr=0.1)


@pytest.mark.slow
def test_digits_trial_snn_equals_ann(tmp_path):
    base = {"method": "qcfs", "model": "small", "cache_dir": str(tmp_path), "seed": 0, "device": "cpu",
            "stage1.epochs": 3, "qcfs.threshold_init": 1.0, "qcfs.stage1_levels": 4,
            "qcfs.finetune_epochs": 2, "qcfs.finetune_lr": 0.01}
    config = apply_overrides(TrialConfig(), {**base, "qcfs.levels": [4, 16, 1, 2]})
    progress = []
    result = run_trial(config, on_progress=lambda stage, metrics: progress.append((stage, dict(metrics))))
    assert result.snn_acc == result.ann_acc and result.ann_acc > 80.0
    assert result.equiv_max_abs_err <= 1e-9 and result.extra_metrics["equiv_mismatches"] == 0
    assert [m["epoch"] for s, m in progress if s == "finetune"] == [1, 2]
    assert all("val_acc" in m for s, m in progress if s == "finetune")
    # the plain QCFS -> IF curve is a comparison under its own names, never the trial's snn_acc_t
    assert result.acc_curve == [] and set(result.curves) == {"if_snn_acc_t", "val_if_snn_acc_t"}
    assert result.levels == [4, 16, 1, 2] and len(result.curves["if_snn_acc_t"]) == config.qcfs.t_max
    assert result.extra_metrics["if_snn_acc"] == result.curves["if_snn_acc_t"][-1]
    assert result.extra_metrics["if_t_eff"] >= 1
    # the operating point is PASCAL's: t_op = T_eff, accuracies PASCAL's exact ones on each split
    point, metrics = result.operating_point, result.metrics()
    assert point.t_op == result.t_eff and metrics["t_op"] == metrics["t_eff"]
    assert point.acc_op == result.snn_acc and point.val_acc_op == result.val_snn_acc == result.val_ann_acc
    assert point.converged and point.energy_op_mj > 0 and point.kind == "pascal_t_eff"
    assert [row["name"] for row in result.layers] == ["features.2", "features.5", "features.9", "classifier.2"]
    assert [row["levels"] for row in result.layers] == [4, 16, 1, 2]
    for row in result.layers:
        assert {"fan_in", "threshold", "al", "equiv_abs_err", "t_eff_layer", "firing_rate"} <= set(row)
    assert result.t_eff == pytest.approx(t_eff(result.model))
    assert result.synops > 0 and result.energy_mj > 0 and result.omega >= 1.0
    assert not result.stage1_cache_hit

    again = run_trial(config)  # stage 1 from the cache: the same trial, the same numbers
    assert again.stage1_cache_hit and again.stage1_key == result.stage1_key
    assert (again.ann_acc, again.snn_acc, again.levels) == (result.ann_acc, result.snn_acc, result.levels)
    assert [r["threshold"] for r in again.layers] == [r["threshold"] for r in result.layers]

    al_config = apply_overrides(TrialConfig(), {**base, "qcfs.levels": "al", "qcfs.al_thresholds": [30.0, 40.0],
                                                "qcfs.finetune_epochs": 1, "qcfs.snn_dtype": "float32"})
    al_result = run_trial(al_config)
    expected = levels_from_al([row["al"] for row in al_result.layers], [30.0, 40.0], 4)
    assert al_result.levels == expected and al_result.stage1_cache_hit
    assert [row["al"] for row in al_result.layers] == [row["al"] for row in result.layers]  # same calibration
    assert abs(al_result.snn_acc - al_result.ann_acc) <= 100.0 / 360  # float32: at most a rare flip
