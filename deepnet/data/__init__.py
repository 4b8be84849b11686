"""Datasets, the batch loader and augmentation."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from deepnet.data._dataset import Dataset, Split
from deepnet.data._paths import DataError
from deepnet.data.augment import Augment, AugmentConfig
from deepnet.data.folder import load_image_folder
from deepnet.data.loader import BatchLoader
from deepnet.data.tabular import from_arrays, from_splits, load_csv, load_npz
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
    "from_splits",
    "limit_train_samples",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "select_classes",
]

DATASETS = ("digits", "mnist", "sst2", "tiny-shakespeare")


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, seed: int = 0,
                 classes: Sequence[str | int] | None = None, max_train_samples: int | None = None,
                 **options: Any) -> Dataset:
    """Load a dataset by name, a CSV / ``.npz`` file by path, or a folder of images (one
    sub-folder per class).

    ``options`` go to the loader (e.g. ``val_fraction``, ``max_len`` for sst2,
    ``block_size`` for tiny-shakespeare, ``label`` for a CSV, ``image_size`` and ``channels``
    for an image folder). ``classes`` keeps a subset of the classes, relabelled 0..K-1 in the
    order given; ``max_train_samples`` keeps a seeded random subset of the training split.
    """
    folder_only = sorted(k for k in ("image_size", "channels") if options.get(k) is not None)
    if folder_only and not Path(name).is_dir():
        raise DataError(f"data.{folder_only[0]} applies to image folders only; {name!r} is not a folder. Remove it.")
    data = _load(name, data_dir, seed, options)
    if classes is not None:
        data = select_classes(data, classes)
    if max_train_samples is not None:
        data = limit_train_samples(data, max_train_samples, seed)
    return data


def _load(name: str, data_dir: str | os.PathLike | None, seed: int, options: dict[str, Any]) -> Dataset:
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
    if path.is_dir():
        return load_image_folder(path, seed=seed, **options)
    if path.suffix.lower() == ".csv":
        return load_csv(path, seed=seed, **options)
    if path.suffix.lower() == ".npz":
        return load_npz(path, seed=seed, **options)
    close = difflib.get_close_matches(name, DATASETS, n=2, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise DataError(
        f"Unknown dataset {name!r}.{hint} Use one of {', '.join(DATASETS)}, a path to a .csv or .npz file, "
        "or a folder of images with one sub-folder per class."
    )


def select_classes(data: Dataset, classes: Sequence[str | int]) -> Dataset:
    """Keep the examples of ``classes`` (names, or indices into ``data.class_names``),
    relabelled 0..K-1 in the order given; the class names are kept."""
    if data.task != "classification":
        raise DataError(f"data.classes applies to classification data; {data.name} is {data.task}. Remove it.")
    names = list(data.class_names)
    picked: list[int] = []
    for wanted in classes:
        if str(wanted) in names:
            index = names.index(str(wanted))
        elif isinstance(wanted, int) and 0 <= wanted < len(names):
            index = wanted
        else:
            raise DataError(f"data.classes names {wanted!r}, which {data.name} does not have; its classes are {names}.")
        if index in picked:
            raise DataError(f"data.classes names {wanted!r} twice; list each class once.")
        picked.append(index)
    if not picked:
        raise DataError("data.classes is empty; list at least one class, or remove the key to keep them all.")
    relabel = torch.full((len(names),), -1, dtype=torch.int64)
    relabel[torch.tensor(picked)] = torch.arange(len(picked))

    def keep(split: Split) -> Split:
        new = relabel[split.y]
        mask = new >= 0
        return Split(split.x[mask], new[mask])

    return dataclasses.replace(data, train=keep(data.train), val=keep(data.val), test=keep(data.test),
                               num_classes=len(picked), class_names=[names[i] for i in picked])


def limit_train_samples(data: Dataset, n: int, seed: int = 0) -> Dataset:
    """A seeded random subset of ``n`` training examples (all of them when there are fewer)."""
    if n < 1:
        raise DataError(f"data.max_train_samples must be at least 1; received {n}.")
    if n >= len(data.train):
        return data
    keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed + 29))[:n]
    return dataclasses.replace(data, train=Split(data.train.x[keep], data.train.y[keep]))
