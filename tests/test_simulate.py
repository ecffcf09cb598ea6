"""Rate-coded IF conversion and simulation (docs/methods.md sections 0, 1.5, 2.3, 6): neurons, converter,
acc(t), spike statistics, synaptic operations and energy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snnconv.convert import check_convertible, to_if
from snnconv.layers import QCFS, RateNorm, activation_factory
from snnconv.metrics import E_AC_PJ, E_MAC_PJ, ann_macs, energy_mj, synaptic_operations
from snnconv.models import build_model
from snnconv.neurons import IFNeuron, StaticInput, if_neurons, reset_state
from snnconv.simulate import T_EFF_NOT_REACHED, first_step_within, simulate, spike_fan_out

pytestmark = pytest.mark.usefixtures("one_thread")


def calibrated(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set BN statistics and Rate Norm running maxima from one batch (momentum 1), eval mode."""
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, (nn.BatchNorm2d, RateNorm))}
    for module in momenta:
        module.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(images)
    for module, momentum in momenta.items():
        module.momentum = momentum
    return model.eval()


def small(kind: str = "rnl", seed: int = 0, **factory) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("small", activation_factory(kind, **factory), num_classes=10, in_channels=1, image_size=8)
    return calibrated(model, torch.randn(64, 1, 8, 8))


def run_steps(snn: nn.Module, x: torch.Tensor, steps: int) -> list[torch.Tensor]:
    reset_state(snn)
    with torch.no_grad():
        outputs = [snn(x).clone() for _ in range(steps)]
    reset_state(snn)
    return outputs


# ---------------------------------------------------------------------------------------------
# neurons


def test_if_neuron_dynamics_by_hand():
    neuron = IFNeuron(threshold=1.0)
    outputs = [float(neuron(torch.tensor([0.4]))) for _ in range(5)]
    assert outputs == [0.0, 0.0, 1.0, 0.0, 1.0]  # v: 0.4, 0.8, 1.2->0.2, 0.6, 1.0->0 (>= fires)
    assert float(neuron.membrane) == pytest.approx(0.0, abs=1e-6)
    assert [float(count) for count in neuron.step_spikes] == outputs
    neuron.reset_state()
    assert neuron.membrane is None and neuron.step_spikes == []
    with pytest.raises(ValueError, match="threshold"):
        IFNeuron(threshold=0.0)


def test_if_neuron_does_not_modify_its_input():
    neuron = IFNeuron(threshold=0.5)
    current = torch.tensor([0.7, 0.2])
    for _ in range(3):
        neuron(current)
    torch.testing.assert_close(current, torch.tensor([0.7, 0.2]))


@pytest.mark.parametrize("steps", [1, 7, 32, 100])
def test_if_converges_to_rate_norm_within_one_over_t(steps):
    rate_norm = RateNorm(scale_init=0.3).eval()
    rate_norm.running_max.fill_(2.5)
    snn = to_if(nn.Sequential(rate_norm))
    neuron = snn[0]
    assert isinstance(neuron, IFNeuron) and neuron.v_init == 0.0 and neuron.amplitude == 1.0
    assert neuron.threshold == pytest.approx(rate_norm.threshold().item())
    z = torch.linspace(-1.0, 4.0, 501)
    rates = torch.stack(run_steps(snn, z, steps)).mean(0)
    error = (rates - rate_norm(z).detach()).abs()
    assert float(error.max()) <= 1.0 / steps + 1e-6
    assert bool(((rates - rate_norm(z).detach()) <= 1e-6).all())  # v(0) = 0: rates are biased low


@pytest.mark.parametrize("levels", [1, 2, 4, 8, 16])
def test_qcfs_to_if_with_constant_input_equals_qcfs_exactly(levels):
    torch.manual_seed(levels)
    qcfs = QCFS(levels=levels).double()
    with torch.no_grad():
        qcfs.threshold.fill_(0.5 + 3 * torch.rand(()).item())
    snn = to_if(nn.Sequential(qcfs), v_init="half")
    neuron, lam = snn[0], qcfs.threshold.item()
    assert (neuron.threshold, neuron.amplitude, neuron.v_init) == (lam, lam, lam / 2)
    z = torch.randn(4000, dtype=torch.float64) * 2.0
    time_mean = torch.stack(run_steps(snn, z, levels)).sum(0) / levels
    torch.testing.assert_close(time_mean, qcfs(z).detach(), rtol=0, atol=1e-12)


