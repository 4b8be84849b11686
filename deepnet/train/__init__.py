"""Training: the fit loop, losses, optimizers, schedules, callbacks, the run directory."""

from deepnet.train.callbacks import Callback, EarlyStopping, ProgressReporter
from deepnet.train.loop import Trainer, TrainingError, TrainingInterrupted, evaluate_split, fit, seed_everything
from deepnet.train.run import Run, RunError, load_run

__all__ = [
    "Callback",
    "EarlyStopping",
    "ProgressReporter",
    "Run",
    "RunError",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "evaluate_split",
    "fit",
    "load_run",
    "seed_everything",
]
