"""Clusters of the training images found while training, for families that condition
themselves on them in place of labels (self-conditioning, Liu et al. 2020).

Mini-batch k-means (Sculley 2010): the first ``k`` images seen seed the centroids; after that
each image is assigned to its nearest centroid, and each centroid moves to the running mean of
every image assigned to it so far (a per-centroid rate of 1 / its count), so the centroids
settle as training goes on. The state is two buffers, saved and resumed with the weights.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["OnlineKMeans"]


class OnlineKMeans(nn.Module):
    """``k`` centroids of flattened images ``(B, dim)``; ``assign`` -> cluster indices ``(B,)``."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("centers", torch.zeros(k, dim))
        self.register_buffer("counts", torch.zeros(k, dtype=torch.int64))

    @torch.no_grad()
    def assign(self, images: torch.Tensor, update: bool) -> torch.Tensor:
        """The nearest centroid of each image ``(B, ...)``; with ``update``, a k-means step first
        seeds empty centroids with images of the batch, then moves each centroid to the running
        mean of the images assigned to it."""
        with torch.autocast(images.device.type, enabled=False):  # distances in fp32 under bf16 training
            return self._assign(images.detach().flatten(1).float(), update)

    def _assign(self, flat: torch.Tensor, update: bool) -> torch.Tensor:
        centers, counts = self.centers, self.counts
        labels = torch.empty(len(flat), dtype=torch.int64, device=flat.device)
        seeded = 0
        if update:
            empty = (counts == 0).nonzero().flatten()[:len(flat)]
            seeded = len(empty)
            centers[empty] = flat[:seeded]
            counts[empty] = 1
            labels[:seeded] = empty
        rest = flat[seeded:]
        if len(rest):
            distances = torch.cdist(rest, centers)
            if bool((counts > 0).any()):
                distances[:, counts == 0] = float("inf")  # an unseeded centroid (at 0) takes nothing
            nearest = distances.argmin(1)
            labels[seeded:] = nearest
            if update:
                taken = torch.bincount(nearest, minlength=len(counts))
                sums = torch.zeros_like(centers).index_add_(0, nearest, rest)
                counts += taken
                centers += (sums - taken.unsqueeze(1) * centers) / counts.clamp(min=1).unsqueeze(1)
        return labels

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` cluster indices ``(n,)``, each in proportion to the images it has taken
        (uniform before any)."""
        weights = self.counts.double().cpu()
        weights = weights if weights.sum() > 0 else torch.ones(len(weights), dtype=torch.float64)
        return torch.multinomial(weights, n, replacement=True, generator=generator)
