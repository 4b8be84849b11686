"""Mixture-of-experts feed-forward: a router sends each token to its top-k of ``n_experts``
SwiGLU experts and mixes their outputs by the router's weights (Shazeer et al., 2017;
Fedus et al., 2022), optionally plus always-on shared experts (DeepSeekMoE, Dai et al., 2024).

Routing options cover both common recipes: ``scoring="softmax"`` (Switch, Mixtral) and
``scoring="sigmoid"`` with group-limited selection and a selection-only bias (DeepSeek-V3).
After every forward, ``aux_loss`` holds the weighted load-balancing loss for a trainer to add.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._attention import SwiGLU

__all__ = ["Experts", "MoEFeedForward"]


class Experts(nn.Module):
    """``n_experts`` SwiGLU feed-forwards with their weights stacked in three tensors.

    Stacked rather than a ModuleList of 256 x 3 Linears per layer: DeepSeek-V3 would need
    45,000 modules, which takes seconds just to construct on ``meta``.
    """

    def __init__(self, n_experts: int, n_embd: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(n_experts, hidden, n_embd))
        self.up_proj = nn.Parameter(torch.empty(n_experts, hidden, n_embd))
        self.down_proj = nn.Parameter(torch.empty(n_experts, n_embd, hidden))
        for weight in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(weight, std=0.02)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``x (N, C)``, ``indices`` and ``weights (N, k)`` -> ``sum_j weights[:, j] *
        expert[indices[:, j]](x)`` of shape ``(N, C)``. Only experts with tokens run."""
        N, k = indices.shape
        flat_expert = indices.flatten()  # (N*k,)
        order = flat_expert.argsort()  # (N*k,) assignments grouped by expert
        counts = torch.bincount(flat_expert, minlength=self.gate_proj.shape[0]).tolist()
        flat_weights = weights.flatten()  # (N*k,)
        out = torch.zeros_like(x)  # (N, C)
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            assignment = order[start:start + count]  # (n,)
            start += count
            token = assignment // k  # (n,)
            h = x[token]  # (n, C)
            h = F.silu(h @ self.gate_proj[expert].T) * (h @ self.up_proj[expert].T)  # (n, hidden)
            h = h @ self.down_proj[expert].T  # (n, C)
            out.index_add_(0, token, h * flat_weights[assignment, None])
        return out


class MoEFeedForward(nn.Module):
    """``forward(x (B, T, C)) -> (B, T, C)``; sets ``aux_loss`` (a scalar) and
    ``expert_load`` (tokens per expert) for the batch it saw."""

    def __init__(
        self,
        n_embd: int,
        hidden: int,
        n_experts: int,
        top_k: int,
        *,
        n_shared_experts: int = 0,
        scoring: Literal["softmax", "sigmoid"] = "softmax",
        n_group: int = 1,
        topk_group: int = 1,
        routed_scaling: float = 1.0,
        normalize_topk: bool = True,
        aux_loss_weight: float = 0.01,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(
                f"MoE needs 1 <= top_k <= n_experts. Received: top_k={top_k}, n_experts={n_experts}."
            )
        if scoring not in ("softmax", "sigmoid"):
            raise ValueError(
                f"MoE scoring must be 'softmax' or 'sigmoid'. Received: scoring={scoring!r}."
            )
        group_size = n_experts // max(n_group, 1)
        groups_valid = n_group >= 1 and n_experts % n_group == 0 and (n_group == 1 or group_size >= 2)
        if not groups_valid or not 1 <= topk_group <= n_group:
            raise ValueError(
                f"Group-limited routing needs n_experts divisible by n_group into groups of at least "
                f"2, and 1 <= topk_group <= n_group. Received: n_experts={n_experts}, "
                f"n_group={n_group}, topk_group={topk_group}."
            )
        if n_group > 1 and topk_group * group_size < top_k:
            raise ValueError(
                f"The {topk_group} kept groups of {group_size} experts cannot supply "
                f"top_k={top_k} experts; raise topk_group or lower top_k."
            )
        self.n_experts, self.top_k, self.scoring = n_experts, top_k, scoring
        self.n_group, self.topk_group = n_group, topk_group
        self.routed_scaling, self.normalize_topk = routed_scaling, normalize_topk
        self.aux_loss_weight = aux_loss_weight
        self.router = nn.Linear(n_embd, n_experts, bias=False)
        # DeepSeek-V3's auxiliary-loss-free balancing: a bias that only steers which experts
        # are chosen, moved by update_expert_bias() rather than by gradients
        self.register_buffer("expert_bias", torch.zeros(n_experts))
        self.experts = Experts(n_experts, n_embd, hidden)
        self.shared_experts = SwiGLU(n_embd, hidden * n_shared_experts) if n_shared_experts else None
        self.aux_loss: torch.Tensor | None = None
        self.expert_load: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (N, C)`` -> mixing weights ``(N, k)``, expert indices ``(N, k)`` and the
        unweighted load-balancing loss (1.0 when the load is perfectly balanced)."""
        N = x.shape[0]
        logits = self.router(x)  # (N, E)
        scores = logits.softmax(dim=-1) if self.scoring == "softmax" else logits.sigmoid()  # (N, E)
        choice = scores + self.expert_bias  # (N, E)
        if self.n_group > 1:
            grouped = choice.view(N, self.n_group, -1)  # (N, G, E/G)
            group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
            kept = group_scores.topk(self.topk_group, dim=-1).indices  # (N, topk_group)
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
            choice = grouped.masked_fill(~group_mask[..., None], float("-inf")).view(N, -1)  # (N, E)
        indices = choice.topk(self.top_k, dim=-1).indices  # (N, k)
        weights = scores.gather(1, indices)  # (N, k)
        if self.normalize_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights * self.routed_scaling
        # Switch-style balance loss E * sum_i f_i * P_i: f_i the share of the N*k assignments
        # that went to expert i, P_i its mean (normalised) router score
        load = torch.bincount(indices.flatten(), minlength=self.n_experts).to(scores.dtype)  # (E,)
        share = load / (N * self.top_k)  # (E,)
        probability = (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=0)  # (E,)
        balance_loss = self.n_experts * (share * probability).sum()
        self.expert_load = load.detach()
        return weights, indices, balance_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (N, C)
        weights, indices, balance_loss = self.route(flat)
        self.aux_loss = self.aux_loss_weight * balance_loss
        out = self.experts(flat, indices, weights.to(x.dtype))  # (N, C)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        return out.view(B, T, C)

    @torch.no_grad()
    def update_expert_bias(self, rate: float = 1e-3) -> None:
        """One step of DeepSeek-V3's balancing: lower the bias of experts that got more than
        the mean load in the last forward, raise the others, by ``rate``."""
        if self.expert_load is None:
            raise ValueError("update_expert_bias() needs a forward pass first to measure the load.")
        self.expert_bias += rate * torch.sign(self.expert_load.mean() - self.expert_load)
