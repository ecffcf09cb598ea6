"""A LeNet-5-class CNN for 28x28 grey images (MNIST, Fashion-MNIST), built to convert to spikes."""

from __future__ import annotations

from torch import nn

from ..layers import ActivationFactory


class LeNet5(nn.Module):
    """LeNet-5's layout, widened, with batch norm after each conv and average pooling (max pooling
    does not convert to spikes).

    Shapes for a ``[B, 1, 28, 28]`` input::

        conv 5x5, 32, padding 2 - BN - act   [B, 32, 28, 28]
        average pool 2                       [B, 32, 14, 14]
        conv 5x5, 64 - BN - act              [B, 64, 10, 10]
        average pool 2                       [B, 64, 5, 5]
        flatten - fc 256 - act - dropout     [B, 1600] -> [B, 256]
        fc 84 - act - dropout                [B, 84]
        fc num_classes                       [B, num_classes] (logits)

    Any ``image_size`` of 12 or more works (the flattened width follows it); four activation layers.
    """

    def __init__(
        self,
        activation: ActivationFactory,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size < 12:
            raise ValueError(f"lenet5 needs images of at least 12x12 pixels, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.BatchNorm2d(32), activation(),
            nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), activation(),
            nn.AvgPool2d(2),
        )
        side = (image_size // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 256), activation(), nn.Dropout(dropout),
            nn.Linear(256, 84), activation(), nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
