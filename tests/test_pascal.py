"""PASCAL: the PASC-IF neuron (section 3.3, hand vectors of section 6) and the network-level
equivalence of the PASCAL SNN with the QCFS ANN (sections 3.4-3.7).

Network checks run in float64: in real arithmetic the spike path equals the ANN, and float64 keeps
the per-step sums of the spike path within ~1e-15 of the ANN's single sums, so spike counts agree
exactly and values agree to far below the documented bound of 1e-9.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch
from torch import nn

from snnconv.convert import to_pascal
from snnconv.layers import QCFS
from snnconv.models import BasicBlock, activation_layers, build_model
from snnconv.pascal import (
    compare_with_ann,
    correct,
    integrate,
    pasc_if,
    pasc_if_reference,
    quantise_count,
    spike_train,
    weight_layer_steps,
)

LEVELS = (1, 2, 4, 8, 16)
FLOAT64_BOUND = 1e-9


def exact_qcfs(z: Fraction, threshold: Fraction, levels: int) -> Fraction:
    """QCFS(z; lambda, L) in exact arithmetic (section 1.1)."""
    u = min(max(z / threshold, Fraction(0)), Fraction(1))
    return threshold * math.floor(u * levels + Fraction(1, 2)) / levels


# ---------------------------------------------------------------------------------------------
# neuron level: hand vectors of section 6


@pytest.mark.parametrize(
    "inputs, threshold, count_a, v_a, final, reverse, expected",
    [
        (["1.6", "-0.9"], 2, 1, "0.45", 1, 0, ["0.5", "0", "0", "0"]),
        (["2.0", "-1.8"], 2, 1, "-0.05", 0, 1, ["0", "0", "0", "0"]),
        (["0", "1.9"], 2, 1, "1.65", 4, 0, ["0.5", "0.5", "0.5", "0.5"]),
        (["-1.6", "0.9"], -2, 1, "-0.45", 1, 0, ["-0.5", "0", "0", "0"]),  # mirror: lambda = -2
    ],
)
def test_hand_vectors(inputs, threshold, count_a, v_a, final, reverse, expected):
    xs = [Fraction(x) for x in inputs]
    trace = pasc_if_reference(xs, Fraction(threshold), 4)
    assert trace.count_after_integrate == count_a
    assert trace.membrane_after_integrate == Fraction(v_a)
    assert trace.signed_count == final
    assert trace.reverse_spikes == reverse
    assert trace.spikes == [Fraction(s) for s in expected]
    assert sum(trace.spikes) == exact_qcfs(sum(xs), Fraction(threshold), 4)
    # the tensor neuron agrees (float64; these values are far from rounding boundaries)
    currents = torch.tensor([[float(x)] for x in xs], dtype=torch.float64)
    assert pasc_if(currents, float(threshold), 4).tolist() == [max(final, 0)]


def test_reverse_spike_is_needed():
    """[2.0, -1.8]: a plain IF (phase A only) keeps the early spike; PASC-IF retracts it."""
    xs = [Fraction(2), Fraction(-18, 10)]
    trace = pasc_if_reference(xs, Fraction(2), 4)
    assert trace.count_after_integrate == 1 and trace.count == 0
    assert exact_qcfs(sum(xs), Fraction(2), 4) == 0


def test_first_layer_hand_vector():
    """z = 0.7, lambda = 2, L = 4: the first layer emits [0.5, 0, 0, 0]."""
    snn = to_pascal(nn.Sequential(QCFS(4, 2.0)).double())
    run = snn.run_spikes(torch.full((1, 1), 0.7, dtype=torch.float64))
    assert run.counts["0"].tolist() == [[1]]
    assert spike_train(run.counts["0"], 4, 0.5, torch.float64)[:, 0, 0].tolist() == [0.5, 0, 0, 0]
    assert run.sums["0"].item() == 0.5


def test_spike_train_structure():
    counts = torch.tensor([0, 1, 3, 4])
    train = spike_train(counts, 4, 0.25, torch.float64)
    assert train.shape == (4, 4)  # exactly L steps
    assert ((train == 0) | (train == 0.25)).all()  # at most one spike (of amplitude q) per step
    fired = train != 0
    assert (fired[1:] <= fired[:-1]).all()  # front-loaded: no spike after a silent step
    assert fired.sum(0).tolist() == counts.tolist()


# ---------------------------------------------------------------------------------------------
# neuron level: random and adversarial sequences, exact arithmetic


def random_sequence(rng: random.Random, steps: int, scale: float, adversarial: bool) -> list[Fraction]:
    xs = [Fraction(rng.uniform(-scale, scale)) for _ in range(steps)]
    if adversarial:  # large positive early, large negative last (section 3.4 item 5)
        xs = [Fraction(abs(rng.uniform(scale, 3 * scale))) for _ in range(steps - 1)] + [
            Fraction(-rng.uniform(scale * (steps - 1), 3 * scale * steps))]
    return xs


def test_random_sequences_sum_to_qcfs_exactly():
    """For random T_prev, T, lambda of both signs and (adversarial) inputs: sum(out) = QCFS(sum(x))."""
    rng = random.Random(1)
    plain_if_failures = 0
    for case in range(3000):
        steps, levels = rng.choice((1, 2, 3, 4, 8, 16)), rng.choice((1, 2, 3, 4, 8, 16))
        threshold = Fraction(rng.uniform(0.1, 4)) * rng.choice((1, -1))
        xs = random_sequence(rng, max(steps, 2) if case % 5 == 0 else steps, rng.choice((0.1, 1, 5, 50)),
                             adversarial=case % 5 == 0)
        trace = pasc_if_reference(xs, threshold, levels)
        assert sum(trace.spikes) == exact_qcfs(sum(xs), threshold, levels), (xs, threshold, levels)
        assert trace.count <= levels and len(trace.spikes) == levels
        plain_if = min(trace.count_after_integrate, levels) * threshold / levels
        plain_if_failures += plain_if != exact_qcfs(sum(xs), threshold, levels)
    assert plain_if_failures > 0  # the corrective phase matters on these inputs


def test_vectorised_neuron_matches_step_by_step_on_boundaries():
    """Dyadic inputs make every float64 operation exact, and land often on rounding boundaries
    (v = q exactly, z = q/2 exactly): phase A, the closed-form phase B and the final count must
    equal the step-by-step reference bit for bit."""
    rng = random.Random(2)
    for _ in range(300):
        steps, levels = rng.choice(LEVELS), rng.choice(LEVELS)
        threshold = rng.choice((1.0, 2.0, 0.5, 4.0)) * rng.choice((1, -1))
        grid = abs(threshold) / levels / 4  # multiples of q/4
        sequences = [[grid * rng.randint(-12, 12) for _ in range(steps)] for _ in range(32)]
        currents = torch.tensor(sequences, dtype=torch.float64).T  # [P, neurons]
        counts = pasc_if(currents, threshold, levels)
        quantum = abs(threshold) / levels
        sign = 1 if threshold > 0 else -1
        count_a, membrane_a = integrate(sign * currents, quantum)
        signed = correct(count_a, membrane_a, quantum, max(steps, levels) - 1)
        for j, xs in enumerate(sequences):
            trace = pasc_if_reference([Fraction(x) for x in xs], Fraction(threshold), levels)
            assert counts[j].item() == trace.count
            assert count_a[j].item() == trace.count_after_integrate
            assert Fraction(membrane_a[j].item()) == sign * trace.membrane_after_integrate
            assert signed[j].item() == trace.signed_count


def test_vectorised_neuron_matches_reference_on_random_floats():
    rng = random.Random(3)
    torch.manual_seed(3)
    for _ in range(100):
        steps, levels = rng.choice(LEVELS), rng.choice(LEVELS)
        threshold = rng.uniform(0.2, 3) * rng.choice((1, -1))
        currents = torch.randn(steps, 64, dtype=torch.float64) * rng.choice((0.1, 1.0, 10.0))
        currents[-1, :16] = -currents[:-1, :16].abs().sum(0) * 1.3  # adversarial tail
        counts = pasc_if(currents, threshold, levels)
        for j in range(64):
            xs = [Fraction(x) for x in currents[:, j].tolist()]
            assert counts[j].item() == pasc_if_reference(xs, Fraction(threshold), levels).count


def test_neuron_refuses_bad_parameters():
    with pytest.raises(ValueError, match="threshold"):
        pasc_if(torch.zeros(2, 3), 0.0, 4)
    with pytest.raises(ValueError, match="levels"):
        pasc_if_reference([1.0], 1.0, 0)


# ---------------------------------------------------------------------------------------------
# network level: random VGG-style and ResNet-style networks


def randomise_(model: nn.Module, gen: torch.Generator, negative_fraction: float = 0.2) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, conv/linear biases and thresholds (both signs)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(size, generator=gen) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(size, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(size, generator=gen) * 0.8 - 0.2)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) * 0.4 - 0.2)
            elif isinstance(module, QCFS):
                sign = -1.0 if torch.rand((), generator=gen) < negative_fraction else 1.0
                module.threshold.fill_(sign * (0.3 + 2.7 * torch.rand((), generator=gen).item()))
    return model.eval()


def random_levels(rng: random.Random, count: int) -> list[int]:
    levels = [rng.choice(LEVELS) for _ in range(count)]
    if count >= 3 and rng.random() < 0.3:  # mixed neighbours such as 1 -> 16 -> 2
        start = rng.randrange(count - 2)
        levels[start:start + 3] = [1, 16, 2]
    return levels


def random_vgg(rng: random.Random) -> nn.Module:
    layers: list[nn.Module] = []
    channels, size = 3, 8
    for _ in range(rng.randint(1, 4)):
        width = rng.randint(2, 6)
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=rng.random() < 0.5), nn.BatchNorm2d(width),
                   QCFS(1, 1.0)]
        channels = width
        if size > 2 and rng.random() < 0.4:
            layers.append(nn.AvgPool2d(2))
            size //= 2
    if rng.random() < 0.5:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = channels
    else:
        layers.append(nn.Flatten())
        features = channels * size * size
    for _ in range(rng.randint(0, 2)):
        width = rng.randint(3, 12)
        layers += [nn.Linear(features, width), QCFS(1, 1.0), nn.Dropout(0.5)]
        features = width
    layers.append(nn.Linear(features, 5))
    return nn.Sequential(*layers)


def random_resnet(rng: random.Random) -> nn.Module:
    width = rng.randint(2, 5)
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), QCFS(1, 1.0)]
    for _ in range(rng.randint(1, 3)):
        out = rng.choice((width, rng.randint(2, 6)))
        layers.append(BasicBlock(width, out, rng.choice((1, 2)) if out != width else 1, lambda: QCFS(1, 1.0)))
        width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5)]
    return nn.Sequential(*layers)


def set_random_levels(model: nn.Module, rng: random.Random) -> list[int]:
    qcfs = [layer.module for layer in activation_layers(model)]
    levels = random_levels(rng, len(qcfs))
    for module, level in zip(qcfs, levels):
        module.levels = level
    return levels


def check_equivalence(model: nn.Module, images: torch.Tensor) -> None:
    snn = to_pascal(model)
    run = snn.run_spikes(images)
    report = compare_with_ann(model, run, images)
    assert report.mismatches == 0, {name: layer.mismatches for name, layer in report.layers.items()}
    assert report.max_abs_err <= FLOAT64_BOUND, report
    assert set(report.layers) == {layer.name for layer in activation_layers(model)}
    # exact inference: the QCFS ANN bit for bit, with the same integer counts as the spike path
    assert torch.equal(snn(images), model(images))
    exact_counts = snn.counts(images)
    assert all(torch.equal(exact_counts[name], run.counts[name]) for name in run.counts)
    assert all(int(counts.max()) <= level for counts, level in zip(run.counts.values(), snn.levels))


@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_random_networks_equal_qcfs_ann(family):
    """60 random networks per family (120 in all) with random layerwise L lists."""
    rng = random.Random(10 if family == "vgg" else 20)
    gen = torch.Generator().manual_seed(10 if family == "vgg" else 20)
    unequal_blocks = 0
    for _ in range(60):
        model = random_vgg(rng) if family == "vgg" else random_resnet(rng)
        levels = set_random_levels(model, rng)
        randomise_(model, gen).double()
        images = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64) * 1.5
        check_equivalence(model, images)
        unequal_blocks += family == "resnet" and any(
            a != b for a, b in zip(levels[::2], levels[1::2]))
    assert family == "vgg" or unequal_blocks > 10  # the shortcut-sum path was exercised


def test_resnet_readme_list_with_unequal_steps():
    """ResNet-18 with the README's list [4,2,4,1,...] (T_in != T_mid in most blocks)."""
    torch.manual_seed(0)
    model = build_model("resnet18", lambda: QCFS(4, 1.0), num_classes=10, in_channels=3, image_size=8,
                        levels=[4, 2, 4, 1, 4, 2, 2, 1, 4, 2, 2, 1, 4, 1, 1, 1, 4])
    randomise_(model, torch.Generator().manual_seed(0), negative_fraction=0.0).double()
    check_equivalence(model, torch.randn(2, 3, 8, 8, dtype=torch.float64))


