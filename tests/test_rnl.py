"""RNL + RIL: Rate Norm Layer, omega, stage 2 (RIL) and run_trial, against docs/methods.md sections 2 and 6."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from snnconv.config import ConfigError, TrialConfig, apply_overrides
from snnconv.layers import (
    RateNorm,
    activation_factory,
    lock_running_max,
    rate_norm_layers,
    scale_parameters,
    set_scale,
    share_scale,
)
from snnconv.metrics import OmegaRecorder, aggregate_omega, layer_omega, model_omega, omega_tensor, output_omega
from snnconv.models import build_model
from snnconv.pipeline import run_trial, stage1
from snnconv.train import ril_loss, train_ril

pytestmark = pytest.mark.usefixtures("one_thread")


def small_rnl_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small", activation_factory("rnl"), num_classes=10, in_channels=1, image_size=8)


# ---------------------------------------------------------------------------------------------
# Rate Norm Layer (sections 2.2 and 6)


def test_rate_norm_hand_vector():
    layer = RateNorm(scale_init=0.0).eval()
    layer.running_max.fill_(4.0)
    out = layer(torch.tensor([-1.0, 0.5, 1.0, 3.0]))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.2499999, 0.4999998, 1.0]), atol=1e-7, rtol=0)
    assert layer.threshold().item() == pytest.approx(4 * 0.5 + 1e-6)


def test_rate_norm_running_max_updates_before_normalising():
    layer = RateNorm(scale_init=0.0).train()  # running max starts at 1, p = 0.5
    out = layer(torch.tensor([-2.0, 3.0, 0.6]))
    assert float(layer.running_max) == pytest.approx(1.2)
    expected = torch.clamp(torch.tensor([0.0, 3.0, 0.6]) / (1.2 * 0.5 + 1e-6), 0, 1)
    torch.testing.assert_close(out, expected)


def test_rate_norm_running_max_frozen_in_eval_and_when_locked():
    layer = RateNorm().eval()
    layer(torch.tensor([5.0]))
    assert float(layer.running_max) == 1.0
    layer.train()
    layer.lock_max = True
    layer(torch.tensor([5.0]))
    assert float(layer.running_max) == 1.0


def test_rate_norm_gradient_reaches_scale_not_running_max():
    layer = RateNorm(scale_init=0.0).train()
    x = torch.tensor([0.2, 0.4, 0.9], requires_grad=True)
    layer(x).sum().backward()
    assert layer.scale.grad is not None and layer.scale.grad.item() != 0.0
    assert x.grad is not None and not layer.running_max.requires_grad


def test_rate_norm_scale_modes():
    assert RateNorm().p().item() == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())
    assert RateNorm(scale_init=-0.7, scale_mode="abs").p().item() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="scale_mode"):
        RateNorm(scale_mode="tanh")


def test_share_scale_gives_one_parameter_for_all_layers():
    model = small_rnl_model()
    shared = share_scale(model, 2.5)
    layers = rate_norm_layers(model)
    assert len(layers) == 4 and all(module.scale is shared for _, module in layers)
    assert scale_parameters(model) == [shared]
    assert sum(1 for p in model.parameters() if p is shared) == 1
    assert layers[2][1].p().item() == pytest.approx(0.9241418)
    clone = copy.deepcopy(model)
    assert len(scale_parameters(clone)) == 1  # sharing survives a deep copy


def test_set_scale_and_lock_running_max():
    model = small_rnl_model()
    scales = set_scale(model, 4.0)
    assert len(scales) == 4 and len({id(s) for s in scales}) == 4
    assert all(s.item() == 4.0 for s in scales)
    lock_running_max(model)
    assert all(module.lock_max for _, module in rate_norm_layers(model))
    with pytest.raises(ValueError, match="no RateNorm"):
        share_scale(nn.Sequential(nn.Linear(2, 2)), 1.0)


# ---------------------------------------------------------------------------------------------
# omega (sections 2.4 and 6)


def test_layer_omega_hand_vector():
    assert layer_omega(torch.tensor([0.0, 0.5, 1.0, 1.0])) == pytest.approx(1.1111062, abs=1e-7)


def test_output_omega_hand_vector():
    assert output_omega(torch.tensor([[2.0, -1.0, 4.0]])) == pytest.approx(1.1999904, abs=1e-7)


def test_output_omega_without_positive_logit_is_zero():
    assert output_omega(torch.tensor([[-2.0, -1.0]])) == 0.0
    assert output_omega(torch.zeros(2, 3)) == 0.0


def test_omega_bounds():
    rates = torch.rand(4, 8, 5, 5)
    assert layer_omega(rates) >= 1.0 - 1e-4
    assert layer_omega(torch.tensor([0.0, 1.0, 1.0, 0.0])) == pytest.approx(1.0, abs=1e-5)
    assert layer_omega(torch.full((10,), 0.01)) == pytest.approx(0.1 / (0.001 + 1e-5), rel=1e-5)  # ~1/0.01


def test_omega_pools_the_whole_batch_tensor():
    a = torch.tensor([[1.0, 0.0], [0.2, 0.2]])
    pooled = (1.4) / (1.0 + 0.04 + 0.04 + 1e-5)
    assert layer_omega(a) == pytest.approx(pooled, rel=1e-6)


def test_aggregate_omega_formulas():
    hidden, last = [2.0, 4.0], 1.0
    assert aggregate_omega(hidden, last, "mean") == pytest.approx((2 + 4 + 1) / 3)
    assert aggregate_omega(hidden, last, "doubled") == pytest.approx((2 * 6 + 1) / 5)
    with pytest.raises(ValueError, match="weighting"):
        aggregate_omega(hidden, last, "max")


def test_omega_is_differentiable_in_the_scale():
    layer = RateNorm(scale_init=0.0).eval()
    layer.running_max.fill_(2.0)
    omega_tensor(layer(torch.linspace(0, 2, 11))).backward()
    assert layer.scale.grad.item() > 0  # a larger p (threshold) raises omega


def test_omega_hooks_do_not_change_outputs():
    model = small_rnl_model().eval()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        plain = model(x)
        with OmegaRecorder(model) as recorder:
            hooked = model(x)
        after = model(x)
    torch.testing.assert_close(plain, hooked, rtol=0, atol=0)
    torch.testing.assert_close(plain, after, rtol=0, atol=0)
    assert recorder.names == [name for name, _ in rate_norm_layers(model)]
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_model_omega_matches_manual_computation():
    model = small_rnl_model().eval()
    images, labels = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    loader = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    result = model_omega(model, loader)
    outputs: dict[str, list[torch.Tensor]] = {}
    hooks = [module.register_forward_hook(lambda m, i, o, n=name: outputs.setdefault(n, []).append(o))
             for name, module in rate_norm_layers(model)]
    with torch.no_grad():
        logits = [model(x) for x, _ in loader]
    for hook in hooks:
        hook.remove()
    for name, tensors in outputs.items():
        expected = (8 * layer_omega(tensors[0]) + 4 * layer_omega(tensors[1])) / 12
        assert result.per_layer[name] == pytest.approx(expected, rel=1e-6)
    expected_out = (8 * output_omega(logits[0]) + 4 * output_omega(logits[1])) / 12
    assert result.output == pytest.approx(expected_out, rel=1e-6)
    assert result.mean == pytest.approx((sum(result.per_layer.values()) + result.output) / 5, rel=1e-6)
    predictions = torch.cat(logits).argmax(1)
    assert result.accuracy == pytest.approx(100.0 * (predictions == labels).float().mean().item())


def test_ril_loss_terms():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], requires_grad=True)
    hidden = [torch.tensor(2.0), torch.tensor(3.0)]
    loss, cos_term = ril_loss(logits.detach(), logits, hidden, lam=0.5)
    assert cos_term.item() == pytest.approx(0.0, abs=1e-6)
    omega = (2.0 + 3.0 + output_omega(logits)) / 3
    assert loss.item() == pytest.approx(0.5 * omega, rel=1e-5)
    loss, cos_term = ril_loss(-logits.detach(), logits, hidden, lam=0.0)
    assert cos_term.item() == pytest.approx(2.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# stage 2 and the whole trial on digits (one cached stage-1 model for the module)


@pytest.fixture(scope="module")
def digits_config(tmp_path_factory) -> TrialConfig:
    return apply_overrides(TrialConfig(), {
        "method": "rnl", "model": "small", "seed": 0, "device": "cpu",
        "cache_dir": str(tmp_path_factory.mktemp("stage1_cache")),
        "stage1.epochs": 12, "stage1.lr": 0.05,
        "rnl.lr": 0.02, "rnl.epochs": 2, "rnl.inspect_interval": 5, "rnl.t_max": 64,
    })


@pytest.fixture(scope="module")
def digits_stage1(digits_config):
    return stage1(digits_config)


def stage2(digits_stage1, config: TrialConfig, **overrides):
    rnl = apply_overrides(config, {f"rnl.{key}": value for key, value in overrides.items()}).rnl
    model = copy.deepcopy(digits_stage1.model)
    data = digits_stage1.data
    return model, train_ril(model, data.train, data.val, rnl, digits_stage1.device)


def test_teacher_is_a_frozen_copy_unchanged_by_stage2(digits_stage1, digits_config):
    before = {k: v.clone() for k, v in digits_stage1.model.state_dict().items()}
    model, result = stage2(digits_stage1, digits_config, lam=1.0, teacher="frozen")
    teacher = result.teacher_model
    assert teacher is not None and teacher is not model
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not any(a is b for a in teacher.parameters() for b in model.parameters())
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    assert scale_parameters(teacher)[0].item() == 10.0  # the stage-1 p ~ 1
    assert scale_parameters(model)[0].item() != pytest.approx(10.0)
    assert any(row["cos_term"] > 1e-5 for row in result.candidates[1:])


def test_teacher_self_reproduces_the_vanishing_cosine_term(digits_stage1, digits_config):
    model, result = stage2(digits_stage1, digits_config, lam=0.5, teacher="self")
    assert result.teacher_model is None
    rows = result.candidates[1:]
    assert rows and all(row["cos_term"] < 1e-6 for row in rows)


def test_stage2_trains_only_the_shared_scale_with_running_max_locked(digits_stage1, digits_config):
    model, result = stage2(digits_stage1, digits_config, lam=1.0)
    reference = digits_stage1.model.state_dict()
    for name, value in model.state_dict().items():
        if not name.endswith(".scale"):
            torch.testing.assert_close(value, reference[name], rtol=0, atol=0, msg=name)
    scales = scale_parameters(model)
    assert len(scales) == 1 and all(module.lock_max for _, module in rate_norm_layers(model))
    assert result.steps == 2 * len(digits_stage1.data.train) or result.stopped_early


def test_large_lambda_gives_lower_omega(digits_stage1, digits_config):
    model_zero, zero = stage2(digits_stage1, digits_config, lam=0.0)
    model_large, large = stage2(digits_stage1, digits_config, lam=1.0)
    test = digits_stage1.data.test
    assert model_omega(model_large, test).mean < model_omega(model_zero, test).mean
    assert large.chosen["omega"] < zero.chosen["omega"]


def test_candidates_within_tolerance_and_lowest_omega_chosen(digits_stage1, digits_config):
    model, result = stage2(digits_stage1, digits_config, lam=5.0, lr=0.1, acc_tolerance=2.0)
    floor = result.start_val_acc - 2.0
    assert result.candidates[0]["step"] == 0
    assert all(row["val_acc"] >= floor for row in result.candidates)
    assert result.chosen["omega"] == min(row["omega"] for row in result.candidates)
    assert result.stopped_early  # a large lambda and lr drive p down until accuracy falls
    chosen = model_omega(model, digits_stage1.data.val)
    assert chosen.mean == pytest.approx(result.chosen["omega"], rel=1e-5)
    assert chosen.accuracy == pytest.approx(result.chosen["val_acc"])
    assert set(result.chosen) >= {"lam", "step", "val_acc", "omega", "p", "cos_term"}


def test_doubled_weighting_is_recorded(digits_stage1, digits_config):
    _, result = stage2(digits_stage1, digits_config, omega_weighting="doubled", epochs=1, inspect_interval=100)
    assert result.omega_weighting == "doubled"
    assert len(result.candidates) == 2  # the start and the end of the only epoch


def test_run_trial_rnl_on_digits(digits_stage1, digits_config):
    events: list[tuple[str, dict]] = []
    result = run_trial(digits_config, on_progress=lambda stage, metrics: events.append((stage, dict(metrics))))
    assert result.stage1_cache_hit and result.stage1_key == digits_stage1.key
    assert len(result.acc_curve) == 64 and result.snn_acc == result.acc_curve[-1]
    assert abs(result.snn_acc - result.ann_acc) <= 1.0
    assert result.ann_acc > 90
    assert 1 <= result.t_eff <= 64
    assert result.acc_curve[int(result.t_eff) - 1] >= result.ann_acc - 1.0
    assert all(acc < result.ann_acc - 1.0 for acc in result.acc_curve[:int(result.t_eff) - 1])
    assert result.omega >= 1.0 and result.synops > 0 and result.energy_mj > 0
    assert [row["name"] for row in result.layers] == ["features.2", "features.5", "features.9", "classifier.2"]
    for row in result.layers:
        assert row["threshold"] == pytest.approx(row["running_max"] * row["p"] + 1e-6, rel=1e-6)
        assert 0 <= row["firing_rate"] <= 1 and row["omega"] >= 1.0 - 1e-4
    assert result.tables["candidates"] and isinstance(result.model, nn.Module)
    stage2_events = [metrics for stage, metrics in events if stage == "stage2"]
    assert stage2_events and all({"val_acc", "omega", "step"} <= set(m) for m in stage2_events)
    assert [m["step"] for m in stage2_events] == sorted(m["step"] for m in stage2_events)
    assert any(stage == "simulate" for stage, _ in events)
    metrics = result.metrics()
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["ann_macs"] > 0 and math.isfinite(metrics["energy_at_t_eff_mj"])
    # the operating point: chosen on the validation curve, test accuracy read at the same t
    val_curve, test_curve = result.curves["val_snn_acc_t"], result.curves["snn_acc_t"]
    assert len(val_curve) == 64 and result.val_snn_acc == val_curve[-1] and result.val_ann_acc > 90
    t_op = int(metrics["t_op"])
    assert metrics["t_op"] == t_op and 1 <= t_op <= 64
    assert metrics["val_acc_op"] == val_curve[t_op - 1] and metrics["acc_op"] == test_curve[t_op - 1]
    assert all(abs(acc - val_curve[-1]) <= result.latency_tolerance for acc in val_curve[t_op - 1:])
    assert t_op == 1 or abs(val_curve[t_op - 2] - val_curve[-1]) > result.latency_tolerance
    assert metrics["converged"] == float(t_op <= 32) and 0 < metrics["energy_op_mj"]


def test_stage2_is_the_same_after_a_cache_miss_and_a_hit(tmp_path):
    config = apply_overrides(TrialConfig(), {
        "device": "cpu", "cache_dir": str(tmp_path), "stage1.epochs": 2, "stage1.lr": 0.05,
        "rnl.lam": 1.0, "rnl.lr": 0.05, "rnl.inspect_interval": 4, "rnl.t_max": 8,
    })
    miss, hit = run_trial(config), run_trial(config)
    assert not miss.stage1_cache_hit and hit.stage1_cache_hit
    assert miss.tables["candidates"] == hit.tables["candidates"]
    assert miss.acc_curve == hit.acc_curve and miss.omega == hit.omega


def test_a_method_that_is_not_registered_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="method: unknown value 'nope'; allowed: rnl, qcfs, datanorm"):
        apply_overrides(TrialConfig(), {"method": "nope"})


def test_rnl_config_errors():
    with pytest.raises(ConfigError, match="rnl.omega_weighting"):
        apply_overrides(TrialConfig(), {"rnl.omega_weighting": "sum"})
    with pytest.raises(ConfigError, match="rnl.scale_init"):
        apply_overrides(TrialConfig(), {"rnl.scale_mode": "abs"})
    assert apply_overrides(TrialConfig(), {"rnl.scale_mode": "abs", "rnl.scale_init": 0.9}).rnl.scale_init == 0.9
