"""BERT: bidirectional post-LN transformer encoder with a sequence-classification head.

Word + learned position + token-type embeddings -> LayerNorm -> ``n_layer`` post-LN blocks
(GELU) -> pooler (tanh of a Linear on the first token, ``[CLS]``) -> Linear head.
Token id 0 is padding (``[PAD]`` in BERT's vocabulary) and is masked out of attention.
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
    padding_mask,
)
from deepnet.models._registry import register_model

__all__ = ["Bert", "BertConfig"]


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    num_classes: int = 2
    max_len: int = 512
    type_vocab_size: int = 2
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    intermediate_size: int = 3072
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12


class Bert(nn.Module):
    """``forward(x (B, T) int64, token_type_ids (B, T) | None) -> logits (B, num_classes)``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embeddings = nn.Embedding(config.max_len, config.n_embd)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.ln_embed = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                config.n_embd, config.n_head, config.intermediate_size, activation=nn.GELU(),
                norm_first=False, dropout=config.dropout, eps=config.layer_norm_eps,
            )
            for _ in range(config.n_layer)
        )
        self.pooler = nn.Linear(config.n_embd, config.n_embd)
        self.head = nn.Linear(config.n_embd, config.num_classes)
        self.apply(init_normal)

    def forward(self, x: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, T = x.shape
        check_sequence_length(T, self.config.max_len, "Bert")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(x)
        positions = torch.arange(T, device=x.device)  # (T,)
        h = self.word_embeddings(x) + self.position_embeddings(positions)  # (B, T, C)
        h = self.drop(self.ln_embed(h + self.token_type_embeddings(token_type_ids)))  # (B, T, C)
        mask = padding_mask(x)  # (B, 1, 1, T)
        for block in self.blocks:
            h = block(h, mask)  # (B, T, C)
        pooled = torch.tanh(self.pooler(h[:, 0]))  # (B, C), the [CLS] position
        return self.head(self.drop(pooled))  # (B, num_classes)


def _create_bert(name: str, config: BertConfig, overrides: dict[str, Any]) -> Bert:
    return Bert(config_with_overrides(config, overrides, name))


_TINY = {"vocab_size": 64, "max_len": 32, "n_layer": 2, "n_head": 2, "n_embd": 32,
         "intermediate_size": 64}
_PAPER = (
    "Devlin, Chang, Lee, Toutanova, BERT: Pre-training of Deep Bidirectional Transformers "
    "for Language Understanding, NAACL 2019"
)


@register_model("bert-base", family="bert", year=2018, paper=_PAPER, input_kind="tokens",
                published_parameters=110e6, published_layers=12, tiny=_TINY)
def bert_base(vocab_size: int = 30522, num_classes: int = 2, **overrides: Any) -> Bert:
    """BERT-base: 12 post-LN layers, d=768, 12 heads, FFN 3072."""
    config = BertConfig(vocab_size, num_classes, n_layer=12, n_head=12, n_embd=768,
                        intermediate_size=3072)
    return _create_bert("bert-base", config, overrides)


@register_model("bert-large", family="bert", year=2018, paper=_PAPER, input_kind="tokens",
                published_parameters=340e6, published_layers=24, tiny=_TINY)
def bert_large(vocab_size: int = 30522, num_classes: int = 2, **overrides: Any) -> Bert:
    """BERT-large: 24 post-LN layers, d=1024, 16 heads, FFN 4096."""
    config = BertConfig(vocab_size, num_classes, n_layer=24, n_head=16, n_embd=1024,
                        intermediate_size=4096)
    return _create_bert("bert-large", config, overrides)
