"""The environment of a benchmark's subprocesses: every tool gets the same thread count."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(threads: int) -> dict[str, str]:
    """This process's environment with OpenMP/MKL/OpenBLAS limited to ``threads``, Keras on
    the torch backend, and ``DEEPNET_DATA`` defaulting to ``../shared/data``."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env["KERAS_BACKEND"] = "torch"
    env.setdefault("DEEPNET_DATA", str(ROOT.parent / "shared" / "data"))
    return env
