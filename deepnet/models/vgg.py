"""VGG (Simonyan & Zisserman, ICLR 2015): configurations A, B, D and E of the paper's
Table 1, i.e. VGG-11, -13, -16 and -19, with and without batch normalisation.

Stacks of 3x3 convolutions in five stages of 64, 128, 256, 512 and 512 channels, each
stage closed by a 2x2 max pool, then three fully connected layers (4096, 4096, classes).
The classifier always sees a 7x7 map (adaptive average pooling), so the parameter count
is the paper's (133M to 144M) whatever the input size; pools use ``ceil_mode`` and a pool
that would see a 1-pixel map is skipped, so 28x28 MNIST and even 8x8 digits run.

``batch_norm=True`` adds BatchNorm after every convolution (the ``_bn`` variants, as in
torchvision; the biases of those convolutions are dropped since BN has its own shift).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from deepnet.models._layers import check_image_shape, linear_classifier
from deepnet.models._registry import register_model

__all__ = [
    "VGG",
    "VGGConfig",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

# Table 1 of the paper: convolutions per stage for each depth (A=11, B=13, D=16, E=19).
CONVS_PER_STAGE: dict[int, tuple[int, int, int, int, int]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
STAGE_WIDTHS = (64, 128, 256, 512, 512)


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class VGGConfig:
    depth: int = 16
    batch_norm: bool = False
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    width_multiplier: float = 1.0  # scales the five stage widths
    classifier_width: int = 4096  # fc6 and fc7
    dropout: float = 0.5  # after fc6 and fc7

    def __post_init__(self) -> None:
        if self.depth not in CONVS_PER_STAGE:
            raise ValueError(
                f"Received an invalid value for `depth`: VGG is defined for depths "
                f"{sorted(CONVS_PER_STAGE)} (Table 1 of the paper). Received: depth={self.depth!r}."
            )


# ---------------------------------------------------------------------------- blocks


def conv3x3_block(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    """3x3 convolution (stride 1, same padding), optional BatchNorm, ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------- model


class VGG(nn.Module):
    """VGG: ``forward(x)`` maps images ``(B, C, H, W)`` to logits ``(B, num_classes)``.

    ``forward_features`` returns the last conv stage ``(B, 512, h, w)`` (7x7 at 224x224);
    ``forward_head`` pools it to 7x7 and applies fc6, fc7 and the classifier.
    """

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.input_shape[0]
        size = min(config.input_shape[1:])
        layers: list[nn.Module] = []
        for num_convs, stage_width in zip(CONVS_PER_STAGE[config.depth], STAGE_WIDTHS):
            width = max(1, round(stage_width * config.width_multiplier))
            for _ in range(num_convs):
                layers.append(conv3x3_block(channels, width, config.batch_norm))
                channels = width
            # A 1-pixel map cannot be halved again; small inputs skip their last pools.
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True) if size > 1 else nn.Identity())
            size = math.ceil(size / 2)
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        hidden = config.classifier_width
        self.pre_logits = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        )
        self.classifier = linear_classifier(hidden, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, num_features, h, w)`` last-stage features."""
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_features, h, w)`` → ``(B, num_classes)``."""
        x = self.pool(features)  # (B, C, 7, 7)
        x = torch.flatten(x, 1)  # (B, C * 49)
        return self.classifier(self.pre_logits(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer with a fresh one for ``num_classes`` (0: no classifier)."""
        self.classifier = linear_classifier(self.config.classifier_width, num_classes)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)


# ---------------------------------------------------------------------------- factory


def _create_vgg(
    depth: int,
    *,
    batch_norm: bool,
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float,
    classifier_width: int,
    dropout: float,
) -> VGG:
    check_image_shape("VGG", input_shape)
    if width_multiplier <= 0 or classifier_width < 1:
        raise ValueError(
            "Received an invalid width: expected width_multiplier > 0 and classifier_width "
            f">= 1. Received: width_multiplier={width_multiplier!r}, "
            f"classifier_width={classifier_width!r}."
        )
    config = VGGConfig(
        depth=depth,
        batch_norm=batch_norm,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        width_multiplier=width_multiplier,
        classifier_width=classifier_width,
        dropout=dropout,
    )
    return VGG(config)


# ---------------------------------------------------------------------------- variants

_PAPER = (
    "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition, ICLR 2015"
)
_TINY = {"input_shape": (3, 32, 32), "num_classes": 10, "width_multiplier": 0.125,
         "classifier_width": 64}


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=133e6,
                published_layers=11, tiny=_TINY)
def vgg11(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    batch_norm: bool = False,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-11 (configuration A): 8 conv + 3 fully connected layers, 133M parameters."""
    return _create_vgg(11, batch_norm=batch_norm, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=133e6,
                published_layers=13, tiny=_TINY)
def vgg13(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    batch_norm: bool = False,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-13 (configuration B): 10 conv + 3 fully connected layers, 133M parameters."""
    return _create_vgg(13, batch_norm=batch_norm, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=138e6,
                published_layers=16, tiny=_TINY)
def vgg16(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    batch_norm: bool = False,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-16 (configuration D): 13 conv + 3 fully connected layers, 138M parameters."""
    return _create_vgg(16, batch_norm=batch_norm, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=144e6,
                published_layers=19, tiny=_TINY)
def vgg19(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    batch_norm: bool = False,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-19 (configuration E): 16 conv + 3 fully connected layers, 144M parameters."""
    return _create_vgg(19, batch_norm=batch_norm, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=133e6,
                published_layers=11, tiny=_TINY)
def vgg11_bn(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-11 with BatchNorm after every convolution, 133M parameters."""
    return _create_vgg(11, batch_norm=True, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=133e6,
                published_layers=13, tiny=_TINY)
def vgg13_bn(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-13 with BatchNorm after every convolution, 133M parameters."""
    return _create_vgg(13, batch_norm=True, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=138e6,
                published_layers=16, tiny=_TINY)
def vgg16_bn(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-16 with BatchNorm after every convolution, 138M parameters."""
    return _create_vgg(16, batch_norm=True, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)


@register_model(family="vgg", year=2014, paper=_PAPER, published_parameters=144e6,
                published_layers=19, tiny=_TINY)
def vgg19_bn(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> VGG:
    """VGG-19 with BatchNorm after every convolution, 144M parameters."""
    return _create_vgg(19, batch_norm=True, input_shape=input_shape, num_classes=num_classes,
                       width_multiplier=width_multiplier, classifier_width=classifier_width,
                       dropout=dropout)
