"""Issue 23 (GPU numerics and device) on the CPU: under bfloat16 autocast (what ``stage1.amp`` turns on
on CUDA; ``stage1.amp_on_cpu`` turns it on here) QCFS and Rate Norm quantise and clip in float32, so
training quantises at the boundaries of evaluation and PASCAL; the IF simulation keeps float32
membranes inside an autocast region; a trial Ray gave a GPU that torch cannot see fails before any
work; and a trial records its device. Each test also evaluates the old code's formula on the same
bfloat16 inputs and shows it quantised elsewhere. A few seconds, no Ray, no MLflow store.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from snnconv import pipeline, tracking, trial, trial_record
from snnconv.config import ConfigError, TrialConfig, apply_overrides, load_yaml
from snnconv.convert import to_if
from snnconv.data import load_data
from snnconv.layers import QCFS, RateNorm
from snnconv.metrics import wilson_interval
from snnconv.neurons import IFNeuron
from snnconv.operating_point import PASCAL_T_EFF, OperatingPoint
from snnconv.pascal import quantise_count
from snnconv.pipeline import TrialResult, build_trial_model, run_trial, stage1_key
from snnconv.simulate import simulate
from snnconv.train import DeviceError, amp_enabled, check_device, evaluate, train_model

CPU = torch.device("cpu")


def bf16_autocast():
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def old_qcfs(layer: QCFS, z: torch.Tensor) -> torch.Tensor:
    """The QCFS forward before issue 23, literally: in the input's type (bfloat16 under autocast)."""
    return torch.floor(torch.clamp(z / layer.threshold, 0.0, 1.0) * layer.levels + 0.5) / layer.levels * layer.threshold


def old_rate_norm(layer: RateNorm, x: torch.Tensor) -> torch.Tensor:
    """The Rate Norm forward before issue 23 (eval mode), in the input's type."""
    return torch.clamp(torch.relu(x) / layer.threshold(), 0.0, 1.0)


@pytest.fixture(scope="module")
def digits():
    config = apply_overrides(TrialConfig(), {"model": "small", "device": "cpu", "data.name": "digits"})
    return load_data(config.data)


def amp_config(method: str) -> TrialConfig:
    # lambda starts at 1.0 (PASCAL's value): after a step it is no bfloat16 number, so bfloat16 arithmetic shows
    return apply_overrides(TrialConfig(), {
        "method": method, "model": "small", "device": "cpu", "data.name": "digits", "stage1.epochs": 1,
        "stage1.amp_on_cpu": True, "qcfs.stage1_levels": 4, "qcfs.threshold_init": 1.0})


def few_batches(data, count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(iter(data.train), count))


# ---------------------------------------------------------------------------------------------
# the amp switch


def test_amp_on_the_cpu_is_an_explicit_choice():
    base = TrialConfig().stage1
    assert base.amp and not base.amp_on_cpu
    assert amp_enabled(base, torch.device("cuda")) and not amp_enabled(base, CPU)  # the default: CUDA only
    on_cpu = apply_overrides(TrialConfig(), {"stage1.amp_on_cpu": True}).stage1
    assert amp_enabled(on_cpu, CPU) and amp_enabled(on_cpu, torch.device("cuda"))
    off = apply_overrides(TrialConfig(), {"stage1.amp": False}).stage1
    assert not amp_enabled(off, CPU) and not amp_enabled(off, torch.device("cuda"))
    with pytest.raises(ConfigError, match="stage1.amp_on_cpu: true needs stage1.amp: true"):
        apply_overrides(TrialConfig(), {"stage1.amp": False, "stage1.amp_on_cpu": True})
    # trained differently, cached apart; off, the new field leaves every existing key as it was
    assert stage1_key(apply_overrides(TrialConfig(), {"stage1.amp_on_cpu": True})) != stage1_key(TrialConfig())


# ---------------------------------------------------------------------------------------------
# QCFS


