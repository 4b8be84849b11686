"""Image datasets: scikit-learn's bundled 8x8 digits and MNIST from its IDX gzip files."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from deepnet.data._dataset import Dataset, Split
from deepnet.data._paths import DataError, cache_dir, find_data_file, missing_file_error

__all__ = ["load_digits", "load_mnist", "read_idx", "split_train_val", "normalize_images"]

DIGIT_NAMES = [str(d) for d in range(10)]

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def split_train_val(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Carve a seeded, random validation split out of the training data. With ``val_fraction``
    0 the training split keeps the file's order (so ``deepnet audit`` can name examples by it)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); received {val_fraction}.")
    if val_fraction == 0.0:
        return Split(x, y), Split(x[:0], y[:0])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(x) * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Split(x[train_idx], y[train_idx]), Split(x[val_idx], y[val_idx])


def normalize_images(train: Split, *others: Split, scale: float) -> dict:
    """Scale to [0, 1], then standardise with the *training* split's per-channel mean/std.

    Modifies the splits in place and returns the preprocessing record for ``model.json``.
    """
    x = train.x.float() / scale
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dim=dims)
    std = x.std(dim=dims).clamp_min(1e-6)
    shape = [1, -1] + [1] * (x.dim() - 2)
    for split in (train, *others):
        split.x = ((split.x.float() / scale) - mean.view(shape)) / std.view(shape)
    return {"kind": "normalize", "scale": scale, "mean": mean.tolist(), "std": std.tolist()}


def load_digits(val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, pixel values 0..16)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
    n_test = int(round(len(x) * test_fraction))
    test = Split(x[order[:n_test]], y[order[:n_test]])
    train, val = split_train_val(x[order[n_test:]], y[order[n_test:]], val_fraction, seed)
    prep = normalize_images(train, val, test, scale=16.0)
    return Dataset("digits", train, val, test, input_shape=(1, 8, 8), num_classes=10,
                   class_names=DIGIT_NAMES, preprocessing=prep, input_kind="image")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one gzip-compressed IDX file (LeCun's format) into a uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is not a readable gzip file ({err}); it is truncated or corrupt. "
            "Delete it and download it again."
        ) from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes). Download it again.")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise DataError(
            f"{path} has magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == 2051 else 'labels'} file). Check that the file "
            "names match their contents, or download the file again."
        )
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"{path} declares shape {dims} but holds {data.size} values; it is truncated. "
            "Download it again."
        )
    return data.reshape(dims)


def _download(filename: str, md5: str) -> Path | None:
    if os.environ.get("DEEPNET_OFFLINE"):
        return None
    target = cache_dir("mnist") / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    for mirror in MNIST_MIRRORS:
        try:
            with urllib.request.urlopen(mirror + filename, timeout=10) as response:
                payload = response.read()
        except OSError:
            continue
        if hashlib.md5(payload).hexdigest() == md5:
            tmp = target.with_suffix(".part")
            tmp.write_bytes(payload)
            tmp.replace(target)
            return target
    return None


def _mnist_file(key: str, data_dir: str | os.PathLike | None, verify_md5: bool) -> Path:
    filename, md5 = MNIST_FILES[key]
    path = find_data_file("mnist", filename, data_dir) or _download(filename, md5)
    if path is None:
        raise missing_file_error("mnist", filename, data_dir)
    if verify_md5 and (actual := _md5(path)) != md5:
        raise DataError(
            f"{path} has MD5 {actual}, expected {md5}: the file is corrupt or not the original. "
            "Delete it and download it again."
        )
    return path


def load_mnist(data_dir: str | os.PathLike | None = None, val_fraction: float = 1 / 12,
               seed: int = 0, verify_md5: bool = True) -> Dataset:
    """MNIST (LeCun et al. 1998): 60,000 train (minus a seeded validation carve-out) and
    10,000 test 28x28 grey-scale digits, normalised with the training mean/std."""
    arrays = {}
    for key in MNIST_FILES:
        arrays[key] = read_idx(_mnist_file(key, data_dir, verify_md5), 2051 if "images" in key else 2049)
    x_train = torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1)  # (60000, 1, 28, 28) uint8
    y_train = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    test = Split(torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
                 torch.from_numpy(arrays["test_labels"].astype(np.int64)))
    train, val = split_train_val(x_train, y_train, val_fraction, seed)
    prep = normalize_images(train, val, test, scale=255.0)
    return Dataset("mnist", train, val, test, input_shape=(1, 28, 28), num_classes=10,
                   class_names=DIGIT_NAMES, preprocessing=prep, input_kind="image")
