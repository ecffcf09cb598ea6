"""A LeNet-5-class CNN for 28x28 grey images (MNIST, Fashion-MNIST), built to convert to spikes."""

from __future__ import annotations

from torch import nn

from ..layers import ActivationFactory


class LeNet5(nn.Module):
    """LeNet-5's layout (conv 5x5, pool, conv 5x5, pool, three fully connected layers) with 16 and 32
    channels instead of 6 and 16, batch norm after each conv, and average pooling (max pooling does not
    convert to spikes). About 1.8 M multiply-accumulates per 28x28 image: small enough that a CPU simulates
    the SNN over MNIST's 15,000 validation and test images for 32 steps in about half a minute.

    Shapes for a ``[B, 1, 28, 28]`` input::

        conv 5x5, 16, padding 2 - BN - act   [B, 16, 28, 28]
        average pool 2                       [B, 16, 14, 14]
        conv 5x5, 32 - BN - act              [B, 32, 10, 10]
        average pool 2                       [B, 32, 5, 5]
        flatten - fc 256 - act - dropout     [B, 800] -> [B, 256]
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
            nn.Conv2d(in_channels, 16, 5, padding=2), nn.BatchNorm2d(16), activation(),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 5), nn.BatchNorm2d(32), activation(),
            nn.AvgPool2d(2),
        )
        side = (image_size // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * side * side, 256), activation(), nn.Dropout(dropout),
            nn.Linear(256, 84), activation(), nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
