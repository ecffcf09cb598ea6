"""VGG11/13/16/19 with average pooling, batch norm and a CIFAR or ImageNet head."""

from __future__ import annotations

from torch import nn

from ..layers import ActivationFactory

#: channels per conv, "P" = 2x2 average pool (max pooling does not convert to spikes)
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "P", 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"],
    "vgg13": [64, 64, "P", 128, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"],
    "vgg16": [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"],
    "vgg19": [64, 64, "P", 128, 128, "P", 256, 256, 256, 256, "P",
              512, 512, 512, 512, "P", 512, 512, 512, 512, "P"],
}


class VGG(nn.Module):
    """VGG features (conv3x3-BN-activation, average pools) and a three-layer classifier.

    ``head="cifar"``: global average pool to 1x1, then 512-4096-4096-classes (as QCFS and PASCAL).
    ``head="imagenet"``: adaptive average pool to 7x7, then 25088-4096-4096-classes.
    Input ``[B, in_channels, H, W]`` (H, W >= 32), output ``[B, num_classes]``.
    """

    def __init__(
        self,
        depth: str,
        activation: ActivationFactory,
        num_classes: int = 10,
        in_channels: int = 3,
        head: str = "cifar",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if head not in ("cifar", "imagenet"):
            raise ValueError(f"VGG head must be 'cifar' or 'imagenet', got {head!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in CONFIGS[depth]:
            if isinstance(item, str):  # "P", the only string in CONFIGS
                layers.append(nn.AvgPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), activation()]
                channels = item
        self.features = nn.Sequential(*layers)
        pooled = 1 if head == "cifar" else 7
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * pooled * pooled, 4096), activation(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), activation(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))
