"""Dense networks: the single-layer perceptron (Rosenblatt 1958) and the deep MLP."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from deepnet.models._layers import activation, initialize
from deepnet.models._registry import register_model

__all__ = ["MLP", "MLPConfig", "Perceptron"]


@dataclass(frozen=True)
class MLPConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    depth: int = 2  # hidden layers
    width: int = 512
    activation: str = "relu"
    norm: str = "none"  # "none" | "batch" | "layer"
    dropout: float = 0.0
    init: str = "default"
    hidden_layers: tuple[int, ...] | None = None  # one width per hidden layer; replaces depth x width

    def widths(self) -> tuple[int, ...]:
        return tuple(self.hidden_layers) if self.hidden_layers is not None else (self.width,) * self.depth


class Perceptron(nn.Module):
    """One linear layer from the flattened input to the class scores.

    Input ``(B, *input_shape)``; output logits ``(B, num_classes)``.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.classifier = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))  # (B, D) -> (B, num_classes)


class MLP(nn.Module):
    """``depth`` hidden blocks of Linear → [norm] → activation → [dropout], then a Linear head
    (or one block per entry of ``hidden_layers``, each its own width).

    Input ``(B, *input_shape)``; output logits ``(B, num_classes)``.
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Flatten(1)]
        in_features = math.prod(config.input_shape)
        for width in config.widths():
            layers.append(nn.Linear(in_features, width, bias=config.norm != "batch"))
            if config.norm == "batch":
                layers.append(nn.BatchNorm1d(width))
            elif config.norm == "layer":
                layers.append(nn.LayerNorm(width))
            layers.append(activation(config.activation))
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            in_features = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, config.num_classes)
        initialize(self, config.init, config.activation)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, *input_shape) -> (B, width)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)


def _create_mlp(**kwargs) -> MLP:
    if "input_shape" in kwargs:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    for key in ("depth", "width"):
        if key in kwargs and (not isinstance(kwargs[key], int) or kwargs[key] < (0 if key == "depth" else 1)):
            raise ValueError(f"Received an invalid value for `{key}`: expected a positive integer. Received: {key}={kwargs[key]!r}")
    hidden = kwargs.get("hidden_layers")
    if hidden is not None:
        if isinstance(hidden, int) or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hidden):
            raise ValueError("Received an invalid value for `hidden_layers`: expected a sequence of positive integers "
                             f"(one width per hidden layer, e.g. (256, 128)). Received: hidden_layers={hidden!r}")
        kwargs["hidden_layers"] = tuple(hidden)
    if kwargs.get("norm", "none") not in ("none", "batch", "layer"):
        raise ValueError(f"Received an invalid value for `norm`: expected 'none', 'batch' or 'layer'. Received: norm={kwargs['norm']!r}")
    return MLP(MLPConfig(**kwargs))


@register_model(
    family="dense", year=1958, input_kind="vector", published_layers=1,
    paper="Rosenblatt, The Perceptron: a probabilistic model for information storage and organization in the brain, Psychological Review 1958",
    tiny={"input_shape": (1, 8, 8), "num_classes": 10},
)
def perceptron(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> Perceptron:
    """Single-layer perceptron: a linear classifier on the flattened input."""
    return Perceptron(tuple(input_shape), num_classes)


@register_model(
    family="dense", year=1986, input_kind="vector",
    paper="Rumelhart, Hinton & Williams, Learning representations by back-propagating errors, Nature 1986",
    tiny={"input_shape": (1, 8, 8), "num_classes": 10, "width": 16},
)
def mlp(
    input_shape: tuple[int, ...] = (1, 28, 28),
    num_classes: int = 10,
    depth: int = 2,
    width: int = 512,
    activation: str = "relu",
    norm: str = "none",
    dropout: float = 0.0,
    init: str = "default",
    hidden_layers: tuple[int, ...] | None = None,
) -> MLP:
    """Deep multilayer perceptron (depth, width, activation, norm and dropout configurable;
    ``hidden_layers=(256, 128)`` gives each hidden layer its own width instead)."""
    return _create_mlp(input_shape=input_shape, num_classes=num_classes, depth=depth, width=width,
                       activation=activation, norm=norm, dropout=dropout, init=init, hidden_layers=hidden_layers)


@register_model(
    family="dense", year=1998, input_kind="vector", published_parameters=266_610, published_layers=3,
    paper="LeCun, Bottou, Bengio & Haffner, Gradient-based learning applied to document recognition, Proc. IEEE 1998",
    tiny={"input_shape": (1, 8, 8), "num_classes": 10},
)
def lenet300_100(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> MLP:
    """LeNet-300-100: the 784-300-100-10 fully connected network of LeCun et al. 1998, the one
    Han et al. 2015 prune (266,610 parameters on MNIST)."""
    return _create_mlp(input_shape=input_shape, num_classes=num_classes, hidden_layers=(300, 100))
