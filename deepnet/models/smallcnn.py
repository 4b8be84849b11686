"""The small MNIST network of adversarial-training papers, and an ensemble of any members.

``small-cnn``: two stride-2 4x4 convolutions (16 and 32 maps) → a 100-unit hidden layer →
the head; the network Wong, Rice & Kolter (2020) train with fast FGSM adversarial training
on MNIST. About 0.6 M multiply-adds per image: adversarial training and a 10-restart PGD
evaluation of the whole test set fit on one CPU core.

``ensemble``: members built from the registry; the output is the log of their mean
probabilities, so it is a log-probability (a valid logit vector) and every verb that
reads logits, attacks included, sees the ensemble as one classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepnet.models._registry import create_model, register_model

__all__ = ["Ensemble", "SmallCNN", "SmallCNNConfig"]


@dataclass(frozen=True)
class SmallCNNConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    widths: tuple[int, int] = (16, 32)
    hidden: int = 100


class SmallCNN(nn.Module):
    """Input ``(B, C, H, W)``; output logits ``(B, num_classes)``."""

    def __init__(self, config: SmallCNNConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, width = config.input_shape
        first, second = config.widths
        self.features = nn.Sequential(
            nn.Conv2d(channels, first, 4, stride=2, padding=1), nn.ReLU(),  # (B, first, H/2, W/2)
            nn.Conv2d(first, second, 4, stride=2, padding=1), nn.ReLU(),    # (B, second, H/4, W/4)
        )
        self.num_features = second * (height // 4) * (width // 4)
        self.hidden = nn.Sequential(nn.Linear(self.num_features, config.hidden), nn.ReLU())
        self.classifier = nn.Linear(config.hidden, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(features.flatten(1)))  # (B, second*H/4*W/4) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.config.hidden, num_classes)


class Ensemble(nn.Module):
    """Members share the input; output ``log(mean_k softmax(member_k(x)))`` ``(B, num_classes)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x).float(), dim=-1) for m in self.members])  # (K, B, C)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


@register_model(
    name="small-cnn", family="cnn", year=2020, input_kind="image",
    paper="Wong, Rice & Kolter, Fast is better than free: revisiting adversarial training, ICLR 2020 (their MNIST network)",
    tiny={"input_shape": (1, 12, 12), "num_classes": 10, "widths": (4, 8), "hidden": 16},
)
def small_cnn(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
              widths: tuple[int, int] = (16, 32), hidden: int = 100) -> SmallCNN:
    """Two stride-2 convolutions and a hidden layer: the MNIST network of fast adversarial training."""
    if len(tuple(widths)) != 2 or any(int(w) < 1 for w in widths):
        raise ValueError(f"Received an invalid value for `widths`: expected two positive integers. Received: widths={widths!r}")
    return SmallCNN(SmallCNNConfig(tuple(input_shape), num_classes, tuple(int(w) for w in widths), hidden))


@register_model(
    family="ensemble", year=1996, input_kind="image",
    paper="Breiman, Bagging predictors, Machine Learning 1996; deep ensembles: Lakshminarayanan et al., NeurIPS 2017",
    tiny={"input_shape": (1, 12, 12), "num_classes": 10,
          "members": ({"name": "small-cnn", "args": {"widths": (4, 8), "hidden": 16}},) * 2},
)
def ensemble(members: tuple[dict[str, Any], ...] = ({"name": "small-cnn", "args": {}},) * 3,
             input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> Ensemble:
    """Independently trained models averaged in probability; ``members`` are ``{"name", "args"}``
    records, each built for ``input_shape`` and ``num_classes``."""
    if not members:
        raise ValueError("Received an invalid value for `members`: expected at least one {'name': ..., 'args': {...}} record. "
                         "Received: members=[]. Build ensembles with `deepnet harden RUN --method ensemble`.")
    shape = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    return Ensemble([create_model(m["name"], **{**m.get("args", {}), **shape}) for m in members])
