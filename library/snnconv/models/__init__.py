"""Model registry: build any model with an activation factory and inspect its layers.

>>> from snnconv.layers import activation_factory
>>> model = build_model("small", activation_factory("qcfs", levels=4), num_classes=10, in_channels=1, image_size=8)
>>> [layer.name for layer in activation_layers(model)][:2]
['features.2', 'features.5']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..layers import QCFS, ActivationFactory, check_levels_value, is_activation
from .lenet import LeNet5
from .resnet import BasicBlock, ResNet
from .small import SmallCNN
from .vgg import VGG

#: model names accepted by :func:`build_model`
MODELS = ("small", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "lenet5")

#: default dropout of each family (configurable per trial)
DEFAULT_DROPOUT = {"small": 0.0, "lenet5": 0.0, "vgg": 0.5, "resnet": 0.0}


def build_model(
    name: str,
    activation: ActivationFactory,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    dropout: float | None = None,
    levels: Sequence[int] | None = None,
) -> nn.Module:
    """Build model ``name`` with activations from ``activation``.

    ``lenet5`` is for 28x28 grey images (MNIST, Fashion-MNIST; any side >= 12 works).
    The head (VGG) or stem (ResNet) follows the input: ``image_size >= 64`` gets the ImageNet
    variant, smaller inputs the CIFAR one. ``levels`` sets a per-layer QCFS L list
    (see :func:`set_levels`).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    large = image_size >= 64
    model: nn.Module
    if name == "small":
        model = SmallCNN(activation, num_classes, in_channels, image_size,
                         DEFAULT_DROPOUT["small"] if dropout is None else dropout)
    elif name == "lenet5":
        model = LeNet5(activation, num_classes, in_channels, image_size,
                       DEFAULT_DROPOUT["lenet5"] if dropout is None else dropout)
    elif name.startswith("vgg"):
        model = VGG(name, activation, num_classes, in_channels, "imagenet" if large else "cifar",
                    DEFAULT_DROPOUT["vgg"] if dropout is None else dropout)
    else:
        model = ResNet(name, activation, num_classes, in_channels, "imagenet" if large else "cifar",
                       DEFAULT_DROPOUT["resnet"] if dropout is None else dropout)
    if levels is not None:
        set_levels(model, levels)
    return model


@dataclass(frozen=True)
class LayerInfo:
    """One activation or weight layer of a model, in forward order.

    ``fan_in`` is the number of inputs of one output unit of the weight layer
    (``k*k*C_in`` for a conv, ``in_features`` for a linear layer). For an activation it is the
    fan-in of the weight layer that feeds it (``weight_name``).
    """

    name: str
    module: nn.Module
    fan_in: int
    weight_name: str


def fan_in(module: nn.Module) -> int:
    """Inputs per output unit of a Conv2d (k_h*k_w*C_in/groups) or Linear (in_features)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return kh * kw * module.in_channels // module.groups
    if isinstance(module, nn.Linear):
        return module.in_features
    raise TypeError(f"{type(module).__name__} is not a weight layer")


def weight_layers(model: nn.Module) -> list[LayerInfo]:
    """Every Conv2d and Linear layer, in forward order (ResNet shortcuts before their block)."""
    return [
        LayerInfo(name, module, fan_in(module), name)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]


def activation_layers(model: nn.Module) -> list[LayerInfo]:
    """The activation modules in forward order, each with the weight layer feeding it."""
    layers: list[LayerInfo] = []
    last_weight: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last_weight = (name, module)
        elif is_activation(module):
            if last_weight is None:
                raise ValueError(f"activation {name!r} has no weight layer before it")
            layers.append(LayerInfo(name, module, fan_in(last_weight[1]), last_weight[0]))
    return layers


def set_levels(model: nn.Module, levels: Sequence[int]) -> None:
    """Give each QCFS layer its own L, in forward order; refuses a list of the wrong length."""
    qcfs = [(layer.name, layer.module) for layer in activation_layers(model) if isinstance(layer.module, QCFS)]
    if not qcfs:
        raise ValueError("set_levels needs a model built with QCFS activations")
    levels = list(levels)
    if len(levels) != len(qcfs):
        names = ", ".join(name for name, _ in qcfs)
        raise ValueError(
            f"levels has {len(levels)} entries but the model has {len(qcfs)} QCFS layers; "
            f"expected one L per layer, in this order: {names}"
        )
    for (_, module), value in zip(qcfs, levels):
        module.levels = check_levels_value(value)


def get_levels(model: nn.Module) -> list[int]:
    """The per-layer L of a QCFS model, in forward order."""
    return [layer.module.levels for layer in activation_layers(model) if isinstance(layer.module, QCFS)]


__all__ = [
    "MODELS", "BasicBlock", "LayerInfo", "LeNet5", "ResNet", "SmallCNN", "VGG", "activation_layers",
    "build_model", "fan_in", "get_levels", "set_levels", "weight_layers",
]
