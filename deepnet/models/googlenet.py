"""GoogLeNet, i.e. Inception v1 (Szegedy et al., CVPR 2015), as in the paper's Table 1.

A stem (7x7/2 conv, 3x3/2 max pool, LRN, 1x1 and 3x3 convs, LRN, 3x3/2 max pool), nine
Inception modules in three groups (3a-3b, 4a-4e, 5a-5b) separated by 3x3/2 max pools,
global average pooling, 40% dropout and a linear classifier: 22 layers with parameters
on the longest path, 7.0M parameters at 1,000 classes without the auxiliary heads.

Unlike torchvision's port, the "5x5" branch really is a 5x5 convolution and there is no
BatchNorm (the paper predates it); every convolution has a bias and a ReLU.

Parameter count: Table 1 sums to "6.8M", but its rows are in units of 1,024 (the 1x1
classifier of 1,024x1,000 weights is listed as "1000K"), so the table itself describes
6.96M weights; with biases the network has 6.998M. Hence ``published_parameters=7.0e6``.

Auxiliary heads (``aux_logits=True``) sit on 4a and 4d. The model always returns the main
logits; in training mode the two auxiliary logits are kept in ``model.aux_outputs`` for a
loss of the paper's form ``loss + 0.3 * sum(cross_entropy(a, y) for a in model.aux_outputs)``.

Pools pad by one instead of using Caffe's ceil mode: the map sizes at 224x224 are the
paper's (112, 56, 28, 14, 7), and any input down to 1x1 runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepnet.models._layers import check_image_shape, linear_classifier
from deepnet.models._registry import register_model

__all__ = ["GoogLeNet", "GoogLeNetConfig", "Inception", "InceptionAuxiliary", "googlenet"]

# Table 1: input channels, then #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_TABLE: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class GoogLeNetConfig:
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    aux_logits: bool = False
    dropout: float = 0.4  # before the classifier
    aux_dropout: float = 0.7  # inside each auxiliary head


# ---------------------------------------------------------------------------- blocks


def conv_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> nn.Sequential:
    """Convolution with "same" padding, then ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2),
        nn.ReLU(inplace=True),
    )


def max_pool_3x3_s2() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def local_response_norm() -> nn.LocalResponseNorm:
    # The reference Caffe model: n=5, alpha=1e-4 (divided by n, as PyTorch does), beta=0.75.
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1→3x3; 1x1→5x5; 3x3 max pool→1x1) concatenated.

    Input ``(B, in_channels, H, W)``; output ``(B, out_channels, H, W)`` with
    ``out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj``.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1x1 = conv_relu(in_channels, ch1x1, 1)
        self.branch3x3 = nn.Sequential(
            conv_relu(in_channels, ch3x3_reduce, 1), conv_relu(ch3x3_reduce, ch3x3, 3)
        )
        self.branch5x5 = nn.Sequential(
            conv_relu(in_channels, ch5x5_reduce, 1), conv_relu(ch5x5_reduce, ch5x5, 5)
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1), conv_relu(in_channels, pool_proj, 1)
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)  # (B, out_channels, H, W)


