"""Autoencoders: an encoder to a small code, a decoder back to the image.

The MLP version is the deep autoencoder of Hinton & Salakhutdinov (2006), 784-1000-500-250-30
with a linear code layer (trained here end to end with Adam instead of RBM pre-training); the
convolutional one halves the side twice with strided convolutions. Two variants by argument:
*denoising* (Vincent et al. 2008: a random ``corruption`` fraction of the input pixels is set
to zero, the clean image is the target) and *sparse* (an L1 penalty of weight ``sparsity``
on the code's activity). Pixels are Bernoulli means: the decoder outputs logits, trained with
binary cross-entropy; the mean squared error of the pixels in [0, 1] is logged beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._layers import check_image_shape
from deepnet.models._pixels import PixelScale
from deepnet.models._registry import register_model

__all__ = ["Autoencoder", "AutoencoderConfig"]


@dataclass(frozen=True)
class AutoencoderConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    code_dim: int = 30
    kind: str = "mlp"  # mlp | conv
    hidden: tuple[int, ...] = (1000, 500, 250)  # mlp: encoder widths (the decoder mirrors them)
    widths: tuple[int, ...] = (32, 64)  # conv: channels of the two stride-2 stages
    corruption: float = 0.0  # denoising: fraction of input pixels zeroed while training
    sparsity: float = 0.0  # sparse: weight of the mean |code| penalty
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """``encode``: normalised images ``(B, C, H, W)`` -> codes ``(B, code_dim)``; ``decode``:
    codes -> pixel logits ``(B, C, H, W)``; ``forward``: images -> reconstructed pixels in [0, 1]."""

    parts = ("model",)
    conditional_classes = 0

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, width = config.input_shape
        self.pixels = PixelScale(channels, config.pixel_mean, config.pixel_std)
        if config.kind == "mlp":
            sizes = [channels * height * width, *config.hidden, config.code_dim]
            self.encoder = nn.Sequential(nn.Flatten(), _mlp(sizes))
            self.decoder = nn.Sequential(_mlp(sizes[::-1]), nn.Unflatten(1, config.input_shape))
        else:
            c1, c2 = config.widths
            h4, w4 = height // 4, width // 4
            self.encoder = nn.Sequential(
                nn.Conv2d(channels, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # (B, c1, H/2, W/2)
                nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # (B, c2, H/4, W/4)
                nn.Flatten(), nn.Linear(c2 * h4 * w4, config.code_dim))
            self.decoder = nn.Sequential(
                nn.Linear(config.code_dim, c2 * h4 * w4), nn.ReLU(inplace=True), nn.Unflatten(1, (c2, h4, w4)),
                nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # (B, c1, H/2, W/2)
                nn.ConvTranspose2d(c1, channels, 4, stride=2, padding=1))  # (B, C, H, W) logits

    def part_parameters(self, part: str) -> list[nn.Parameter]:
        return list(self.parameters())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x)))

    def _losses(self, x: torch.Tensor, corrupt: bool) -> dict[str, torch.Tensor]:
        target = self.pixels.to_pixels(x)
        inputs = x
        if corrupt and self.config.corruption > 0:
            keep = torch.rand_like(target) >= self.config.corruption
            inputs = self.pixels.from_pixels(target * keep)
        code = self.encode(inputs)
        logits = self.decode(code)
        reconstruction = F.binary_cross_entropy_with_logits(logits, target)
        losses = {"reconstruction_bce": reconstruction,
                  "reconstruction_mse": F.mse_loss(torch.sigmoid(logits), target)}
        loss = reconstruction
        if self.config.sparsity > 0:
            activity = code.abs().mean()
            losses["code_activity"] = activity
            loss = loss + self.config.sparsity * activity
        return {"loss": loss, **losses}

    def training_losses(self, x: torch.Tensor, y: torch.Tensor, part: str = "model") -> dict[str, torch.Tensor]:
        return self._losses(x, corrupt=True)

    def evaluation_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._losses(x, corrupt=False)


def _create_autoencoder(**kwargs) -> Autoencoder:
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    check_image_shape("autoencoder", kwargs["input_shape"])
    for key in ("hidden", "widths", "pixel_mean", "pixel_std"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    if kwargs["code_dim"] < 1:
        raise ValueError(f"Received an invalid value for `code_dim`: expected >= 1. Received: code_dim={kwargs['code_dim']}.")
    if not 0 <= kwargs["corruption"] < 1:
        raise ValueError("Received an invalid value for `corruption`: the fraction of pixels zeroed, in [0, 1). "
                         f"Received: corruption={kwargs['corruption']}.")
    if kwargs["sparsity"] < 0:
        raise ValueError(f"Received an invalid value for `sparsity`: expected >= 0. Received: sparsity={kwargs['sparsity']}.")
    _, height, width = kwargs["input_shape"]
    if kwargs["kind"] == "conv" and (height % 4 or width % 4 or len(kwargs["widths"]) != 2):
        raise ValueError("The convolutional autoencoder halves the side twice: it needs height and width divisible by 4 "
                         f"and two `widths`. Received: input_shape={kwargs['input_shape']}, widths={kwargs['widths']}.")
    return Autoencoder(AutoencoderConfig(**kwargs))


_PAPER = ("Hinton & Salakhutdinov, Reducing the Dimensionality of Data with Neural Networks, Science 2006; "
          "Vincent et al., Extracting and Composing Robust Features with Denoising Autoencoders, ICML 2008")


@register_model(family="autoencoder", year=2006, input_kind="generative", paper=_PAPER,
                tiny={"input_shape": (1, 8, 8), "code_dim": 3, "hidden": (16, 8)})
def autoencoder(input_shape: tuple[int, int, int] = (1, 28, 28), code_dim: int = 30,
                hidden: tuple[int, ...] = (1000, 500, 250), corruption: float = 0.0, sparsity: float = 0.0,
                pixel_mean: tuple[float, ...] | None = None, pixel_std: tuple[float, ...] | None = None) -> Autoencoder:
    """Deep MLP autoencoder (denoising with corruption>0, sparse with sparsity>0)."""
    return _create_autoencoder(input_shape=input_shape, code_dim=code_dim, kind="mlp", hidden=hidden, widths=(32, 64),
                               corruption=corruption, sparsity=sparsity, pixel_mean=pixel_mean, pixel_std=pixel_std)


@register_model(family="autoencoder", year=2008, input_kind="generative", paper=_PAPER,
                tiny={"input_shape": (1, 8, 8), "code_dim": 3, "widths": (4, 8)})
def conv_autoencoder(input_shape: tuple[int, int, int] = (1, 28, 28), code_dim: int = 30,
                     widths: tuple[int, int] = (32, 64), corruption: float = 0.0, sparsity: float = 0.0,
                     pixel_mean: tuple[float, ...] | None = None,
                     pixel_std: tuple[float, ...] | None = None) -> Autoencoder:
    """Convolutional autoencoder: two stride-2 convolutions down, two transposed up."""
    return _create_autoencoder(input_shape=input_shape, code_dim=code_dim, kind="conv", hidden=(), widths=widths,
                               corruption=corruption, sparsity=sparsity, pixel_mean=pixel_mean, pixel_std=pixel_std)
