"""ResNet (He, Zhang, Ren & Sun, CVPR 2016): the ImageNet networks of Table 1 (18, 34, 50,
101, 152 layers) and the CIFAR network of Section 4.2 (20 layers, for 32x32 and 28x28).

ImageNet ResNets: a 7x7/2 convolution and a 3x3/2 max pool, four stages of 64, 128, 256
and 512 channels (times 4 after a bottleneck), global average pooling, one linear layer.
Shortcuts that change shape are 1x1 projections (the paper's option B). Bottlenecks stride
in their 3x3 convolution rather than the first 1x1 ("ResNet v1.5", as torchvision and
timm do; same parameters, better accuracy).

CIFAR ResNet (``resnet20``): a 3x3 convolution, three stages of 16, 32 and 64 channels with
three basic blocks each, global average pooling, one linear layer; shape-changing shortcuts
subsample and pad with zero channels (option A, no parameters): 0.27M parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._layers import check_image_shape, linear_classifier
from deepnet.models._registry import register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResNetConfig",
    "ZeroPadShortcut",
    "resnet18",
    "resnet20",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ResNetConfig:
    block: Literal["basic", "bottleneck"] = "basic"
    stage_depths: tuple[int, ...] = (2, 2, 2, 2)  # residual blocks per stage
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)  # before the bottleneck expansion
    stem: Literal["imagenet", "cifar"] = "imagenet"
    shortcut: Literal["projection", "zero_pad"] = "projection"  # the paper's options B and A
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if len(self.stage_depths) != len(self.stage_widths):
            raise ValueError(
                "`stage_depths` and `stage_widths` need one entry per stage. Received: "
                f"stage_depths={self.stage_depths!r}, stage_widths={self.stage_widths!r}."
            )


# ---------------------------------------------------------------------------- blocks


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and append zero channels; no parameters.

    Input ``(B, in_channels, H, W)``; output ``(B, out_channels, ceil(H/stride), ceil(W/stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H', W')
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # (B, C_out, H', W')


def make_shortcut(
    in_channels: int, out_channels: int, stride: int, kind: Literal["projection", "zero_pad"]
) -> nn.Module:
    """The identity where shapes agree, else a projection (1x1 conv + BN) or zero padding."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "zero_pad":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a shortcut (ResNet-18/34, CIFAR ResNets).

    Input ``(B, in_channels, H, W)``; output ``(B, width, H/stride, W/stride)``.
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand to ``4 * width``, with BatchNorm and a shortcut
    (ResNet-50/101/152).

    Input ``(B, in_channels, H, W)``; output ``(B, 4 * width, H/stride, W/stride)``.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


# ---------------------------------------------------------------------------- model


class ResNet(nn.Module):
    """ResNet: ``forward(x)`` maps images ``(B, C, H, W)`` to logits ``(B, num_classes)``.

    ``forward_features`` returns the last stage ``(B, num_features, h, w)`` (2048x7x7 for
    ResNet-50 at 224x224); ``forward_head`` pools it globally and applies the classifier.
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        in_channels = config.input_shape[0]
        stem_width = config.stage_widths[0]
        if config.stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # (B, 64, H/4, W/4)
            )
        else:  # cifar: keep the full resolution of small images
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
            )
        block_type = BasicBlock if config.block == "basic" else Bottleneck
        channels = stem_width
        stages: list[nn.Module] = []
        for index, (depth, width) in enumerate(zip(config.stage_depths, config.stage_widths)):
            blocks: list[nn.Module] = []
            for block_index in range(depth):
                stride = 2 if index > 0 and block_index == 0 else 1
                out_channels = width * block_type.expansion
                shortcut = make_shortcut(channels, out_channels, stride, config.shortcut)
                blocks.append(block_type(channels, width, stride, shortcut))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = linear_classifier(channels, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, num_features, h, w)`` last-stage features."""
        return self.stages(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_features, h, w)`` → ``(B, num_classes)``."""
        x = torch.flatten(self.pool(features), 1)  # (B, num_features)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer with a fresh one for ``num_classes`` (0: no classifier)."""
        self.classifier = linear_classifier(self.num_features, num_classes)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)


