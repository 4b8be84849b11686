"""Pruning: unstructured magnitude pruning with masks held during retraining (Han et al. 2015),
and structured pruning of whole hidden units, which rebuilds the layers smaller.

Unstructured pruning zeroes weights but leaves the tensors their size: it makes the file
small (with the sparse storage of :mod:`deepnet.train.compressed`), not the dense network
fast. Structured pruning makes the dense network itself smaller and faster.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from deepnet.models import create_model
from deepnet.models.convnet import ConvNet
from deepnet.models.mlp import MLP
from deepnet.train import Callback

__all__ = ["GradualPruning", "HoldMasks", "gradual_sparsity", "magnitude_masks", "prunable_weights", "sparsity_schedule",
           "structured_prune", "structured_prune_mlp"]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_fraction(value: float | None, option: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"Received an invalid value for `{option}`: expected a fraction strictly between 0 and 1 "
                         f"(e.g. {option} 0.92 removes 92%). Received: {option} {value!r}")


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight matrices and kernels of the linear and convolution layers, by name."""
    return {f"{name}.weight" if name else "weight": module.weight
            for name, module in model.named_modules() if isinstance(module, PRUNABLE)}


def magnitude_masks(model: nn.Module, sparsity: float, scope: Literal["global", "layer"] = "global",
                    min_density: float = 0.0) -> dict[str, torch.Tensor]:
    """Masks (True = kept) that zero the smallest-magnitude weights.

    ``global``: one threshold over every prunable weight, removing ``sparsity`` of *all* the
    model's parameters (biases and norms are kept and count as kept), so that layers with
    more redundancy lose more; each layer still keeps its ``min_density`` largest weights
    (a global threshold can otherwise strip a small layer, such as the output layer, bare).
    ``layer``: each weight tensor loses ``sparsity`` of its own entries. Weights that are
    already zero are counted among the removed.
    """
    check_fraction(sparsity, "--prune")
    if not 0 <= min_density < 1:
        raise ValueError(f"Received an invalid value for `--prune-min-density`: expected a fraction in [0, 1). "
                         f"Received: --prune-min-density {min_density!r}")
    weights = prunable_weights(model)
    if not weights:
        raise ValueError(f"{type(model).__name__} has no linear or convolution layer to prune.")
    if scope == "layer":
        masks = {}
        for name, w in weights.items():
            k = int(round(sparsity * w.numel()))
            threshold = w.detach().abs().flatten().kthvalue(k).values if k > 0 else -1.0
            masks[name] = w.detach().abs() > threshold
        return masks
    if scope != "global":
        raise ValueError(f"Received an invalid value for `scope`: expected 'global' or 'layer'. Received: {scope!r}")
    total = sum(p.numel() for p in model.parameters())
    magnitudes = []
    for w in weights.values():
        magnitude = w.detach().abs().flatten().clone()
        protected = int(math.ceil(min_density * w.numel()))
        if protected:  # ranked last: removed only if nothing else is left
            magnitude[magnitude.topk(protected).indices] = float("inf")
        magnitudes.append(magnitude)
    magnitudes = torch.cat(magnitudes)
    remove = min(int(round(sparsity * total)), magnitudes.numel())
    if int(torch.isinf(magnitudes).sum()) > magnitudes.numel() - remove:
        raise ValueError(f"--prune-min-density {min_density} keeps more weights than --prune {sparsity} leaves: "
                         f"lower it below about {1 - sparsity:.3f}.")
    if remove == 0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    # Ranks, not a threshold: ties at the threshold (many zeros) must not remove more than asked.
    order = magnitudes.argsort(stable=True)
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    keep[order[:remove]] = False
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view_as(w).to(w.device)
        start += w.numel()
    return masks


