"""The training loop: one ``train_step``, an ``evaluate``, a handful of callback events.

Read top to bottom: ``fit`` builds a :class:`Trainer`; ``Trainer.fit`` runs epochs of
``train_step`` over a :class:`BatchLoader`, evaluates on the validation split, writes a
checkpoint, and at the end measures the test split.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pydantic import ValidationError

from deepnet.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig, _explain
from deepnet.data import Augment, AugmentConfig, BatchLoader, Dataset, Split
from deepnet.models import count_parameters
from deepnet.train.callbacks import Callback, EarlyStopping, ProgressReporter
from deepnet.train.losses import compute_loss, correct_count
from deepnet.train.optim import build_optimizer, build_schedule
from deepnet.train.run import Run, RunError, _atomic_write

__all__ = ["Trainer", "TrainingError", "fit", "evaluate_split", "seed_everything"]


# Szegedy et al. (2014): "the losses of the auxiliary classifiers were weighted by 0.3".
AUX_CLASSIFIER_WEIGHT = 0.3


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, say); the message says what to change."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def _resolve_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_model_fits(model: nn.Module, data: Dataset, name: str = "model") -> None:
    """Run two samples through ``model`` before training, so a shape mismatch is reported
    at once, with both shapes, instead of at step 1."""
    x = data.train.x[:2]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError) as err:
        first_line = str(err).strip().splitlines()[0][:200]
        raise ValueError(
            f"Model {name!r} does not fit the data {data.name!r}: inputs of shape "
            f"{tuple(data.input_shape)} fail in the forward pass ({first_line}). Build the model "
            f"for this data (model.args.input_shape={list(data.input_shape)}) or pick a model "
            f"made for {data.input_kind} inputs."
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"Model {name!r} returned {type(out).__name__}; expected a tensor of logits.")
    if data.task == "classification" and tuple(out.shape) != (2, data.num_classes):
        raise ValueError(
            f"Model {name!r} outputs shape {tuple(out.shape[1:])} per example but {data.name!r} has "
            f"{data.num_classes} classes. Set model.args.num_classes={data.num_classes}."
        )
    if data.task == "language_modeling" and out.shape[-1] != data.vocab_size:
        raise ValueError(
            f"Model {name!r} predicts {out.shape[-1]} tokens but {data.name!r} has a vocabulary of "
            f"{data.vocab_size}. Set model.args.vocab_size={data.vocab_size}."
        )


def evaluate_split(model: nn.Module, split: Split, *, loss: str = "cross_entropy", batch_size: int = 1024,
                   precision: str = "fp32") -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``split`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    total_correct = torch.zeros((), dtype=torch.int64)
    count = 0
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        for x, y in BatchLoader(split, batch_size):
            logits = model(x).float()
            total_loss += compute_loss(loss, logits, y).double().cpu() * y.numel()
            total_correct += correct_count(logits, y).cpu()
            count += y.numel()
    model.train(was_training)
    return {"loss": (total_loss / max(count, 1)).item(), "accuracy": (total_correct / max(count, 1)).item()}


class Trainer:
    """Owns the model, optimizer, schedule and data order of one training run.

    Override :meth:`train_step` for a custom update (Keras's progressive disclosure).
    """

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig, *,
                 augment: AugmentConfig | None = None, callbacks: Sequence[Callback] = (),
                 quiet: bool = False, model_name: str = "model") -> None:
        self.config, self.data, self.quiet = config, data, quiet
        if config.threads:
            torch.set_num_threads(config.threads)
        # Denormal floats make tiny gradients 10-100x slower on x86 CPUs; flush them to zero.
        torch.set_flush_denormal(True)
        seed_everything(config.seed, config.deterministic)
        self.device = _resolve_device()
        self.model = model.to(self.device)
        check_model_fits(self.model, data, model_name)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.train_loader = BatchLoader(data.train, config.batch_size, shuffle=True, seed=config.seed,
                                        drop_last=len(data.train) > config.batch_size)
        self.steps_per_epoch = len(self.train_loader)
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        self.optimizer = build_optimizer(self.model, config)
        self.schedule = build_schedule(self.optimizer, config, self.steps_per_epoch)
        fill = float(data.train.x.min()) if data.input_kind == "image" else 0.0
        self.augment = Augment(augment, fill) if augment is not None and augment.enabled else None
        self.augment_generator = torch.Generator().manual_seed(config.seed + 17)
        self.callbacks = list(callbacks)
        if not quiet:
            self.callbacks.append(ProgressReporter())
        self.early_stopping = EarlyStopping(config.monitor, config.patience) if config.early_stopping else None
        self.history: list[dict[str, float]] = []
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.train_seconds = 0.0
        self.stop_training = False

    # -- one step -------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer update on a batch; returns (loss, number correct) as tensors."""
        c = self.config
        if self.augment is not None:
            x = self.augment(x, self.augment_generator)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=c.precision == "bf16"):
            logits = self.forward(x)
            loss = compute_loss(c.loss, logits.float(), y, c.label_smoothing)
            aux = getattr(self.model, "aux_loss", None)  # e.g. MoE load balancing
            if isinstance(aux, torch.Tensor) and aux.requires_grad:
                loss = loss + c.aux_loss_weight * aux
            for aux_logits in getattr(self.model, "aux_outputs", ()):  # GoogLeNet's side heads
                loss = loss + AUX_CLASSIFIER_WEIGHT * compute_loss(c.loss, aux_logits.float(), y, c.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return loss.detach(), correct_count(logits.detach(), y)

    # -- the loop -------------------------------------------------------------------------
    def fit(self, checkpoint_dir: Path | None = None) -> list[dict[str, float]]:
        c = self.config
        self._emit("on_train_begin", logs={"trainer": self})
        while self.epoch < c.epochs and not self.stop_training:
            self.train_loader.set_epoch(self.epoch)
            self._emit("on_epoch_begin", self.epoch, logs={"trainer": self})
            self.model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            seen = 0
            start = time.perf_counter()
            for i, (x, y) in enumerate(self.train_loader):
                if i == self.steps_per_epoch:
                    break
                loss, n_correct = self.train_step(x, y)
                loss_sum += loss * y.numel()
                correct += n_correct
                seen += y.numel()
                self.step += 1
                # Checking for NaN syncs with the host; every 50 steps is cheap and early.
                if self.step % 50 == 0 and not torch.isfinite(loss):
                    self._raise_nan(loss)
                self._emit("on_batch_end", i, logs={"loss": loss, "seen": seen, "steps": self.steps_per_epoch})
            seconds = time.perf_counter() - start
            self.train_seconds += seconds
            train_loss = (loss_sum / max(seen, 1)).item()
            if not math.isfinite(train_loss):
                self._raise_nan(torch.tensor(train_loss))
            val = evaluate_split(self.model, self.data.val, loss=c.loss, batch_size=c.eval_batch_size,
                                 precision=c.precision) if len(self.data.val) else {"loss": math.nan, "accuracy": math.nan}
            self.epoch += 1
            row = {"epoch": self.epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_loss": train_loss, "train_accuracy": (correct / max(seen, 1)).item() if self._has_accuracy() else math.nan,
                   "val_loss": val["loss"], "val_accuracy": val["accuracy"] if self._has_accuracy() else math.nan,
                   "seconds": seconds, "samples_per_second": seen / seconds}
            self.history.append(row)
            if self.early_stopping is not None and self.early_stopping.update(row, self.model):
                self.stop_training = True
            if checkpoint_dir is not None and c.checkpoint_every and (self.epoch % c.checkpoint_every == 0 or self.epoch == c.epochs):
                self.save_checkpoint(checkpoint_dir)
            self._emit("on_epoch_end", self.epoch, logs=row)
        if self.early_stopping is not None:
            self.early_stopping.restore(self.model)
        self._emit("on_train_end", logs={"trainer": self})
        return self.history

    def _has_accuracy(self) -> bool:
        return self.config.loss == "cross_entropy" or self.data.task == "classification"

    def _raise_nan(self, loss: torch.Tensor) -> None:
        raise TrainingError(
            f"The training loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step}. "
            f"Lower train.lr (now {self.config.lr:g}), set train.grad_clip=1.0, or check the data "
            "for NaN/inf values. The last completed epoch's checkpoint is kept."
        )

    def _emit(self, event: str, *args: Any, logs: dict | None = None) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(*args, logs=logs or {})

    # -- checkpoints: exact resume ---------------------------------------------------------
    def save_checkpoint(self, directory: Path) -> None:
        """Weights, optimizer, schedule, RNG states, data position: enough for a resumed run
        to equal an uninterrupted one. Tensors in safetensors, the rest in JSON."""
        directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for key, value in self.model.state_dict().items():
            tensors[f"model/{key}"] = value.detach().cpu().contiguous().clone()
        optim_state = self.optimizer.state_dict()
        for index, state in optim_state["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{index}/{name}"] = value.detach().cpu().contiguous()
        tensors["rng/torch"] = torch.get_rng_state()
        tensors["rng/augment"] = self.augment_generator.get_state()
        if self.early_stopping is not None and self.early_stopping.best_state is not None:
            for key, value in self.early_stopping.best_state.items():
                tensors[f"best/{key}"] = value.contiguous()
        meta = {
            "epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds,
            "stop_training": self.stop_training,
            "optimizer_param_groups": optim_state["param_groups"],
            "optimizer_scalars": {str(i): {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)}
                                  for i, s in optim_state["state"].items()},
            "schedule": self.schedule.state_dict(),  # its lr_lambdas are plain functions: stored as None
            "early_stopping": self.early_stopping.state() if self.early_stopping else None,
            "history": self.history,
            "python_random": repr(random.getstate()),
        }
        _atomic_write(directory / "last.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        _atomic_write(directory / "last.json", lambda tmp: tmp.write_text(json.dumps(meta)))

    def load_checkpoint(self, directory: Path) -> None:
        path = directory / "last.safetensors"
        if not path.is_file() or not (directory / "last.json").is_file():
            raise RunError(f"No checkpoint in {directory}; nothing to resume. Start a new run instead.")
        tensors = load_file(str(path))
        meta = json.loads((directory / "last.json").read_text())
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in meta["optimizer_scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
        self.schedule.load_state_dict(meta["schedule"])
        torch.set_rng_state(tensors["rng/torch"])
        self.augment_generator.set_state(tensors["rng/augment"])
        if self.early_stopping is not None and meta["early_stopping"]:
            best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
            self.early_stopping.load_state(meta["early_stopping"], best or None)
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.train_seconds, self.stop_training = meta["train_seconds"], meta["stop_training"]
        self.history = meta["history"]


def model_spec(model: nn.Module, data: Dataset, config: ExperimentConfig) -> dict[str, Any]:
    """What ``model.json`` holds: enough to rebuild the model and prepare its inputs."""
    spec = getattr(model, "deepnet_spec", None) or {"name": None, "args": {}}
    return {
        "name": spec["name"],
        "args": json.loads(json.dumps(spec["args"], default=list)),
        "input_shape": list(data.input_shape),
        "input_kind": data.input_kind,
        "dtype": str(data.train.x.dtype).replace("torch.", ""),
        "task": data.task,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "vocab_size": data.vocab_size,
        "dataset": data.name,
        "preprocessing": data.preprocessing,
        "parameters": count_parameters(model),
    }


def fit(model: nn.Module, data: Dataset, config: TrainConfig | None = None, *,
        augment: AugmentConfig | dict | None = None, callbacks: Sequence[Callback] = (),
        quiet: bool = False, out: str | os.PathLike | None = None, resume: bool = False,
        experiment: ExperimentConfig | None = None, **overrides: Any) -> Run:
    """Train ``model`` on ``data`` and measure it on the test split.

    ``overrides`` are :class:`TrainConfig` fields (``epochs=10, optimizer="adamw", lr=3e-3,
    schedule="cosine"``...). With ``out`` the run directory is written there, with a
    checkpoint after every epoch; ``resume=True`` continues from that checkpoint.
    """
    base = config or (experiment.train if experiment else TrainConfig())
    try:
        train_config = TrainConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as err:
        raise _explain(err, "fit()", TrainConfig) from None
    if isinstance(augment, dict):
        augment = AugmentConfig(**augment)
    if experiment is None:
        spec = getattr(model, "deepnet_spec", None) or {"name": None, "args": {}}
        aug = augment or AugmentConfig()
        experiment = ExperimentConfig(
            data=DataConfig(name=data.name, augment=dict(shift=aug.shift, rotate=aug.rotate, scale=aug.scale, noise=aug.noise)),
            model=ModelConfig(name=spec["name"] or type(model).__name__, args=json.loads(json.dumps(spec["args"], default=list))),
            train=train_config,
        )
    else:
        experiment = experiment.model_copy(update={"train": train_config})
    name = experiment.model.name
    trainer = Trainer(model, data, train_config, augment=augment, callbacks=callbacks, quiet=quiet, model_name=name)
    out_dir = Path(out) if out is not None else None
    checkpoints = out_dir / "checkpoints" if out_dir is not None else None
    if out_dir is not None and not resume:
        from deepnet.config import save_config

        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(experiment, out_dir / "config.yaml")
    if resume:
        if checkpoints is None:
            raise ValueError("resume=True needs out= (the run directory to resume).")
        trainer.load_checkpoint(checkpoints)
    trainer.fit(checkpoints)
    test = evaluate_split(trainer.model, data.test, loss=train_config.loss,
                          batch_size=train_config.eval_batch_size, precision=train_config.precision)
    samples = sum(row.get("samples_per_second", 0) * row["seconds"] for row in trainer.history)
    metrics = {
        "test_loss": test["loss"],
        **({"test_accuracy": test["accuracy"]} if trainer._has_accuracy() else {}),
        "samples_per_second": samples / trainer.train_seconds if trainer.train_seconds else 0.0,
        "train_seconds": trainer.train_seconds,
        "epochs": trainer.epoch,
        "parameters": count_parameters(trainer.model),
    }
    run = Run(model=trainer.model, config=experiment, model_spec=model_spec(trainer.model, data, experiment),
              history=trainer.history, metrics=metrics)
    if out_dir is not None:
        run.save(out_dir)
    return run
