"""LeNet-5 (LeCun et al. 1998) as published, and a modern variant.

The 1998 network: 32x32 input (MNIST's 28x28 digits padded by 2), C1 6@5x5 → S2 average
subsampling with a trainable coefficient and bias → C3 16@5x5 with the paper's partial
connection table → S4 → C5 120@5x5 → F6 84 → output. Activations are the paper's scaled
tanh, 1.7159·tanh(2x/3). The RBF output layer is replaced by a linear layer with
cross-entropy (as every modern reproduction does): 60,850 parameters against the paper's
60,840 (its RBF output layer has no biases).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._layers import activation
from deepnet.models._registry import register_model

__all__ = ["LeNet5", "LeNet5Config", "ModernLeNet", "ScaledTanh", "Subsampling", "SparseConv"]

# Table I of the paper: which of S2's 6 maps feed each of C3's 16 maps.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = 1.7159 tanh(2a/3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """2x2 average subsampling with one trainable coefficient and bias per map (S2, S4)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 2)  # (B, C, H/2, W/2)
        return pooled * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SparseConv(nn.Module):
    """A convolution whose output map ``o`` sees only the input maps ``table[o]`` (C3).

    Maps with the same number of inputs form one grouped convolution over the gathered
    input maps, so the layer holds exactly the paper's 1,516 parameters.
    Input ``(B, in_channels, H, W)``; output ``(B, len(table), H-k+1, W-k+1)``.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int) -> None:
        super().__init__()
        if any(i >= in_channels for inputs in table for i in inputs):
            raise ValueError(f"The connection table names input maps beyond in_channels={in_channels}.")
        sizes = sorted({len(inputs) for inputs in table})
        self.groups = nn.ModuleList()
        order: list[int] = []
        for size in sizes:
            maps = [o for o, inputs in enumerate(table) if len(inputs) == size]
            order += maps
            conv = nn.Conv2d(size * len(maps), len(maps), kernel_size, groups=len(maps))
            conv.register_buffer("gather", torch.tensor([i for o in maps for i in table[o]]), persistent=False)
            self.groups.append(conv)
        self.register_buffer("unpermute", torch.argsort(torch.tensor(order)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [conv(x.index_select(1, conv.gather)) for conv in self.groups]  # each (B, maps, H', W')
        return torch.cat(outputs, dim=1).index_select(1, self.unpermute)  # back to table order


@dataclass(frozen=True)
class LeNet5Config:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    sparse_c3: bool = True


class LeNet5(nn.Module):
    """LeNet-5 of 1998. Input ``(B, C, H, W)`` with H, W ≤ 32 (padded to 32); output ``(B, num_classes)``."""

    def __init__(self, config: LeNet5Config) -> None:
        super().__init__()
        self.config = config
        channels, height, width = config.input_shape
        if height > 32 or width > 32:
            raise ValueError(
                f"LeNet-5 takes images of at most 32x32; received input_shape={config.input_shape}. "
                "Resize the images or use 'lenet-modern' / a ResNet."
            )
        self.pad = ((32 - width) // 2, (33 - width) // 2, (32 - height) // 2, (33 - height) // 2)
        c3 = SparseConv(C3_TABLE, 6, 5) if config.sparse_c3 else nn.Conv2d(6, 16, 5)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5), ScaledTanh(),  # C1: (B, 6, 28, 28)
            Subsampling(6), ScaledTanh(),             # S2: (B, 6, 14, 14)
            c3, ScaledTanh(),                         # C3: (B, 16, 10, 10)
            Subsampling(16), ScaledTanh(),            # S4: (B, 16, 5, 5)
            nn.Conv2d(16, 120, 5), ScaledTanh(),      # C5: (B, 120, 1, 1)
            nn.Flatten(1),
            nn.Linear(120, 84), ScaledTanh(),         # F6: (B, 84)
        )
        self.classifier = nn.Linear(84, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(F.pad(x, self.pad))  # (B, C, 32, 32) -> (B, 84)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(84, num_classes)


class ModernLeNet(nn.Module):
    """LeNet-5's layout with today's parts: ReLU, max-pool, batch norm, dropout.

    Input ``(B, C, H, W)``; output ``(B, num_classes)``.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 1,
                 act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        c1, c2, c3 = 6 * width, 16 * width, 120 * width
        small = min(input_shape[1:]) < 20  # e.g. 8x8 digits: pad so every map stays >= 1 pixel
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, 5, padding=2, bias=False), nn.BatchNorm2d(c1), activation(act),
            nn.MaxPool2d(2),                                   # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 5, padding=2 if small else 0, bias=False), nn.BatchNorm2d(c2), activation(act),
            nn.MaxPool2d(2),                                   # (B, c2, ~H/4, ~W/4)
            nn.Conv2d(c2, c3, 3, padding=1 if small else 0, bias=False), nn.BatchNorm2d(c3), activation(act),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1),            # (B, c3)
            nn.Linear(c3, 84 * width), activation(act),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(84 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)


@register_model(
    family="lenet", year=1998, input_kind="image", published_parameters=60e3, published_layers=5,
    paper="LeCun, Bottou, Bengio & Haffner, Gradient-based learning applied to document recognition, Proc. IEEE 1998",
    tiny={"input_shape": (1, 28, 28), "num_classes": 10},
)
def lenet5(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, sparse_c3: bool = True) -> LeNet5:
    """LeNet-5 as published in 1998 (scaled tanh, trainable average subsampling, sparse C3)."""
    return LeNet5(LeNet5Config(tuple(input_shape), num_classes, sparse_c3))


@register_model(
    family="lenet", year=2015, input_kind="image", published_layers=5,
    paper="LeNet-5 layout with ReLU (Nair & Hinton 2010), max-pooling and batch norm (Ioffe & Szegedy 2015)",
    tiny={"input_shape": (1, 28, 28), "num_classes": 10},
)
def lenet_modern(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, width: int = 1,
                 activation: str = "relu", dropout: float = 0.0) -> ModernLeNet:
    """LeNet-5 with ReLU, max-pooling and batch norm; ``width`` multiplies every layer."""
    return ModernLeNet(tuple(input_shape), num_classes, width, activation, dropout)
