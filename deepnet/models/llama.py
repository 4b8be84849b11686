"""Llama 2: decoder-only transformer with RMSNorm, SwiGLU, rotary positions and
grouped-query attention (70B), no biases and untied input/output embeddings.

Token embedding -> ``n_layer`` pre-RMSNorm blocks -> RMSNorm -> separate output head.
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

__all__ = ["Llama", "LlamaBlock", "LlamaConfig"]


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 32000
    block_size: int = 4096
    n_layer: int = 32
    n_head: int = 32
    n_kv_head: int = 32  # < n_head: grouped-query attention
    n_embd: int = 4096
    intermediate_size: int = 11008  # SwiGLU width: about 8/3 * n_embd, rounded up
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0


class LlamaBlock(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.attn = SelfAttention(
            config.n_embd, config.n_head, n_kv_head=config.n_kv_head, bias=False,
            dropout=config.dropout, causal=True, rope_base=config.rope_base,
        )
        self.mlp_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = SwiGLU(config.n_embd, config.intermediate_size, dropout=config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """``forward(idx (B, T) int64) -> logits (B, T, vocab_size)``; ``T <= block_size``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.block_size = config.block_size
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layer))
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(init_normal)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_sequence_length(idx.shape[1], self.block_size, "Llama")
        x = self.embed(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)


def _create_llama(name: str, config: LlamaConfig, overrides: dict[str, Any]) -> Llama:
    return Llama(config_with_overrides(config, overrides, name))


_TINY = {
    "vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2,
    "n_embd": 32, "intermediate_size": 64,
}
_PAPER = "Touvron et al., Llama 2: Open Foundation and Fine-Tuned Chat Models, arXiv 2023"


# Published sizes: 6.7B and 13.0B are the LLaMA paper's counts for these exact architectures
# (Llama 2 rounds them to "7B" and "13B"); 70B is Llama 2's own figure.
@register_model("llama2-7b", family="llama", year=2023, paper=_PAPER, input_kind="lm",
                published_parameters=6.7e9, published_layers=32, tiny=_TINY)
def llama2_7b(vocab_size: int = 32000, block_size: int = 4096, **overrides: Any) -> Llama:
    """Llama 2 7B: 32 layers, d=4096, 32 heads, SwiGLU width 11008."""
    config = LlamaConfig(vocab_size, block_size, n_layer=32, n_head=32, n_kv_head=32,
                         n_embd=4096, intermediate_size=11008)
    return _create_llama("llama2-7b", config, overrides)


@register_model("llama2-13b", family="llama", year=2023, paper=_PAPER, input_kind="lm",
                published_parameters=13.0e9, published_layers=40, tiny=_TINY)
def llama2_13b(vocab_size: int = 32000, block_size: int = 4096, **overrides: Any) -> Llama:
    """Llama 2 13B: 40 layers, d=5120, 40 heads, SwiGLU width 13824."""
    config = LlamaConfig(vocab_size, block_size, n_layer=40, n_head=40, n_kv_head=40,
                         n_embd=5120, intermediate_size=13824)
    return _create_llama("llama2-13b", config, overrides)


@register_model("llama2-70b", family="llama", year=2023, paper=_PAPER, input_kind="lm",
                published_parameters=70e9, published_layers=80, tiny=_TINY)
def llama2_70b(vocab_size: int = 32000, block_size: int = 4096, **overrides: Any) -> Llama:
    """Llama 2 70B: 80 layers, d=8192, 64 query heads sharing 8 key/value heads, width 28672."""
    config = LlamaConfig(vocab_size, block_size, n_layer=80, n_head=64, n_kv_head=8,
                         n_embd=8192, intermediate_size=28672)
    return _create_llama("llama2-70b", config, overrides)
