"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from deepnet.config import TrainConfig

__all__ = ["build_optimizer", "build_schedule", "lr_factor"]


def _param_groups(model: nn.Module, config: TrainConfig, head: set[str]) -> list[dict]:
    # Decay matrices and kernels only: decaying biases and norm gains hurts and is not what
    # the papers did (as in nanoGPT and timm). With a head named, the backbone gets its own
    # groups at backbone_lr_ratio x lr (discriminative fine-tuning).
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(False, True): [], (False, False): []}
    for name, p in model.named_parameters():
        if p.requires_grad or head:  # a backbone frozen now may be unfrozen later
            groups.setdefault((bool(head) and name not in head, p.dim() >= 2), []).append(p)
    return [{"params": params, "weight_decay": config.weight_decay if decay else 0.0,
             "lr": config.lr * (config.backbone_lr_ratio if backbone else 1.0)}
            for (backbone, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))]


def build_optimizer(model: nn.Module, config: TrainConfig, head: set[str] | None = None) -> torch.optim.Optimizer:
    """The configured optimizer over ``model``'s trainable parameters; ``head`` names the
    parameters outside the backbone when the backbone trains at ``backbone_lr_ratio``."""
    groups: Iterable = _param_groups(model, config, head or set())
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    if config.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        # The fused kernel does the whole update in one pass per tensor: on CPU, for the MNIST
        # MLP, Adam.step() is ~2.5x faster than foreach and than the per-tensor loop, a whole
        # batch-128 training step 1.13-1.15x (benchmarks/cpu_traps.py, docs/benchmarks.md).
        return cls(groups, lr=config.lr, betas=tuple(config.betas), fused=True if on_cpu or torch.cuda.is_available() else None)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr, momentum=config.momentum if config.nesterov else 0.0, alpha=0.99)
    return torch.optim.Adagrad(groups, lr=config.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """The multiplier on ``config.lr`` at optimizer step ``step`` (0-based)."""
    if config.schedule == "onecycle":
        # Smith & Topin (2019): linear up over the first 30% from lr/25, cosine down to lr/1e4.
        peak = max(1, int(0.3 * total_steps))
        if step < peak:
            return 1 / 25 + (1 - 1 / 25) * step / peak
        progress = (step - peak) / max(1, total_steps - peak)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        return config.gamma ** (step // (config.step_size * steps_per_epoch))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    floor = config.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: constant, step, linear warmup + cosine, or one-cycle."""
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, config, steps_per_epoch)
    )
