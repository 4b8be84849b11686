"""The run directory: the one artifact every step after training reads.

Loading never executes code from the files: the config is YAML data, weights and
optimizer tensors are safetensors, everything else is JSON or CSV.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from deepnet.config import ConfigError, ExperimentConfig, load_config, save_config

__all__ = ["STEP_FIELDS", "Run", "RunError", "atomic_write", "load_model", "load_run", "read_temperature", "save_weights",
           "load_weights", "weights_record", "HISTORY_FIELDS"]

HISTORY_FIELDS = ["epoch", "step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]
STEP_FIELDS = ["step", "epoch", "lr", "train_loss"]


class RunError(ValueError):
    """A run directory is missing a file or holds something unreadable."""


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` beside ``path``, fsync, rename over ``path``, fsync the directory: a process
    killed (or a machine losing power) at any instant leaves the old file or the new one,
    never half of either."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its rename is already durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_weights(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Tied weights share storage; safetensors wants each stored once, so clone duplicates.
    seen: dict[int, str] = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen and tensor.numel() > 0:
            state[key] = tensor.clone()
        seen.setdefault(ptr, key)
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def load_weights(model: nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise RunError(f"{path} is not a readable safetensors file ({err}). Retrain or restore the file.") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}. "
            "Was model.json edited?"
        )


@dataclass
class Run:
    """A trained model and everything known about how it was made."""

    model: nn.Module
    config: ExperimentConfig
    model_spec: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)  # the training loss every few steps
    metrics: dict[str, float] = field(default_factory=dict)
    directory: Path | None = None
    temperature: float = 1.0  # softmax temperature from calibration.json (deepnet calibrate); 1 = none

    def save(self, directory: str | os.PathLike) -> Path:
        """Write config.yaml, model.json, model.safetensors, history.csv, steps.csv, metrics.json, plots/."""
        out = Path(directory)
        (out / "plots").mkdir(parents=True, exist_ok=True)
        save_config(self.config, out / "config.yaml")
        atomic_write(out / "model.json", lambda tmp: tmp.write_text(json.dumps(self.model_spec, indent=2)))
        save_weights(self.model, out / "model.safetensors")
        write_history(self.history, out / "history.csv")
        if self.steps:
            write_history(self.steps, out / "steps.csv", STEP_FIELDS)
        atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(self.metrics, indent=2)))
        if self.history:
            from deepnet.train.plots import plot_learning_curves

            plot_learning_curves(self.history, out / "plots" / "learning_curves.png", steps=self.steps)
            if any(k.startswith("train_") and k not in HISTORY_FIELDS for k in self.history[0]):
                from deepnet.train.plots import plot_loss_terms

                plot_loss_terms(self.history, out / "plots" / "loss_terms.png")
        self.directory = out
        return out


def write_history(history: list[dict[str, float]], path: Path, fields: list[str] = HISTORY_FIELDS) -> None:
    """``fields`` first, then any other columns the rows hold (a family's named loss terms,
    e.g. ``train_d_loss``), in the order they first appear."""
    extra = [k for row in history for k in row if k not in fields and k != "samples_per_second"]
    fields = [*fields, *dict.fromkeys(extra)]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)

    atomic_write(path, write)


def read_history(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]


def build_model_from_spec(spec: dict[str, Any]) -> nn.Module:
    from deepnet.models import create_model

    if not spec.get("name"):
        raise RunError("model.json names no registered model; rebuild the module yourself and call load_weights.")
    args = dict(spec.get("args", {}))
    if "input_shape" in args:
        args["input_shape"] = tuple(args["input_shape"])
    return create_model(spec["name"], **args)


def weights_record(spec: dict[str, Any]) -> dict[str, str]:
    """Where a run keeps its weights and in which format (``model.json``'s ``weights``; plain
    runs have none: ``model.safetensors``). ``deepnet compress`` writes the other formats."""
    from deepnet.train.compressed import COMPRESSED_FORMAT, ONNX_INT8_FORMAT

    record = spec.get("weights") or {"format": "safetensors", "file": "model.safetensors"}
    known = ("safetensors", COMPRESSED_FORMAT, ONNX_INT8_FORMAT)
    if not isinstance(record, dict) or record.get("format") not in known or not isinstance(record.get("file"), str) \
            or Path(record["file"]).name != record["file"]:
        raise RunError(f"model.json's weights record {record!r} is not one of the formats {', '.join(known)} "
                       "with a file name inside the run directory. Was model.json edited?")
    return record


def load_model(spec: dict[str, Any], path: Path, format: str = "safetensors") -> nn.Module:
    """The model of ``spec`` with the weights of ``path`` in ``format`` (see :func:`weights_record`)."""
    from deepnet.train import compressed

    if format == compressed.ONNX_INT8_FORMAT:
        return compressed.load_onnx_int8(path)
    model = build_model_from_spec(spec)
    if format == compressed.COMPRESSED_FORMAT:
        compressed.read_compressed(model, path)
    else:
        load_weights(model, path)
    return model


def load_run(directory: str | os.PathLike, device: str | torch.device | None = None) -> Run:
    """Rebuild the model of a run directory and load its weights, config, history, metrics;
    the model goes to ``device`` (``auto`` | ``cpu`` | ``cuda[:N]`` | ``mps``; default: the CPU)."""
    out = Path(directory)
    if not out.is_dir():
        raise RunError(f"Run directory {out} not found. Train one first: deepnet train ... --out {out}")
    if not (out / "model.json").is_file():
        raise RunError(f"{out} has no model.json: the run did not finish. Resume it with `deepnet train --resume {out}`.")
    try:
        spec = json.loads((out / "model.json").read_text())
    except json.JSONDecodeError as err:
        raise RunError(f"{out / 'model.json'} is not valid JSON ({err}).") from None
    weights = weights_record(spec)
    if not (out / weights["file"]).is_file():
        raise RunError(f"{out} has no {weights['file']}: the run did not finish. Resume it with `deepnet train --resume {out}`.")
    try:
        config = load_config(out / "config.yaml") if (out / "config.yaml").is_file() else ExperimentConfig()
    except ConfigError as err:
        raise RunError(str(err)) from None
    model = load_model(spec, out / weights["file"], weights["format"])
    if device is not None:
        from deepnet.train.devices import resolve_device

        model.to(resolve_device(device) if isinstance(device, str) else device)
    model.eval()
    history = read_history(out / "history.csv") if (out / "history.csv").is_file() else []
    steps = read_history(out / "steps.csv") if (out / "steps.csv").is_file() else []
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    return Run(model=model, config=config, model_spec=spec, history=history, steps=steps, metrics=metrics,
               directory=out, temperature=read_temperature(out))


def read_temperature(directory: Path) -> float:
    """The temperature ``deepnet calibrate`` stored in ``calibration.json``; 1.0 when uncalibrated.
    Probabilities are ``softmax(logits / temperature)``; the predicted class does not change."""
    path = directory / "calibration.json"
    if not path.is_file():
        return 1.0
    try:
        temperature = float(json.loads(path.read_text())["temperature"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise RunError(f"{path} holds no readable temperature ({err}). Rerun `deepnet calibrate {directory}` "
                       "or delete the file.") from None
    if not temperature > 0:
        raise RunError(f"{path} holds temperature {temperature}; a temperature must be > 0. "
                       f"Rerun `deepnet calibrate {directory}`.")
    return temperature
