"""bfloat16 autocast against float32 across the pipeline, on the CPU: under autocast (what ``stage1.amp``
turns on on CUDA; ``stage1.amp_on_cpu`` turns it on here) QCFS and Rate Norm quantise and clip in float32,
so training quantises at the boundaries of evaluation and PASCAL; the IF simulation keeps float32
membranes inside an autocast region and gives the same spikes. Each test also evaluates the former
bfloat16 formula on the same inputs and shows it quantised elsewhere. A few seconds, no Ray, no MLflow
store. (The amp switch and the device checks are in test_train.py, a trial's device in test_trial.py.)
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from snnconv import pipeline
from snnconv.config import TrialConfig, apply_overrides
from snnconv.convert import to_if
from snnconv.data import load_data
from snnconv.layers import QCFS, RateNorm
from snnconv.neurons import IFNeuron
from snnconv.pascal import quantise_count
from snnconv.pipeline import build_trial_model
from snnconv.simulate import simulate
from snnconv.train import evaluate, train_model

CPU = torch.device("cpu")


def bf16_autocast():
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def old_qcfs(layer: QCFS, z: torch.Tensor) -> torch.Tensor:
    """The former QCFS forward, literally: in the input's type (bfloat16 under autocast)."""
    return torch.floor(torch.clamp(z / layer.threshold, 0.0, 1.0) * layer.levels + 0.5) / layer.levels * layer.threshold


def old_rate_norm(layer: RateNorm, x: torch.Tensor) -> torch.Tensor:
    """The former Rate Norm forward (eval mode), in the input's type."""
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
