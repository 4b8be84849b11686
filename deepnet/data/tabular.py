"""Tabular data: any CSV with a label column, and NumPy arrays."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from deepnet.data._dataset import Dataset, Split
from deepnet.data._paths import DataError
from deepnet.data.vision import split_train_val

__all__ = ["load_csv", "load_npz", "from_arrays", "from_splits", "standardize"]


def standardize(train: Split, *others: Split) -> dict:
    """Standardise features with the training split's mean/std (in place); returns the record."""
    mean = train.x.mean(dim=0)
    std = train.x.std(dim=0).clamp_min(1e-6)
    for split in (train, *others):
        split.x = (split.x - mean) / std
    return {"kind": "standardize", "mean": mean.tolist(), "std": std.tolist()}


def _labels(y: np.ndarray, what: str) -> torch.Tensor:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} must be integers 0..K-1 of shape (N,); received dtype {y.dtype}, shape {y.shape}. "
                         "Encode them first.")
    if len(y) and y.min() < 0:
        raise ValueError(f"{what} hold {int(y.min())}: labels out of range; expected integers 0..K-1.")
    return torch.tensor(y, dtype=torch.int64)


def _features(x: np.ndarray, n: int, what: str) -> torch.Tensor:
    if x.ndim < 2 or len(x) != n:
        raise ValueError(f"Expected {what} of shape (N, ...) with one row per label ({n}); received {x.shape}.")
    return torch.tensor(x, dtype=torch.float32)


def from_splits(train: Split, val: Split, test: Split, *, name: str = "arrays",
                class_names: list[str] | None = None, standardize_features: bool = True) -> Dataset:
    """A classification dataset from ready-made splits of float features and int64 labels."""
    num_classes = int(train.y.max()) + 1 if len(train) else 0
    for split_name, split in (("validation", val), ("test", test)):
        if len(split) and int(split.y.max()) >= num_classes:
            raise ValueError(f"The {split_name} labels hold {int(split.y.max())}, but the training labels are "
                             f"0..{num_classes - 1}: labels out of range. Every class needs training examples.")
    if class_names is not None and len(class_names) < num_classes:
        raise ValueError(f"{len(class_names)} class names for labels 0..{num_classes - 1}: labels out of range. "
                         "Give one name per class.")
    for split_name, split in (("validation", val), ("test", test)):
        if tuple(split.x.shape[1:]) != tuple(train.x.shape[1:]):
            raise ValueError(f"The {split_name} inputs have shape {tuple(split.x.shape[1:])} per example but the "
                             f"training inputs {tuple(train.x.shape[1:])}; every split needs the same shape.")
    prep = standardize(train, val, test) if standardize_features else {"kind": "none"}
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    return Dataset(name, train, val, test, input_shape=tuple(train.x.shape[1:]), num_classes=len(names),
                   class_names=names, preprocessing=prep, input_kind="vector" if train.x.dim() == 2 else "image")


def from_arrays(x: np.ndarray, y: np.ndarray, *, name: str = "arrays", val_fraction: float = 0.1,
                test_fraction: float = 0.2, seed: int = 0, class_names: list[str] | None = None,
                standardize_features: bool = True) -> Dataset:
    """A classification dataset from a feature array ``(N, ...)`` and integer labels ``(N,)``,
    split into seeded train/validation/test parts."""
    x_np, y_np = np.asarray(x), np.asarray(y)
    yt = _labels(y_np, "Labels")
    xt = _features(x_np, len(y_np), "features")
    order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed + 1))
    n_test = int(round(len(xt) * test_fraction))
    test = Split(xt[order[:n_test]], yt[order[:n_test]])
    train, val = split_train_val(xt[order[n_test:]], yt[order[n_test:]], val_fraction, seed)
    return from_splits(train, val, test, name=name, class_names=class_names, standardize_features=standardize_features)


def load_npz(path: str | os.PathLike, *, val_fraction: float = 0.1, test_fraction: float = 0.2,
             seed: int = 0) -> Dataset:
    """A ``.npz`` file holding either ``x`` and ``y`` (split here, seeded) or explicit splits
    ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val``, ``y_val``
    (without them the validation split is carved out of the training split). An optional
    ``class_names`` array of strings names the classes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NumPy file {path} not found. Check the path.")
    try:
        with np.load(path, allow_pickle=False) as file:
            arrays = {key: file[key] for key in file.files}
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable .npz file ({err}). Save it with numpy.savez.") from None
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    try:
        if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
            splits = {}
            for part in ("train", "val", "test"):
                if f"x_{part}" in arrays or f"y_{part}" in arrays:
                    if f"x_{part}" not in arrays or f"y_{part}" not in arrays:
                        raise DataError(f"{path} holds only one of x_{part} and y_{part}; give both or neither.")
                    y = _labels(arrays[f"y_{part}"], f"{path.name}: y_{part}")
                    splits[part] = Split(_features(arrays[f"x_{part}"], len(y), f"{path.name}: x_{part}"), y)
            if "val" not in splits:
                splits["train"], splits["val"] = split_train_val(splits["train"].x, splits["train"].y, val_fraction, seed)
            return from_splits(splits["train"], splits["val"], splits["test"], name=path.stem, class_names=names)
        if "x" in arrays and "y" in arrays:
            return from_arrays(arrays["x"], arrays["y"], name=path.stem, val_fraction=val_fraction,
                               test_fraction=test_fraction, seed=seed, class_names=names)
    except DataError:
        raise
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    raise DataError(f"{path} must hold arrays 'x' and 'y', or 'x_train', 'y_train', 'x_test', 'y_test' "
                    f"(optionally 'x_val', 'y_val'); it holds {sorted(arrays)}.")


def load_csv(path: str | os.PathLike, label: str = "label", *, val_fraction: float = 0.1,
             test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A CSV with a header row, numeric feature columns and a ``label`` column (any values:
    they become classes in sorted order). Features are standardised with train statistics."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} not found. Check the path given as data.path / --data.")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{path} has no data rows; expected a header line and one row per example.")
    header, body = rows[0], rows[1:]
    if label not in header:
        raise DataError(f"{path} has no label column {label!r}; columns are {header}. Set data.label to one of them.")
    label_col = header.index(label)
    features, labels = [], []
    for line_no, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {line_no}: {len(row)} fields, expected {len(header)} like the header.")
        values = []
        for col, cell in enumerate(row):
            if col == label_col:
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise DataError(
                    f"{path}, line {line_no}, column {header[col]!r}: {cell!r} is not a number. "
                    "Every feature must be numeric: encode categories as numbers or drop the column."
                ) from None
        features.append(values)
        labels.append(row[label_col])
    classes = sorted(set(labels), key=lambda v: (len(v), v))
    y = np.array([classes.index(v) for v in labels], dtype=np.int64)
    dataset = from_arrays(np.array(features, dtype=np.float32), y, name=path.stem, val_fraction=val_fraction,
                          test_fraction=test_fraction, seed=seed, class_names=classes)
    dataset.preprocessing["columns"] = [h for i, h in enumerate(header) if i != label_col]
    return dataset
