"""Layerwise L for QCFS / PASCAL: named profiles and the AL-metric policy.

A trial's ``qcfs.levels`` is one of

* a list with one L per activation layer (validated by :func:`snnconv.config.validate_level_list`);
* a profile name from :data:`PROFILES`, expanded for the model by :func:`profile_levels`;
* ``"al"``: the AL policy, :func:`levels_from_al` applied to the AL metric of each layer of the
  stage-1 model (``docs/methods.md`` §3.10);
* None: the uniform stage-1 L.

Every L is a power of two in {1, 2, 4, 8, 16} (the values PASCAL uses). This module imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: every L a layer may have: PASCAL's layerwise schedule chooses from these
LEVEL_CHOICES = (1, 2, 4, 8, 16)

#: the lists from PASCAL's code (section 3.8), for the models they were written for
PASCAL_LISTS: dict[str, list[int]] = {
    "vgg16": [8, 4, 4, 1, 4, 4, 1, 1, 1, 1, 1, 4, 8, 8, 8],
    "resnet18": [4, 4, 4, 1, 4, 4, 4, 1, 4, 1, 1, 1, 1, 1, 1, 1, 4],
}

#: named profiles (``base`` = the stage-1 L):
#: uniform: base everywhere; pascal: the paper's list (vgg16, resnet18 only);
#: halve-middle: base at both ends, base/2 on the middle third of the layers;
#: front-heavy: base, base/2, base/4 on the first, second, last third (early layers keep detail);
#: back-heavy: the mirror of front-heavy
PROFILES = ("uniform", "pascal", "halve-middle", "front-heavy", "back-heavy")

#: every string ``qcfs.levels`` accepts
LEVEL_POLICIES = PROFILES + ("al",)


def _halve(base: int, times: int) -> int:
    """``base`` halved ``times`` times, never below 1."""
    return max(1, base >> times)


def _third(index: int, count: int) -> int:
    """0, 1 or 2: which third of ``count`` layers ``index`` falls in (``count // 3`` per outer third)."""
    outer = count // 3
    if index < outer:
        return 0
    if index >= count - outer:
        return 2
    return 1


def check_base(base: int) -> None:
    """Refuse a base L outside {1, 2, 4, 8, 16}."""
    if base not in LEVEL_CHOICES:
        raise ValueError(f"base L must be one of {', '.join(map(str, LEVEL_CHOICES))}, got {base!r}")


def profile_levels(profile: str, model_name: str, num_layers: int, base: int) -> list[int]:
    """The per-layer L list of ``profile`` for ``num_layers`` activation layers of ``model_name``.

    >>> profile_levels("halve-middle", "small", 6, 8)
    [8, 8, 4, 4, 8, 8]
    >>> profile_levels("front-heavy", "small", 6, 8)
    [8, 8, 4, 4, 2, 2]
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown L profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be positive, got {num_layers!r}")
    if profile == "pascal":
        if model_name not in PASCAL_LISTS:
            raise ValueError(f"the 'pascal' L profile is defined for {', '.join(PASCAL_LISTS)} only, "
                             f"not {model_name!r}")
        levels = list(PASCAL_LISTS[model_name])
        if len(levels) != num_layers:
            raise ValueError(f"the 'pascal' list of {model_name} has {len(levels)} entries, "
                             f"the model has {num_layers} activation layers")
        return levels
    check_base(base)
    if profile == "uniform":
        return [base] * num_layers
    thirds = [_third(i, num_layers) for i in range(num_layers)]
    if profile == "halve-middle":
        return [_halve(base, 1 if third == 1 else 0) for third in thirds]
    if profile == "front-heavy":
        return [_halve(base, third) for third in thirds]
    return [_halve(base, 2 - third) for third in thirds]  # back-heavy


def levels_from_al(al_values: Sequence[float], thresholds: Sequence[float], base: int) -> list[int]:
    """The AL policy: a layer whose AL exceeds k of the ``thresholds`` gets ``base / 2**k`` (>= 1).

    A high AL means the layer's activations pile up in one histogram bin (mostly zeros), so it
    needs fewer levels. PASCAL's own thresholds are not public (section 3.10): the thresholds are
    a sweepable parameter (config ``qcfs.al_thresholds``, default [20, 30, 40]). A NaN AL (uniform
    histogram) keeps ``base``.

    >>> levels_from_al([41.4, 24.8, 6.3, float("nan")], [20.0, 30.0, 40.0], 8)
    [1, 4, 8, 8]
    """
    check_base(base)
    levels = []
    for value in al_values:
        exceeded = 0 if math.isnan(value) else sum(1 for threshold in thresholds if value > threshold)
        levels.append(_halve(base, exceeded))
    return levels
