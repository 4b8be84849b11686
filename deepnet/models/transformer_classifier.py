"""A small transformer encoder for sequence classification, trainable on a CPU.

Token embedding + learned positions -> ``n_layer`` pre-LN encoder blocks -> LayerNorm ->
mean over the non-padding positions (token id 0 is padding) -> Linear head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepnet.models._attention import Block, check_sequence_length, init_normal, padding_mask
from deepnet.models._registry import register_model

__all__ = ["TransformerClassifier", "TransformerClassifierConfig"]


@dataclass(frozen=True)
class TransformerClassifierConfig:
    vocab_size: int = 20000
    num_classes: int = 2
    max_len: int = 256
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    dropout: float = 0.1


class TransformerClassifier(nn.Module):
    """``forward(x (B, T) int64, 0 = padding) -> logits (B, num_classes)``; ``T <= max_len``."""

    def __init__(self, config: TransformerClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        self.pos_embed = nn.Embedding(config.max_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_head, 4 * config.d_model, activation=nn.GELU(),
                  norm_first=True, dropout=config.dropout)
            for _ in range(config.n_layer)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.num_classes)
        self.apply(init_normal)
        with torch.no_grad():
            self.embed.weight[0].zero_()  # init_normal overwrote the padding row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape
        check_sequence_length(T, self.config.max_len, "TransformerClassifier")
        positions = torch.arange(T, device=x.device)  # (T,)
        h = self.drop(self.embed(x) + self.pos_embed(positions))  # (B, T, C)
        mask = padding_mask(x)  # (B, 1, 1, T)
        for block in self.blocks:
            h = block(h, mask)  # (B, T, C)
        h = self.norm(h)
        keep = (x != 0).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (B, C)
        return self.head(pooled)  # (B, num_classes)


@register_model(
    "transformer-classifier", family="transformer", year=2017, input_kind="tokens",
    paper="Vaswani et al., Attention Is All You Need, NeurIPS 2017",
    tiny={"vocab_size": 64, "max_len": 32, "d_model": 32, "n_layer": 1, "n_head": 2},
)
def transformer_classifier(
    vocab_size: int = 20000,
    num_classes: int = 2,
    max_len: int = 256,
    d_model: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    dropout: float = 0.1,
) -> TransformerClassifier:
    """Pre-LN transformer encoder with masked mean pooling, for text classification."""
    return TransformerClassifier(TransformerClassifierConfig(
        vocab_size, num_classes, max_len, d_model, n_layer, n_head, dropout))
