"""Nearest neighbours for duplicates, leakage and outliers, exact and bounded in memory.

Candidates are searched in a PCA projection (at most 64 dimensions): an orthonormal
projection never lengthens a distance, so every pair within ``threshold`` in the full space
is within it in the projection too; each candidate is then measured in the full space.
Distances are root-mean-square differences per feature of the inputs as the model sees
them (standardised), so one threshold reads the same on 64 features and on 784 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Neighbours", "find_pairs", "project"]


@dataclass
class Neighbours:
    """For each query row: the ``k`` nearest base rows (``index`` ``(Q, k)``) and their projected
    RMS distances (``distance`` ``(Q, k)``), nearest first."""

    index: torch.Tensor
    distance: torch.Tensor


def project(x: torch.Tensor, dims: int = 64, fit_rows: int = 20000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, components)`` of a PCA of ``x`` ``(N, ...)`` flattened: ``mean`` ``(D,)``,
    orthonormal ``components`` ``(D, d)`` with ``d = min(dims, D)``, fitted on at most ``fit_rows`` rows."""
    flat = x.reshape(len(x), -1).float()
    g = torch.Generator().manual_seed(seed)
    sample = flat[torch.randperm(len(flat), generator=g)[:fit_rows]]
    mean = sample.mean(dim=0)
    d = min(dims, flat.shape[1], len(sample))
    if d == flat.shape[1]:
        return mean, torch.eye(d)
    torch.manual_seed(seed)  # pca_lowrank's random sketch
    _, _, v = torch.pca_lowrank(sample - mean, q=d, center=False, niter=4)
    return mean, v[:, :d]


def nearest(queries: torch.Tensor, base: torch.Tensor, k: int, *, same: bool = False, chunk: int = 512) -> Neighbours:
    """The ``k`` nearest ``base`` rows of each ``queries`` row (both ``(N, d)``, already projected);
    ``same``: queries are the base, and a row is not its own neighbour. Memory: ``chunk x len(base)``."""
    k = min(k, len(base) - (1 if same else 0))
    base_sq = (base * base).sum(dim=1)
    indices, distances = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        d2 = (q * q).sum(dim=1, keepdim=True) + base_sq - 2 * q @ base.T  # (chunk, N_base)
        if same:
            rows = torch.arange(len(q))
            d2[rows, rows + start] = float("inf")
        value, index = d2.topk(k, dim=1, largest=False)
        indices.append(index)
        distances.append(value.clamp_min(0).sqrt())
    return Neighbours(torch.cat(indices), torch.cat(distances))


def find_pairs(queries: torch.Tensor, base: torch.Tensor, threshold: float, *, same: bool = False, k: int = 5,
               mean: torch.Tensor, components: torch.Tensor) -> tuple[list[tuple[int, int, float]], Neighbours]:
    """Pairs ``(query_index, base_index, distance)`` within ``threshold`` (RMS per feature, full
    space) among each query's ``k`` projected nearest neighbours; with ``same`` each unordered
    pair once. Also returns the projected neighbours (for outlier scores)."""
    q_flat, b_flat = queries.reshape(len(queries), -1).float(), base.reshape(len(base), -1).float()
    features = q_flat.shape[1]
    q_proj, b_proj = (q_flat - mean) @ components, (b_flat - mean) @ components
    found = nearest(q_proj, b_proj, k, same=same)
    scale = features**0.5  # Euclidean → RMS per feature
    candidates = (found.distance / scale <= threshold).nonzero()
    pairs = []
    for row, column in candidates.tolist():
        j = int(found.index[row, column])
        if same and j < row and (found.index[j] == row).any():
            continue  # seen from the other side
        distance = float((q_flat[row] - b_flat[j]).norm()) / scale
        if distance <= threshold:
            pairs.append((row, j, distance))
    found.distance = found.distance / scale
    return pairs, found
