"""The in-memory dataset every step of deepnet reads: three splits of tensors plus metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Task = Literal["classification", "language_modeling", "regression"]

__all__ = ["Split", "Dataset", "Task"]


@dataclass
class Split:
    """One split: inputs ``x`` of shape ``(N, *input_shape)`` and targets ``y``.

    Classification: ``y`` is int64 ``(N,)``. Language modelling: ``x`` and ``y`` are int64
    ``(N, T)`` with ``y`` the next token of each position.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(
                f"A split needs as many targets as inputs; received x with {len(self.x)} rows "
                f"and y with {len(self.y)}."
            )

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Dataset:
    """Train/validation/test splits plus what a model and a run directory need to know.

    ``preprocessing`` is stored in ``model.json`` so that prediction applies exactly what
    training saw: e.g. ``{"kind": "normalize", "mean": [...], "std": [...], "scale": 255.0}``
    for images, ``{"kind": "standardize", ...}`` for tabular data, ``{"kind": "vocab", ...}``
    for text.
    """

    name: str
    train: Split
    val: Split
    test: Split
    task: Task = "classification"
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    vocab_size: int | None = None
    input_kind: Literal["image", "vector", "tokens", "lm"] = "image"

    def model_arguments(self) -> dict[str, Any]:
        """Everything a model factory may take from the data (the registry keeps the subset
        each factory accepts)."""
        args: dict[str, Any] = {"input_shape": tuple(self.input_shape)}
        if self.task == "classification":
            args["num_classes"] = self.num_classes
        if self.vocab_size is not None:
            args["vocab_size"] = self.vocab_size
        if self.task == "language_modeling":
            args["block_size"] = int(self.train.x.shape[1])
        if self.preprocessing.get("kind") == "normalize":  # generative models work in pixels
            args["pixel_mean"] = tuple(self.preprocessing["mean"])
            args["pixel_std"] = tuple(self.preprocessing["std"])
        return args

    def summary(self) -> str:
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"input {tuple(self.input_shape)}, "
            + (f"{self.num_classes} classes" if self.task == "classification" else self.task)
        )
