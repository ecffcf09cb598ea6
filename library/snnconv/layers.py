"""Trainable activations that convert to spiking neurons.

* :class:`RateNorm` - the Rate Norm Layer of RNL+RIL (Ding et al., IJCAI 2021).
* :class:`QCFS` - quantisation-clip-floor-shift (Bu et al., ICLR 2022), used by PASCAL.
* :class:`ClippedReLU` - a ReLU clipped at a fixed threshold (data-based normalisation).

Models never hard-code an activation: they take a factory (a zero-argument callable returning a
fresh module, see :func:`activation_factory`), so the same architecture is built with ReLU,
RateNorm or QCFS. Formulas: ``docs/methods.md`` §1.1 (QCFS) and §2.2 (Rate Norm).

Both compute in float32 inside an autocast region (:func:`full_precision`): a bfloat16 input is
cast up and autocast is off for their own arithmetic, so training under autocast clips and floors
at the same boundaries as evaluation in float32 and as PASCAL. They return float32 there; the next
conv or linear layer casts it down again as autocast does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

ActivationFactory = Callable[[], nn.Module]

#: the activations a model can be built with (name -> module class)
ACTIVATIONS = ("relu", "rnl", "qcfs")

#: float types too coarse to clip and quantise in: an activation given one computes in float32
REDUCED_PRECISION = (torch.bfloat16, torch.float16)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 when it is bfloat16 or float16; any other tensor unchanged (float64 stays)."""
    return x.float() if x.dtype in REDUCED_PRECISION else x


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context turning autocast off on ``device_type`` while autocast is on there; a no-op
    context otherwise (also on devices without autocast, such as ``meta``)."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class RateNorm(nn.Module):
    """Rate Norm Layer: ``clamp(relu(x) / theta, 0, 1)`` with ``theta = running_max * p + eps``.

    ``p`` is ``sigmoid(scale)`` (``scale_mode="sigmoid"``, the authors' choice) or ``|scale|``
    (``scale_mode="abs"``), where ``scale`` is a raw trainable scalar (init 10, so p ~ 1).
    While training and not :attr:`lock_max`, the running max is updated *before* normalising,
    ``running_max <- (1 - momentum) * running_max + momentum * max(relu(x))`` over the whole
    batch tensor, with no gradient. Output has the input's shape, values in [0, 1] (firing rates),
    float32 for a bfloat16 / float16 input (computed in float32, see :func:`full_precision`).
    """

    running_max: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(
        self,
        scale_init: float = 10.0,
        scale_mode: str = "sigmoid",
        momentum: float = 0.1,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if scale_mode not in ("sigmoid", "abs"):
            raise ValueError(f"scale_mode must be 'sigmoid' or 'abs', got {scale_mode!r}")
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))
        self.register_buffer("running_max", torch.tensor(1.0))
        self.scale_mode = scale_mode
        self.momentum = momentum
        self.eps = eps
        self.lock_max = False

    def p(self) -> torch.Tensor:
        """The threshold scale p in (0, 1] (a 0-d tensor, differentiable in ``scale``)."""
        return torch.sigmoid(self.scale) if self.scale_mode == "sigmoid" else self.scale.abs()

    def threshold(self) -> torch.Tensor:
        """theta = running_max * p + eps (a 0-d tensor; the IF threshold after conversion)."""
        return self.running_max * self.p() + self.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_off(x.device.type):
            positive = torch.relu(full_precision(x))
            if self.training and not self.lock_max:
                with torch.no_grad():
                    batch_max = positive.max().to(self.running_max.dtype)
                    self.running_max.mul_(1.0 - self.momentum).add_(self.momentum * batch_max)
            return torch.clamp(positive / self.threshold(), 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"scale_mode={self.scale_mode}, momentum={self.momentum}, lock_max={self.lock_max}"


class ClippedReLU(nn.Module):
    """``clamp(x, 0, threshold)``: a ReLU clipped at a fixed threshold.

    Data-based normalisation (``snnconv.methods.datanorm``) puts one in place of each ReLU of a trained
    ANN, with the p-th percentile of that layer's activations on training images as ``threshold``; it
    converts to an IF neuron with that threshold and spike amplitude (:func:`snnconv.convert.to_if`).
    ``threshold`` is a buffer (a 0-d float32 tensor), not trained. Computes in float32 like the others.
    """

    threshold: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, threshold: float) -> None:
        super().__init__()
        if not threshold > 0:
            raise ValueError(f"a clipped ReLU needs a positive threshold, got {threshold!r}")
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_off(x.device.type):
            return torch.minimum(torch.relu(full_precision(x)), self.threshold)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold.item():.6g}"