class InceptionAuxiliary(nn.Module):
    """An auxiliary classifier: 4x4 average pool, 1x1 conv to 128, FC 1024, dropout, FC.

    Input ``(B, in_channels, H, W)`` (14x14 at 224x224); output ``(B, num_classes)``.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))  # the paper's 5x5/3 pool at 14x14
        self.conv = conv_relu(in_channels, 128, 1)
        self.fc = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = linear_classifier(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x))  # (B, 128, 4, 4)
        x = torch.flatten(x, 1)  # (B, 2048)
        return self.classifier(self.dropout(self.relu(self.fc(x))))


# ---------------------------------------------------------------------------- model


class GoogLeNet(nn.Module):
    """GoogLeNet: ``forward(x)`` maps images ``(B, C, H, W)`` to logits ``(B, num_classes)``.

    ``forward_features`` returns the 5b output ``(B, 1024, h, w)`` (7x7 at 224x224) and, in
    training mode with auxiliary heads, stores their logits in ``self.aux_outputs``
    (an empty tuple otherwise). ``forward_head`` pools, applies dropout and the classifier.
    """

    aux_outputs: tuple[torch.Tensor, ...]

    def __init__(self, config: GoogLeNetConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = nn.Sequential(
            conv_relu(config.input_shape[0], 64, 7, stride=2),  # (B, 64, 112, 112)
            max_pool_3x3_s2(),  # (B, 64, 56, 56)
            local_response_norm(),
            conv_relu(64, 64, 1),
            conv_relu(64, 192, 3),
            local_response_norm(),
            max_pool_3x3_s2(),  # (B, 192, 28, 28)
        )
        self.inception3a = Inception(*INCEPTION_TABLE["3a"])
        self.inception3b = Inception(*INCEPTION_TABLE["3b"])
        self.pool3 = max_pool_3x3_s2()  # (B, 480, 14, 14)
        self.inception4a = Inception(*INCEPTION_TABLE["4a"])
        self.inception4b = Inception(*INCEPTION_TABLE["4b"])
        self.inception4c = Inception(*INCEPTION_TABLE["4c"])
        self.inception4d = Inception(*INCEPTION_TABLE["4d"])
        self.inception4e = Inception(*INCEPTION_TABLE["4e"])
        self.pool4 = max_pool_3x3_s2()  # (B, 832, 7, 7)
        self.inception5a = Inception(*INCEPTION_TABLE["5a"])
        self.inception5b = Inception(*INCEPTION_TABLE["5b"])
        self.num_features = self.inception5b.out_channels
        if config.aux_logits:
            self.aux1: InceptionAuxiliary | None = InceptionAuxiliary(
                self.inception4a.out_channels, config.num_classes, config.aux_dropout
            )
            self.aux2: InceptionAuxiliary | None = InceptionAuxiliary(
                self.inception4d.out_channels, config.num_classes, config.aux_dropout
            )
        else:
            self.aux1 = self.aux2 = None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = linear_classifier(self.num_features, config.num_classes)
        self.aux_outputs = ()
        self._init_weights()

    def _init_weights(self) -> None:
        # No BatchNorm: fan-in He initialisation keeps the activations' scale through 22 layers.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def __getstate__(self) -> dict[str, Any]:
        # The auxiliary logits hold the last step's autograd graph, which cannot be copied:
        # deep copies and pickles (EMA, checkpoints) start without them.
        return {**super().__getstate__(), "aux_outputs": ()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, 1024, h, w)`` Inception-5b features."""
        x = self.stem(x)
        x = self.pool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1_input = x
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2_input = x
        x = self.pool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        if self.training and self.aux1 is not None and self.aux2 is not None:
            self.aux_outputs = (self.aux1(aux1_input), self.aux2(aux2_input))
        else:
            self.aux_outputs = ()
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 1024, h, w)`` → ``(B, num_classes)``."""
        x = torch.flatten(self.pool(features), 1)  # (B, 1024)
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, num_classes)``; auxiliary logits go to ``aux_outputs``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh last layers (main and auxiliary) for ``num_classes`` (0: no classifier)."""
        self.classifier = linear_classifier(self.num_features, num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.classifier = linear_classifier(1024, num_classes)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)


# ---------------------------------------------------------------------------- factory


def _create_googlenet(
    input_shape: tuple[int, int, int], num_classes: int, aux_logits: bool, dropout: float
) -> GoogLeNet:
    check_image_shape("GoogLeNet", input_shape)
    config = GoogLeNetConfig(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        aux_logits=aux_logits,
        dropout=dropout,
    )
    return GoogLeNet(config)


# ---------------------------------------------------------------------------- variants


@register_model(
    family="googlenet",
    year=2014,
    paper="Szegedy et al., Going Deeper with Convolutions, CVPR 2015",
    input_kind="image",
    published_parameters=7.0e6,
    published_layers=22,
    tiny={"input_shape": (3, 32, 32), "num_classes": 10},
)
def googlenet(
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    aux_logits: bool = False,
    dropout: float = 0.4,
) -> GoogLeNet:
    """GoogLeNet (Inception v1): 22 layers, 9 Inception modules, 7.0M parameters."""
    return _create_googlenet(input_shape, num_classes, aux_logits, dropout)
