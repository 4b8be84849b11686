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

__all__ = ["load_csv", "from_arrays", "standardize"]


def standardize(train: Split, *others: Split) -> dict:
    """Standardise features with the training split's mean/std (in place); returns the record."""
    mean = train.x.mean(dim=0)
    std = train.x.std(dim=0).clamp_min(1e-6)
    for split in (train, *others):
        split.x = (split.x - mean) / std
    return {"kind": "standardize", "mean": mean.tolist(), "std": std.tolist()}


def from_arrays(x: np.ndarray, y: np.ndarray, *, name: str = "arrays", val_fraction: float = 0.1,
                test_fraction: float = 0.2, seed: int = 0, class_names: list[str] | None = None,
                standardize_features: bool = True) -> Dataset:
    """A classification dataset from a feature array ``(N, ...)`` and integer labels ``(N,)``."""
    x_np, y_np = np.asarray(x), np.asarray(y)
    if x_np.ndim < 2 or len(x_np) != len(y_np):
        raise ValueError(
            f"Expected features of shape (N, ...) and labels of shape (N,); received {x_np.shape} "
            f"and {y_np.shape}."
        )
    if not np.issubdtype(y_np.dtype, np.integer):
        raise ValueError(f"Labels must be integers 0..K-1; received dtype {y_np.dtype}. Encode them first.")
    xt = torch.tensor(x_np, dtype=torch.float32)
    yt = torch.tensor(y_np, dtype=torch.int64)
    order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed + 1))
    n_test = int(round(len(xt) * test_fraction))
    test = Split(xt[order[:n_test]], yt[order[:n_test]])
    train, val = split_train_val(xt[order[n_test:]], yt[order[n_test:]], val_fraction, seed)
    prep = standardize(train, val, test) if standardize_features else {"kind": "none"}
    num_classes = int(yt.max()) + 1
    return Dataset(name, train, val, test, input_shape=tuple(xt.shape[1:]), num_classes=num_classes,
                   class_names=class_names or [str(i) for i in range(num_classes)],
                   preprocessing=prep, input_kind="vector" if xt.dim() == 2 else "image")


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
