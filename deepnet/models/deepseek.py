"""DeepSeek-V3 (and DeepSeek-R1, the same network trained further): a decoder-only
transformer with multi-head latent attention (MLA) and DeepSeekMoE feed-forwards.

MLA compresses queries and keys/values through low-rank "latent" projections (ranks
``q_lora_rank`` and ``kv_lora_rank``); each head's query and key are the concatenation of a
position-free part (``qk_nope_head_dim``) and a rotary part (``qk_rope_head_dim``), the rotary
key shared by all heads. The first ``first_k_dense`` blocks use a dense SwiGLU; the rest a
mixture of ``n_routed_experts`` experts (``n_activated_experts`` per token, chosen within the
best ``topk_group`` of ``n_group`` groups) plus ``n_shared_experts`` always-on experts.

Not included: the multi-token-prediction module (an extra 14B used in training only; the
published 671B excludes it) and YaRN context extension (``block_size`` is the 4K pre-training
context). After each forward ``model.aux_loss`` holds the summed, weighted balance losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._attention import (
    SwiGLU,
    apply_rotary,
    check_sequence_length,
    config_with_overrides,
    init_normal,
    rotary_cos_sin,
)
from deepnet.models._moe import MoEFeedForward
from deepnet.models._registry import register_model

__all__ = ["DeepSeekBlock", "DeepSeekConfig", "DeepSeekV3", "MultiHeadLatentAttention"]


@dataclass(frozen=True)
class DeepSeekConfig:
    vocab_size: int = 129280
    block_size: int = 4096
    n_layer: int = 61
    n_embd: int = 7168
    n_head: int = 128
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    intermediate_size: int = 18432  # the dense blocks' SwiGLU width
    first_k_dense: int = 3
    moe_intermediate_size: int = 2048  # each expert's SwiGLU width
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 8
    n_group: int = 8
    topk_group: int = 4
    routed_scaling: float = 2.5
    aux_loss_weight: float = 1e-4  # the paper's balance-loss factor alpha
    rope_base: float = 10000.0
    norm_eps: float = 1e-6


class MultiHeadLatentAttention(nn.Module):
    """``forward(x (B, T, C)) -> (B, T, C)``, causal."""

    def __init__(self, config: DeepSeekConfig) -> None:
        super().__init__()
        self.config = config
        nh = config.n_head
        self.qk_head_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
        self.q_down = nn.Linear(config.n_embd, config.q_lora_rank, bias=False)
        self.q_norm = nn.RMSNorm(config.q_lora_rank, eps=config.norm_eps)
        self.q_up = nn.Linear(config.q_lora_rank, nh * self.qk_head_dim, bias=False)
        # one projection gives the latent kv and the shared rotary key
        self.kv_down = nn.Linear(config.n_embd, config.kv_lora_rank + config.qk_rope_head_dim, bias=False)
        self.kv_norm = nn.RMSNorm(config.kv_lora_rank, eps=config.norm_eps)
        self.kv_up = nn.Linear(
            config.kv_lora_rank, nh * (config.qk_nope_head_dim + config.v_head_dim), bias=False
        )
        self.o_proj = nn.Linear(nh * config.v_head_dim, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        B, T, _ = x.shape
        nh, nope, rope, hv = c.n_head, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        q = self.q_up(self.q_norm(self.q_down(x)))  # (B, T, nh*(nope+rope))
        q = q.view(B, T, nh, nope + rope).transpose(1, 2)  # (B, nh, T, nope+rope)
        q_nope, q_rope = q.split([nope, rope], dim=-1)  # (B, nh, T, nope), (B, nh, T, rope)
        latent, k_rope = self.kv_down(x).split([c.kv_lora_rank, rope], dim=-1)  # (B, T, r), (B, T, rope)
        k_rope = k_rope.view(B, T, 1, rope).transpose(1, 2)  # (B, 1, T, rope)
        kv = self.kv_up(self.kv_norm(latent))  # (B, T, nh*(nope+hv))
        kv = kv.view(B, T, nh, nope + hv).transpose(1, 2)  # (B, nh, T, nope+hv)
        k_nope, v = kv.split([nope, hv], dim=-1)  # (B, nh, T, nope), (B, nh, T, hv)
        cos, sin = rotary_cos_sin(T, rope, c.rope_base, x.device, q.dtype)
        q_rope, k_rope = apply_rotary(q_rope, cos, sin), apply_rotary(k_rope, cos, sin)
        q = torch.cat((q_nope, q_rope), dim=-1)  # (B, nh, T, nope+rope)
        k = torch.cat((k_nope, k_rope.expand(B, nh, T, rope)), dim=-1)  # (B, nh, T, nope+rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hv)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, nh * hv))  # (B, T, C)


class DeepSeekBlock(nn.Module):
    def __init__(self, config: DeepSeekConfig, *, moe: bool) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.attn = MultiHeadLatentAttention(config)
        self.mlp_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp: nn.Module
        if moe:
            self.mlp = MoEFeedForward(
                config.n_embd, config.moe_intermediate_size, config.n_routed_experts,
                config.n_activated_experts, n_shared_experts=config.n_shared_experts,
                scoring="sigmoid", n_group=config.n_group, topk_group=config.topk_group,
                routed_scaling=config.routed_scaling, aux_loss_weight=config.aux_loss_weight,
            )
        else:
            self.mlp = SwiGLU(config.n_embd, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class DeepSeekV3(nn.Module):
    """``forward(idx (B, T) int64) -> logits (B, T, vocab_size)``; sets ``aux_loss``."""

    def __init__(self, config: DeepSeekConfig) -> None:
        super().__init__()
        if not 0 <= config.first_k_dense <= config.n_layer:
            raise ValueError(
                f"DeepSeek needs 0 <= first_k_dense <= n_layer. Received: "
                f"first_k_dense={config.first_k_dense}, n_layer={config.n_layer}."
            )
        self.config = config
        self.block_size = config.block_size
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(
            DeepSeekBlock(config, moe=i >= config.first_k_dense) for i in range(config.n_layer)
        )
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(init_normal)
        self.aux_loss: torch.Tensor | None = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_sequence_length(idx.shape[1], self.block_size, "DeepSeekV3")
        x = self.embed(idx)  # (B, T, C)
        aux_loss = torch.zeros((), device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
            if isinstance(block.mlp, MoEFeedForward) and block.mlp.aux_loss is not None:
                aux_loss = aux_loss + block.mlp.aux_loss
        self.aux_loss = aux_loss
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)


def _create_deepseek(name: str, overrides: dict[str, Any], **data: Any) -> DeepSeekV3:
    return DeepSeekV3(config_with_overrides(DeepSeekConfig(**data), overrides, name))


_TINY = {
    "vocab_size": 64, "block_size": 32, "n_layer": 3, "first_k_dense": 1, "n_embd": 32,
    "n_head": 4, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 4, "v_head_dim": 8, "intermediate_size": 64, "moe_intermediate_size": 16,
    "n_routed_experts": 8, "n_activated_experts": 2, "n_group": 4, "topk_group": 2,
}


@register_model(
    "deepseek-v3", family="deepseek", year=2024, input_kind="lm",
    paper="DeepSeek-AI, DeepSeek-V3 Technical Report, arXiv 2024",
    published_parameters=671e9, published_layers=61, tiny=_TINY,
)
def deepseek_v3(vocab_size: int = 129280, block_size: int = 4096, **overrides: Any) -> DeepSeekV3:
    """DeepSeek-V3 671B (37B active): 61 layers, MLA, 256 routed experts + 1 shared, top-8."""
    return _create_deepseek("deepseek-v3", overrides, vocab_size=vocab_size, block_size=block_size)


@register_model(
    "deepseek-r1", family="deepseek", year=2025, input_kind="lm",
    paper="DeepSeek-AI, DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via "
          "Reinforcement Learning, arXiv 2025",
    published_parameters=671e9, published_layers=61, tiny=_TINY,
)
def deepseek_r1(vocab_size: int = 129280, block_size: int = 4096, **overrides: Any) -> DeepSeekV3:
    """DeepSeek-R1 671B: the DeepSeek-V3 architecture, post-trained for reasoning."""
    return _create_deepseek("deepseek-r1", overrides, vocab_size=vocab_size, block_size=block_size)