def test_skipping_the_bias_division_breaks_equivalence():
    """Negative control: without dividing biases and BN shifts by T_in (section 5 item 3) it fails."""
    rng, gen = random.Random(5), torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(8, 1.0),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(4, 1.0),
                          nn.Flatten(), nn.Linear(256, 5))
    randomise_(model, gen, negative_fraction=0.0).double()
    images = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64)
    report = compare_with_ann(model, to_pascal(model).run_spikes(images, divide_constants=False), images)
    assert report.mismatches > 0 and report.max_abs_err > 0.1
    del rng


def test_float32_exact_inference_is_bitwise_the_ann():
    torch.manual_seed(1)
    model = build_model("small", lambda: QCFS(4, 1.0), num_classes=10, in_channels=1, image_size=8,
                        levels=[8, 1, 16, 2])
    randomise_(model, torch.Generator().manual_seed(1))
    images = torch.randn(16, 1, 8, 8)
    assert torch.equal(to_pascal(model)(images), model(images))


def test_to_pascal_copies_and_stays_in_eval():
    model = randomise_(build_model("small", lambda: QCFS(4, 1.0), num_classes=10, in_channels=1, image_size=8),
                       torch.Generator().manual_seed(2))
    snn = to_pascal(model)
    snn.train()
    assert not snn.training and not snn.network.training
    with torch.no_grad():
        model.features[2].threshold.fill_(5.0)
    assert snn.neurons[0].threshold != 5.0


