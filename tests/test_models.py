"""The model zoo (``snnconv.models``): every model builds and runs on its input shape with each
activation, ImageNet variants on 224 x 224, activation layers in forward order with their fan-in, the
per-layer L list and its length check, configurable dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnconv.layers import QCFS, RateNorm, activation_factory
from snnconv.models import MODELS, activation_layers, build_model, get_levels, set_levels, weight_layers


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["relu", "rnl", "qcfs"])
def test_every_model_runs_on_its_cifar_or_digits_shape(name, kind):
    shape = (1, 8, 8) if name == "small" else (3, 32, 32)
    model = build_model(name, activation_factory(kind), num_classes=10, in_channels=shape[0], image_size=shape[1])
    model.eval()
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    kinds = {"relu": nn.ReLU, "rnl": RateNorm, "qcfs": QCFS}
    assert all(isinstance(layer.module, kinds[kind]) for layer in activation_layers(model))


@pytest.mark.parametrize("name", ["vgg16", "resnet34"])
def test_imagenet_variants_run_on_224(name):
    model = build_model(name, activation_factory("relu"), num_classes=1000, in_channels=3, image_size=224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    if name == "vgg16":
        assert model.classifier[1].in_features == 512 * 7 * 7
    else:
        assert model.stem[0].kernel_size == (7, 7)


def test_activation_layers_are_in_forward_order_with_fan_in():
    vgg = build_model("vgg16", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32)
    layers = activation_layers(vgg)
    assert len(layers) == 15  # 13 conv + 2 hidden FC, as PASCAL's VGG16 list
    assert [layer.fan_in for layer in layers[:4]] == [27, 576, 576, 1152]
    assert layers[-1].fan_in == 4096 and layers[-3].fan_in == 4608
    assert len(weight_layers(vgg)) == 16

    order: list[str] = []
    hooks = [layer.module.register_forward_hook(lambda m, i, o, n=layer.name: order.append(n)) for layer in layers]
    vgg.eval()(torch.randn(1, 3, 32, 32))
    assert order == [layer.name for layer in layers]
    for hook in hooks:
        hook.remove()

    resnet18 = build_model("resnet18", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32)
    names = [layer.name for layer in activation_layers(resnet18)]
    assert len(names) == 17 and names[0] == "stem.2"
    # the activation after a residual add is fed by conv2 (fan-in 9*C), not by the 1x1 shortcut
    block = {layer.name: layer for layer in activation_layers(resnet18)}["layers.2.act_out"]
    assert block.weight_name == "layers.2.conv2" and block.fan_in == 9 * 128
    resnet34 = build_model("resnet34", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32)
    assert len(activation_layers(resnet34)) == 33


def test_levels_list_sets_each_layer_and_wrong_length_is_refused():
    model = build_model("small", activation_factory("qcfs", levels=8), num_classes=10, in_channels=1,
                        image_size=8, levels=[1, 16, 2, 4])
    assert get_levels(model) == [1, 16, 2, 4]
    with pytest.raises(ValueError) as error:
        set_levels(model, [4, 4])
    message = str(error.value)
    assert "4 QCFS layers" in message and "features.2, features.5, features.9, classifier.2" in message


def test_dropout_is_configurable():
    model = build_model("vgg11", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32, dropout=0.2)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.2}