class _FloorSTE(torch.autograd.Function):
    """floor() whose backward is the identity (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` in the forward pass, identity gradient in the backward pass."""
    return _FloorSTE.apply(x)


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift activation.

    ``a = lambda * floor(clamp(z / lambda, 0, 1) * L + 0.5) / L``: ``levels`` = L quantisation
    steps (the SNN's time steps under PASCAL), ``threshold`` = lambda, trainable, one scalar per
    layer (QCFS initialises it to 8.0, PASCAL to 1.0). Outputs lie in {0, lambda/L, ..., lambda};
    the floor has a straight-through gradient. Operation order as in the QCFS "new" repository
    and PASCAL: divide, clamp, floor, multiply. A bfloat16 / float16 input is quantised in float32
    and gives float32 (:func:`full_precision`), so the levels are those of evaluation and PASCAL.
    """

    def __init__(self, levels: int = 8, threshold: float = 8.0) -> None:
        super().__init__()
        self.levels = check_levels_value(levels)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        levels = self.levels
        with autocast_off(z.device.type):
            u = torch.clamp(full_precision(z) / self.threshold, 0.0, 1.0)
            return floor_ste(u * levels + 0.5) / levels * self.threshold

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def check_levels_value(levels: int) -> int:
    """Return ``levels`` as an int, refusing anything that is not a positive integer."""
    if isinstance(levels, bool) or int(levels) != levels or int(levels) < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    return int(levels)


def activation_factory(
    kind: str,
    *,
    levels: int = 8,
    threshold: float = 8.0,
    scale_init: float | None = None,
    scale_mode: str = "sigmoid",
) -> ActivationFactory:
    """A zero-argument callable that builds one fresh activation module of ``kind``.

    ``kind`` is ``"relu"``, ``"rnl"`` (uses ``scale_init``, ``scale_mode``) or ``"qcfs"`` (uses
    ``levels``, ``threshold``; per-layer levels are set afterwards with
    :func:`snnconv.models.set_levels`).
    """
    if kind == "relu":
        return lambda: nn.ReLU(inplace=False)
    if kind == "rnl":
        # unset: p ~ 1 (the authors' stage 1): sigmoid(10) = 0.99995, or |1| = 1 exactly
        raw = (10.0 if scale_mode == "sigmoid" else 1.0) if scale_init is None else scale_init
        return lambda: RateNorm(scale_init=raw, scale_mode=scale_mode)
    if kind == "qcfs":
        check_levels_value(levels)
        return lambda: QCFS(levels=levels, threshold=threshold)
    raise ValueError(f"unknown activation {kind!r}; expected one of {', '.join(ACTIVATIONS)}")


def is_activation(module: nn.Module) -> bool:
    """True for the modules a model exposes as its activation layers."""
    return isinstance(module, (nn.ReLU, ClippedReLU, RateNorm, QCFS))


# ---------------------------------------------------------------------------------------------
# Rate Norm helpers for stage 2 (section 2.5): scale sharing, scale init, locking the running max


def rate_norm_layers(model: nn.Module) -> list[tuple[str, RateNorm]]:
    """Every :class:`RateNorm` of ``model`` as ``(qualified name, module)``, in registration order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, RateNorm)]


def _require_rate_norm(model: nn.Module) -> list[tuple[str, RateNorm]]:
    layers = rate_norm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no RateNorm layer; build it with activation 'rnl'")
    return layers


def share_scale(model: nn.Module, scale_init: float) -> nn.Parameter:
    """Give every RateNorm of ``model`` one new shared raw scale parameter holding ``scale_init``.

    As the authors' ``--sharescale``: afterwards ``model.parameters()`` yields the scale once and
    one optimiser step moves p of every layer together. Returns the shared parameter (0-d, on the
    device of the first layer's old scale).
    """
    layers = _require_rate_norm(model)
    old = layers[0][1].scale
    shared = nn.Parameter(torch.tensor(float(scale_init), dtype=old.dtype, device=old.device))
    for _, module in layers:
        module.scale = shared
    return shared


def set_scale(model: nn.Module, scale_init: float) -> list[nn.Parameter]:
    """Give every RateNorm its own new raw scale parameter holding ``scale_init`` (unshared)."""
    layers = _require_rate_norm(model)
    for _, module in layers:
        old = module.scale
        module.scale = nn.Parameter(torch.tensor(float(scale_init), dtype=old.dtype, device=old.device))
    return [module.scale for _, module in layers]


def scale_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The distinct raw scale parameters of the RateNorm layers (one when shared)."""
    unique: dict[int, nn.Parameter] = {}
    for _, module in _require_rate_norm(model):
        unique.setdefault(id(module.scale), module.scale)
    return list(unique.values())


def lock_running_max(model: nn.Module, locked: bool = True) -> None:
    """Freeze (or unfreeze) the running max of every RateNorm, even in train mode."""
    for _, module in _require_rate_norm(model):
        module.lock_max = locked
