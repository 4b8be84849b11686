"""EfficientNet-B0 (Tan & Le, ICML 2019), the baseline network of the paper's Table 1.

A 3x3/2 stem convolution, 16 MBConv blocks in seven stages (inverted residuals: 1x1
expansion, depthwise kxk, squeeze-and-excitation, 1x1 projection), a 1x1 convolution to
1280 channels, global average pooling, dropout and a linear classifier; SiLU (swish)
throughout: 5.29M parameters at 1,000 classes. ``width_multiplier`` and
``depth_multiplier`` are the paper's compound-scaling coefficients (B1-B7 scale them
together with the resolution); residual branches are dropped per sample with a probability
rising linearly to ``stochastic_depth`` over the blocks (0 turns it off).

Table 1 counts depth in its own units: the stem, each MBConv block and the head stage
(conv1x1, pooling, FC) count one layer each, 18 in all, which is ``published_layers``.
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
    "EfficientNet",
    "EfficientNetConfig",
    "MBConv",
    "SqueezeExcitation",
    "StochasticDepth",
    "efficientnet_b0",
]

# Table 1, stages 2-8: expansion ratio, kernel size, stride of the first block,
# output channels, blocks.
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class EfficientNetConfig:
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    width_multiplier: float = 1.0  # channels, rounded to multiples of 8
    depth_multiplier: float = 1.0  # blocks per stage, rounded up
    dropout: float = 0.2  # before the classifier
    stochastic_depth: float = 0.2  # drop probability of the last block's residual branch


def round_channels(channels: float, divisor: int = 8) -> int:
    """The reference implementation's rounding to a multiple of ``divisor``, never more
    than 10% below ``channels``."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


# ---------------------------------------------------------------------------- blocks


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    activation: bool = True,
) -> nn.Sequential:
    """Convolution ("same" padding, no bias), BatchNorm, then SiLU unless ``activation=False``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                  padding=kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels, eps=1e-3),  # the reference implementation's epsilon
    ]
    if activation:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel gates from globally pooled features (Hu et al. 2018).

    Input and output ``(B, channels, H, W)``.
    """

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(self.activation(self.reduce(self.pool(x))))  # (B, C, 1, 1)
        return x * torch.sigmoid(scale)


class StochasticDepth(nn.Module):
    """Zeroes the whole residual branch of a sample with probability ``p`` in training and
    rescales the kept ones by ``1 / (1 - p)`` (Huang et al. 2016). The identity in eval mode.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(
                "Received an invalid value for `stochastic_depth`: expected a probability in "
                f"[0, 1). Received: {p!r}."
            )
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)  # (B, 1, 1, 1)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion (skipped at ratio 1), depthwise kxk,
    squeeze-and-excitation, 1x1 linear projection; a residual when shapes agree.

    Input ``(B, in_channels, H, W)``; output ``(B, out_channels, H/stride, W/stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        drop_probability: float,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = conv_bn(in_channels, hidden, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self.se = SqueezeExcitation(hidden, max(1, in_channels // 4))
        self.project = conv_bn(hidden, out_channels, 1, activation=False)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_probability) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + self.drop_path(out) if self.residual else out


# ---------------------------------------------------------------------------- model


class EfficientNet(nn.Module):
    """EfficientNet: ``forward(x)`` maps images ``(B, C, H, W)`` to logits ``(B, num_classes)``.

    ``forward_features`` returns the head convolution's output ``(B, 1280, h, w)`` (7x7 at
    224x224); ``forward_head`` pools it globally, applies dropout and the classifier.
    """

    def __init__(self, config: EfficientNetConfig) -> None:
        super().__init__()
        self.config = config
        stem_channels = round_channels(STEM_CHANNELS * config.width_multiplier)
        self.stem = conv_bn(config.input_shape[0], stem_channels, 3, stride=2)
        stages = [
            (expand, kernel, stride, round_channels(out * config.width_multiplier),
             math.ceil(repeats * config.depth_multiplier))
            for expand, kernel, stride, out, repeats in B0_STAGES
        ]
        total_blocks = sum(stage[-1] for stage in stages)
        blocks: list[nn.Module] = []
        channels = stem_channels
        for expand, kernel, stride, out_channels, repeats in stages:
            for repeat in range(repeats):
                drop = config.stochastic_depth * len(blocks) / total_blocks
                blocks.append(MBConv(channels, out_channels, expand, kernel,
                                     stride if repeat == 0 else 1, drop))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.num_features = round_channels(HEAD_CHANNELS * config.width_multiplier)
        self.head = conv_bn(channels, self.num_features, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = linear_classifier(self.num_features, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, num_features, h, w)`` head features."""
        return self.head(self.blocks(self.stem(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_features, h, w)`` → ``(B, num_classes)``."""
        x = torch.flatten(self.pool(features), 1)  # (B, num_features)
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer with a fresh one for ``num_classes`` (0: no classifier)."""
        self.classifier = linear_classifier(self.num_features, num_classes)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)


# ---------------------------------------------------------------------------- factory


def _create_efficientnet(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float,
    depth_multiplier: float,
    dropout: float,
    stochastic_depth: float,
) -> EfficientNet:
    check_image_shape("EfficientNet", input_shape)
    if width_multiplier <= 0 or depth_multiplier <= 0:
        raise ValueError(
            "Received an invalid scaling coefficient: expected width_multiplier > 0 and "
            f"depth_multiplier > 0 (1.0 for B0). Received: width_multiplier={width_multiplier!r}, "
            f"depth_multiplier={depth_multiplier!r}."
        )
    if not 0.0 <= stochastic_depth < 1.0:
        raise ValueError(
            "Received an invalid value for `stochastic_depth`: expected a probability in "
            f"[0, 1) (0.2 in the paper, 0 turns it off). Received: {stochastic_depth!r}."
        )
    config = EfficientNetConfig(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        width_multiplier=width_multiplier,
        depth_multiplier=depth_multiplier,
        dropout=dropout,
        stochastic_depth=stochastic_depth,
    )
    return EfficientNet(config)


# ---------------------------------------------------------------------------- variants


@register_model(
    family="efficientnet",
    year=2019,
    paper=(
        "Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural "
        "Networks, ICML 2019"
    ),
    input_kind="image",
    published_parameters=5.3e6,
    published_layers=18,
    tiny={"input_shape": (3, 32, 32), "num_classes": 10, "width_multiplier": 0.5,
          "depth_multiplier": 0.5},
)
def efficientnet_b0(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    dropout: float = 0.2,
    stochastic_depth: float = 0.2,
) -> EfficientNet:
    """EfficientNet-B0: 16 MBConv blocks with squeeze-excitation and SiLU, 5.3M parameters."""
    return _create_efficientnet(
        input_shape=input_shape,
        num_classes=num_classes,
        width_multiplier=width_multiplier,
        depth_multiplier=depth_multiplier,
        dropout=dropout,
        stochastic_depth=stochastic_depth,
    )
