"""Finding good settings: the learning-rate range test (`deepnet lr-find`) and hyperparameter
search with Optuna (`deepnet tune`)."""

from deepnet.tune.lr_find import LRFinderResult, lr_find, lr_find_experiment

__all__ = ["LRFinderResult", "lr_find", "lr_find_experiment"]
