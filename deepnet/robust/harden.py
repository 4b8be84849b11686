"""Defences: a new run directory trained from a parent run's config, its parent recorded.

- ``fast-at``: FGSM from a random start in the ε-ball, step ``1.25·eps`` (Wong, Rice & Kolter 2020);
- ``pgd-at``: PGD with a random start, ``steps`` steps of ``step_size`` (Madry et al. 2018);
- ``distill``: defensive distillation (Papernot et al. 2016): a teacher trained at
  temperature T, then a student trained at T on the teacher's soft labels, deployed at T = 1;
- ``ensemble``: the parent and ``members - 1`` models trained with other seeds, averaged in
  probability.

All of them train through the one :class:`~deepnet.train.Trainer`: adversarial training
through its ``perturb`` hook, distillation through its ``loss_fn`` hook. Besides the usual
run files the new run holds ``hardening.json``: method, settings, parent, training time
and the hardware it ran on.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.config import ExperimentConfig, load_config
from deepnet.data import AugmentConfig, Dataset
from deepnet.robust.attacks import PixelModel, pgd, project
from deepnet.train.callbacks import Callback
from deepnet.train.experiment import build_model, load_experiment_data
from deepnet.train.loop import evaluate_split, fit, model_spec, seed_everything
from deepnet.train.run import Run, RunError, atomic_write, load_run

__all__ = ["HARDEN_METHODS", "AdversarialExamples", "RobustEarlyStopping", "harden"]

HARDEN_METHODS = ("fast-at", "pgd-at", "distill", "ensemble")
FAST_AT_STEP = 1.25  # Wong et al.: alpha = 1.25 eps, from a uniform random start


class AdversarialExamples:
    """The Trainer's ``perturb`` hook: replaces a batch of normalised images by adversarial
    ones crafted in pixel space ([0, 1], normalisation ``mean``/``std`` per channel) with
    ``steps`` signed-gradient steps of ``step_size`` from a uniform random start, each
    projected into the L∞ ε-ball and the pixel range. The model stays in the mode training
    put it in, as in Wong et al. and Madry et al."""

    def __init__(self, mean: list[float], std: list[float], eps: float, step_size: float, steps: int) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.eps, self.step_size, self.steps = eps, step_size, steps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        pixels = (x * std + mean).clamp(0.0, 1.0)
        delta = project((torch.rand_like(pixels) * 2 - 1) * self.eps, pixels, self.eps, "linf")
        for _ in range(self.steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model((pixels + delta - mean) / std).float(), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = project(delta.detach() + self.step_size * grad.sign(), pixels, self.eps, "linf")
        return ((pixels + delta - mean) / std).detach()


class RobustEarlyStopping(Callback):
    """Wong et al.'s guard against catastrophic overfitting, as a Trainer callback: after every
    epoch, PGD accuracy on a fixed slice of the validation split; the weights of the best
    epoch are put back at the end (FGSM training can suddenly learn to defeat FGSM alone,
    PGD accuracy collapsing to ~0 within an epoch). It also ramps the training ε up
    linearly over the first ``ramp_epochs`` epochs, which keeps early MNIST training stable."""

    def __init__(self, examples: AdversarialExamples, x_val: torch.Tensor, y_val: torch.Tensor, *, ramp_epochs: int = 0,
                 pgd_steps: int = 10, quiet: bool = False) -> None:
        self.examples, self.full_eps = examples, examples.eps
        self.x_val, self.y_val = x_val, y_val
        self.ramp_epochs, self.pgd_steps, self.quiet = ramp_epochs, pgd_steps, quiet
        self.trainer: Any = None
        self.best, self.best_epoch, self.best_state = -1.0, 0, None
        self.val_pgd_accuracy: list[float | None] = []

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.trainer = logs["trainer"]

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        ramp = min(1.0, (epoch + 1) / self.ramp_epochs) if self.ramp_epochs else 1.0
        self.examples.eps = self.full_eps * ramp

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.examples.eps < self.full_eps:  # still ramping: not yet the model we want
            self.val_pgd_accuracy.append(None)
            return
        model = self.trainer.model
        pixel_model = PixelModel(model, self.examples.mean.flatten().tolist(), self.examples.std.flatten().tolist())
        x = pixel_model.to_pixels(self.x_val.to(pixel_model.mean.device))
        y = self.y_val.to(x.device)
        x_adv = pgd(pixel_model, x, y, self.full_eps, steps=self.pgd_steps, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            accuracy = (pixel_model(x_adv).argmax(-1) == y).float().mean().item()
        self.val_pgd_accuracy.append(accuracy)
        if accuracy > self.best:
            self.best, self.best_epoch = accuracy, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if not self.quiet:
            print(f"  val PGD-{self.pgd_steps} accuracy at eps {self.full_eps:g}: {100 * accuracy:.2f}% "
                  f"(best {100 * self.best:.2f}%, epoch {self.best_epoch})", file=sys.stderr, flush=True)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.best_state is not None:
            self.trainer.model.load_state_dict(self.best_state)


def _hardware() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs visible, {torch.get_num_threads()} torch threads" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")


def _image_preprocessing(spec: dict[str, Any], parent: Path) -> dict[str, Any]:
    prep = spec.get("preprocessing", {})
    if spec.get("input_kind") != "image" or prep.get("kind") != "normalize":
        raise ValueError(f"Adversarial training perturbs image pixels, but {parent} holds a model of {spec.get('input_kind')} "
                         f"inputs (preprocessing {prep.get('kind')!r}). Harden an image classifier (mnist, digits, an image folder).")
    return prep


def harden(parent: str | os.PathLike, method: str, out: str | os.PathLike | None = None, *, eps: float = 0.3,
           step_size: float | None = None, steps: int = 40, eps_ramp: int = 0, temperature: float = 100.0,
           members: int = 3, overrides: list[str] | None = None, quiet: bool = False) -> Run:
    """Train a defended model from the run ``parent``'s config (with ``overrides``) into
    ``out`` (default ``<parent>-<method>``); returns the new run.

    Adversarial training ramps ε up over the first ``eps_ramp`` epochs and keeps the epoch
    with the best PGD-10 accuracy on (up to) 1,000 validation images."""
    if method not in HARDEN_METHODS:
        raise ValueError(f"Unknown defence {method!r}; choose one of {', '.join(HARDEN_METHODS)}.")
    parent = Path(parent)
    spec = load_run(parent).model_spec  # a missing or broken parent fails here, with the run layer's message
    if not (parent / "config.yaml").is_file():
        raise RunError(f"{parent} has no config.yaml: deepnet harden retrains from the parent's config.")
    if not eps > 0:
        raise ValueError(f"Received an invalid value for `eps`: expected a positive radius. Received: eps={eps!r}")
    if temperature <= 0 or members < 2 or steps < 1:
        raise ValueError(f"Received temperature={temperature}, members={members}, steps={steps}; expected "
                         "temperature > 0, members >= 2 and steps >= 1.")
    prep = _image_preprocessing(spec, parent) if method in ("fast-at", "pgd-at") else None
    config = load_config(parent / "config.yaml", overrides)
    config = config.model_copy(update={"model": config.model.model_copy(update={"parent": None})})
    out_dir = Path(out) if out is not None else parent.parent / f"{parent.name}-{method}"
    data = load_experiment_data(config)
    record: dict[str, Any] = {"method": method, "parent": str(parent)}
    start = time.perf_counter()
    if method in ("fast-at", "pgd-at"):
        fast = method == "fast-at"
        alpha = step_size if step_size is not None else (FAST_AT_STEP * eps if fast else 2.5 * eps / steps)
        record.update(eps=eps, norm="linf", step_size=alpha, steps=1 if fast else steps, random_start=True)
        perturb = AdversarialExamples(prep["mean"], prep["std"], eps, alpha, 1 if fast else steps)
        val = data.val if len(data.val) else data.train
        guard = RobustEarlyStopping(perturb, val.x[:1000], val.y[:1000], ramp_epochs=eps_ramp, quiet=quiet)
        run = _train(config, data, out_dir, parent, quiet, perturb=perturb, callbacks=[guard])
        record.update(eps_ramp_epochs=eps_ramp, val_pgd_accuracy=guard.val_pgd_accuracy, best_epoch=guard.best_epoch)
    elif method == "distill":
        record.update(temperature=temperature)
        run, teacher_seconds = _distill(config, data, out_dir, parent, temperature, quiet)
        record.update(teacher_train_seconds=teacher_seconds)
    else:
        record.update(members=members)
        run = _ensemble(config, data, out_dir, parent, members, quiet)
    record.update(train_seconds=run.metrics.get("train_seconds"), wall_seconds=time.perf_counter() - start,
                  hardware=_hardware(), test_accuracy=run.metrics.get("test_accuracy"))
    atomic_write(out_dir / "hardening.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    return run


def _new_model(config: ExperimentConfig, data: Dataset, parent: Path, seed: int | None = None) -> nn.Module:
    seed_everything(config.train.seed if seed is None else seed, config.train.deterministic)
    model = build_model(config, data)
    model.deepnet_spec["parent"] = str(parent)
    return model


def _train(config: ExperimentConfig, data: Dataset, out: Path | None, parent: Path, quiet: bool, *,
           seed: int | None = None, **hooks: Any) -> Run:
    if seed is not None:
        config = config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})
    model = _new_model(config, data, parent, config.train.seed)
    augment = AugmentConfig(**config.data.augment.model_dump())
    return fit(model, data, config.train, augment=augment, quiet=quiet, out=out, experiment=config, **hooks)


def _distill(config: ExperimentConfig, data: Dataset, out: Path, parent: Path, temperature: float,
             quiet: bool) -> tuple[Run, float]:
    """Papernot et al. (2016): teacher and student both learn at temperature T; the student's
    targets are the teacher's probabilities at T; the student is deployed at T = 1."""

    def hard_labels_at_t(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits / temperature, y)

    teacher_run = _train(config, data, None, parent, quiet, loss_fn=hard_labels_at_t)
    teacher = teacher_run.model.eval()

    def soft_labels_at_t(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = torch.softmax(teacher(x).float() / temperature, dim=-1)
        return -(soft * torch.log_softmax(logits / temperature, dim=-1)).sum(-1).mean()

    return _train(config, data, out, parent, quiet, loss_fn=soft_labels_at_t), teacher_run.metrics["train_seconds"]


def _ensemble(config: ExperimentConfig, data: Dataset, out: Path, parent: Path, members: int, quiet: bool) -> Run:
    """The parent and ``members - 1`` models trained alike with other seeds, as one run."""
    from deepnet.models import create_model

    first = load_run(parent)
    others = [_train(config, data, None, parent, quiet, seed=config.train.seed + k) for k in range(1, members)]
    trained = [first.model] + [run.model for run in others]
    members_metrics = [first.metrics] + [run.metrics for run in others]
    train_seconds = sum(m.get("train_seconds", 0.0) for m in members_metrics)
    samples = sum(m.get("samples_per_second", 0.0) * m.get("train_seconds", 0.0) for m in members_metrics)
    records = [{"name": first.model_spec["name"], "args": first.model_spec.get("args", {})}] * members
    shape = {"input_shape": tuple(data.input_shape), "num_classes": data.num_classes}
    model = create_model("ensemble", members=records, **shape)
    for target, source in zip(model.members, trained):
        target.load_state_dict(source.state_dict())
    model.deepnet_spec = {"name": "ensemble", "args": {"members": records, **shape}, "parent": str(parent)}
    config = config.model_copy(update={"model": config.model.model_copy(update={"name": "ensemble", "args": model.deepnet_spec["args"]})})
    test = evaluate_split(model, data.test)
    metrics = {"test_loss": test["loss"], "test_accuracy": test["accuracy"], "train_seconds": train_seconds,
               "samples_per_second": samples / train_seconds if train_seconds else 0.0, "members": members, "parameters": sum(p.numel() for p in model.parameters())}
    run = Run(model=model, config=config, model_spec=model_spec(model, data, config), metrics=metrics)
    run.save(out)
    return run
