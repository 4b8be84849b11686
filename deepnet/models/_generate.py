"""Autoregressive sampling from any decoder-only model of the zoo (``input_kind="lm"``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["generate"]


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ``idx (B, T)`` by ``max_new_tokens`` sampled tokens -> ``(B, T + max_new_tokens)``.

    Each step feeds the last ``model.block_size`` tokens (no KV cache: every step recomputes
    the whole context), divides the last position's logits by ``temperature`` (0 means
    greedy), keeps the ``top_k`` most likely tokens if given, and samples with ``generator``
    (pass a seeded ``torch.Generator`` on ``idx``'s device for reproducible text). The model
    runs in eval mode (no dropout) and is put back in the mode it was in.
    """
    block_size = getattr(model, "block_size", None)
    if not isinstance(block_size, int):
        raise TypeError(
            f"generate() needs a language model with an integer `block_size` attribute "
            f"(the zoo's input_kind='lm' models have one). Received: {type(model).__name__}."
        )
    if idx.dim() != 2 or idx.dtype != torch.long:
        raise ValueError(
            f"generate() needs idx as int64 token ids of shape (B, T). "
            f"Received: dtype={idx.dtype}, shape={tuple(idx.shape)}."
        )
    if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(
            f"generate() needs max_new_tokens >= 0, temperature >= 0 and top_k >= 1 or None. "
            f"Received: max_new_tokens={max_new_tokens}, temperature={temperature}, top_k={top_k}."
        )
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            context = idx[:, -block_size:]  # (B, <=block_size)
            logits = model(context)[:, -1, :]  # (B, vocab_size)
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = logits.softmax(dim=-1)  # (B, vocab_size)
                next_token = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, next_token), dim=1)  # (B, T+1)
    finally:
        model.train(was_training)
    return idx
