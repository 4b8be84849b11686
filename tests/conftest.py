"""Small data the tests make themselves (never the shared datasets)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from deepnet.data import Dataset, Split


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    """A folder with the four MNIST file names holding 120/40 random 28x28 images."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 120), ("t10k", 40)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), 2049)
    return folder


def blobs(n: int = 240, features: int = 8, classes: int = 3, seed: int = 0) -> Dataset:
    """Linearly separable Gaussian blobs: a tiny, fast, learnable classification task."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, features, generator=g)
    splits = [Split(x[i::3], y[i::3]) for i in range(3)]
    return Dataset("blobs", *splits, input_shape=(features,), num_classes=classes,
                   class_names=[f"c{i}" for i in range(classes)], input_kind="vector")


@pytest.fixture
def blob_data() -> Dataset:
    return blobs()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tests use tiny tensors: one thread avoids the inter-thread waits that dominate
    # small ops on a shared 2-core machine (measured 70-100 s vs 7 s for the CNN tests).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each core path runs on the CPU, and on CUDA where the machine has a GPU."""
    return request.param