def test_qcfs_to_if_hand_vector():
    qcfs = QCFS(levels=4, threshold=2.0)
    snn = to_if(nn.Sequential(qcfs), v_init="half")
    z = torch.tensor([-0.1, 0.2, 0.25, 0.7, 0.76, 1.75, 2.3])
    spikes_sum = torch.stack(run_steps(snn, z, 4)).sum(0) / 4
    torch.testing.assert_close(spikes_sum, torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 2.0, 2.0]), rtol=0, atol=0)
    torch.testing.assert_close(spikes_sum, qcfs(z).detach(), rtol=0, atol=0)


def test_qcfs_first_layer_network_equals_qcfs_ann_at_t_equal_l():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), QCFS(levels=4, threshold=1.3)).double()
    model[1].running_mean.uniform_(-0.2, 0.2)
    model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    snn = to_if(model, v_init="half", fold_bn=False, static_input=True)
    assert isinstance(snn[0], StaticInput)
    time_mean = torch.stack(run_steps(snn, x, 4)).sum(0) / 4
    torch.testing.assert_close(time_mean, model(x).detach(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# converter


def test_to_if_maps_every_activation_and_leaves_the_model_alone():
    model = small("rnl")
    snn = to_if(model)
    rate_norms = [m for m in model.modules() if isinstance(m, RateNorm)]
    neurons = [m for _, m in if_neurons(snn)]
    assert len(rate_norms) == len(neurons) == 4
    for rate_norm, neuron in zip(rate_norms, neurons):
        assert neuron.threshold == pytest.approx(rate_norm.threshold().item())
    assert not any(isinstance(m, IFNeuron) for m in model.modules())
    assert all(not p.requires_grad for p in snn.parameters()) and not snn.training
    assert isinstance(snn.features[1], nn.Identity)  # BN folded into the first conv
    assert not any(isinstance(m, StaticInput) for m in snn.modules())
    assert isinstance(to_if(model, static_input=True).features[0], StaticInput)


def test_to_if_half_initial_membrane():
    snn = to_if(small("qcfs", levels=4, threshold=2.0), v_init="half")
    assert all(n.v_init == pytest.approx(n.threshold / 2) and n.amplitude == n.threshold
               for _, n in if_neurons(snn))
    with pytest.raises(ValueError, match="v_init"):
        to_if(small(), v_init="full")


class WithMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), RateNorm(), nn.MaxPool2d(2))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class Square(nn.Module):
    def forward(self, x):
        return x * x


class FunctionalMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = RateNorm()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(nn.functional.max_pool2d(self.act(self.conv(x)), 2).flatten(1))


def test_converter_refuses_max_pooling_naming_the_layer():
    with pytest.raises(ValueError, match=r"'features\.2' \(MaxPool2d\).*average pooling"):
        to_if(WithMaxPool())


def test_converter_refuses_unknown_layer_naming_it():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), RateNorm(), Square(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"'2' \(Square\): unsupported layer"):
        check_convertible(model)


def test_converter_refuses_relu_and_functional_nonlinearities():
    relu_model = build_model("small", activation_factory("relu"), num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match=r"'features\.2' \(ReLU\).*threshold"):
        to_if(relu_model)
    with pytest.raises(ValueError, match="max_pool2d"):
        to_if(FunctionalMaxPool())
    with pytest.raises(ValueError, match="without RateNorm, QCFS or clipped ReLU"):
        to_if(nn.Sequential(nn.Linear(2, 2)))
    bad = nn.Sequential(nn.Linear(2, 2), QCFS(levels=2, threshold=-1.0))
    with pytest.raises(ValueError, match=r"'1' \(QCFS\).*positive"):
        to_if(bad)