def sparsity_schedule(target: float, steps: int) -> list[float]:
    """Iterative pruning's sparsity after each of ``steps`` rounds: each removes the same
    fraction of what is left, ending at ``target`` (one round: one-shot pruning)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Received an invalid value for `--prune-steps`: expected a positive integer. Received: {steps!r}")
    return [1 - (1 - target) ** ((i + 1) / steps) for i in range(steps)]


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


class HoldMasks(Callback):
    """Keeps pruned weights at zero while the Trainer retrains: their gradients are masked
    (so Adam's moments stay zero) and the mask is applied again after every optimizer step
    (so decoupled weight decay cannot move them either)."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.model, self.masks = model, masks
        self.hooks: list[Any] = []

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        params = dict(self.model.named_parameters())
        for name, mask in self.masks.items():
            mask = mask.to(params[name].device)
            self.masks[name] = mask
            self.hooks.append(params[name].register_hook(lambda grad, mask=mask: grad * mask))
        apply_masks(self.model, self.masks)

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        apply_masks(self.model, self.masks)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        apply_masks(self.model, self.masks)


def gradual_sparsity(target: float, progress: float) -> float:
    """Gradual pruning's sparsity at ``progress`` in [0, 1] of its ramp (Zhu & Gupta 2017):
    ``target * (1 - (1 - progress)**3)``, fast at first while the network has weights to
    spare, slowly near the end, where each weight counts."""
    progress = min(max(progress, 0.0), 1.0)
    return target * (1 - (1 - progress) ** 3)


class GradualPruning(Callback):
    """Prunes while the Trainer trains: every few steps the masks are recomputed by magnitude
    at the sparsity of :func:`gradual_sparsity`, rising from zero to ``target`` over the first
    ``ramp`` of the run's steps; the rest of the run retrains the final mask. As in
    :class:`HoldMasks`, pruned weights get no gradient and are zeroed after every step.

    The many small steps let the network move what a pruned weight did onto its neighbours
    before the next goes, which recovers more than a few large rounds at high sparsity.
    """

    def __init__(self, model: nn.Module, target: float, scope: Literal["global", "layer"] = "global",
                 min_density: float = 0.0, ramp: float = 0.75, updates: int = 100) -> None:
        check_fraction(target, "--prune")
        self.model, self.target, self.scope, self.min_density = model, target, scope, min_density
        self.ramp, self.updates = ramp, updates
        self.masks: dict[str, torch.Tensor] = {}
        self.hooks: list[Any] = []
        self.ramp_steps = self.every = 1
        self.sparsity = 0.0
        self.trainer: Any = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        params = dict(self.model.named_parameters())
        self.masks = {name: w.detach() != 0 for name, w in prunable_weights(self.model).items()}
        for name in self.masks:  # the hook reads the current mask: prune() replaces them
            self.hooks.append(params[name].register_hook(lambda grad, name=name: grad * self.masks[name]))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self.trainer = trainer = logs["trainer"]
        self.ramp_steps = max(1, int(self.ramp * trainer.steps_per_epoch * trainer.config.epochs))
        self.every = max(1, self.ramp_steps // self.updates)

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        step = self.trainer.step
        if step <= self.ramp_steps and (step % self.every == 0 or step == self.ramp_steps):
            self.prune(gradual_sparsity(self.target, step / self.ramp_steps))
        apply_masks(self.model, self.masks)

    def prune(self, sparsity: float) -> None:
        self.sparsity = sparsity
        if sparsity > 0:
            masks = magnitude_masks(self.model, sparsity, self.scope, self.min_density)
            self.masks = {name: mask & self.masks.get(name, mask) for name, mask in masks.items()}
        apply_masks(self.model, self.masks)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.sparsity < self.target:  # a run shorter than its ramp still ends at the target
            self.prune(self.target)
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        apply_masks(self.model, self.masks)


# ------------------------------------------------------------------------- structured


def check_structured_supported(model: nn.Module, spec: dict[str, Any]) -> None:
    if isinstance(model, ConvNet) or (isinstance(model, MLP) and model.config.norm == "none"):
        return
    kind = f"{spec.get('name')} ({type(model).__name__}" + (f", norm={model.config.norm})" if isinstance(model, MLP) else ")")
    raise ValueError(f"Structured pruning rebuilds the hidden layers of MLPs without normalisation layers "
                     f"(mlp, lenet300_100) and the channels of the VGG-style convnet; {kind} is not supported. "
                     f"Use unstructured pruning (--prune) instead.")


def structured_prune(model: nn.Module, fraction: float, spec: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The model rebuilt without ``fraction`` of each hidden layer's units (MLP) or of each
    convolution's channels (convnet), and its ``model.json`` spec."""
    check_fraction(fraction, "--structured")
    check_structured_supported(model, spec)
    if isinstance(model, ConvNet):
        return structured_prune_convnet(model, fraction, spec)
    return structured_prune_mlp(model, fraction, spec)


def structured_prune_mlp(model: nn.Module, fraction: float, spec: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """A smaller MLP keeping the ``1 - fraction`` hidden units of each hidden layer with the
    largest L2 norm of incoming weights times outgoing weights, their weights copied over.

    Returns the new model and its ``model.json`` spec (family ``mlp`` with ``hidden_layers``).
    Only the dense family without normalisation layers is rebuilt; anything else raises.
    """
    check_fraction(fraction, "--structured")
    check_structured_supported(model, spec)
    linears = [m for m in model.features if isinstance(m, nn.Linear)] + [model.classifier]
    keep: list[torch.Tensor] = []
    for layer, following in zip(linears[:-1], linears[1:]):
        # A unit matters by what comes in (its row) and what goes out (its column).
        score = layer.weight.detach().norm(dim=1) * following.weight.detach().norm(dim=0)
        kept = max(1, int(math.ceil((1 - fraction) * layer.out_features)))
        keep.append(score.topk(kept).indices.sort().values)
    config = model.config
    args = {"input_shape": list(config.input_shape), "num_classes": config.num_classes,
            "hidden_layers": [len(k) for k in keep], "activation": config.activation, "dropout": config.dropout}
    smaller = create_model("mlp", **{**args, "input_shape": tuple(config.input_shape)})
    new_linears = [m for m in smaller.features if isinstance(m, nn.Linear)] + [smaller.classifier]
    with torch.no_grad():
        rows: torch.Tensor | None = None
        for i, (old, new) in enumerate(zip(linears, new_linears)):
            weight, bias = old.weight, old.bias
            if rows is not None:
                weight = weight[:, rows]
            if i < len(keep):
                weight, bias = weight[keep[i]], bias[keep[i]]
                rows = keep[i]
            new.weight.copy_(weight)
            new.bias.copy_(bias)
    smaller.deepnet_spec = {"name": "mlp", "args": args}
    return smaller, {**spec, "name": "mlp", "args": args}


def structured_prune_convnet(model: nn.Module, fraction: float, spec: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """A narrower convnet keeping the ``1 - fraction`` channels of each convolution that
    matter most, their weights, batch-norm statistics and the classifier's columns copied over.

    A channel's output is ``ReLU(gamma * normalised + beta)``; it matters by its scale ``|gamma|``
    (Liu et al. 2017, "network slimming") times the norm of the weights that read it in the next
    convolution or the classifier (the outgoing half of the MLP's score). Every convolution of a
    stage keeps the same number of channels, as the config holds one width per stage.
    """
    check_fraction(fraction, "--structured")
    check_structured_supported(model, spec)
    config = model.config
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]  # conv → batch norm → ReLU
    spatial = 1 if config.global_pool else model.num_features // blocks[-1][0].out_channels
    keep: list[torch.Tensor] = []
    for i, block in enumerate(blocks):
        conv, norm = block[0], block[1]
        if i + 1 < len(blocks):
            outgoing = torch.linalg.vector_norm(blocks[i + 1][0].weight.detach(), dim=(0, 2, 3))
        else:  # flattened (C, h, w): each channel owns ``spatial`` classifier columns
            outgoing = torch.linalg.vector_norm(model.classifier.weight.detach().view(config.num_classes, -1, spatial),
                                                dim=(0, 2))
        score = norm.weight.detach().abs() * outgoing
        kept = max(1, int(math.ceil((1 - fraction) * conv.out_channels)))
        keep.append(score.topk(kept).indices.sort().values)
    widths = [len(keep[stage * config.convs_per_stage]) for stage in range(len(config.widths))]
    args = {"input_shape": list(config.input_shape), "num_classes": config.num_classes, "widths": widths,
            "convs_per_stage": config.convs_per_stage, "dropout": config.dropout, "global_pool": config.global_pool}
    smaller = create_model("convnet", **{**args, "input_shape": tuple(config.input_shape)})
    new_blocks = [m for m in smaller.features if isinstance(m, nn.Sequential)]
    with torch.no_grad():
        rows = torch.arange(config.input_shape[0])
        for block, new, kept in zip(blocks, new_blocks, keep):
            new[0].weight.copy_(block[0].weight[kept][:, rows])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new[1], name).copy_(getattr(block[1], name)[kept])
            new[1].num_batches_tracked.copy_(block[1].num_batches_tracked)
            rows = kept
        columns = (rows[:, None] * spatial + torch.arange(spatial)).flatten()
        smaller.classifier.weight.copy_(model.classifier.weight[:, columns])
        smaller.classifier.bias.copy_(model.classifier.bias)
    smaller.deepnet_spec = {"name": "convnet", "args": args}
    return smaller, {**spec, "name": "convnet", "args": args}
