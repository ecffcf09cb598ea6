"""Trial configuration (``snnconv.config``): bad values refused with a clear message; YAML files,
malformed YAML, unknown keys."""

from __future__ import annotations

import pytest

from snnconv.config import ConfigError, TrialConfig, apply_overrides, from_dict, trial_config_from_yaml


@pytest.mark.parametrize("overrides, message", [
    ({"model": "alexnet"}, "model: unknown value 'alexnet'; allowed: small, vgg11"),
    ({"data.name": "svhn"}, "data.name: unknown value 'svhn'; allowed: digits"),
    ({"data.name": "cifar10"}, "data.data_dir: cifar10 needs a local data directory"),
    ({"data.name": "cifar10", "data.data_dir": "/nonexistent/cifar"}, "'/nonexistent/cifar' does not exist"),
    ({"stage1.lr": -0.1}, "stage1.lr: must be positive, got -0.1"),
    ({"rnl.lr": 0.0}, "rnl.lr: must be positive, got 0.0"),
    ({"stage1.epochs": "ten"}, "stage1.epochs: expected an integer, got 'ten'"),
    ({"qcfs.levels": [4, 4]}, "qcfs.levels: small has 4 activation layers but the list has 2 entries"),
    ({"qcfs.levels": [4, 4, 3, 4]}, "qcfs.levels[2] (features.9): L = 3 is not allowed"),
])
def test_bad_values_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError) as error:
        apply_overrides(TrialConfig(), overrides)
    assert message in str(error.value)


def test_yaml_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("model: small\nstage1:\n  epochs: 3\nqcfs:\n  levels: [8, 4, 2, 1]\n")
    config = trial_config_from_yaml(good)
    assert config.stage1.epochs == 3 and config.qcfs.levels == [8, 4, 2, 1]

    malformed = tmp_path / "bad.yaml"
    malformed.write_text("model: small\nstage1: [epochs: 3\n")
    with pytest.raises(ConfigError, match="malformed YAML in .*bad.yaml"):
        trial_config_from_yaml(malformed)

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("stage1:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown key stage1.'epoch'; allowed keys in stage1: epochs, optimizer"):
        trial_config_from_yaml(unknown)

    with pytest.raises(ConfigError, match="does not exist"):
        trial_config_from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict({"stage1": 3})
