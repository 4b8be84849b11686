"""T5: encoder-decoder transformer with relative position biases (no position embeddings),
pre-RMSNorm blocks, ReLU feed-forward, no biases, and one embedding shared by the encoder,
the decoder and the output head.

Attention logits are not divided by sqrt(head size): T5 folds that factor into the
initialisation. Each stack learns one table of per-head biases indexed by bucketed
relative distance; its first layer computes the bias and every layer reuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._attention import MLP, config_with_overrides
from deepnet.models._registry import register_model

__all__ = ["T5", "T5Config", "relative_position_bucket"]


@dataclass(frozen=True)
class T5Config:
    vocab_size: int = 32128
    n_layer: int = 12  # per stack: 12 encoder and 12 decoder blocks
    n_head: int = 12
    d_kv: int = 64
    n_embd: int = 768
    d_ff: int = 3072
    num_buckets: int = 32
    max_distance: int = 128
    dropout: float = 0.1
    norm_eps: float = 1e-6


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """Bucket of each ``key - query`` offset: exact for small distances, log-spaced up to
    ``max_distance``, one bucket beyond. Bidirectional buckets split the range by sign."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # only the past is visible
    max_exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class T5Attention(nn.Module):
    """Self- or cross-attention; ``has_relative_bias`` makes this layer own the stack's
    bias table. ``forward(x (B, T, C), memory (B, S, C), bias (1|B, nh, T, S)) -> (B, T, C)``."""

    def __init__(self, config: T5Config, *, has_relative_bias: bool = False, causal: bool = False) -> None:
        super().__init__()
        self.config, self.causal = config, causal
        inner = config.n_head * config.d_kv
        self.q_proj = nn.Linear(config.n_embd, inner, bias=False)
        self.k_proj = nn.Linear(config.n_embd, inner, bias=False)
        self.v_proj = nn.Linear(config.n_embd, inner, bias=False)
        self.o_proj = nn.Linear(inner, config.n_embd, bias=False)
        self.relative_bias = nn.Embedding(config.num_buckets, config.n_head) if has_relative_bias else None

    def position_bias(self, T: int, S: int, device: torch.device) -> torch.Tensor:
        """``(1, nh, T, S)`` additive bias, with the causal mask folded in for the decoder."""
        if self.relative_bias is None:
            raise ValueError("Only the first layer of a T5 stack holds the relative bias table.")
        query = torch.arange(T, device=device)[:, None]  # (T, 1)
        key = torch.arange(S, device=device)[None, :]  # (1, S)
        buckets = relative_position_bucket(
            key - query, not self.causal, self.config.num_buckets, self.config.max_distance
        )  # (T, S)
        bias = self.relative_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, nh, T, S)
        if self.causal:
            future = torch.ones(T, S, dtype=torch.bool, device=device).triu(1)  # (T, S)
            bias = bias.masked_fill(future, torch.finfo(bias.dtype).min)
        return bias

    def forward(self, x: torch.Tensor, memory: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        S = memory.shape[1]
        nh, hs = self.config.n_head, self.config.d_kv
        q = self.q_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(memory).view(B, S, nh, hs).transpose(1, 2)  # (B, nh, S, hs)
        v = self.v_proj(memory).view(B, S, nh, hs).transpose(1, 2)  # (B, nh, S, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), scale=1.0,
            dropout_p=self.config.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, nh * hs))  # (B, T, C)


class T5Block(nn.Module):
    """Pre-RMSNorm residual sub-layers: self-attention, cross-attention (decoder only), FFN."""

    def __init__(self, config: T5Config, *, decoder: bool, first: bool) -> None:
        super().__init__()
        self.self_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.self_attn = T5Attention(config, has_relative_bias=first, causal=decoder)
        self.cross_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps) if decoder else None
        self.cross_attn = T5Attention(config) if decoder else None
        self.mlp_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config.n_embd, config.d_ff, nn.ReLU(), bias=False, dropout=config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_bias: torch.Tensor,
        memory: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.self_norm(x)
        x = x + self.drop(self.self_attn(h, h, self_bias))  # (B, T, C)
        if self.cross_attn is not None and self.cross_norm is not None:
            if memory is None or cross_bias is None:
                raise ValueError("A T5 decoder block needs the encoder output and its mask.")
            x = x + self.drop(self.cross_attn(self.cross_norm(x), memory, cross_bias))  # (B, T, C)
        return x + self.mlp(self.mlp_norm(x))  # (B, T, C)


class T5Stack(nn.Module):
    def __init__(self, config: T5Config, *, decoder: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            T5Block(config, decoder=decoder, first=i == 0) for i in range(config.n_layer)
        )
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        T = x.shape[1]
        bias = self.blocks[0].self_attn.position_bias(T, T, x.device)  # (1, nh, T, T)
        if self_mask is not None:
            bias = bias + self_mask  # (B, nh, T, T)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, bias, memory, cross_bias)  # (B, T, C)
        return self.drop(self.norm(x))


class T5(nn.Module):
    """``forward(src (B, S) int64, tgt (B, T) int64) -> logits (B, T, vocab_size)``.

    ``src`` id 0 is padding and is masked out; ``tgt`` is the decoder input, already shifted
    right (T5 starts it with id 0, so the decoder masks only the future, not id 0).
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.n_embd)
        self.encoder = T5Stack(config, decoder=False)
        self.decoder = T5Stack(config, decoder=True)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.shared.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # T5's (Mesh TensorFlow's) scheme: unit-variance embeddings, every matrix at
        # 1/sqrt(fan_in), queries also at 1/sqrt(d_kv) in place of the missing logit scaling
        nn.init.normal_(self.shared.weight, std=1.0)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and module is not self.lm_head:
                std = module.in_features**-0.5
                if name.endswith("q_proj"):
                    std *= self.config.d_kv**-0.5
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.Embedding) and module is not self.shared:
                nn.init.normal_(module.weight, std=self.config.n_embd**-0.5)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        keep = src != 0  # (B, S)
        # additive mask: 0 for tokens, a large negative number for padding
        dtype = self.shared.weight.dtype
        src_mask = torch.zeros(keep.shape, dtype=dtype, device=src.device)  # (B, S)
        src_mask = src_mask.masked_fill(~keep, torch.finfo(dtype).min)[:, None, None, :]  # (B, 1, 1, S)
        memory = self.encoder(self.shared(src), self_mask=src_mask)  # (B, S, C)
        h = self.decoder(self.shared(tgt), memory=memory, cross_bias=src_mask)  # (B, T, C)
        # tied head: rescale so the logits do not grow with n_embd (T5 v1.0)
        return self.lm_head(h * self.config.n_embd**-0.5)  # (B, T, vocab_size)


@register_model(
    "t5-base", family="t5", year=2019, input_kind="seq2seq",
    paper="Raffel et al., Exploring the Limits of Transfer Learning with a Unified Text-to-Text "
          "Transformer, JMLR 2020",
    published_parameters=220e6, published_layers=12,
    tiny={"vocab_size": 64, "n_layer": 2, "n_head": 2, "d_kv": 16, "n_embd": 32, "d_ff": 64},
)
def t5_base(vocab_size: int = 32128, **overrides: Any) -> T5:
    """T5-Base: 12 encoder and 12 decoder blocks, d=768, 12 heads, FFN 3072."""
    return T5(config_with_overrides(T5Config(vocab_size), overrides, "t5-base"))