def test_synops_count_spikes_times_fanout():
    """One conv after the first neuron: synops = sum over input units of count x fan-out."""
    conv = nn.Conv2d(1, 3, 3, padding=1, bias=False)
    model = nn.Sequential(QCFS(4, 1.0), conv, nn.BatchNorm2d(3), QCFS(2, 1.0), nn.Flatten(), nn.Linear(48, 2))
    randomise_(model, torch.Generator().manual_seed(3), negative_fraction=0.0).double()
    images = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    run = to_pascal(model).run_spikes(images)
    # fan-out of a 3x3 "same" conv on 4x4: 3 channels x (valid 3x3 neighbours) per position
    neighbours = torch.tensor([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]], dtype=torch.float64)
    expected = (run.counts["0"].double() * 3 * neighbours).sum() + run.counts["3"].sum() * 2
    assert run.synops == pytest.approx(float(expected))
    assert run.macs == 0.0  # the first layer here is the neuron itself (no analog weight layer)


def test_first_conv_counts_dense_macs():
    model = build_model("small", lambda: QCFS(4, 1.0), num_classes=10, in_channels=1, image_size=8)
    run = to_pascal(model.eval()).run_spikes(torch.randn(3, 1, 8, 8))
    assert run.macs == 3 * (32 * 8 * 8) * 9