def boundary_inputs(threshold: float, levels: int) -> torch.Tensor:
    """bfloat16 inputs on and next to every rounding boundary (k - 1/2) * lambda / L, and around 0 and lambda."""
    boundaries = (torch.arange(levels + 1, dtype=torch.float64) - 0.5) * threshold / levels
    offsets = torch.linspace(-0.02, 0.02, 41, dtype=torch.float64) * threshold / levels
    z = (boundaries[:, None] + offsets[None, :]).flatten()
    return torch.cat([z, torch.tensor([-1.0, 0.0, threshold, 2 * threshold], dtype=torch.float64)]).to(torch.bfloat16)


def test_qcfs_quantises_in_float32_under_autocast():
    layer = QCFS(levels=8, threshold=7.3)  # 7.3 is no bfloat16 number
    z = boundary_inputs(7.3, 8)
    with bf16_autocast():
        out = layer(z)
        old = old_qcfs(layer, z)
    assert out.dtype == torch.float32 and old.dtype == torch.bfloat16
    threshold = layer.threshold.detach()
    counts = quantise_count(z.float(), threshold, 8)  # PASCAL's spike counts, float32
    assert torch.equal(out, layer(z.float())) and torch.equal(out, counts / 8 * threshold)
    assert set(counts.unique().tolist()) == set(range(9))
    # the old code put the boundaries elsewhere: some inputs fell on the other level
    old_counts = torch.floor(torch.clamp(z / layer.threshold, 0.0, 1.0) * 8 + 0.5).float()
    assert (old_counts != counts).sum() > 0
    assert (old.float() != out).sum() > 0


def test_qcfs_keeps_float64_and_gradients_under_autocast():
    layer = QCFS(levels=4, threshold=2.0).double()
    z = torch.tensor([-0.1, 0.2, 0.25, 0.7, 0.76, 1.75, 2.3], dtype=torch.float64)
    with bf16_autocast():
        assert layer(z).dtype == torch.float64  # PASCAL's float64 checks are untouched
    expected = torch.tensor([0, 0, 0.5, 0.5, 1.0, 2.0, 2.0], dtype=torch.float64)
    assert torch.equal(layer(z), expected)
    layer = QCFS(levels=4, threshold=2.0)
    z = torch.tensor([0.7, 1.0, 2.3], dtype=torch.bfloat16, requires_grad=True)
    with bf16_autocast():
        layer(z).sum().backward()
    assert z.grad.dtype == torch.bfloat16 and z.grad.tolist() == [1.0, 1.0, 0.0]  # straight through, as in float32


