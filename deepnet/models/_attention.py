"""Pieces shared by the transformer families: rotary embeddings, multi-head self-attention
with grouped-/multi-query support, the two feed-forward kinds, one pre-/post-LN block, and
the helpers that turn factory keyword arguments into a frozen config.

RMSNorm is PyTorch's own ``nn.RMSNorm`` (Zhang & Sennrich, 2019); attention runs through
``F.scaled_dot_product_attention`` so that fused kernels are used where the device has them.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Block",
    "MLP",
    "SelfAttention",
    "SwiGLU",
    "apply_rotary",
    "check_sequence_length",
    "config_with_overrides",
    "init_normal",
    "padding_mask",
    "rotary_cos_sin",
    "scaled_residual_init",
]

ConfigT = TypeVar("ConfigT")


# ----------------------------------------------------------------------------- configs

def config_with_overrides(config: ConfigT, overrides: dict[str, Any], model_name: str) -> ConfigT:
    """``config`` with the fields in ``overrides`` replaced; an unknown key fails with the
    closest field names (the factories take ``**overrides``, so the registry cannot check)."""
    fields = [f.name for f in dataclasses.fields(config)]  # type: ignore[arg-type]
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Model {model_name!r} has no argument {key!r}.{hint} "
                f"Valid arguments: {', '.join(fields)}."
            )
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]


def check_sequence_length(length: int, block_size: int, model_name: str) -> None:
    if length > block_size:
        raise ValueError(
            f"{model_name} received a sequence of length {length}, longer than its "
            f"block_size={block_size}. Crop the input to the last {block_size} tokens "
            f"(generate() does this) or build the model with a larger block_size."
        )


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 initialisation, used by every family here: N(0, std) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)


def padding_mask(tokens: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask ``(B, 1, 1, T)``, True where the key is a real token (id != 0).

    A row made only of padding attends everywhere instead of nowhere: an all-False row would
    make the softmax return NaN, which would then leak through any pooling.
    """
    keep = tokens != 0  # (B, T)
    keep = keep | ~keep.any(dim=1, keepdim=True)
    return keep[:, None, None, :]  # (B, 1, 1, T)


# ----------------------------------------------------------------------------- rotary

def rotary_cos_sin(
    length: int, dim: int, base: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines ``(T, dim)`` of rotary position embeddings (Su et al., 2021).

    Computed per call instead of cached: it is ``T * dim`` numbers, and no cache means nothing
    to go stale when the model moves between devices (or is built on ``meta``).
    """
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    positions = torch.arange(length, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)  # (T, dim/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``(B, nh, T, hs)`` by position; the "rotate half" pairing of
    GPT-NeoX, which equals Meta's interleaved pairing up to a fixed permutation of q/k weights."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    rotated = torch.cat((-x2, x1), dim=-1)  # (B, nh, T, hs)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------- attention

class SelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al., 2017) with ``n_kv_head`` key/value heads:
    ``n_kv_head == n_head`` is standard attention, ``1`` is multi-query (Shazeer, 2019),
    anything between is grouped-query (Ainslie et al., 2023). ``rope_base`` turns on rotary
    position embeddings. ``forward(x (B, T, C), attn_mask (B, 1, 1|T, T) bool, True = attend)
    -> (B, T, C)``.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        n_kv_head: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        causal: bool = False,
        rope_base: float | None = None,
    ) -> None:
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if head_dim is None:
            if n_embd % n_head != 0:
                raise ValueError(
                    f"SelfAttention needs n_embd divisible by n_head, or an explicit head_dim. "
                    f"Received: n_embd={n_embd}, n_head={n_head}."
                )
            head_dim = n_embd // n_head
        if n_kv_head < 1 or n_head % n_kv_head != 0:
            raise ValueError(
                f"SelfAttention needs n_head to be a multiple of n_kv_head (each key/value head "
                f"serves a group of query heads). Received: n_head={n_head}, n_kv_head={n_kv_head}."
            )
        if rope_base is not None and head_dim % 2 != 0:
            raise ValueError(f"Rotary embeddings need an even head_dim. Received: head_dim={head_dim}.")
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.causal, self.rope_base, self.dropout = causal, rope_base, dropout
        self.q_proj = nn.Linear(n_embd, n_head * head_dim, bias=bias)
        self.k_proj = nn.Linear(n_embd, n_kv_head * head_dim, bias=bias)
        self.v_proj = nn.Linear(n_embd, n_kv_head * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_head * head_dim, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_dim
        q = self.q_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if self.rope_base is not None:
            cos, sin = rotary_cos_sin(T, hs, self.rope_base, x.device, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if nkv != nh:
            # each key/value head serves nh // nkv consecutive query heads
            k = k.repeat_interleave(nh // nkv, dim=1)  # (B, nh, T, hs)
            v = v.repeat_interleave(nh // nkv, dim=1)  # (B, nh, T, hs)
        is_causal = self.causal
        if self.causal and attn_mask is not None:
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
            attn_mask, is_causal = attn_mask & future, False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, nh*hs)
        return self.resid_dropout(self.o_proj(y))  # (B, T, C)


# ----------------------------------------------------------------------------- feed-forward

class MLP(nn.Module):
    """Two-layer feed-forward ``C -> hidden -> C`` with ``activation`` in between."""

    def __init__(
        self, n_embd: int, hidden: int, activation: nn.Module, *, bias: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = activation
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.proj(self.act(self.fc(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward ``down(silu(gate(x)) * up(x))`` (Shazeer, 2020): three matrices,
    so a SwiGLU of width ``hidden`` holds 1.5x the weights of an MLP of the same width."""

    def __init__(self, n_embd: int, hidden: int, *, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, hidden, bias=bias)
        self.up_proj = nn.Linear(n_embd, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


# ----------------------------------------------------------------------------- block

class Block(nn.Module):
    """LayerNorm transformer block: attention then MLP, each with a residual connection.

    ``norm_first=True`` is pre-LN (GPT-2, ViT): ``x + f(LN(x))``. ``norm_first=False`` is
    the original post-LN (Transformer, BERT): ``LN(x + f(x))``; with the same weights it
    computes what ``nn.TransformerEncoderLayer(norm_first=...)`` computes.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        hidden: int,
        *,
        activation: nn.Module,
        norm_first: bool = True,
        causal: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = nn.LayerNorm(n_embd, eps=eps, bias=bias)
        self.attn = SelfAttention(n_embd, n_head, bias=bias, dropout=dropout, causal=causal)
        self.ln_2 = nn.LayerNorm(n_embd, eps=eps, bias=bias)
        self.mlp = MLP(n_embd, hidden, activation, bias=bias, dropout=dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn(self.ln_1(x), attn_mask)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, attn_mask))
        return self.ln_2(x + self.mlp(x))


def scaled_residual_init(model: nn.Module, n_layer: int, std: float = 0.02) -> None:
    """GPT-2's scaled init: projections that write into the residual stream get
    ``std / sqrt(2 * n_layer)`` so that the stream's variance does not grow with depth."""
    for name, param in model.named_parameters():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] in ("o_proj", "proj", "down_proj") and parts[-1] == "weight":
            nn.init.normal_(param, mean=0.0, std=std / math.sqrt(2 * n_layer))
