"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", section 3.3): train for a few hundred steps while the rate grows exponentially,
record the loss, and read a good rate off the curve. The model is put back as it was.

The suggestion is the rate where the smoothed loss falls fastest (the steepest point of the
loss against log(rate)), capped at a tenth of the rate of the lowest loss: both readings of
the curve that Smith and fastai (``lr_find``) give, whichever is the more careful.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepnet.config import ExperimentConfig, TrainConfig
from deepnet.data import AugmentConfig, Dataset

__all__ = ["LRFinderResult", "lr_find", "lr_find_experiment"]


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # smoothed (exponential moving average, bias-corrected)
    raw_losses: list[float]
    suggestion: float
    steepest_lr: float
    min_loss_lr: float
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=float)

    def plot(self, path: str | os.PathLike) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax.plot(self.lrs, self.raw_losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss")
        ax.plot(self.lrs, self.losses, color="tab:blue", label="smoothed")
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggested {self.suggestion:.2g}")
        ax.axvline(self.min_loss_lr, color="grey", linestyle=":", label=f"lowest loss {self.min_loss_lr:.2g}")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:
            ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * finite[0]) * 1.05)
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="Learning-rate range test")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def lr_find(model: nn.Module, data: Dataset, config: TrainConfig | None = None, *, start_lr: float = 1e-7,
            end_lr: float = 10.0, steps: int = 200, smoothing: float = 0.95, diverge: float = 4.0,
            augment: AugmentConfig | None = None) -> LRFinderResult:
    """Sweep the rate from ``start_lr`` to ``end_lr`` over ``steps`` optimizer steps of
    ``config``'s optimizer (stopping early once the smoothed loss exceeds ``diverge`` x its
    minimum). ``model`` keeps its weights, buffers, mode and the random state."""
    from deepnet.train.loop import Trainer

    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find needs 0 < start_lr < end_lr; received start_lr={start_lr}, end_lr={end_lr}.")
    if steps < 10:
        raise ValueError(f"lr_find needs at least 10 steps to draw a curve; received steps={steps}.")
    config = (config or TrainConfig()).model_copy(update={
        "schedule": "constant", "warmup_epochs": 0.0, "early_stopping": False, "checkpoint_every": 0,
        "on_nan": "skip_batch", "nan_retries": steps})
    saved_state = copy.deepcopy(model.state_dict())
    saved_rng, was_training = torch.get_rng_state(), model.training
    trainer = Trainer(model, data, config, augment=augment, quiet=True)
    ratios = [group["lr"] / config.lr for group in trainer.optimizer.param_groups]  # backbone groups keep theirs
    lrs, raw, smooth = [], [], []
    average, stopped = 0.0, False
    try:
        trainer.model.train()
        epoch = 0
        batches = iter(())
        for i in range(steps):
            lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
            try:
                x, y = next(batches)
            except StopIteration:
                trainer.train_loader.set_epoch(epoch)
                epoch += 1
                batches = iter(trainer.train_loader)
                x, y = next(batches)
            for group, ratio in zip(trainer.optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            loss = float(trainer.train_step(*trainer._to_device(x, y))[0])
            lrs.append(lr)
            raw.append(loss)
            if not math.isfinite(loss):
                stopped = True
                break
            average = smoothing * average + (1 - smoothing) * loss
            smooth.append(average / (1 - smoothing ** (i + 1)))
            if i > 10 and smooth[-1] > diverge * min(smooth):
                stopped = True
                break
    finally:
        trainer.close()
        model.load_state_dict(saved_state)
        model.train(was_training)
        torch.set_rng_state(saved_rng)
    return _read_curve(lrs[: len(smooth)], smooth, raw[: len(smooth)], stopped)


def _read_curve(lrs: list[float], smooth: list[float], raw: list[float], stopped: bool) -> LRFinderResult:
    if len(smooth) < 10:
        raise ValueError(f"The loss blew up within {len(smooth)} steps of the sweep, at rate {lrs[-1] if lrs else 0:.2g}. "
                         "Start lower (--start-lr) or check the data for NaNs.")
    lowest = int(np.argmin(smooth))
    # The slope of the smoothed loss against log(rate), up to the lowest point; skip the first
    # tenth, where the moving average is still warming up.
    skip = max(1, len(smooth) // 10)
    window = np.array(smooth[skip : lowest + 1])
    notes = []
    if len(window) >= 3:
        slopes = np.gradient(window, np.log(lrs[skip : lowest + 1]))
        steepest = lrs[skip + int(np.argmin(slopes))]
    else:
        steepest = lrs[lowest] / 10
        notes.append("the loss fell only at the very start of the sweep: start lower (--start-lr)")
    if lowest == len(smooth) - 1 and not stopped:
        notes.append("the loss was still falling at the end of the sweep: sweep higher (--end-lr)")
    suggestion = min(steepest, lrs[lowest] / 10)
    return LRFinderResult(lrs=lrs, losses=smooth, raw_losses=raw, suggestion=float(suggestion),
                          steepest_lr=float(steepest), min_loss_lr=float(lrs[lowest]), stopped_early=stopped, notes=notes)


def lr_find_experiment(config: ExperimentConfig, out: str | os.PathLike, **options) -> LRFinderResult:
    """The range test for an experiment config: its data, its model (freshly initialised, as
    training would start) and its optimizer; writes ``lr_find.json`` and ``lr_find.png`` to ``out``."""
    from deepnet.train.experiment import build_model, load_experiment_data
    from deepnet.train.loop import seed_everything

    data = load_experiment_data(config)
    seed_everything(config.train.seed, config.train.deterministic)
    model = build_model(config, data)
    augment = AugmentConfig(**config.data.augment.model_dump())
    result = lr_find(model, data, config.train, augment=augment, **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_find.json").write_text(result.to_json())
    result.plot(out / "lr_find.png")
    return result
