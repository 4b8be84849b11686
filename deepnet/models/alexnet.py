"""AlexNet (Krizhevsky, Sutskever & Hinton, NeurIPS 2012).

Five convolutions (96, 256, 384, 384, 256 filters) and three fully connected layers
(4096, 4096, classes): 60.97M parameters at 224x224 and 1,000 classes. This is the paper's
own layout, kept on one device: conv2, conv4 and conv5 see only the half of their input
that sat on the same GPU in the two-GPU original, which is what ``groups=2`` computes.
That connectivity is why the paper says "60 million"; torchvision's single-tower
64-192-384-256-256 variant has 61.1M, and the ungrouped 96-256-384-384-256 tower 62.4M.

Small inputs: for images under 64 pixels a side (MNIST, CIFAR) conv1 uses stride 1 instead
of 4, and a max pool that would see a 1-pixel map is skipped, so the network runs on
anything down to 1x1. The classifier always sees a 6x6 map (adaptive average pooling), so
the parameter count does not depend on the input size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from deepnet.models._layers import check_image_shape, linear_classifier
from deepnet.models._registry import register_model

__all__ = ["AlexNet", "AlexNetConfig", "alexnet"]


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AlexNetConfig:
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    classifier_width: int = 4096  # fc6 and fc7
    dropout: float = 0.5  # before fc6 and fc7

    @property
    def stem_stride(self) -> int:
        # Stride 4 turns 28x28 into 6x6 before any feature is learned; small images keep
        # their resolution instead (the kernel, and so the parameter count, is unchanged).
        return 4 if min(self.input_shape[1:]) >= 64 else 1


# ---------------------------------------------------------------------------- blocks


def local_response_norm() -> nn.LocalResponseNorm:
    # The paper divides by (k + alpha * sum a^2)^beta with k=2, n=5, alpha=1e-4, beta=0.75;
    # PyTorch divides alpha by n, so alpha = 5 * 1e-4 reproduces the paper's formula.
    return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)


def overlapping_max_pool(size: int) -> tuple[nn.Module, int]:
    """The paper's overlapping 3x3/2 pool and the side length after it; an identity when
    the map is already one pixel (small inputs)."""
    if size <= 1:
        return nn.Identity(), size
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True), math.ceil((size - 3) / 2) + 1


# ---------------------------------------------------------------------------- model


class AlexNet(nn.Module):
    """AlexNet: ``forward(x)`` maps images ``(B, C, H, W)`` to logits ``(B, num_classes)``.

    ``forward_features`` returns the conv5 map ``(B, 256, h, w)`` (6x6 at 224x224);
    ``forward_head`` pools it to 6x6 and applies fc6, fc7 and the classifier.
    """

    def __init__(self, config: AlexNetConfig) -> None:
        super().__init__()
        self.config = config
        in_channels, height, width = config.input_shape
        stride = config.stem_stride
        padding = 2 if stride == 4 else 5  # 224 -> 55 as in the paper; "same" at stride 1
        size = (min(height, width) + 2 * padding - 11) // stride + 1
        pool1, size = overlapping_max_pool(size)
        pool2, size = overlapping_max_pool(size)
        pool5, size = overlapping_max_pool(size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=stride, padding=padding),
            nn.ReLU(inplace=True),
            local_response_norm(),
            pool1,
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            local_response_norm(),
            pool2,
            nn.Conv2d(256, 384, kernel_size=3, padding=1),  # the one conv that crosses GPUs
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            pool5,
        )
        self.num_features = 256
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        hidden = config.classifier_width
        self.pre_logits = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(256 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.classifier = linear_classifier(hidden, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, 256, h, w)`` conv5 features."""
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 256, h, w)`` → ``(B, num_classes)`` (``(B, classifier_width)`` if 0 classes)."""
        x = self.pool(features)  # (B, 256, 6, 6)
        x = torch.flatten(x, 1)  # (B, 9216)
        return self.classifier(self.pre_logits(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer with a fresh one for ``num_classes`` (0: no classifier)."""
        self.classifier = linear_classifier(self.config.classifier_width, num_classes)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)


# ---------------------------------------------------------------------------- factory


def _create_alexnet(
    input_shape: tuple[int, int, int], num_classes: int, classifier_width: int, dropout: float
) -> AlexNet:
    check_image_shape("AlexNet", input_shape)
    if classifier_width < 1:
        raise ValueError(
            "Received an invalid value for `classifier_width`: expected >= 1 (4096 in the "
            f"paper). Received: classifier_width={classifier_width!r}."
        )
    config = AlexNetConfig(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        classifier_width=classifier_width,
        dropout=dropout,
    )
    return AlexNet(config)


# ---------------------------------------------------------------------------- variants


@register_model(
    family="alexnet",
    year=2012,
    paper=(
        "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional "
        "Neural Networks, NeurIPS 2012"
    ),
    input_kind="image",
    published_parameters=60e6,
    published_layers=8,
    tiny={"input_shape": (3, 32, 32), "num_classes": 10, "classifier_width": 64},
)
def alexnet(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    classifier_width: int = 4096,
    dropout: float = 0.5,
) -> AlexNet:
    """AlexNet: 5 conv + 3 fully connected layers, 61.0M parameters (the paper's grouped layout)."""
    return _create_alexnet(input_shape, num_classes, classifier_width, dropout)
