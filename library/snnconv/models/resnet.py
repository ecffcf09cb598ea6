"""ResNet18/34 with average pooling and a CIFAR (3x3) or ImageNet (7x7) stem."""

from __future__ import annotations

from torch import nn

from ..layers import ActivationFactory

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; ``act_out(bn2(conv2(act_mid(bn1(conv1(x))))) + shortcut(x))``.

    ``shortcut`` is registered first, so that walking the modules in registration order meets
    each activation right after the weight layer feeding it (conv1 -> act_mid, conv2 -> act_out).
    """

    def __init__(self, in_channels: int, channels: int, stride: int, activation: ActivationFactory) -> None:
        super().__init__()
        self.shortcut: nn.Module
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )
        else:
            self.shortcut = nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act_mid = activation()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act_out = activation()

    def forward(self, x):
        out = self.act_mid(self.bn1(self.conv1(x)))
        return self.act_out(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet of BasicBlocks. ``stem="cifar"``: conv3x3; ``stem="imagenet"``: conv7x7/2 + avgpool3x3/2.

    Input ``[B, in_channels, H, W]``, output ``[B, num_classes]``.
    """

    def __init__(
        self,
        depth: str,
        activation: ActivationFactory,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), activation()
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                activation(), nn.AvgPool2d(3, stride=2, padding=1),
            )
        else:
            raise ValueError(f"ResNet stem must be 'cifar' or 'imagenet', got {stem!r}")
        stages: list[nn.Module] = []
        in_channels = 64
        for index, (count, channels) in enumerate(zip(BLOCKS[depth], (64, 128, 256, 512))):
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(in_channels, channels, stride, activation))
                in_channels = channels
        self.layers = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(512, num_classes)
        )

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))
