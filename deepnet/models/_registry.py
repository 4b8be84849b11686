"""The model registry: ``register_model``, ``create_model``, ``list_models``.

Every zoo entry is a factory function decorated with ``@register_model(...)``. The
decorator records what ``deepnet models`` shows (family, year, published size, paper)
and what the registry-wide smoke test needs (a tiny configuration and the kind of input).

Input conventions, shared by every factory so that the trainer can fill them from the data:

- ``input_kind="image"``: ``forward(x)`` with ``x`` of shape ``(B, *input_shape)``; the
  factory accepts ``input_shape=(C, H, W)`` and ``num_classes``; returns ``(B, num_classes)``.
- ``input_kind="vector"``: like image, but ``input_shape`` may be any shape; it is flattened.
- ``input_kind="tokens"``: ``forward(x)`` with int64 ``x`` of shape ``(B, T)`` (0 = padding);
  the factory accepts ``vocab_size`` and ``num_classes``; returns ``(B, num_classes)``.
- ``input_kind="lm"``: ``forward(x)`` with int64 ``x`` of shape ``(B, T)``; the factory
  accepts ``vocab_size`` and ``block_size``; returns next-token logits ``(B, T, vocab_size)``.
- ``input_kind="seq2seq"``: ``forward(src, tgt)`` with int64 ``(B, S)`` and ``(B, T)``;
  returns ``(B, T, vocab_size)``.
- ``input_kind="generative"``: trained on images without a classifier's loss (autoencoders,
  VAE, GAN, diffusion); the factory accepts ``input_shape`` and the data's ``pixel_mean`` /
  ``pixel_std``; the model follows the protocol of ``deepnet/models/_pixels.py``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

InputKind = Literal["image", "vector", "tokens", "lm", "seq2seq", "generative"]

__all__ = [
    "ModelInfo",
    "register_model",
    "create_model",
    "list_models",
    "model_info",
    "count_parameters",
]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one entry."""

    name: str
    factory: Callable[..., nn.Module]
    family: str
    year: int
    paper: str
    input_kind: InputKind
    published_parameters: float | None = None
    published_layers: int | None = None
    tiny: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def accepted_arguments(self) -> list[str]:
        return [
            p.name
            for p in inspect.signature(self.factory).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str | None = None,
    *,
    family: str,
    year: int,
    paper: str,
    input_kind: InputKind = "image",
    published_parameters: float | None = None,
    published_layers: int | None = None,
    tiny: dict[str, Any] | None = None,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory under ``name`` (default: the function name, ``_`` → ``-``
    is *not* applied; name it as users will type it).

    ``tiny`` holds keyword overrides that make the model small enough for a CI smoke test.
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _REGISTRY:
            raise ValueError(f"Model name {key!r} is registered twice; pick a unique name.")
        _REGISTRY[key] = ModelInfo(
            name=key,
            factory=factory,
            family=family,
            year=year,
            paper=paper,
            input_kind=input_kind,
            published_parameters=published_parameters,
            published_layers=published_layers,
            tiny=dict(tiny or {}),
            description=description or (factory.__doc__ or "").strip().split("\n")[0],
        )
        return factory

    return decorator


def _ensure_zoo_loaded() -> None:
    # Importing the package registers every family; local import avoids a cycle.
    import deepnet.models  # noqa: F401


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, sorted; optionally only one family."""
    _ensure_zoo_loaded()
    return sorted(n for n, info in _REGISTRY.items() if family is None or info.family == family)


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; an unknown name fails with the closest matches."""
    _ensure_zoo_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} Run `deepnet models` to list all "
            f"{len(_REGISTRY)} registered models."
        )
    return _REGISTRY[name]


def create_model(name: str, *, device: str | torch.device | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword ``overrides``.

    ``device="meta"`` builds the architecture without allocating its weights — the way to
    inspect models far larger than memory (``count_parameters`` does this).
    """
    info = model_info(name)
    accepted = info.accepted_arguments()
    takes_var_kwargs = any(
        p.kind == p.VAR_KEYWORD for p in inspect.signature(info.factory).parameters.values()
    )
    if not takes_var_kwargs:
        for key in overrides:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.4)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(
                    f"Model {name!r} has no argument {key!r}.{hint} "
                    f"Valid arguments: {', '.join(accepted)}."
                )
    if device is None:
        model = info.factory(**overrides)
    else:
        with torch.device(device):
            model = info.factory(**overrides)
    # Recorded so that a run directory can rebuild the model (model.json).
    model.deepnet_spec = {"name": name, "args": dict(overrides)}
    return model


def count_parameters(model_or_name: nn.Module | str, **overrides: Any) -> int:
    """Number of parameters (shared tensors counted once). A name is built on ``meta``."""
    model = (
        create_model(model_or_name, device="meta", **overrides)
        if isinstance(model_or_name, str)
        else model_or_name
    )
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already de-duplicates tied weights
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def supported_data_arguments(name: str, available: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``available`` (e.g. ``input_shape``, ``num_classes``, ``vocab_size``)
    that the factory of ``name`` accepts: how the trainer fits a model to the data."""
    info = model_info(name)
    accepted = set(info.accepted_arguments())
    return {k: v for k, v in available.items() if k in accepted}
