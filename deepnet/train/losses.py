"""Losses by name, and accuracy, for classification and language modelling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["compute_loss", "correct_count"]


def compute_loss(name: str, logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean loss. ``logits`` ``(B, K)`` or ``(B, T, K)``; ``targets`` ``(B,)`` / ``(B, T)`` class
    ids (for ``mse`` and ``bce`` also accepted as float targets of the logits' shape)."""
    if name == "cross_entropy":
        return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), label_smoothing=label_smoothing)
    if targets.dtype == torch.int64 and targets.shape != logits.shape:
        if logits.shape[-1] == 1 and name == "bce":
            targets = targets.unsqueeze(-1).float()
        else:
            targets = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    if name == "mse":
        return F.mse_loss(logits, targets.to(logits.dtype))
    raise ValueError(f"Unknown loss {name!r}; choose cross_entropy, bce or mse.")


def correct_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions (a 0-dim tensor: no host synchronisation)."""
    if logits.shape[-1] == 1:  # binary with one logit
        return ((logits.squeeze(-1) > 0).long() == targets).sum()
    return (logits.argmax(-1) == targets).sum()
