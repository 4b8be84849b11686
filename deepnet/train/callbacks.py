"""Callback events ``on_<phase>_<begin|end>(..., logs)``, early stopping and progress."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from torch import nn

__all__ = ["Callback", "EarlyStopping", "ProgressReporter"]


class Callback:
    """Subclass and override the events you need; ``logs`` holds the latest figures."""

    def on_train_begin(self, logs: dict[str, Any]) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None: ...
    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None: ...
    def on_train_end(self, logs: dict[str, Any]) -> None: ...


class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` epochs; keep the best weights
    and put them back at the end."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5) -> None:
        self.monitor, self.patience = monitor, patience
        self.mode = "max" if "accuracy" in monitor else "min"
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.wait = 0

    def update(self, row: dict[str, float], model: nn.Module) -> bool:
        """Record an epoch's figures; True when training should stop."""
        value = row[self.monitor]
        improved = value > self.best if self.mode == "max" else value < self.best
        if improved:
            self.best, self.best_epoch, self.wait = value, int(row["epoch"]), 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return False
        self.wait += 1
        return self.wait >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state(self, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_state = best_state


class ProgressReporter(Callback):
    """A progress bar with loss and ETA on a terminal; one line per epoch otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        self.epochs = self.first_epoch = 0

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.epochs = logs["trainer"].config.epochs
        self.first_epoch = logs["trainer"].epoch  # > 0 when resumed
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.bar is not None:  # an epoch left early (on_nan=reduce_lr rolled back)
            self.bar.close()
            self.bar = None
        if self.interactive:
            from tqdm import tqdm

            steps = logs["trainer"].steps_per_epoch
            self.bar = tqdm(total=steps, initial=logs.get("batch", 0), desc=f"epoch {epoch + 1}/{self.epochs}",
                            file=self.stream, leave=False, dynamic_ncols=True)

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if batch % 20 == 0:
                self.bar.set_postfix(loss=f"{logs['loss'].item():.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(epoch - self.first_epoch, 1) * (self.epochs - epoch)
        accuracy = "" if math.isnan(logs["val_accuracy"]) else (
            f" train_acc {100 * logs['train_accuracy']:.2f}% val_acc {100 * logs['val_accuracy']:.2f}%")
        print(f"epoch {epoch}/{self.epochs}  train_loss {logs['train_loss']:.4f}  val_loss {logs['val_loss']:.4f}"
              f"{accuracy}  {logs['samples_per_second']:.0f} samples/s  {logs['seconds']:.1f}s  eta {eta:.0f}s",
              file=self.stream, flush=True)
