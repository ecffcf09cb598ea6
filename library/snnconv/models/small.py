"""A small CNN for the bundled digits data set (8x8 grey images) and other small inputs."""

from __future__ import annotations

from torch import nn

from ..layers import ActivationFactory


class SmallCNN(nn.Module):
    """conv32-conv32-pool-conv64-pool-fc128-fc, average pooling, BN after every conv.

    Input ``[B, in_channels, H, W]`` with H and W divisible by 4; output logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        activation: ActivationFactory,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"small CNN needs an image size divisible by 4, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), activation(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), activation(),
            nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), activation(),
            nn.AvgPool2d(2),
        )
        flat = 64 * (image_size // 4) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 128), activation(), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
