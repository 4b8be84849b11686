"""The variational autoencoder (Kingma & Welling 2014).

An MLP encoder gives the mean and log-variance of a Gaussian ``q(z|x)``; a code is drawn with
the reparameterisation ``z = mu + sigma * eps`` so that gradients pass through the draw; an
MLP decoder gives the Bernoulli means of the pixels. The loss is the negative evidence lower
bound per image, in nats: the reconstruction term ``-log p(x|z)`` (binary cross-entropy
summed over pixels) plus ``KL(q(z|x) || N(0, I))`` in closed form; both terms are logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._layers import check_image_shape
from deepnet.models._pixels import PixelScale
from deepnet.models._registry import register_model

__all__ = ["VAE", "VAEConfig"]


@dataclass(frozen=True)
class VAEConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """``encode``: normalised images ``(B, C, H, W)`` -> posterior means ``(B, latent_dim)``;
    ``decode``: codes -> pixel logits ``(B, C, H, W)``; ``forward``: images -> reconstructed
    pixels in [0, 1] (decoded from the posterior mean)."""

    parts = ("model",)
    conditional_classes = 0

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, width = config.input_shape
        pixels = channels * height * width
        self.pixels = PixelScale(channels, config.pixel_mean, config.pixel_std)
        self.encoder = nn.Sequential(nn.Flatten(), _mlp([pixels, *config.hidden]))
        self.to_mean = nn.Linear(config.hidden[-1], config.latent_dim)
        self.to_log_variance = nn.Linear(config.hidden[-1], config.latent_dim)
        self.decoder = nn.Sequential(_mlp([config.latent_dim, *config.hidden[::-1]]), nn.Linear(config.hidden[0], pixels),
                                     nn.Unflatten(1, config.input_shape))

    def part_parameters(self, part: str) -> list[nn.Parameter]:
        return list(self.parameters())

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, hidden[-1])
        return self.to_mean(h), self.to_log_variance(h)  # (B, latent_dim) each

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x)))

    def _losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        target = self.pixels.to_pixels(x)
        mean, log_variance = self.posterior(x)
        z = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)  # the reparameterisation
        logits = self.decode(z)
        reconstruction = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mean.pow(2) + log_variance.exp() - 1 - log_variance).sum(1)
        loss = (reconstruction + kl).mean()
        return {"loss": loss, "reconstruction_nats": reconstruction.mean(), "kl_nats": kl.mean(), "elbo_nats": -loss,
                "reconstruction_mse": F.mse_loss(torch.sigmoid(logits), target)}

    def training_losses(self, x: torch.Tensor, y: torch.Tensor, part: str = "model") -> dict[str, torch.Tensor]:
        return self._losses(x)

    def evaluation_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._losses(x)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` in [0, 1]: codes from the prior, decoded to Bernoulli means."""
        device = self.to_mean.weight.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device="cpu").to(device)
        return torch.sigmoid(self.decode(z))

    @torch.no_grad()
    def interpolate(self, x_from: torch.Tensor, x_to: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Decoded points on the straight line between two images' posterior means:
        ``(B, steps, C, H, W)`` for ``x_from`` and ``x_to`` of shape ``(B, C, H, W)``."""
        start, end = self.encode(x_from), self.encode(x_to)  # (B, latent_dim)
        weights = torch.linspace(0, 1, steps, device=start.device).view(1, steps, 1)
        z = start.unsqueeze(1) * (1 - weights) + end.unsqueeze(1) * weights  # (B, steps, latent_dim)
        return torch.sigmoid(self.decode(z.flatten(0, 1))).unflatten(0, (len(start), steps))


@register_model(family="vae", year=2014, input_kind="generative",
                paper="Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014",
                tiny={"input_shape": (1, 8, 8), "latent_dim": 2, "hidden": (16,)})
def vae(input_shape: tuple[int, int, int] = (1, 28, 28), latent_dim: int = 16, hidden: tuple[int, ...] = (512, 256),
        pixel_mean: tuple[float, ...] | None = None, pixel_std: tuple[float, ...] | None = None) -> VAE:
    """Variational autoencoder with a Gaussian latent and Bernoulli pixels (MLP)."""
    input_shape = tuple(input_shape)
    check_image_shape("vae", input_shape)
    if latent_dim < 1 or not hidden:
        raise ValueError(f"Received an invalid value for `latent_dim`/`hidden`: expected latent_dim >= 1 and at least "
                         f"one hidden width. Received: latent_dim={latent_dim}, hidden={hidden!r}.")
    return VAE(VAEConfig(input_shape=input_shape, latent_dim=latent_dim, hidden=tuple(hidden),
                         pixel_mean=tuple(pixel_mean) if pixel_mean is not None else None,
                         pixel_std=tuple(pixel_std) if pixel_std is not None else None))
