"""Vision Transformer: the image cut into ``patch_size`` squares, each linearly embedded,
a learned class token prepended, learned positions added, ``n_layer`` pre-LN blocks, and a
Linear head on the class token's final state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepnet.models._attention import Block, config_with_overrides, init_normal
from deepnet.models._registry import register_model

__all__ = ["ViT", "ViTConfig"]


@dataclass(frozen=True)
class ViTConfig:
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    patch_size: int = 16
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_dim: int = 3072
    dropout: float = 0.0
    layer_norm_eps: float = 1e-6


class ViT(nn.Module):
    """``forward(x (B, C, H, W)) -> logits (B, num_classes)``; ``H`` and ``W`` are multiples
    of ``patch_size``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        channels, height, width = config.input_shape
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"ViT needs the image height and width to be multiples of patch_size. "
                f"Received: input_shape={config.input_shape}, patch_size={config.patch_size}. "
                f"Pick a patch_size that divides both (e.g. 4 or 7 for 28x28)."
            )
        self.config = config
        n_patches = (height // config.patch_size) * (width // config.patch_size)
        # a convolution with stride = kernel = patch is the per-patch Linear embedding
        self.patch_embed = nn.Conv2d(channels, config.n_embd, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.n_embd))
        self.pos_embed = nn.Parameter(torch.empty(1, n_patches + 1, config.n_embd))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                config.n_embd, config.n_head, config.mlp_dim, activation=nn.GELU(),
                norm_first=True, dropout=config.dropout, eps=config.layer_norm_eps,
            )
            for _ in range(config.n_layer)
        )
        self.norm = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.n_embd, config.num_classes)
        nn.init.normal_(self.pos_embed, std=0.02)
        self.apply(init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.config.input_shape:
            raise ValueError(
                f"ViT was built for input_shape={self.config.input_shape} but received a batch "
                f"of shape {tuple(x.shape)}. Build it with input_shape={tuple(x.shape[1:])}."
            )
        B = x.shape[0]
        x = self.patch_embed(x)  # (B, C, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C), N = H*W/p^2 patches
        cls = self.cls_token.expand(B, -1, -1)  # (B, 1, C)
        x = self.drop(torch.cat((cls, x), dim=1) + self.pos_embed)  # (B, N+1, C)
        for block in self.blocks:
            x = block(x)  # (B, N+1, C)
        return self.head(self.norm(x[:, 0]))  # (B, num_classes)


def _create_vit(name: str, config: ViTConfig, overrides: dict[str, Any]) -> ViT:
    if "input_shape" in overrides:
        overrides = {**overrides, "input_shape": _image_shape(overrides["input_shape"])}
    return ViT(config_with_overrides(config, overrides, name))


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"ViT needs input_shape=(C, H, W). Received: input_shape={input_shape}.")
    return shape  # type: ignore[return-value]


_PAPER = (
    "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition "
    "at Scale, ICLR 2021"
)


@register_model(
    "vit-b16", family="vit", year=2020, paper=_PAPER, input_kind="image",
    published_parameters=86e6, published_layers=12,
    tiny={"input_shape": (3, 32, 32), "patch_size": 4, "n_layer": 2, "n_head": 2,
          "n_embd": 32, "mlp_dim": 64},
)
def vit_b16(
    input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000, **overrides: Any
) -> ViT:
    """ViT-Base/16: 12 layers, d=768, 12 heads, MLP 3072, 16x16 patches."""
    config = ViTConfig(_image_shape(input_shape), num_classes, patch_size=16)
    return _create_vit("vit-b16", config, overrides)


@register_model(
    "vit-mnist", family="vit", year=2020, paper=_PAPER, input_kind="image",
    tiny={"n_layer": 1, "n_head": 2, "n_embd": 32, "mlp_dim": 64},
)
def vit_mnist(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    patch_size: int = 7,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 64,
    mlp_dim: int = 128,
    dropout: float = 0.1,
) -> ViT:
    """A small ViT for 28x28 digits: 16 patches of 7x7, 4 layers, d=64."""
    return ViT(ViTConfig(_image_shape(input_shape), num_classes, patch_size, n_layer, n_head,
                         n_embd, mlp_dim, dropout))
