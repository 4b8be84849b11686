"""deepnet: build, train, vet, shrink and ship deep neural networks on PyTorch."""

from deepnet.config import ConfigError, ExperimentConfig, load_config
from deepnet.data import BatchLoader, Dataset, Split, load_dataset
from deepnet.models import count_parameters, create_model, list_models, model_info, register_model
from deepnet.train import (
    Callback,
    Run,
    RunError,
    Trainer,
    TrainingError,
    TrainingInterrupted,
    evaluate_split,
    fit,
    load_run,
    seed_everything,
)

__version__ = "0.1.0"

__all__ = [
    "BatchLoader",
    "Callback",
    "ConfigError",
    "Dataset",
    "ExperimentConfig",
    "Run",
    "RunError",
    "Split",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "count_parameters",
    "create_model",
    "evaluate_split",
    "fit",
    "list_models",
    "load_config",
    "load_dataset",
    "load_run",
    "model_info",
    "register_model",
    "seed_everything",
]