def level_values(model: torch.nn.Module, images: torch.Tensor, autocast: bool) -> dict[str, tuple[set, set]]:
    """Per QCFS layer of one forward: the set of distinct output values and, from the old formula on
    the same inputs, the set the old code would have produced."""
    seen: dict[str, tuple[set, set]] = {}

    def record(name):
        def hook(module, inputs, output):
            with torch.no_grad():
                seen[name] = (set(output.unique().tolist()), set(old_qcfs(module, inputs[0]).float().unique().tolist()))
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if isinstance(module, QCFS)]
    try:
        with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_training_under_autocast_quantises_at_the_levels_of_evaluation(digits, one_thread):
    config = amp_config("qcfs")
    torch.manual_seed(0)
    model = build_trial_model(config, digits)
    calls = {"train": [], "eval": []}
    phase = "train"

    def check(module, inputs, output):
        """Every call: the output is PASCAL's count / L * lambda of the float32 input, bit for bit."""
        z, threshold = inputs[0].detach(), module.threshold.detach()
        counts = quantise_count(z.float(), threshold, module.levels)
        old_counts = torch.floor(torch.clamp(z / threshold, 0.0, 1.0) * module.levels + 0.5).float()
        calls[phase].append({
            "input": z.dtype, "output": output.dtype,
            "exact": torch.equal(output.detach(), counts / module.levels * threshold),
            "levels": set(counts.unique().tolist()), "old_differs": int((old_counts != counts).sum())})

    hooks = [m.register_forward_hook(check) for m in model.modules() if isinstance(m, QCFS)]
    batches = few_batches(digits)
    train_model(model, batches, config.stage1, CPU)
    phase = "eval"
    evaluate(model, batches, CPU)
    for hook in hooks:
        hook.remove()
    layers = len([m for m in model.modules() if isinstance(m, QCFS)])
    assert len(calls["train"]) == layers * len(batches) and len(calls["eval"]) == layers * len(batches)
    assert {call["input"] for call in calls["train"]} == {torch.bfloat16}  # autocast was on in training
    assert {call["input"] for call in calls["eval"]} == {torch.float32}
    assert all(call["output"] == torch.float32 and call["exact"] for call in calls["train"] + calls["eval"])
    assert set().union(*(call["levels"] for call in calls["train"])) == set(range(5))
    # the old code floored some of the very same training inputs onto another level
    assert sum(call["old_differs"] for call in calls["train"]) > 0

    # the trained weights on the same images: a forward under autocast produces exactly the output
    # values of the float32 forward (lambda * k / L, k = 0..L), with BN in train mode and in eval mode
    images = batches[0][0]
    assert not any(m.threshold.item() == torch.tensor(m.threshold.item()).bfloat16().item()
                   for m in model.modules() if isinstance(m, QCFS))  # no lambda is a bfloat16 number
    for train in (True, False):
        under_amp = copy.deepcopy(model).train(train)
        full = copy.deepcopy(model).train(train)
        amp_values, fp32_values = level_values(under_amp, images, True), level_values(full, images, False)
        assert amp_values.keys() == fp32_values.keys() and len(amp_values) == layers
        for name, (values, _) in amp_values.items():
            module = model.get_submodule(name)
            quantum = module.threshold.item() / module.levels
            steps = {round(value / quantum) for value in values}
            assert steps <= set(range(module.levels + 1)), (name, steps)
            assert all(abs(value / quantum - round(value / quantum)) < 1e-5 for value in values)
            assert values == fp32_values[name][0], (train, name)
        levels_used = {name: len(values) for name, (values, _) in amp_values.items()}
        assert max(levels_used.values()) == 5, levels_used
        # the old outputs were bfloat16 roundings of the levels: another set wherever a level above 0 occurs
        assert all(old != values for values, old in amp_values.values() if len(values) > 1), train


# ---------------------------------------------------------------------------------------------
# Rate Norm


def test_rate_norm_clips_in_float32_under_autocast():
    torch.manual_seed(1)
    layer = RateNorm(scale_init=0.3)
    layer.running_max.fill_(3.7)
    layer.eval()
    x = (torch.randn(4096) * 3).to(torch.bfloat16)
    with bf16_autocast():
        out = layer(x)
        old = old_rate_norm(layer, x)
    assert out.dtype == torch.float32 and old.dtype == torch.bfloat16
    assert torch.equal(out, layer(x.float()))
    assert (old.float() != out).sum() > 0
    # train mode: the running max moves the same way, and normalises the same forward
    amp_layer, full_layer = copy.deepcopy(layer).train(), copy.deepcopy(layer).train()
    with bf16_autocast():
        out = amp_layer(x)
    assert torch.equal(out, full_layer(x.float()))
    assert torch.equal(amp_layer.running_max, full_layer.running_max) and amp_layer.running_max.dtype == torch.float32


def test_rate_norm_training_under_autocast_matches_float32(digits, one_thread):
    config = amp_config("rnl")
    torch.manual_seed(0)
    model = build_trial_model(config, digits)
    calls = []

    def check(module, inputs, output):
        with torch.no_grad():  # the running max the forward used is the one it left
            expected = torch.clamp(torch.relu(inputs[0].float()) / module.threshold(), 0.0, 1.0)
            calls.append((inputs[0].dtype, output.dtype, torch.equal(output, expected)))

    hooks = [m.register_forward_hook(check) for m in model.modules() if isinstance(m, RateNorm)]
    train_model(model, few_batches(digits, 3), config.stage1, CPU, params=pipeline.stage1_parameters(model))
    for hook in hooks:
        hook.remove()
    assert calls and {dtype for dtype, _, _ in calls} == {torch.bfloat16}
    assert all(output == torch.float32 and exact for _, output, exact in calls)