# ---------------------------------------------------------------------------------------------
# simulation


def naive_acc_curve(snn: nn.Module, loader, steps: int) -> list[float]:
    correct, total = torch.zeros(steps), 0
    for x, y in loader:
        summed = 0
        for t, out in enumerate(run_steps(snn, x, steps)):
            summed = summed + out
            correct[t] += (summed.argmax(1) == y).sum()
        total += len(y)
    return (correct * 100 / total).tolist()


@pytest.fixture(scope="module")
def rnl_batches():
    torch.manual_seed(1)
    model = small("rnl", scale_init=1.0)
    images = torch.randn(40, 1, 8, 8)
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[::4] = (labels[::4] + 1) % 10  # some wrong labels, so the curve is not trivially 100
    return model, [(images[:24], labels[:24]), (images[24:], labels[24:])]


def test_acc_curve_matches_a_naive_loop_and_prefixes(rnl_batches):
    model, loader = rnl_batches
    snn = to_if(model, static_input=True)
    result = simulate(snn, loader, 12)
    assert len(result.acc_curve) == 12 and result.num_images == 40
    assert result.acc_curve == pytest.approx(naive_acc_curve(to_if(model, fold_bn=False, static_input=False),
                                                             loader, 12), abs=1e-9)
    # which images are right after each step, in the loader's order: the curve is their mean
    assert result.image_correct.shape == (12, 40) and result.image_correct.dtype == torch.bool
    assert (result.image_correct.double().mean(1) * 100).tolist() == pytest.approx(result.acc_curve, abs=1e-12)
    plain = to_if(model, fold_bn=False, static_input=False)
    x, y = torch.cat([b[0] for b in loader]), torch.cat([b[1] for b in loader])
    summed = torch.stack(list(run_steps(plain, x, 12))).cumsum(0)
    assert torch.equal(result.image_correct, summed.argmax(2) == y)
    shorter = simulate(snn, loader, 5)
    assert shorter.acc_curve == result.acc_curve[:5]
    assert shorter.synops_curve == pytest.approx(result.synops_curve[:5])
    assert all(n.membrane is None for _, n in if_neurons(snn))  # state cleared after the run


def test_speed_options_do_not_change_the_result(rnl_batches):
    model, loader = rnl_batches
    fast = simulate(to_if(model, static_input=True), loader, 16)
    plain = simulate(to_if(model, fold_bn=False, static_input=False), loader, 16)
    assert max(abs(a - b) for a, b in zip(fast.acc_curve, plain.acc_curve)) <= 100 / 40 + 1e-9
    for name, count in plain.spike_counts.items():
        assert fast.spike_counts[name] == pytest.approx(count, rel=5e-3, abs=0.5)
    assert fast.input_macs == plain.input_macs


def test_spike_counts_firing_rates_and_synops(rnl_batches):
    model, loader = rnl_batches
    snn = to_if(model)
    steps = 8
    result = simulate(snn, loader, steps)
    counted: dict[str, float] = {name: 0.0 for name, _ in if_neurons(snn)}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: counted.__setitem__(n, counted[n] + float(o.sum())))
             for name, m in if_neurons(snn)]
    for x, _ in loader:
        run_steps(snn, x, steps)
    for hook in hooks:
        hook.remove()
    neurons = {"features.2": 32 * 64, "features.5": 32 * 64, "features.9": 64 * 16, "classifier.2": 128}
    assert result.neurons == neurons
    for name, total in counted.items():
        assert result.spike_counts[name] == pytest.approx(total / 40)
        assert result.firing_rates[name] == pytest.approx(total / 40 / (neurons[name] * steps))
        assert 0 <= result.firing_rates[name] <= 1
    assert result.fan_out == {"features.2": 32 * 9, "features.5": 64 * 9, "features.9": 128, "classifier.2": 10}
    assert result.synops == pytest.approx(synaptic_operations(result.spike_counts, result.fan_out))
    assert result.input_macs == steps * 8 * 8 * 32 * 9
    assert result.energy_mj == pytest.approx((E_AC_PJ * result.synops + E_MAC_PJ * result.input_macs) * 1e-9)
    assert result.energy_at(steps) == pytest.approx(result.energy_mj)
    assert all(a <= b for a, b in zip(result.synops_curve, result.synops_curve[1:]))


