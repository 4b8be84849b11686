"""The GEMMs-alone bound shared by the benchmark scripts, so that every script times the same thing.

A training step of an MLP does 3 kinds of matrix multiply per Linear layer: the forward
``addmm``, the weight gradient and (for every layer but the first) the input gradient. Timing
these alone, with nothing else, bounds what any training loop on that MLP can reach.
"""

from __future__ import annotations

import torch


def gemms_alone(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
    """The step's matrix multiplies only: ``x`` is ``(B, in)``, ``weights[i]`` is ``(out, in)``."""
    inputs = [x]
    for w, b in zip(weights, biases):
        inputs.append(torch.addmm(b, inputs[-1], w.t()))  # (B, in) -> (B, out)
    grad = inputs[-1]
    for index in range(len(weights) - 1, -1, -1):
        torch.mm(grad.t(), inputs[index])  # weight gradient (out, in)
        if index > 0:
            grad = torch.mm(grad, weights[index])  # input gradient (B, in)