# ---------------------------------------------------------------------------------------------
# IF simulation


def test_if_neuron_keeps_a_float32_membrane_for_bfloat16_currents():
    currents = [torch.tensor([0.3, 0.55, 1.2, -0.4]).bfloat16() for _ in range(5)]
    neuron, reference = IFNeuron(threshold=1.0), IFNeuron(threshold=1.0)
    for current in currents:
        with bf16_autocast():
            spikes = neuron(current.clone())
        assert spikes.dtype == torch.float32 and neuron.membrane.dtype == torch.float32
        assert torch.equal(spikes, reference(current.float()))
        assert torch.equal(neuron.membrane, reference.membrane)


@pytest.mark.parametrize("method", ["qcfs", "rnl"])
def test_simulation_inside_autocast_gives_the_same_spikes(digits, one_thread, method):
    config = amp_config(method)
    torch.manual_seed(0)
    model = build_trial_model(config, digits)
    train_model(model, few_batches(digits, 3), config.stage1, CPU, params=pipeline.stage1_parameters(model))
    snn = to_if(model, v_init="half" if method == "qcfs" else "zero")
    loader = few_batches(digits, 2)
    outside = simulate(snn, loader, 8)
    with bf16_autocast():
        inside = simulate(snn, loader, 8)
    assert sum(outside.spike_counts.values()) > 0
    assert inside.spike_counts == outside.spike_counts and inside.acc_curve == outside.acc_curve
    assert inside.synops_curve == outside.synops_curve


# ---------------------------------------------------------------------------------------------
# device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_gpu_that_torch_cannot_see_is_an_error(no_cuda):
    for name in ("auto", "cuda", "cuda:0"):
        with pytest.raises(DeviceError) as error:
            check_device(name, 1)
        message = str(error.value)
        assert message.startswith("Ray gave this trial 1 GPU but torch sees no CUDA (torch ") and "\n" not in message
        assert torch.__version__ in message and message.endswith("or set device: cpu")
    with pytest.raises(DeviceError, match="Ray gave this trial 2 GPUs"):
        check_device("auto", 2)
    with pytest.raises(DeviceError, match="device: cuda but torch sees no CUDA"):
        check_device("cuda", 0)
    assert check_device("cpu", 1) == CPU  # an explicit cpu stays allowed
    assert check_device("auto", 0) == CPU
    with pytest.raises(ValueError, match="gpus_assigned"):
        check_device("auto", -1)