def test_unsupported_layers_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'1'.*max pooling"):
        to_pascal(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), QCFS(2, 1.0)))
    with pytest.raises(ValueError, match=r"'1'.*ReLU"):
        to_pascal(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), QCFS(2, 1.0)))
    with pytest.raises(ValueError, match="no QCFS"):
        to_pascal(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match=r"'2'.*threshold"):
        to_pascal(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), QCFS(2, 0.0)))


def test_weight_layer_steps_follow_the_graph():
    model = build_model("resnet18", lambda: QCFS(4, 1.0), num_classes=10, in_channels=3, image_size=8,
                        levels=list(range(1, 18)))
    steps = weight_layer_steps(model)
    assert steps["stem.0"] == 1
    assert steps["layers.2.conv1"] == 6 and steps["layers.2.conv2"] == 7  # block 2: act_mid 6, act_out 7
    assert steps["layers.2.shortcut.0"] == 7  # the shortcut feeds the block's output neuron
    assert steps["head.3"] is None  # read-out


def test_quantise_count_is_the_qcfs_layer():
    layer = QCFS(4, 2.0)
    z = torch.linspace(-1, 3, 401)
    assert torch.equal(quantise_count(z, layer.threshold, 4) / 4 * layer.threshold, layer(z))


def test_evaluate_pascal_over_a_loader_in_chunks():
    from snnconv.data import TensorLoader
    from snnconv.pascal import evaluate_pascal
    from snnconv.train import evaluate

    gen = torch.Generator().manual_seed(7)
    model = randomise_(build_model("small", lambda: QCFS(4, 1.0), num_classes=10, in_channels=1, image_size=8,
                                   levels=[2, 8, 1, 4]), gen, negative_fraction=0.0)
    images, labels = torch.randn(20, 1, 8, 8, generator=gen), torch.randint(0, 10, (20,), generator=gen)
    loader = TensorLoader(images, labels, batch_size=8)
    result = evaluate_pascal(model, loader, "cpu", chunk=3)
    ann_accuracy = evaluate(model.double(), TensorLoader(images.double(), labels, batch_size=8))
    assert result.images == 20 and result.accuracy == ann_accuracy
    ann = model.double().eval()
    with torch.no_grad():
        assert torch.equal(result.image_correct, ann(images.double()).argmax(1) == labels)  # image by image
    assert result.equivalence.mismatches == 0 and result.equivalence.max_abs_err <= FLOAT64_BOUND
    whole = to_pascal(model).run_spikes(images.double())
    assert result.synops == pytest.approx(whole.synops / 20) and result.macs == pytest.approx(whole.macs / 20)
    for name, counts in whole.counts.items():
        assert result.spikes_per_neuron[name] == pytest.approx(counts.double().mean().item())