# ---------------------------------------------------------------------------- factory


def _create_resnet(
    block: Literal["basic", "bottleneck"],
    stage_depths: tuple[int, ...],
    stage_widths: tuple[int, ...],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    width_multiplier: float = 1.0,
    stem: Literal["imagenet", "cifar"] = "imagenet",
    shortcut: Literal["projection", "zero_pad"] = "projection",
) -> ResNet:
    check_image_shape("ResNet", input_shape)
    if width_multiplier <= 0:
        raise ValueError(
            "Received an invalid value for `width_multiplier`: expected > 0 (1.0 is the "
            f"paper's width). Received: width_multiplier={width_multiplier!r}."
        )
    config = ResNetConfig(
        block=block,
        stage_depths=stage_depths,
        stage_widths=tuple(max(1, round(w * width_multiplier)) for w in stage_widths),
        stem=stem,
        shortcut=shortcut,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
    )
    return ResNet(config)


# ---------------------------------------------------------------------------- variants

_PAPER = "He, Zhang, Ren & Sun, Deep Residual Learning for Image Recognition, CVPR 2016"
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_TINY = {"input_shape": (3, 32, 32), "num_classes": 10, "width_multiplier": 0.25}


@register_model(family="resnet", year=2015, paper=_PAPER, published_parameters=11.7e6,
                published_layers=18, tiny=_TINY)
def resnet18(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2), 11.7M parameters."""
    return _create_resnet("basic", (2, 2, 2, 2), _IMAGENET_WIDTHS, input_shape=input_shape,
                          num_classes=num_classes, width_multiplier=width_multiplier)


@register_model(family="resnet", year=2015, paper=_PAPER, published_parameters=21.8e6,
                published_layers=34, tiny=_TINY)
def resnet34(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3), 21.8M parameters."""
    return _create_resnet("basic", (3, 4, 6, 3), _IMAGENET_WIDTHS, input_shape=input_shape,
                          num_classes=num_classes, width_multiplier=width_multiplier)


@register_model(family="resnet", year=2015, paper=_PAPER, published_parameters=25.6e6,
                published_layers=50, tiny=_TINY)
def resnet50(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), 25.6M parameters."""
    return _create_resnet("bottleneck", (3, 4, 6, 3), _IMAGENET_WIDTHS, input_shape=input_shape,
                          num_classes=num_classes, width_multiplier=width_multiplier)


@register_model(family="resnet", year=2015, paper=_PAPER, published_parameters=44.5e6,
                published_layers=101, tiny=_TINY)
def resnet101(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
) -> ResNet:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3), 44.5M parameters."""
    return _create_resnet("bottleneck", (3, 4, 23, 3), _IMAGENET_WIDTHS, input_shape=input_shape,
                          num_classes=num_classes, width_multiplier=width_multiplier)


@register_model(family="resnet", year=2015, paper=_PAPER, published_parameters=60.2e6,
                published_layers=152, tiny=_TINY)
def resnet152(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
) -> ResNet:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3), 60.2M parameters."""
    return _create_resnet("bottleneck", (3, 8, 36, 3), _IMAGENET_WIDTHS, input_shape=input_shape,
                          num_classes=num_classes, width_multiplier=width_multiplier)


@register_model(family="resnet", year=2015, paper=_PAPER, published_parameters=0.27e6,
                published_layers=20, tiny={"input_shape": (1, 28, 28), "num_classes": 10})
def resnet20(
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
) -> ResNet:
    """ResNet-20 for 32x32 / 28x28 images (Section 4.2): 3 stages of 16/32/64, 0.27M parameters.

    Defaults to the paper's CIFAR-10 setting (3x32x32, 10 classes), where 0.27M is counted.
    """
    return _create_resnet("basic", (3, 3, 3), (16, 32, 64), input_shape=input_shape,
                          num_classes=num_classes, width_multiplier=width_multiplier,
                          stem="cifar", shortcut="zero_pad")