def test_a_visible_gpu_is_used(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("auto", 1) == torch.device("cuda") and check_device("cuda:1", 1) == torch.device("cuda:1")
    assert check_device("cpu", 1) == CPU


def test_run_trial_refuses_before_any_work(no_cuda, monkeypatch, tmp_path):
    def no_work(*args, **kwargs):
        raise AssertionError("the trial started working")

    monkeypatch.setattr(trial, "load_data", no_work)
    monkeypatch.setattr(trial, "Stage1Cache", no_work)
    config = apply_overrides(TrialConfig(), {"device": "auto", "cache_dir": str(tmp_path)})
    with pytest.raises(DeviceError, match="Ray gave this trial 1 GPU"):
        run_trial(config, gpus_assigned=1)
    assert not any(tmp_path.iterdir())


def test_a_trial_records_its_device(one_thread, tmp_path):
    config = apply_overrides(TrialConfig(), {
        "method": "qcfs", "model": "small", "device": "cpu", "data.name": "synthetic", "data.num_train": 64,
        "data.num_val": 32, "data.num_test": 32, "data.image_size": 8, "data.channels": 1, "data.batch_size": 32,
        "stage1.epochs": 1, "qcfs.stage1_levels": 4, "qcfs.finetune_epochs": 0, "qcfs.t_max": 2,
        "cache_dir": str(tmp_path / "cache")})
    result = run_trial(config, gpus_assigned=1)  # device: cpu, even with a GPU assigned
    assert (result.device, result.gpu_name) == ("cpu", "none")
    assert result.params() == {"device": "cpu", "gpu_name": "none", "val_images": "32", "test_images": "32"}


def test_the_device_is_logged_as_params(tmp_path):
    assert {"device", "gpu_name"} <= set(tracking.trial_param_names())
    assert {"lam", "levels_profile", "percentile"} <= set(tracking.trial_param_names())  # each method's own
    result = TrialResult(method="qcfs", ann_acc=90.0, val_ann_acc=90.0, snn_acc=90.0, val_snn_acc=90.0,
                         operating_point=OperatingPoint(3.0, 90.0, 90.0, 0.1, True, PASCAL_T_EFF),
                         latency_tolerance=1.0, omega=1.0, t_eff=3.0, synops=1.0, energy_mj=0.1,
                         device="cuda", gpu_name="NVIDIA H100 80GB HBM3")
    tracker = tracking.SweepTracker("sqlite:///unused.db", "0", "parent")
    record = trial_record.save_trial_record(result, {"stage1_key": "abc", "levels": ""}, tmp_path, tracker, "run")
    assert trial_record.read_record(record)["params"] == {
        "device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "stage1_key": "abc", "levels": ""}


def test_the_demo_runs_on_the_cpu():
    from pathlib import Path

    preset = load_yaml(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert preset["trial"]["device"] == "cpu" and preset["gpus_per_trial"] == 0


# ------------------------------------------------------------------ how sure an accuracy is


@pytest.mark.parametrize("accuracy, images, expected", [
    (50.0, 100, (40.383, 59.617)),  # the textbook case
    (0.0, 10, (0.0, 27.753)),  # not empty at 0 %
    (100.0, 10, (72.247, 100.0)),  # nor at 100 %
])
def test_wilson_interval_matches_known_values(accuracy, images, expected):
    assert wilson_interval(accuracy, images) == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("correct, images", [(1, 7), (168, 180), (349, 360), (5000, 10000)])
def test_wilson_interval_is_where_the_score_test_stops_rejecting(correct, images):
    """Held-out check: the Wilson interval is the set of true accuracies p0 that a score test at 5 % does not
    reject, |p - p0| <= z sqrt(p0 (1 - p0) / n); found here by bisection, not by the closed form."""
    from snnconv.metrics import Z95

    p = correct / images

    def inside(p0: float) -> bool:
        return abs(p - p0) <= Z95 * math.sqrt(p0 * (1 - p0) / images)

    def edge(outside: float, within: float) -> float:
        for _ in range(100):
            middle = (outside + within) / 2
            outside, within = (outside, middle) if inside(middle) else (middle, within)
        return within

    low, high = wilson_interval(100.0 * p, images)
    assert low == pytest.approx(100 * edge(0.0, p), abs=1e-9)
    assert high == pytest.approx(100 * edge(1.0, p), abs=1e-9)


def test_a_result_carries_the_interval_of_each_accuracy():
    from snnconv.data import DataFacts

    result = TrialResult(method="rnl", ann_acc=97.5, val_ann_acc=95.0, snn_acc=96.0, val_snn_acc=94.0,
                         operating_point=OperatingPoint(12.0, 93.0, 95.5, 0.1, True, "IF time steps"),
                         latency_tolerance=1.0, omega=1.0, t_eff=12.0, synops=1.0, energy_mj=0.1,
                         data=DataFacts("digits", {"train": 1257, "val": 180, "test": 360}, "abc"))
    metrics = result.metrics()
    for name, accuracy, images in (("val_acc_op", 93.0, 180), ("acc_op", 95.5, 360), ("val_ann_acc", 95.0, 180),
                                   ("ann_acc", 97.5, 360)):
        assert (metrics[f"{name}_low"], metrics[f"{name}_high"]) == wilson_interval(accuracy, images)
    assert set(tracking.INTERVAL_METRICS) <= set(metrics)
    assert result.params()["val_images"] == "180" and result.params()["test_images"] == "360"
