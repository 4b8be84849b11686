"""The training loop: one ``train_step``, an ``evaluate``, a handful of callback events.

Read top to bottom: ``fit`` builds a :class:`Trainer`; ``Trainer.fit`` runs epochs of
``train_step`` over a :class:`BatchLoader`, evaluates on the validation split, and writes
checkpoints (every ``checkpoint_steps`` steps and at epoch ends) that hold the whole
training state, so a run resumed after a kill equals an uninterrupted one; at the end it
measures the test split. The same loop runs on the CPU, a GPU, or N data-parallel workers.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from deepnet.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig, _explain
from deepnet.data import Augment, AugmentConfig, BatchLoader, Dataset, Split
from deepnet.models import count_parameters
from deepnet.train import distributed
from deepnet.train.callbacks import Callback, EarlyStopping, ProgressReporter
from deepnet.train.checkpoint import (
    check_same_run,
    flatten_optimizer_state,
    latest_checkpoint,
    list_checkpoints,
    remove_checkpoints,
    rng_states,
    run_identity,
    set_rng_states,
    unflatten_optimizer_state,
    write_checkpoint,
)
from deepnet.train.devices import limit_threads, resolve_device
from deepnet.train.losses import compute_loss, correct_count
from deepnet.train.optim import build_optimizer, build_schedule
from deepnet.train.run import Run, RunError

__all__ = ["Trainer", "TrainingError", "TrainingInterrupted", "fit", "evaluate_objective", "evaluate_split",
           "seed_everything"]


# Szegedy et al. (2014): "the losses of the auxiliary classifiers were weighted by 0.3".
AUX_CLASSIFIER_WEIGHT = 0.3
STEP_LOG_ROWS_PER_EPOCH = 20  # rows of steps.csv per epoch: enough to see noise and slope within one

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, say); the message says what to change."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the step in flight finished and a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if checkpoint is not None:
            where = (f"checkpoint {checkpoint.stem} written; continue with "
                     f"`deepnet train --resume {checkpoint.parent.parent}`")
        else:
            where = "nothing saved (train with an output directory to checkpoint)"
        super().__init__(f"{name}: training stopped after step {step}; {where}")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass: bf16 or fp16 autocast, or nothing for fp32."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype or torch.bfloat16, enabled=dtype is not None)


def cpu_has_native_bf16() -> bool | None:
    """Whether this x86 CPU computes bfloat16 natively (AVX-512 BF16 or AMX), from Linux's
    /proc/cpuinfo; None where that cannot be told (another system or architecture). Without it,
    oneDNN emulates bf16 and autocast runs several times slower than fp32."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None or "avx2" not in flags:  # not an x86 CPU that lists its features
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def check_model_fits(model: nn.Module, data: Dataset, name: str = "model") -> None:
    """Run two samples through ``model`` before training, so a shape mismatch is reported
    at once, with both shapes, instead of at step 1."""
    x = data.train.x[:2].to(model_device(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if hasattr(model, "evaluation_losses"):  # a generative family: its objective must run
                model.evaluation_losses(x, data.train.y[:2].to(x.device))
                return
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
    """Mean loss and accuracy of ``model`` on ``split`` (eval mode, no gradients), on the
    model's device; batches move there as needed."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with torch.inference_mode(), autocast(device, precision):
        for x, y in BatchLoader(split, batch_size):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x).float()
            total_loss += compute_loss(loss, logits, y).double() * y.numel()
            total_correct += correct_count(logits, y)
            count += y.numel()
    model.train(was_training)
    return {"loss": (total_loss / max(count, 1)).item(), "accuracy": (total_correct / max(count, 1)).item()}


def evaluate_objective(model: nn.Module, split: Split, *, batch_size: int = 1024,
                       precision: str = "fp32") -> dict[str, float]:
    """The mean of each term of ``model.evaluation_losses`` on ``split`` (a family with its own
    objective: autoencoders, VAE, GAN, diffusion): ``loss`` and the named terms; no accuracy."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    with torch.inference_mode(), autocast(device, precision):
        for x, y in BatchLoader(split, batch_size):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            for name, value in model.evaluation_losses(x, y).items():
                sums[name] = sums.get(name, 0) + value.double() * len(x)
            count += len(x)
    model.train(was_training)
    return {"accuracy": math.nan, **{name: (total / max(count, 1)).item() for name, total in sums.items()}}


@contextmanager
def _signals_caught(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM only raise a flag, which the loop reads after each step; a second
    signal of the same kind acts at once (the handler in force before)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in caught}

    def handler(signum: int, frame: Any) -> None:
        trainer.pending_signal = signum
        signal.signal(signum, previous[signum])

    for signum in caught:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


class _PartParameters(nn.Module):
    """The parameters of one part of a model (a GAN's generator, one RBM), as a module for
    the optimizer factory, which groups them by name and shape."""

    def __init__(self, parameters: list[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(parameters)


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


class Trainer:
    """Owns the model, optimizer, schedule and data order of one training run.

    Override :meth:`train_step` for a custom update (Keras's progressive disclosure), or
    pass the two hooks it calls: ``perturb(model, x, y) -> x`` replaces each (augmented)
    training batch before the update (adversarial training crafts its examples there), and
    ``loss_fn(logits, y, x) -> loss`` replaces the configured loss (distillation trains on
    a teacher's outputs there).
    A model with ``parts`` and ``training_losses`` (the generative families, the deep belief
    net; see ``deepnet/models/_pixels.py``) brings its own objective: each step updates each
    of its active parts with an optimizer of its own (a GAN's discriminator, then its
    generator), and ``evaluation_losses`` replaces accuracy on the validation and test splits.
    Launched by torchrun, the trainer is one of ``WORLD_SIZE`` data-parallel workers: the
    model is wrapped in DistributedDataParallel and each worker takes its share of every
    global batch.
    """

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig, *,
                 augment: AugmentConfig | None = None, callbacks: Sequence[Callback] = (),
                 quiet: bool = False, model_name: str = "model",
                 perturb: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.config, self.data = config, data
        self.perturb, self.loss_fn = perturb, loss_fn
        self.world = distributed.world()
        self.quiet = quiet or not self.world.is_main
        self.device = self._choose_device(config.device)
        self.owns_process_group = distributed.setup(self.device)
        self.threads = limit_threads(config.threads, processes=self.world.local_size)
        # Denormal floats make tiny gradients 10-100x slower on x86 CPUs; flush them to zero.
        torch.set_flush_denormal(True)
        seed_everything(config.seed + self.world.rank, config.deterministic)
        self.model = model.to(self.device)
        # A family with its own objective: one optimizer (and schedule) per part.
        self.parts: tuple[str, ...] = tuple(getattr(model, "parts", ())) if hasattr(model, "training_losses") else ()
        if self.parts and self.world.distributed:
            raise ValueError(f"Model {model_name!r} trains with its own objective, which data-parallel training does not "
                             "support yet. Drop --nproc.")
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        check_model_fits(self.model, data, model_name)
        self.train_split, self.val_split = self._place(data.train), self._place(data.val)
        self.head_names: set[str] = set()
        self.backbone_blocks: dict[str, list[str]] = {}  # freeze_backbone: block name -> its parameters
        self.backbone_modules: set[str] = set()
        if config.freeze_backbone or config.backbone_lr_ratio != 1.0:
            from deepnet.train import transfer

            self.head_names = transfer.head_parameter_names(self.model)
            if config.freeze_backbone:
                self.backbone_blocks = transfer.backbone_blocks(self.model)
                self.backbone_modules = transfer.backbone_modules(self.model, self.train_split.x[:2].to(self.device))
            if config.unfreeze_every and self.world.distributed:
                raise ValueError("train.unfreeze_every cannot change the trainable layers of a data-parallel run "
                                 "(DistributedDataParallel fixes them at the start). Drop --nproc or set train.unfreeze_every=0.")
        self._apply_freeze(epoch=0)  # before DistributedDataParallel, which fixes the trainable set
        self.forward: nn.Module = self.model
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # Models with parts a step may not use (MoE experts, side heads) need the search
            # for unused parameters; it costs a graph walk per step, so only for them.
            unused = hasattr(self.model, "aux_loss") or hasattr(self.model, "aux_outputs")
            self.forward = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                                   find_unused_parameters=unused)
        if config.compile:
            self.forward = torch.compile(self.forward)
        self.train_loader = BatchLoader(self.train_split, config.batch_size, shuffle=True, seed=config.seed,
                                        drop_last=len(data.train) > config.batch_size,
                                        rank=self.world.rank, world_size=self.world.size)
        self.steps_per_epoch = len(self.train_loader)
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        if self.parts:
            self._build_part_optimizers()
        else:
            self.optimizer = build_optimizer(self.model, config, self.head_names)
            self.schedule = build_schedule(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        if config.precision == "bf16" and self.device.type == "cpu" and cpu_has_native_bf16() is False:
            self._say("warning: train.precision=bf16 on a CPU without native bfloat16 (no AVX-512 BF16 or AMX): "
                      "it is emulated, several times slower than fp32 (8x for examples/mnist-ddpm.yaml's U-Net). "
                      "Set train.precision=fp32 on this machine.")
        fill = float(data.train.x.min()) if data.input_kind == "image" else 0.0
        self.augment = Augment(augment, fill) if augment is not None and augment.enabled else None
        self.augment_generator = torch.Generator().manual_seed(config.seed + 17 + 1_000_003 * self.world.rank)
        self.callbacks = list(callbacks)
        if not self.quiet:
            self.callbacks.append(ProgressReporter())
        self.early_stopping = EarlyStopping(config.monitor, config.patience) if config.early_stopping else None
        # The training state: everything below is saved in a checkpoint.
        self.history: list[dict[str, float]] = []
        self.steps_log: list[dict[str, float]] = []
        self.log_every = max(1, self.steps_per_epoch // STEP_LOG_ROWS_PER_EPOCH)
        self.epoch = 0  # epochs completed
        self.batch = 0  # batches completed in the current epoch
        self.step = 0  # optimizer steps taken (skipped updates included)
        self.train_seconds = 0.0
        self.stop_training = False
        self.lr_reductions = 0  # on_nan=reduce_lr halvings so far
        self.nonfinite_in_a_row = 0  # on_nan=skip_batch
        self._reset_epoch_sums()
        # Where checkpoints go, what they must match on resume, and the last one written.
        self.checkpoint_dir: Path | None = None
        self.identity: dict[str, Any] = {}
        self.last_checkpoint: Path | None = None
        self.pending_signal: int | None = None
        self._good_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None  # reduce_lr
        self._recent_losses: list[torch.Tensor] = []  # on_nan=stop: checked every few steps
        self._loss_was_finite: bool | None = None  # on_nan=skip_batch|reduce_lr: this step's verdict

    def _build_part_optimizers(self) -> None:
        """One optimizer per part; a part's schedule spans the epochs in which it trains."""
        c = self.config
        active = getattr(self.model, "active_parts", lambda epoch: self.parts)
        epochs = {part: sum(part in active(e) for e in range(c.epochs)) for part in self.parts}
        self.part_parameters = {part: self.model.part_parameters(part) for part in self.parts}
        self.optimizers = {part: build_optimizer(_PartParameters(self.part_parameters[part]), c) for part in self.parts}
        self.schedules = {}
        for part, optimizer in self.optimizers.items():
            part_config = c.model_copy(update={"epochs": max(epochs[part], 1),
                                               "warmup_epochs": min(c.warmup_epochs, max(epochs[part] - 1, 0))})
            self.schedules[part] = build_schedule(optimizer, part_config, self.steps_per_epoch)
        self.optimizer, self.schedule = self.optimizers[self.parts[0]], self.schedules[self.parts[0]]

    def active_parts(self) -> tuple[str, ...]:
        """The parts trained in the current epoch (all of them unless the model says otherwise)."""
        active = getattr(self.model, "active_parts", None)
        return tuple(active(self.epoch)) if active is not None else self.parts

    def current_lr(self) -> float:
        optimizer = self.optimizers[self.active_parts()[0]] if self.parts else self.optimizer
        return optimizer.param_groups[0]["lr"]

    def close(self) -> None:
        """Leave the process group this trainer joined. DDP's reducer goes first: were it the
        last holder of the gloo group, the group's destructor would wait for its worker
        thread while holding the GIL that thread needs (a deadlock seen at exit)."""
        self.forward = self.model
        if self.owns_process_group:
            import gc

            gc.collect()
            distributed.shutdown()
            self.owns_process_group = False

    def _choose_device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if self.world.distributed and device.type == "cuda":
            device = torch.device("cuda", self.world.local_rank)  # one GPU per worker
        return device

    def _place(self, split: Split) -> Split:
        """The whole split on the device when it fits in half of the free memory; otherwise
        it stays on the CPU and each batch is copied over from pinned memory."""
        if self.device.type == "cpu":
            return split
        needed = sum(t.numel() * t.element_size() for s in (self.data.train, self.data.val) for t in (s.x, s.y))
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else 2**31
        if needed > free // 2:
            return split
        return Split(split.x.to(self.device), split.y.to(self.device))

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.device != self.device:
            if self.device.type == "cuda":
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def frozen_blocks(self, epoch: int) -> int:
        """How many backbone blocks (from the input side) stay frozen in ``epoch`` (0-based)."""
        if not self.backbone_blocks:
            return 0
        thawed = epoch // self.config.unfreeze_every if self.config.unfreeze_every else 0
        return max(0, len(self.backbone_blocks) - thawed)

    def _apply_freeze(self, epoch: int) -> None:
        """Feature extraction / gradual unfreezing: frozen blocks get no gradient and run in
        eval mode (fixed batch-norm statistics, no dropout), the rest trains."""
        if not self.backbone_blocks:
            return
        count = self.frozen_blocks(epoch)
        blocks = list(self.backbone_blocks)[:count]
        frozen = {name for block in blocks for name in self.backbone_blocks[block]}
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in frozen)
        if self.model.training:
            for name, module in self.model.named_modules():
                inside = any(name == block or name.startswith(block + ".") for block in blocks)
                if inside or (count == len(self.backbone_blocks) and name in self.backbone_modules):
                    module.eval()

    def _log_steps(self) -> None:
        """One row of ``steps.csv``: the mean training loss of the last ``log_every`` steps (the
        curve within epochs, whose noise and slope ``deepnet diagnose`` reads)."""
        loss_sum, seen = self.loss_sum.item(), self.seen  # the epoch's running sums, read, not kept twice
        if seen > self.window_start[1]:
            self.steps_log.append({"step": self.step, "epoch": self.epoch + self.batch / self.steps_per_epoch,
                                   "lr": self.current_lr(),
                                   "train_loss": (loss_sum - self.window_start[0]) / (seen - self.window_start[1])})
        self.window_start = (loss_sum, seen)

    def _reset_epoch_sums(self) -> None:
        self.loss_sum = torch.zeros((), dtype=_sum_dtype(self.device), device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.seen = 0
        self.term_sums: dict[str, torch.Tensor] = {}  # a family's named loss terms, summed over examples
        self._counted_correct = not self.parts  # a family's parts report logits only while classifying
        self.epoch_seconds = 0.0
        self.window_start: tuple[float, int] = (0.0, 0)  # the sums when the last steps.csv row was written

    # -- one step -------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer update on a batch; returns (loss, number correct) as tensors."""
        if self.parts:
            return self.objective_step(x, y)
        c = self.config
        if self.augment is not None:
            x = self.augment(x, self.augment_generator)
        if self.perturb is not None:
            x = self.perturb(self.forward, x, y)
        with autocast(self.device, c.precision):
            logits = self.forward(x)
            if self.loss_fn is not None:
                loss = self.loss_fn(logits.float(), y, x)
            else:
                loss = compute_loss(c.loss, logits.float(), y, c.label_smoothing)
            aux = getattr(self.model, "aux_loss", None)  # e.g. MoE load balancing
            if isinstance(aux, torch.Tensor) and aux.requires_grad:
                loss = loss + c.aux_loss_weight * aux
            for aux_logits in getattr(self.model, "aux_outputs", ()):  # GoogLeNet's side heads
                loss = loss + AUX_CLASSIFIER_WEIGHT * compute_loss(c.loss, aux_logits.float(), y, c.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.update_allowed(loss):
            if c.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)  # a plain optimizer.step() unless fp16
            self.scaler.update()
        self._step_schedule()
        return loss.detach(), correct_count(logits.detach(), y)

    def objective_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step of a family with its own objective: each active part in turn computes its
        ``training_losses`` and takes an update with its own optimizer (a GAN's discriminator,
        then its generator; an RBM's CD-k). Returns the sum of the parts' losses and the number
        correct (when a part reports ``logits``)."""
        c = self.config
        if self.augment is not None:
            x = self.augment(x, self.augment_generator)
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for part in self.active_parts():
            optimizer = self.optimizers[part]
            with autocast(self.device, c.precision):
                losses = self.model.training_losses(x, y, part)
            loss = losses["loss"]
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.update_allowed(loss):
                if c.grad_clip:
                    self.scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(self.part_parameters[part], c.grad_clip)
                self.scaler.step(optimizer)
            self._step_schedule(self.schedules[part])
            for name, value in losses.items():
                if name == "logits":
                    correct += correct_count(value, y)
                    self._counted_correct = True
                elif name != "loss":
                    self.term_sums[name] = self.term_sums.get(name, 0) + value.detach().double() * len(y)
            total = total + loss.detach().float()
        self.scaler.update()
        return total, correct

    def update_allowed(self, loss: torch.Tensor) -> bool:
        """False when ``on_nan`` skips or rolls back this step's non-finite loss (on every
        rank alike). ``stop`` never waits for the loss here: the loop checks it later."""
        if self.config.on_nan == "stop":
            return True
        self._loss_was_finite = not distributed.any_rank(not bool(torch.isfinite(loss)), self.device)
        return self._loss_was_finite

    def _step_schedule(self, schedule: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
        schedule = schedule or self.schedule
        if schedule.last_epoch == 0:
            # PyTorch warns when the first schedule step follows no optimizer step, which is
            # what a skipped update (fp16 overflow, on_nan) looks like; the schedule keeps
            # counting steps on purpose.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                schedule.step()
        else:
            schedule.step()

    # -- the loop -------------------------------------------------------------------------
    def fit(self, checkpoint_dir: Path | None = None) -> list[dict[str, float]]:
        c = self.config
        self.checkpoint_dir = checkpoint_dir if c.checkpoint_every else None
        if c.on_nan == "reduce_lr" and self._good_state is None:
            self._good_state = self.state()
        self._emit("on_train_begin", logs={"trainer": self})
        with _signals_caught(self):
            while self.epoch < c.epochs and not self.stop_training:
                self._run_epoch()
        if self.early_stopping is not None:
            self.early_stopping.restore(self.model)
        self._emit("on_train_end", logs={"trainer": self})
        return self.history

    def _run_epoch(self) -> None:
        """The rest of the current epoch, from batch ``self.batch`` (0 unless resumed)."""
        c = self.config
        self.train_loader.set_epoch(self.epoch)
        self._emit("on_epoch_begin", self.epoch, logs={"trainer": self, "batch": self.batch})
        self.model.train()
        self._apply_freeze(self.epoch)
        start = time.perf_counter()
        for x, y in self.train_loader.batches(self.batch, self.steps_per_epoch):
            x, y = self._to_device(x, y)
            loss, n_correct = self.train_step(x, y)
            self.step += 1
            self.batch += 1
            if c.on_nan == "stop":
                self._stop_on_nonfinite(loss)
            elif not self._handle_nonfinite(loss):
                self.epoch_seconds += time.perf_counter() - start
                return  # rolled back to the last good state: carry on from there
            if self.nonfinite_in_a_row == 0:
                self.loss_sum += loss * y.numel()
                self.correct += n_correct
                self.seen += y.numel()
            if self.batch % self.log_every == 0 or self.batch == self.steps_per_epoch:
                self._log_steps()
            self._emit("on_batch_end", self.batch - 1, logs={"loss": loss, "seen": self.seen, "steps": self.steps_per_epoch})
            if self.batch < self.steps_per_epoch:  # the epoch's end has a checkpoint of its own
                if distributed.any_rank(self.pending_signal is not None, self.device):
                    self.epoch_seconds += time.perf_counter() - start
                    self._interrupt()
                if self.checkpoint_dir is not None and c.checkpoint_steps and self.step % c.checkpoint_steps == 0:
                    self.epoch_seconds += time.perf_counter() - start
                    self.save_checkpoint()
                    start = time.perf_counter()
        self.epoch_seconds += time.perf_counter() - start
        self._end_epoch()
        if distributed.any_rank(self.pending_signal is not None, self.device):
            self._interrupt()

    def _end_epoch(self) -> None:
        c = self.config
        lr = self.current_lr()  # of the parts this epoch trained
        if c.on_nan == "stop":
            self._stop_on_nonfinite(None)
        loss_sum, correct, seen = distributed.sum_across([self.loss_sum.item(), self.correct.item(), self.seen], self.device)
        train_loss = loss_sum / max(seen, 1)
        val = self.evaluate(self.val_split) if len(self.val_split) else {"loss": math.nan, "accuracy": math.nan}
        seconds = self.epoch_seconds
        self.train_seconds += seconds
        self.epoch += 1
        self.batch = 0
        terms = {f"train_{name}": float(total) / max(self.seen, 1) for name, total in self.term_sums.items()}
        terms.update({f"val_{name}": value for name, value in val.items() if name not in ("loss", "accuracy")})
        row = {"epoch": self.epoch, "step": self.step, "lr": lr,
               "train_loss": train_loss,
               "train_accuracy": correct / max(seen, 1) if self._has_accuracy() and self._counted_correct else math.nan,
               "val_loss": val["loss"], "val_accuracy": val["accuracy"] if self._has_accuracy() else math.nan,
               "seconds": seconds, "samples_per_second": seen / seconds if seconds else 0.0, **terms}
        self._reset_epoch_sums()
        self.history.append(row)
        if self.early_stopping is not None and self.early_stopping.update(row, self.model):
            self.stop_training = True
        if self.epoch % max(c.checkpoint_every, 1) == 0 or self.epoch == c.epochs or self.stop_training:
            if self.checkpoint_dir is not None:
                self.save_checkpoint()
            elif c.on_nan == "reduce_lr":
                self._keep_good_state(self.state())
        self._emit("on_epoch_end", self.epoch, logs=row)

    def evaluate(self, split: Split) -> dict[str, float]:
        """Mean loss and accuracy on ``split``; data-parallel workers each take a contiguous
        share and add up their sums, so every worker gets the same figures."""
        c = self.config
        if hasattr(self.model, "evaluation_losses"):
            return evaluate_objective(self.model, split, batch_size=c.eval_batch_size, precision=c.precision)
        if not self.world.distributed:
            return evaluate_split(self.model, split, loss=c.loss, batch_size=c.eval_batch_size, precision=c.precision)
        share = -(-len(split) // self.world.size)
        rows = slice(self.world.rank * share, (self.world.rank + 1) * share)
        mine = Split(split.x[rows], split.y[rows])
        result = evaluate_split(self.model, mine, loss=c.loss, batch_size=c.eval_batch_size, precision=c.precision)
        loss_sum, correct, count = distributed.sum_across(
            [result["loss"] * len(mine), round(result["accuracy"] * len(mine)), len(mine)], self.device)
        return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}

    def _has_accuracy(self) -> bool:
        if hasattr(self.model, "evaluation_losses"):  # a generative family: no classes to get right
            return False
        return self.config.loss == "cross_entropy" or self.data.task == "classification"

    def _emit(self, event: str, *args: Any, logs: dict | None = None) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(*args, logs=logs or {})

    # -- non-finite losses and signals -----------------------------------------------------
    def _stop_on_nonfinite(self, loss: torch.Tensor | None) -> None:
        """``on_nan=stop``: losses are checked every step on the CPU alone, and every 50 steps
        (and at the epoch's end) where a check has to wait: for an accelerator, or for the
        other data-parallel workers."""
        if loss is not None:
            self._recent_losses.append(loss)
            every = 1 if self.device.type == "cpu" and not self.world.distributed else 50
            if len(self._recent_losses) < every:
                return
        if not self._recent_losses:
            return
        recent = self._recent_losses
        finite = torch.isfinite(recent[0] if len(recent) == 1 else torch.stack(recent))
        all_finite = bool(finite.all())
        first_step = self.step - len(self._recent_losses) + 1
        self._recent_losses.clear()
        if distributed.any_rank(not all_finite, self.device):
            self._raise_nonfinite(first_step + int((~finite).int().argmax()) if not all_finite else self.step)

    def _raise_nonfinite(self, step: int) -> None:
        c = self.config
        x = self.data.train.x
        bad_values = int(torch.isfinite(x).logical_not().sum()) if x.is_floating_point() else 0
        if bad_values:
            cause = f"the training data holds {bad_values} NaN/inf values; clean or drop them"
        else:
            cause = (f"the updates diverged (learning rate too high?): lower train.lr (now {c.lr:g}), "
                     "set train.grad_clip=1.0 or train.warmup_epochs")
        if self.last_checkpoint is not None:
            saved = f"The last good checkpoint is {self.last_checkpoint}."
        else:
            saved = "No checkpoint was written before it."
        raise TrainingError(
            f"The training loss became nan at step {step} (epoch {self.epoch + 1}). Likely cause: {cause}. "
            f"Lower train.lr, or set train.on_nan=skip_batch or reduce_lr to train through it. {saved}"
        )

    def _handle_nonfinite(self, loss: torch.Tensor) -> bool:
        """``skip_batch`` and ``reduce_lr``; False when the state was rolled back."""
        c = self.config
        finite = self._loss_was_finite  # decided in update_allowed, on every rank alike
        self._loss_was_finite = None
        if finite is None:  # a custom train_step that does not call update_allowed
            finite = not distributed.any_rank(not bool(torch.isfinite(loss)), self.device)
        if not finite:
            if c.on_nan == "skip_batch":
                self.nonfinite_in_a_row += 1
                if self.nonfinite_in_a_row > c.nan_retries:
                    raise TrainingError(
                        f"The training loss was non-finite for {self.nonfinite_in_a_row} batches in a row (up to step "
                        f"{self.step}); skipping does not help. Lower train.lr (now {c.lr:g}) or check the data for NaN/inf."
                    )
                self._say(f"warning: non-finite loss at step {self.step}; update skipped")
                return True
            self._roll_back()
            return False
        self.nonfinite_in_a_row = 0
        return True

    def _roll_back(self) -> None:
        """``reduce_lr``: back to the last good state, with half the learning rate."""
        c = self.config
        bad_step = self.step
        reductions = self.lr_reductions + 1
        if reductions > c.nan_retries:
            raise TrainingError(
                f"The training loss became non-finite at step {bad_step} after the learning rate was halved "
                f"{self.lr_reductions} times. Lower train.lr (now {c.lr:g}) a lot more, or check the data for NaN/inf."
            )
        tensors, meta = self._good_state
        self.load_state(tensors, meta)
        factor = 0.5 ** (reductions - meta["lr_reductions"])
        self.schedule.base_lrs = [lr * factor for lr in self.schedule.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        self.lr_reductions = reductions
        self._say(f"warning: non-finite loss at step {bad_step}; back to step {self.step} with the learning rate "
                  f"halved (x{0.5 ** reductions:g} of train.lr)")

    def _keep_good_state(self, state: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> None:
        tensors, _ = state
        if all(bool(torch.isfinite(v).all()) for k, v in tensors.items() if k.startswith("model/") and v.is_floating_point()):
            self._good_state = state

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def _interrupt(self) -> None:
        signum = self.pending_signal or signal.SIGTERM  # another rank's signal
        path = None
        if self.checkpoint_dir is not None:
            just_written = self.last_checkpoint is not None and self.last_checkpoint.name == f"step-{self.step:09d}.json"
            path = self.last_checkpoint if just_written else self.save_checkpoint()
        raise TrainingInterrupted(signum, self.step, path)

    # -- the training state: checkpoints and exact resume ------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything a resumed run needs to equal an uninterrupted one: tensors (weights,
        optimizer moments, early stopping's best weights) and JSON (the rest, with the RNG
        states and partial-epoch sums of every rank)."""
        tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        optim_tensors, optim_meta = flatten_optimizer_state(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        if self.early_stopping is not None and self.early_stopping.best_state is not None:
            tensors.update({f"best/{k}": v.contiguous() for k, v in self.early_stopping.best_state.items()})
        parts_meta = {}
        for part in self.parts[1:]:  # the first part's optimizer is self.optimizer, stored as usual
            part_tensors, part_optimizer = flatten_optimizer_state(self.optimizers[part].state_dict(), prefix=f"optim.{part}")
            tensors.update(part_tensors)
            parts_meta[part] = {"optimizer": part_optimizer, "schedule": self.schedules[part].state_dict()}
        rank_state = {**rng_states(self.device, self.augment_generator),
                      "loss_sum": self.loss_sum.item(), "correct": int(self.correct.item()), "seen": self.seen,
                      **({"term_sums": {k: float(v) for k, v in self.term_sums.items()}} if self.parts else {})}
        meta = {
            "epoch": self.epoch, "batch": self.batch, "step": self.step, "steps_per_epoch": self.steps_per_epoch,
            "train_seconds": self.train_seconds, "epoch_seconds": self.epoch_seconds,
            "stop_training": self.stop_training, "lr_reductions": self.lr_reductions,
            "nonfinite_in_a_row": self.nonfinite_in_a_row, "history": self.history,
            "steps_log": self.steps_log, "window_start": list(self.window_start),
            "optimizer": optim_meta,
            "schedule": self.schedule.state_dict(),  # its lr_lambdas are plain functions: stored as None
            "scaler": self.scaler.state_dict(),
            "early_stopping": self.early_stopping.state() if self.early_stopping else None,
            "ranks": distributed.all_gather_objects(rank_state),
            **({"parts": parts_meta} if parts_meta else {}),
            **self.identity,
        }
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        self.optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
        self.schedule.load_state_dict(meta["schedule"])
        for part, saved in meta.get("parts", {}).items():
            self.optimizers[part].load_state_dict(unflatten_optimizer_state(tensors, saved["optimizer"], prefix=f"optim.{part}"))
            self.schedules[part].load_state_dict(saved["schedule"])
        if meta["scaler"]:
            self.scaler.load_state_dict(meta["scaler"])
        if self.early_stopping is not None and meta["early_stopping"]:
            best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
            self.early_stopping.load_state(meta["early_stopping"], best or None)
        self.epoch, self.batch, self.step = meta["epoch"], meta["batch"], meta["step"]
        self.train_seconds, self.epoch_seconds = meta["train_seconds"], meta["epoch_seconds"]
        self.stop_training, self.lr_reductions = meta["stop_training"], meta["lr_reductions"]
        self.nonfinite_in_a_row, self.history = meta["nonfinite_in_a_row"], [dict(row) for row in meta["history"]]
        self.steps_log = [dict(row) for row in meta.get("steps_log", [])]
        self._reset_epoch_sums()
        self.window_start = tuple(meta.get("window_start", (0.0, 0)))
        ranks = meta["ranks"]
        if self.world.rank >= len(ranks):  # more workers than when saved: a fresh random stream
            return
        mine = ranks[self.world.rank]
        set_rng_states(mine, self.device, self.augment_generator)
        self.loss_sum.fill_(mine["loss_sum"])
        self.correct.fill_(mine["correct"])
        self.seen = mine["seen"]
        self.term_sums = {k: torch.tensor(v, dtype=torch.float64) for k, v in mine.get("term_sums", {}).items()}

    def save_checkpoint(self) -> Path:
        """Write the training state to ``checkpoint_dir`` (rank 0 writes; every rank must call)."""
        assert self.checkpoint_dir is not None
        tensors, meta = self.state()
        if self.config.on_nan == "reduce_lr":
            self._keep_good_state((tensors, meta))
        path = self.checkpoint_dir / f"step-{self.step:09d}.json"
        if self.world.is_main:
            path = write_checkpoint(self.checkpoint_dir, self.step, tensors, meta, self.config.keep_checkpoints)
        self.last_checkpoint = path
        return path

    def resume(self, checkpoint_dir: Path) -> Path:
        """Load the newest good checkpoint of ``checkpoint_dir`` (a bad newer one is reported
        and skipped); refuse one made with another config or other data."""
        tensors, meta, path = latest_checkpoint(checkpoint_dir, report=lambda line: print(line, file=sys.stderr, flush=True))
        check_same_run(meta, self.identity, checkpoint_dir.parent)
        self.load_state(tensors, meta)
        self.last_checkpoint = path
        return path


def model_spec(model: nn.Module, data: Dataset, config: ExperimentConfig) -> dict[str, Any]:
    """What ``model.json`` holds: enough to rebuild the model and prepare its inputs."""
    spec = getattr(model, "deepnet_spec", None) or {"name": None, "args": {}}
    return {
        "name": spec["name"],
        "args": json.loads(json.dumps(spec["args"], default=list)),
        **({"parent": spec["parent"]} if spec.get("parent") else {}),
        "input_shape": list(data.input_shape),
        "input_kind": data.input_kind,
        "dtype": str(data.train.x.dtype).replace("torch.", ""),
        "task": "generation" if hasattr(model, "evaluation_losses") else data.task,
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
        experiment: ExperimentConfig | None = None,
        perturb: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **overrides: Any) -> Run:
    """Train ``model`` on ``data`` and measure it on the test split.

    ``overrides`` are :class:`TrainConfig` fields (``epochs=10, optimizer="adamw", lr=3e-3,
    schedule="cosine"``...). With ``out`` the run directory is written there, with checkpoints
    every ``checkpoint_steps`` steps and after every epoch; ``resume=True`` continues from the
    newest good checkpoint. Under torchrun, only rank 0 writes. ``perturb`` and ``loss_fn``
    are the :class:`Trainer`'s hooks (adversarial training, distillation).
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
    out_dir = Path(out) if out is not None else None
    checkpoints = out_dir / "checkpoints" if out_dir is not None else None
    if resume:
        if checkpoints is None:
            raise ValueError("resume=True needs out= (the run directory to resume).")
        if not list_checkpoints(checkpoints):
            raise RunError(f"{out_dir} has no checkpoint to resume from. Start it with `deepnet train --out {out_dir}`.")
    elif checkpoints is not None and (unfinished := list_checkpoints(checkpoints)) and not (out_dir / "metrics.json").is_file():
        raise RunError(f"{out_dir} holds an unfinished run (newest checkpoint {unfinished[0].stem}). Continue it with "
                       f"`deepnet train --resume {out_dir}`, or pick another --out.")
    trainer = Trainer(model, data, train_config, augment=augment, callbacks=callbacks, quiet=quiet,
                      model_name=experiment.model.name, perturb=perturb, loss_fn=loss_fn)
    try:
        return _train_and_save(trainer, experiment, out_dir, checkpoints, resume)
    finally:
        trainer.close()


def _train_and_save(trainer: Trainer, experiment: ExperimentConfig, out_dir: Path | None,
                    checkpoints: Path | None, resume: bool) -> Run:
    data = trainer.data
    writes = out_dir is not None and trainer.world.is_main
    if checkpoints is not None:
        trainer.identity = run_identity(experiment, data)
    if writes and not resume:
        from deepnet.config import save_config

        out_dir.mkdir(parents=True, exist_ok=True)
        # A finished run trained afresh: its checkpoints must not be resumed, and until this one
        # ends the directory holds an unfinished run (no metrics.json).
        remove_checkpoints(checkpoints)
        (out_dir / "metrics.json").unlink(missing_ok=True)
        (out_dir / "diagnosis.json").unlink(missing_ok=True)  # it judged the run this one replaces
        save_config(experiment, out_dir / "config.yaml")
    if resume:
        trainer.resume(checkpoints)
    trainer.fit(checkpoints)
    test = trainer.evaluate(trainer._place(data.test))
    samples = sum(row.get("samples_per_second", 0) * row["seconds"] for row in trainer.history)
    metrics = {
        "test_loss": test["loss"],
        **({"test_accuracy": test["accuracy"]} if trainer._has_accuracy() else {}),
        **{f"test_{name}": value for name, value in test.items() if name not in ("loss", "accuracy")},
        "samples_per_second": samples / trainer.train_seconds if trainer.train_seconds else 0.0,
        "train_seconds": trainer.train_seconds,
        "epochs": trainer.epoch,
        "parameters": count_parameters(trainer.model),
        "device": str(trainer.device),
        "processes": trainer.world.size,
    }
    run = Run(model=trainer.model, config=experiment, model_spec=model_spec(trainer.model, data, experiment),
              history=trainer.history, steps=trainer.steps_log, metrics=metrics)
    if writes:
        run.save(out_dir)
        if hasattr(trainer.model, "sample") or hasattr(trainer.model, "encode"):
            from deepnet.train.plots import plot_generative

            plot_generative(trainer.model, data, out_dir / "plots", seed=experiment.train.seed)
    return run
