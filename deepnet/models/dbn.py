"""The deep belief net (Hinton, Osindero & Teh 2006): restricted Boltzmann machines trained
with contrastive divergence, stacked greedily, then fine-tuned as a classifier.

An RBM has visible units ``v``, binary hidden units ``h`` and the energy
``E(v, h) = -v.b - h.c - v W h``. CD-k (Hinton 2002) starts a Gibbs chain at the data, runs
``k`` steps, and moves the weights along ``<v h>_data - <v h>_k``. That is exactly the
gradient of ``F(v_data) - F(v_k)`` with the chain's end held fixed, where
``F(v) = -v.b - sum_j softplus(c_j + (v W)_j)`` is the free energy; so each RBM is trained
by the ordinary optimizer on that surrogate loss (the chain is sampled without gradients).

Pre-training is greedy: epochs ``[i * P, (i + 1) * P)`` train RBM ``i`` on the hidden
probabilities of the RBMs below it (P = ``pretrain_epochs``). Afterwards the stack is a
sigmoid MLP (each RBM's ``W`` and hidden biases) with a new softmax layer on top, and the
whole network is fine-tuned with backpropagation on the labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._pixels import PixelScale
from deepnet.models._registry import register_model

__all__ = ["DBN", "DBNConfig", "RBM"]


@dataclass(frozen=True)
class DBNConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    hidden: tuple[int, ...] = (500, 500, 2000)
    pretrain_epochs: int = 10  # per RBM; 0 = no pre-training (a randomly initialised sigmoid MLP)
    cd_steps: int = 1
    init: str = "rbm"  # rbm: N(0, 0.01) (Hinton's practical guide); glorot: Glorot & Bengio's uniform, for nets not pre-trained
    dropout: float = 0.0  # on every hidden layer while fine-tuning (Srivastava et al. 2014); pre-training is unaffected
    input_dropout: float = 0.0  # on the pixels while fine-tuning
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None


class RBM(nn.Module):
    """A Bernoulli-Bernoulli RBM with ``visible`` and ``hidden`` units."""

    def __init__(self, visible: int, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(visible, hidden) * 0.01)
        self.visible_bias = nn.Parameter(torch.zeros(visible))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))

    def hidden_probabilities(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ self.weight + self.hidden_bias)  # (B, visible) -> (B, hidden)

    def visible_probabilities(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h @ self.weight.t() + self.visible_bias)  # (B, hidden) -> (B, visible)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v)`` per example ``(B,)``."""
        return -(v @ self.visible_bias) - F.softplus(v @ self.weight + self.hidden_bias).sum(1)

    def contrastive_divergence(self, v: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """CD-k: the surrogate loss whose gradient is the CD-k update, and the one-step
        reconstruction error of the visible probabilities."""
        with torch.no_grad():
            h = torch.bernoulli(self.hidden_probabilities(v))
            for step in range(k):
                v_model = self.visible_probabilities(h)  # probabilities for the visible units (Hinton's guide, 3.2)
                if step == 0:
                    reconstruction = F.mse_loss(v_model, v)
                h_probabilities = self.hidden_probabilities(v_model)
                h = torch.bernoulli(h_probabilities) if step < k - 1 else h_probabilities
        loss = self.free_energy(v).mean() - self.free_energy(v_model).mean()
        return {"loss": loss, "cd_loss": loss.detach(), "reconstruction_mse": reconstruction}


class DBN(nn.Module):
    """Input ``(B, *input_shape)`` (normalised images) -> logits ``(B, num_classes)``, through
    the RBMs' sigmoid layers."""

    conditional_classes = 0

    def __init__(self, config: DBNConfig) -> None:
        super().__init__()
        self.config = config
        self.pixels = PixelScale(config.input_shape[0], config.pixel_mean, config.pixel_std) \
            if len(config.input_shape) == 3 else None
        sizes = [math.prod(config.input_shape), *config.hidden]
        self.rbms = nn.ModuleList(RBM(a, b) for a, b in zip(sizes, sizes[1:]))
        if config.init == "glorot":
            for rbm in self.rbms:
                nn.init.xavier_uniform_(rbm.weight)
        self.classifier = nn.Linear(sizes[-1], config.num_classes)
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.parts = (*(f"rbm{i}" for i in range(len(self.rbms))), "classifier")

    def part_parameters(self, part: str) -> list[nn.Parameter]:
        if part == "classifier":  # fine-tuning trains every weight the classifier uses
            return [p for rbm in self.rbms for p in (rbm.weight, rbm.hidden_bias)] + list(self.classifier.parameters())
        return list(self.rbms[int(part[3:])].parameters())

    def active_parts(self, epoch: int) -> tuple[str, ...]:
        """Epoch ``epoch`` (0-based) trains one RBM after the other, then the classifier."""
        layer = epoch // self.config.pretrain_epochs if self.config.pretrain_epochs else len(self.rbms)
        return (f"rbm{layer}",) if layer < len(self.rbms) else ("classifier",)

    def _visible(self, x: torch.Tensor) -> torch.Tensor:
        pixels = self.pixels.to_pixels(x) if self.pixels is not None else x
        return pixels.flatten(1)  # (B, input features) in [0, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_dropout(self._visible(x))  # dropout acts only in training mode, i.e. while fine-tuning
        for rbm in self.rbms:
            h = self.dropout(rbm.hidden_probabilities(h))
        return self.classifier(h)

    def training_losses(self, x: torch.Tensor, y: torch.Tensor, part: str) -> dict[str, torch.Tensor]:
        if part == "classifier":
            logits = self(x)
            return {"loss": F.cross_entropy(logits, y), "logits": logits.detach()}
        layer = int(part[3:])
        with torch.no_grad():
            v = self._visible(x)
            for rbm in self.rbms[:layer]:
                v = rbm.hidden_probabilities(v)
        return self.rbms[layer].contrastive_divergence(v, self.config.cd_steps)


@register_model(family="dbn", year=2006, input_kind="image",
                paper="Hinton, Osindero & Teh, A Fast Learning Algorithm for Deep Belief Nets, Neural Computation 2006",
                tiny={"input_shape": (1, 8, 8), "num_classes": 10, "hidden": (16, 8), "pretrain_epochs": 1})
def dbn(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, hidden: tuple[int, ...] = (500, 500, 2000),
        pretrain_epochs: int = 10, cd_steps: int = 1, init: str = "rbm", dropout: float = 0.0,
        input_dropout: float = 0.0, pixel_mean: tuple[float, ...] | None = None,
        pixel_std: tuple[float, ...] | None = None) -> DBN:
    """Deep belief net: RBMs pre-trained greedily with CD-k, then fine-tuned as a classifier."""
    if not hidden or pretrain_epochs < 0 or cd_steps < 1:
        raise ValueError(f"Received an invalid value for `hidden`/`pretrain_epochs`/`cd_steps`: expected at least one "
                         f"hidden layer, pretrain_epochs >= 0 and cd_steps >= 1. Received: hidden={hidden!r}, "
                         f"pretrain_epochs={pretrain_epochs}, cd_steps={cd_steps}.")
    if init not in ("rbm", "glorot"):
        raise ValueError(f"Received an invalid value for `init`: expected 'rbm' or 'glorot'. Received: init={init!r}.")
    if not (0 <= dropout < 1 and 0 <= input_dropout < 1):
        raise ValueError(f"Received an invalid value for `dropout`/`input_dropout`: expected probabilities in [0, 1). "
                         f"Received: dropout={dropout}, input_dropout={input_dropout}.")
    return DBN(DBNConfig(input_shape=tuple(input_shape), num_classes=num_classes, hidden=tuple(hidden),
                         pretrain_epochs=pretrain_epochs, cd_steps=cd_steps, init=init,
                         dropout=dropout, input_dropout=input_dropout,
                         pixel_mean=tuple(pixel_mean) if pixel_mean is not None else None,
                         pixel_std=tuple(pixel_std) if pixel_std is not None else None))
