"""GPT: decoder-only pre-LN transformer language models (GPT-2, GPT-3, a character-level GPT).

Token + learned position embeddings -> ``n_layer`` pre-LN blocks with causal self-attention
-> LayerNorm -> a head that shares its weights with the token embedding. Written after
nanoGPT's ``model.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepnet.models._attention import (
    Block,
    check_sequence_length,
    config_with_overrides,
    init_normal,
    scaled_residual_init,
)
from deepnet.models._registry import register_model

__all__ = ["GPT", "GPTConfig"]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as in GPT-2


class GPT(nn.Module):
    """``forward(idx (B, T) int64) -> logits (B, T, vocab_size)``; ``T <= block_size``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.block_size = config.block_size
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                config.n_embd, config.n_head, 4 * config.n_embd,
                activation=nn.GELU(approximate="tanh"),  # GPT-2's GELU approximation
                norm_first=True, causal=True, dropout=config.dropout, bias=config.bias,
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf, 2017)
        self.apply(init_normal)
        scaled_residual_init(self, config.n_layer)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        check_sequence_length(T, self.block_size, "GPT")
        positions = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab_size)


def _create_gpt(name: str, config: GPTConfig, overrides: dict[str, Any]) -> GPT:
    return GPT(config_with_overrides(config, overrides, name))


_TINY = {"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}
_GPT2_PAPER = (
    "Radford, Wu, Child, Luan, Amodei, Sutskever, Language Models are Unsupervised "
    "Multitask Learners, OpenAI technical report 2019"
)


# The published sizes are the names of OpenAI's released checkpoints (124M, 355M, 774M,
# 1558M); the paper's own table (117M ... 1542M) undercounted them.
@register_model("gpt2", family="gpt", year=2019, paper=_GPT2_PAPER, input_kind="lm",
                published_parameters=124e6, published_layers=12, tiny=_TINY)
def gpt2(vocab_size: int = 50257, block_size: int = 1024, **overrides: Any) -> GPT:
    """GPT-2 small: 12 layers, d=768, 12 heads, 1024-token context."""
    config = GPTConfig(vocab_size, block_size, n_layer=12, n_head=12, n_embd=768)
    return _create_gpt("gpt2", config, overrides)


@register_model("gpt2-medium", family="gpt", year=2019, paper=_GPT2_PAPER, input_kind="lm",
                published_parameters=355e6, published_layers=24, tiny=_TINY)
def gpt2_medium(vocab_size: int = 50257, block_size: int = 1024, **overrides: Any) -> GPT:
    """GPT-2 medium: 24 layers, d=1024, 16 heads."""
    config = GPTConfig(vocab_size, block_size, n_layer=24, n_head=16, n_embd=1024)
    return _create_gpt("gpt2-medium", config, overrides)


@register_model("gpt2-large", family="gpt", year=2019, paper=_GPT2_PAPER, input_kind="lm",
                published_parameters=774e6, published_layers=36, tiny=_TINY)
def gpt2_large(vocab_size: int = 50257, block_size: int = 1024, **overrides: Any) -> GPT:
    """GPT-2 large: 36 layers, d=1280, 20 heads."""
    config = GPTConfig(vocab_size, block_size, n_layer=36, n_head=20, n_embd=1280)
    return _create_gpt("gpt2-large", config, overrides)


@register_model("gpt2-xl", family="gpt", year=2019, paper=_GPT2_PAPER, input_kind="lm",
                published_parameters=1558e6, published_layers=48, tiny=_TINY)
def gpt2_xl(vocab_size: int = 50257, block_size: int = 1024, **overrides: Any) -> GPT:
    """GPT-2 XL ("1.5B"): 48 layers, d=1600, 25 heads."""
    config = GPTConfig(vocab_size, block_size, n_layer=48, n_head=25, n_embd=1600)
    return _create_gpt("gpt2-xl", config, overrides)


# GPT-3 alternates dense and locally banded sparse attention layers; the banded pattern
# changes which positions a layer sees, not its weights. Here every layer is dense.
@register_model(
    "gpt3-175b", family="gpt", year=2020, input_kind="lm",
    paper="Brown et al., Language Models are Few-Shot Learners, NeurIPS 2020",
    published_parameters=175e9, published_layers=96, tiny=_TINY,
)
def gpt3_175b(vocab_size: int = 50257, block_size: int = 2048, **overrides: Any) -> GPT:
    """GPT-3 175B: 96 layers, d=12288, 96 heads of 128, 2048-token context."""
    config = GPTConfig(vocab_size, block_size, n_layer=96, n_head=96, n_embd=12288)
    return _create_gpt("gpt3-175b", config, overrides)


@register_model(
    "gpt-char", family="gpt", year=2018, input_kind="lm",
    paper="Radford, Narasimhan, Salimans, Sutskever, Improving Language Understanding by "
          "Generative Pre-Training, OpenAI technical report 2018",
    tiny={"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
)
def gpt_char(
    vocab_size: int = 65,
    block_size: int = 256,
    n_layer: int = 6,
    n_head: int = 6,
    n_embd: int = 384,
    dropout: float = 0.2,
) -> GPT:
    """Character-level GPT (10.7M at the defaults, nanoGPT's Shakespeare configuration)."""
    return GPT(GPTConfig(vocab_size, block_size, n_layer, n_head, n_embd, dropout))