def test_fan_out_through_residual_blocks():
    torch.manual_seed(0)
    model = build_model("resnet18", activation_factory("qcfs"), num_classes=10, in_channels=3, image_size=32)
    fan_out = spike_fan_out(to_if(model, v_init="half"))
    assert fan_out["stem.2"] == 64 * 9  # block 0 conv1 (identity shortcut: no synapses)
    assert fan_out["layers.0.act_mid"] == 64 * 9
    assert fan_out["layers.1.act_out"] == 128 * 9 / 4 + 128 / 4  # stride-2 conv1 + 1x1 stride-2 shortcut
    assert fan_out["layers.7.act_out"] == 10  # global pool -> fc


def test_energy_and_ann_macs():
    assert energy_mj(1e9, 0) == pytest.approx(0.9)
    assert energy_mj(0, 1e9) == pytest.approx(4.6)
    macs = ann_macs(small(), torch.randn(3, 1, 8, 8))
    assert macs == {"features.0": 8 * 8 * 32 * 9, "features.3": 8 * 8 * 32 * 288, "features.7": 4 * 4 * 64 * 288,
                    "classifier.1": 256 * 128, "classifier.4": 128 * 10}


def test_first_step_within():
    curve = [10.0, 50.0, 89.0, 91.0, 95.0]
    assert first_step_within(curve, 92.0, 1.0) == 4.0
    assert first_step_within(curve, 92.0, 0.0) == 5.0
    assert first_step_within(curve, 99.0, 1.0) == T_EFF_NOT_REACHED == math.inf


def test_simulate_refuses_bad_arguments(rnl_batches):
    model, loader = rnl_batches
    with pytest.raises(ValueError, match="t_max"):
        simulate(to_if(model), loader, 0)
    with pytest.raises(ValueError, match="IF neurons"):
        simulate(model, loader, 4)
    with pytest.raises(ValueError, match="at least one batch"):
        simulate(to_if(model), [], 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_simulate_on_cuda_matches_cpu(rnl_batches):
    model, loader = rnl_batches
    cpu = simulate(to_if(model), loader, 16)
    gpu = simulate(to_if(model).cuda(), loader, 16)
    assert max(abs(a - b) for a, b in zip(cpu.acc_curve, gpu.acc_curve)) <= 100 / 40 + 1e-9
    assert gpu.synops == pytest.approx(cpu.synops, rel=1e-2)


class SharedPreActivation(nn.Module):
    """The pre-activation ``y`` feeds the neuron and a second branch: the neuron must not overwrite it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = RateNorm(scale_init=0.0)
        self.head = nn.Linear(4 * 8 * 8, 3)
        self.skip = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.head(torch.flatten(self.act(y), 1)) + self.skip(torch.flatten(y, 1))


def test_neurons_reuse_only_inputs_nothing_else_reads():
    torch.manual_seed(0)
    model = SharedPreActivation().eval()
    x = torch.randn(5, 1, 8, 8)
    snn = to_if(model, fold_bn=False)
    assert not snn.act.owns_input
    safe = to_if(model, fold_bn=False)
    for _, neuron in if_neurons(safe):
        neuron.owns_input = False
    for a, b in zip(run_steps(snn, x, 6), run_steps(safe, x, 6)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    vgg = build_model("vgg11", activation_factory("rnl"), num_classes=10, in_channels=3, image_size=32)
    assert all(neuron.owns_input for _, neuron in if_neurons(to_if(vgg)))
    owners = [name for name, neuron in if_neurons(to_if(vgg, static_input=True)) if neuron.owns_input]
    names = [name for name, _ in if_neurons(to_if(vgg))]
    assert owners == names[1:]  # all but the one fed by the cached first layer
