"""A compact VGG-style convolutional network for small images (MNIST-sized inputs).

Stages of [3x3 conv → batch norm → ReLU] x ``convs_per_stage`` followed by 2x2 max-pooling,
doubling the width each stage, then global average pooling, dropout and a linear head.
This is the layout of Simonyan & Zisserman (2014) with batch norm (Ioffe & Szegedy 2015),
sized so that it trains on two CPU cores in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepnet.models._registry import register_model

__all__ = ["ConvNet", "ConvNetConfig"]


@dataclass(frozen=True)
class ConvNetConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 2
    dropout: float = 0.2
    global_pool: bool = True  # False: flatten the last feature map (keeps where things are, as Keras's MNIST CNNs do)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Input ``(B, C, H, W)``; output logits ``(B, num_classes)``."""

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels, height, width_px = config.input_shape
        for stage, width in enumerate(config.widths):
            for _ in range(config.convs_per_stage):
                layers.append(conv_bn_relu(channels, width))
                channels = width
            if stage < len(config.widths) - 1 and min(height, width_px) >= 4:
                layers.append(nn.MaxPool2d(2))  # (B, width, H/2, W/2)
                height, width_px = height // 2, width_px // 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if config.global_pool else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.num_features = channels if config.global_pool else channels * height * width_px
        self.classifier = nn.Linear(self.num_features, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, widths[-1], h, w)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(features).flatten(1)))  # (B, C or C*h*w) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)


def _create_convnet(**kwargs) -> ConvNet:
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    kwargs["widths"] = tuple(kwargs["widths"])
    if not kwargs["widths"] or any(int(w) < 1 for w in kwargs["widths"]):
        raise ValueError(f"Received an invalid value for `widths`: expected positive integers. Received: widths={kwargs['widths']!r}")
    return ConvNet(ConvNetConfig(**kwargs))


@register_model(
    family="cnn", year=2015, input_kind="image",
    paper="Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015; "
          "with batch norm (Ioffe & Szegedy, ICML 2015)",
    tiny={"input_shape": (1, 12, 12), "num_classes": 10, "widths": (4, 8)},
)
def convnet(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
            widths: tuple[int, ...] = (32, 64, 128), convs_per_stage: int = 2, dropout: float = 0.2,
            global_pool: bool = True) -> ConvNet:
    """Compact VGG-style CNN with batch norm for small images."""
    return _create_convnet(input_shape=input_shape, num_classes=num_classes, widths=widths,
                           convs_per_stage=convs_per_stage, dropout=dropout, global_pool=global_pool)
