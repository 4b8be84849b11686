"""Batched image augmentation as tensor ops: one affine warp per batch plus noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Augment", "AugmentConfig"]


@dataclass(frozen=True)
class AugmentConfig:
    shift: float = 0.0  # max translation, as a fraction of the image side
    rotate: float = 0.0  # max rotation, degrees
    scale: float = 0.0  # max relative zoom, e.g. 0.1 → [0.9, 1.1]
    noise: float = 0.0  # std of additive Gaussian noise (in normalised units)

    @property
    def enabled(self) -> bool:
        return any((self.shift, self.rotate, self.scale, self.noise))


class Augment:
    """Random shift / rotation / scaling in one ``grid_sample`` call, then Gaussian noise.

    Input and output ``(B, C, H, W)``; ``fill`` is the value of pixels moved in from outside
    (the normalised background, so that a shifted digit has a black border as MNIST does).
    """

    def __init__(self, config: AugmentConfig, fill: float = 0.0) -> None:
        self.config, self.fill = config, fill

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        if x.dim() != 4:
            return x + c.noise * _noise(x, generator) if c.noise else x
        b = x.shape[0]
        if c.shift or c.rotate or c.scale:
            u = torch.rand(b, 4, generator=generator) * 2 - 1  # (B, 4) in [-1, 1]
            angle = u[:, 0] * math.radians(c.rotate)
            zoom = 1.0 + u[:, 1] * c.scale
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta = torch.stack([
                torch.stack([cos, -sin, u[:, 2] * 2 * c.shift], dim=1),
                torch.stack([sin, cos, u[:, 3] * 2 * c.shift], dim=1),
            ], dim=1).to(x.device, x.dtype)  # (B, 2, 3); grid coordinates span [-1, 1], so shift×2
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False) + self.fill
        if c.noise:
            x = x + c.noise * _noise(x, generator)
        return x


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn by the (CPU) generator, so a run augments alike on every device.
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device).to(x.device, x.dtype)
