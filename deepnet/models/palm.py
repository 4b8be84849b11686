"""PaLM: decoder-only transformer with the "parallel" block — attention and feed-forward
read the same normalised input and are added to the residual together — multi-query
attention, SwiGLU, rotary positions, no biases anywhere, and shared input/output embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepnet.models._attention import (
    SelfAttention,
    SwiGLU,
    check_sequence_length,
    config_with_overrides,
    init_normal,
)
from deepnet.models._registry import register_model

__all__ = ["PaLM", "PaLMBlock", "PaLMConfig"]


@dataclass(frozen=True)
class PaLMConfig:
    vocab_size: int = 256000
    block_size: int = 2048
    n_layer: int = 118
    n_head: int = 48
    n_kv_head: int = 1  # multi-query attention
    head_dim: int = 256  # n_head * head_dim != n_embd in PaLM-540B
    n_embd: int = 18432
    intermediate_size: int = 73728  # 4 * n_embd
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0


class PaLMBlock(nn.Module):
    def __init__(self, config: PaLMConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=False)
        self.attn = SelfAttention(
            config.n_embd, config.n_head, n_kv_head=config.n_kv_head, head_dim=config.head_dim,
            bias=False, dropout=config.dropout, causal=True, rope_base=config.rope_base,
        )
        self.mlp = SwiGLU(config.n_embd, config.intermediate_size, dropout=config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        h = self.norm(x)
        return x + self.attn(h) + self.mlp(h)


class PaLM(nn.Module):
    """``forward(idx (B, T) int64) -> logits (B, T, vocab_size)``; ``T <= block_size``."""

    def __init__(self, config: PaLMConfig) -> None:
        super().__init__()
        self.config = config
        self.block_size = config.block_size
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(PaLMBlock(config) for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # shared input/output embeddings
        self.apply(init_normal)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_sequence_length(idx.shape[1], self.block_size, "PaLM")
        x = self.embed(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)


@register_model(
    "palm-540b", family="palm", year=2022, input_kind="lm",
    paper="Chowdhery et al., PaLM: Scaling Language Modeling with Pathways, JMLR 2023",
    published_parameters=540e9, published_layers=118,
    tiny={"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 4, "head_dim": 8,
          "n_embd": 32, "intermediate_size": 64},
)
def palm_540b(vocab_size: int = 256000, block_size: int = 2048, **overrides: Any) -> PaLM:
    """PaLM 540B: 118 parallel blocks, d=18432, 48 query heads of 256 and one key/value head."""
    config = PaLMConfig(vocab_size, block_size)
    return PaLM(config_with_overrides(config, overrides, "palm-540b"))
