"""Datasets, the batch loader and augmentation."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from deepnet.data._dataset import Dataset, Split
from deepnet.data._paths import DataError
from deepnet.data.augment import Augment, AugmentConfig
from deepnet.data.loader import BatchLoader
from deepnet.data.tabular import from_arrays, load_csv
from deepnet.data.vision import load_digits, load_mnist

__all__ = [
    "Augment",
    "AugmentConfig",
    "BatchLoader",
    "DataError",
    "Dataset",
    "Split",
    "DATASETS",
    "from_arrays",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_mnist",
]

DATASETS = ("digits", "mnist", "sst2", "tiny-shakespeare")


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, seed: int = 0,
                 **options: Any) -> Dataset:
    """Load a dataset by name, or a CSV / ``.npz`` file by path.

    ``options`` go to the loader (e.g. ``val_fraction``, ``max_len`` for sst2,
    ``block_size`` for tiny-shakespeare, ``label`` for a CSV).
    """
    if name == "digits":
        return load_digits(seed=seed, **options)
    if name == "mnist":
        return load_mnist(data_dir=data_dir, seed=seed, **options)
    if name == "sst2":
        from deepnet.data.text import load_sst2

        return load_sst2(data_dir=data_dir, seed=seed, **options)
    if name == "tiny-shakespeare":
        from deepnet.data.text import load_tiny_shakespeare

        return load_tiny_shakespeare(data_dir=data_dir, seed=seed, **options)
    path = Path(name)
    if path.suffix.lower() == ".csv":
        return load_csv(path, seed=seed, **options)
    if path.suffix.lower() == ".npz":
        import numpy as np

        if not path.is_file():
            raise DataError(f"NumPy file {path} not found. Check the path.")
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise DataError(f"{path} must hold arrays named 'x' and 'y'; it holds {list(arrays)}.")
            return from_arrays(arrays["x"], arrays["y"], name=path.stem, seed=seed, **options)
    close = difflib.get_close_matches(name, DATASETS, n=2, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise DataError(
        f"Unknown dataset {name!r}.{hint} Use one of {', '.join(DATASETS)}, or a path to a .csv or .npz file."
    )
