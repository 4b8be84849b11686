"""Transfer learning: start from a trained run's layers, with a new head for new classes.

The head is what a model's ``reset_classifier`` replaces (timm's convention, followed by
every classifier of the zoo that can be fine-tuned); everything else is the backbone. For
feature extraction the backbone is frozen — its weights and, like Keras's
``base_model(x, training=False)``, its batch-norm statistics and dropout — and only the
head learns; for fine-tuning the backbone learns at ``train.backbone_lr_ratio`` times the
head's rate, optionally unfrozen gradually from the top (ULMFiT, Howard & Ruder 2018).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import nn

from deepnet.config import ExperimentConfig, apply_overrides, load_config, parse_config
from deepnet.train.run import RunError

__all__ = ["FINETUNE_MODES", "backbone_blocks", "backbone_modules", "finetune_config", "head_parameter_names", "load_parent_weights"]

FINETUNE_MODES = ("feature-extraction", "fine-tune")


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that ``model.reset_classifier`` replaces (found on a copy)."""
    if not callable(getattr(model, "reset_classifier", None)):
        raise ValueError(
            f"{type(model).__name__} has no reset_classifier(), so deepnet cannot tell its head from its backbone. "
            "Transfer works with the zoo's image and vector classifiers (mlp, convnet, lenet5, resnet*, vgg*, ...)."
        )
    probe = copy.deepcopy(model)
    before = {name: id(p) for name, p in probe.named_parameters()}
    num_classes = getattr(getattr(probe, "config", None), "num_classes", None) or 2
    probe.reset_classifier(num_classes)
    return {name for name, p in probe.named_parameters() if before.get(name) != id(p)}


def backbone_blocks(model: nn.Module) -> dict[str, list[str]]:
    """The backbone's parameter names grouped into blocks, input side first: the units that
    gradual unfreezing thaws one at a time, from the last. A block is a top-level child, or
    one entry of a top-level ``Sequential`` / ``ModuleList`` (``features.3``); the keys are
    the blocks' module names."""
    head = head_parameter_names(model)
    children = dict(model.named_children())
    blocks: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        if name not in head:
            parts = name.split(".")
            container = isinstance(children.get(parts[0]), (nn.Sequential, nn.ModuleList)) and len(parts) > 2
            blocks.setdefault(".".join(parts[:2] if container else parts[:1]), []).append(name)
    return blocks


def backbone_modules(model: nn.Module, example: torch.Tensor) -> set[str]:
    """Names of the modules ``model.forward_features`` runs on ``example`` — the backbone,
    parameter-free layers (dropout, activations) included; empty without forward_features."""
    if not callable(getattr(model, "forward_features", None)):
        return set()
    names = {module: name for name, module in model.named_modules() if name}
    called: set[str] = set()
    hooks = [module.register_forward_hook(lambda m, i, o: called.add(names[m])) for module in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.forward_features(example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return called


def load_parent_weights(model: nn.Module, parent: str | os.PathLike) -> None:
    """Copy the parent run's weights into ``model``, all but the head (which stays freshly
    initialised for the new classes)."""
    path = Path(parent) / "model.safetensors"
    if not path.is_file():
        raise RunError(f"Parent run {parent} has no model.safetensors; train it first (deepnet train --out {parent}).")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise RunError(f"{path} is not a readable safetensors file ({err}). Retrain the parent run.") from None
    head = head_parameter_names(model)
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in head]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and k not in head and state[k].shape != own[k].shape]
    if missing or mismatched:
        raise RunError(f"The parent run {parent} does not fit this model: missing {missing[:3]}, different shapes "
                       f"{mismatched[:3]}. Keep the parent's model.name and model.args.")
    with torch.no_grad():
        for key, tensor in own.items():
            if key in state and key not in head:
                tensor.copy_(state[key])


def finetune_config(parent: str | os.PathLike, data: str, mode: Literal["feature-extraction", "fine-tune"],
                    overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment that trains on ``data`` starting from run ``parent``: the parent's model
    and training settings, the new data, ``model.parent`` set, and the backbone frozen
    (feature extraction) or trained at ``backbone_lr_ratio`` (fine-tuning, default 0.1)."""
    parent = Path(parent)
    if mode not in FINETUNE_MODES:
        raise ValueError(f"--mode must be one of {', '.join(FINETUNE_MODES)}; received {mode!r}.")
    if not (parent / "config.yaml").is_file() or not (parent / "model.json").is_file():
        raise RunError(f"{parent} is not a finished run (no config.yaml / model.json). Train it first.")
    base = load_config(parent / "config.yaml").model_dump(mode="json")
    base["data"] = {"name": data}
    base["model"]["parent"] = str(parent)
    base["model"]["args"].pop("num_classes", None)  # sized by the new data
    train = base["train"]
    train["freeze_backbone"] = mode == "feature-extraction"
    train["backbone_lr_ratio"] = 1.0 if mode == "feature-extraction" else 0.1
    train["unfreeze_every"] = 0
    train["early_stopping"] = False
    return parse_config(apply_overrides(base, list(overrides or [])), "finetune")
