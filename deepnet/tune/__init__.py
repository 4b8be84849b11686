"""Finding good settings: the learning-rate range test (`deepnet lr-find`) and hyperparameter
search with Optuna (`deepnet tune`)."""

from deepnet.tune.lr_find import LRFinderResult, lr_find, lr_find_experiment
from deepnet.tune.search import SearchSpace, load_search, tune

__all__ = ["LRFinderResult", "SearchSpace", "load_search", "lr_find", "lr_find_experiment", "tune"]
