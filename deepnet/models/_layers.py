"""Building blocks shared by the families: activations and initialisation by name."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

from torch import nn

__all__ = ["ACTIVATIONS", "INITIALIZERS", "activation", "check_image_shape", "initialize", "linear_classifier"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def check_image_shape(family: str, input_shape: tuple[int, ...]) -> None:
    """Reject an ``input_shape`` that is not ``(channels, height, width)`` of positive ints."""
    if len(input_shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in input_shape):
        raise ValueError(
            f"Received an invalid value for `input_shape`: {family} takes images as "
            "(channels, height, width), e.g. (3, 224, 224) or (1, 28, 28). "
            f"Received: input_shape={tuple(input_shape)!r}."
        )


def _unknown(kind: str, name: str, options: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, options, n=2, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"Unknown {kind} {name!r}.{hint} Choose one of: {', '.join(options)}.")


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``gelu``, ``tanh``, ...)."""
    if name not in ACTIVATIONS:
        raise _unknown("activation", name, sorted(ACTIVATIONS))
    return ACTIVATIONS[name]()


def _gain(nonlinearity: str) -> float:
    if nonlinearity in ("relu", "leaky_relu", "prelu"):
        return nn.init.calculate_gain("leaky_relu" if nonlinearity != "relu" else "relu", 0.01)
    if nonlinearity == "tanh":
        return nn.init.calculate_gain("tanh")
    return 1.0


INITIALIZERS = ("default", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal")


def initialize(model: nn.Module, scheme: str = "default", nonlinearity: str = "relu") -> nn.Module:
    """Re-initialise every Linear/Conv weight of ``model`` in place; biases become zero.

    ``xavier_*`` is Glorot & Bengio (2010), ``he_*`` is He et al. (2015, fan-in mode).
    ``default`` keeps PyTorch's own initialisation. Returns ``model``.
    """
    if scheme not in INITIALIZERS:
        raise _unknown("initialisation", scheme, list(INITIALIZERS))
    if scheme == "default":
        return model
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        w = module.weight
        if scheme == "xavier_uniform":
            nn.init.xavier_uniform_(w, gain=_gain(nonlinearity))
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(w, gain=_gain(nonlinearity))
        elif scheme == "he_uniform":
            nn.init.kaiming_uniform_(w, a=0.01 if "leaky" in nonlinearity else 0.0,
                                     nonlinearity="leaky_relu" if "leaky" in nonlinearity else "relu")
        else:
            nn.init.kaiming_normal_(w, a=0.01 if "leaky" in nonlinearity else 0.0,
                                    nonlinearity="leaky_relu" if "leaky" in nonlinearity else "relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


def flat_size(input_shape: tuple[int, ...]) -> int:
    return int(math.prod(input_shape))


def linear_classifier(in_features: int, num_classes: int) -> nn.Module:
    """The last layer of a classifier; ``num_classes=0`` leaves the features unclassified
    (timm's convention for ``reset_classifier(0)``)."""
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            "Received an invalid value for `num_classes`: expected a whole number >= 1 "
            f"(or 0 for no classifier). Received: num_classes={num_classes!r}."
        )
    return nn.Linear(in_features, num_classes) if num_classes else nn.Identity()
