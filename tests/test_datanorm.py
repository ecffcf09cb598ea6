"""snnconv.methods.datanorm: data-based normalisation, the classic baseline. Its thresholds are the
percentiles of each layer's positive activations (checked against numpy on activations computed layer by
layer here, not through the method's hooks), its SNN approaches the clipped ANN, and a trial runs end to
end with the operating point chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from snnconv.config import ConfigError, TrialConfig, apply_overrides
from snnconv.convert import to_if
from snnconv.layers import ClippedReLU
from snnconv.methods.datanorm import clip_at, layer_thresholds, percentile_of
from snnconv.pipeline import run_trial
from snnconv.simulate import simulate


def test_percentiles_interpolate_between_ranks_as_the_docs_say():
    # docs/methods.md §8's worked example: positive activations 0.5, 1, 2, 4
    values = torch.tensor([4.0, 0.5, 2.0, 1.0])
    assert percentile_of(values, 100.0) == 4.0  # Diehl's max norm
    assert percentile_of(values, 50.0) == pytest.approx(1.5)  # position 1.5: halfway between 1 and 2
    assert percentile_of(values, 99.9) == pytest.approx(3.994)  # position 2.997: 2 + 0.997 * (4 - 2)
    large = torch.rand(2**24 + 10, generator=torch.Generator().manual_seed(0))  # beyond torch.quantile's limit
    assert percentile_of(large, 99.99) == pytest.approx(float(np.percentile(large.numpy().astype(np.float64), 99.99)),
                                                        rel=1e-6)
    with pytest.raises(ValueError, match="no values"):
        percentile_of(torch.empty(0), 50.0)


class TwoLayerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 8)
        self.relu2 = nn.ReLU()
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu2(self.fc(self.flatten(self.pool(self.relu1(self.conv(x)))))))


@pytest.mark.parametrize("percentile", [100.0, 99.9, 99.99, 50.0])
def test_thresholds_are_the_percentiles_of_the_positive_activations(percentile):
    torch.manual_seed(0)
    model = TwoLayerNet().eval()
    batches = [torch.randn(16, 1, 8, 8) for _ in range(3)]
    thresholds = layer_thresholds(model, batches, percentile)
    # independently: each layer's output computed by hand, its positive values, numpy's percentile
    with torch.no_grad():
        first = [torch.relu(model.conv(images)) for images in batches]
        second = [torch.relu(model.fc(model.pool(a).flatten(1))) for a in first]
    for name, outputs in (("relu1", first), ("relu2", second)):
        values = np.concatenate([a.numpy().ravel() for a in outputs]).astype(np.float64)
        expected = np.percentile(values[values > 0], percentile)
        assert thresholds[name] == pytest.approx(expected, rel=1e-6), name
    assert thresholds["relu1"] <= max(float(a.max()) for a in first)


def test_the_clipped_network_is_what_the_snn_approaches():
    torch.manual_seed(1)
    model = TwoLayerNet().eval()
    images = torch.randn(32, 1, 8, 8)
    thresholds = layer_thresholds(model, [images], 99.0)
    clipped = clip_at(model, thresholds)
    assert isinstance(clipped.relu1, ClippedReLU) and isinstance(model.relu1, nn.ReLU)  # a copy; the ANN is kept
    with torch.no_grad():
        assert float(clipped.relu1(torch.tensor([1e6]))) == pytest.approx(thresholds["relu1"])
        logits = clipped(images)
    snn = to_if(clipped, v_init="zero")
    labels = logits.argmax(1)
    result = simulate(snn, [(images, labels)], 256, "cpu")
    assert result.acc_curve[-1] >= 90.0  # after 256 steps the SNN agrees with its clipped ANN on most images
    assert result.firing_rates["relu1"] <= 1.0


def test_a_layer_that_never_fires_is_refused_with_its_name():
    model = TwoLayerNet().eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(-1.0)
    with pytest.raises(ValueError, match="'relu2' gave no positive activation"):
        layer_thresholds(model, [torch.randn(4, 1, 8, 8)], 99.9)


def test_bad_settings_are_refused_before_any_work():
    for key, value, message in (("datanorm.percentile", 0.0, "in \\(0, 100\\]"),
                                ("datanorm.calibration_batches", 0, "must be positive"),
                                ("datanorm.v_init", "full", "allowed: zero, half")):
        with pytest.raises(ConfigError, match=f"{key}: .*{message}"):
            apply_overrides(TrialConfig(), {key: value})


def test_a_datanorm_trial_runs_end_to_end(digits_config, one_thread):
    config = apply_overrides(digits_config, {"method": "datanorm", "stage1.epochs": 4, "datanorm.t_max": 32,
                                             "datanorm.latency_tolerance": 2.0, "datanorm.calibration_batches": 2})
    result = run_trial(config)
    assert result.method == "datanorm" and len(result.curves["snn_acc_t"]) == 32
    point = result.operating_point
    t_op = int(point.t_op)
    # the operating point is read off the validation curve and reported on the test curve at the same step
    assert point.val_acc_op == result.curves["val_snn_acc_t"][t_op - 1]
    assert point.acc_op == result.curves["snn_acc_t"][t_op - 1]
    assert [row["name"] for row in result.layers] == ["features.2", "features.5", "features.8", "classifier.2"] \
        or len(result.layers) >= 2
    assert all(row["threshold"] > 0 for row in result.layers)
    assert result.extra_metrics["min_threshold"] == min(row["threshold"] for row in result.layers)
    assert result.ann_acc > 80 and 0 < result.omega < 10 and result.synops > 0
    assert result.model_metadata["snn"] == "if" and result.model_metadata["method"] == "datanorm"
    # a second trial with another percentile reuses the same stage-1 ReLU network (the cache key ignores p)
    again = run_trial(apply_overrides(config, {"datanorm.percentile": 100.0}))
    assert again.stage1_cache_hit and again.stage1_key == result.stage1_key
    assert again.extra_metrics["max_threshold"] >= result.extra_metrics["max_threshold"]
