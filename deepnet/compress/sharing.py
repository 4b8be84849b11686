"""Trained weight sharing (Han et al. 2016, section 3): each tensor's weights are clustered by
k-means into ``2**bits`` shared values; the network is then retrained with the shared values
(the centroids) as the parameters, so that each centroid moves by the sum of the gradients of
the weights it stands for. Pruned weights stay zero and take no part.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["SharedWeights", "kmeans_1d", "release_sharing", "share_weights"]


def kmeans_1d(values: torch.Tensor, clusters: int, iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a 1-D tensor with centroids first spread linearly between its
    minimum and maximum (Han et al. found linear initialisation best: it keeps the few large
    weights, which matter most, their own centroids). Returns (centroids (K,), index per value (N,))."""
    low, high = values.min(), values.max()
    centroids = torch.linspace(float(low), float(high), clusters, dtype=values.dtype)
    for _ in range(iterations):
        boundaries = (centroids[1:] + centroids[:-1]) / 2  # centroids stay sorted in 1-D
        assignment = torch.bucketize(values, boundaries)
        sums = torch.zeros(clusters, dtype=values.dtype).index_add_(0, assignment, values)
        counts = torch.bincount(assignment, minlength=clusters).to(values.dtype)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids, torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)


class SharedWeights(nn.Module):
    """A parametrization: the tensor is ``codebook[indices]`` (zero where ``mask`` is False).
    The codebook is the trainable parameter; the tensor it replaces is ignored."""

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook)
        self.register_buffer("indices", indices)
        self.register_buffer("mask", mask)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        shared = self.codebook[self.indices]  # same shape as the tensor it replaces
        return shared * self.mask if self.mask is not None else shared


def share_weights(model: nn.Module, bits: int) -> list[tuple[nn.Module, str]]:
    """Replace every floating-point parameter with more than ``2 * 2**bits`` entries by
    ``2**bits`` shared values (k-means over its nonzero entries). Returns the (module, name)
    pairs parametrized, for :func:`release_sharing`."""
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"Received an invalid value for `--share-bits`: expected an integer from 1 to 8 "
                         f"(2**bits shared values per layer; Han et al. use 5 for fully connected layers, 8 for "
                         f"convolutions). Received: --share-bits {bits!r}")
    clusters = 2**bits
    shared = []
    for module in list(model.modules()):
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.is_floating_point() or param.numel() <= 2 * clusters:
                continue
            weight = param.detach()
            mask = weight != 0
            sparse = not bool(mask.all())
            values = weight[mask]
            if values.numel() <= clusters:
                continue
            centroids, assignment = kmeans_1d(values.float(), clusters)
            indices = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
            indices[mask] = assignment.to(weight.device)
            sharing = SharedWeights(centroids.to(weight), indices, mask if sparse else None)
            parametrize.register_parametrization(module, name, sharing, unsafe=True)
            shared.append((module, name))
    return shared


def release_sharing(shared: list[tuple[nn.Module, str]]) -> None:
    """End sharing: round each codebook to fp16 (the storage's precision; the rounded model
    is the one measured) and write the shared values back as plain parameters."""
    for module, name in shared:
        sharing = module.parametrizations[name][0]
        with torch.no_grad():
            sharing.codebook.copy_(sharing.codebook.half().float())
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
