"""What the generative families share: the way between a dataset's normalised inputs and
pixels in [0, 1], and the protocol the training loop reads.

A family that trains on its own objective (autoencoders, VAE, GAN, diffusion, RBMs) is still
a plain ``nn.Module``; it adds methods that the trainer calls instead of a classifier's loss:

- ``parts``: names of the parameter sets that get an optimizer each (``("model",)``, or
  ``("discriminator", "generator")`` for a GAN), and ``part_parameters(part)``;
- ``training_losses(x, y, part) -> dict``: ``"loss"`` (minimised by that part's optimizer)
  and any named terms to log, each a scalar tensor;
- ``evaluation_losses(x, y) -> dict``: the same for validation and test (when absent, the
  model is a classifier and is evaluated on its logits);
- optionally ``active_parts(epoch)``: the parts trained in an epoch (greedy layer-wise
  pre-training); ``sample(n, labels, generator)`` -> images ``(n, C, H, W)`` in [0, 1];
  ``encode(x)`` -> codes ``(B, D)``; ``conditional_classes`` (0 for unconditional models).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PixelScale"]


class PixelScale(nn.Module):
    """Normalised inputs ``(B, C, H, W)`` to pixels in [0, 1] and back, with the training
    split's per-channel mean and std (``model.json``'s preprocessing); identity without them."""

    def __init__(self, channels: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        if (mean is None) != (std is None) or (mean is not None and not (len(mean) == len(std) == channels)):
            raise ValueError(f"Received an invalid value for `pixel_mean`/`pixel_std`: expected {channels} values "
                             f"each (one per channel) or neither. Received: pixel_mean={mean!r}, pixel_std={std!r}.")
        mean = torch.tensor(list(mean) if mean is not None else [0.0] * channels, dtype=torch.float32)
        std = torch.tensor(list(std) if std is not None else [1.0] * channels, dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean).clamp(0, 1)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std
