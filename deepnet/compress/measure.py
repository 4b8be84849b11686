"""What each compression stage costs and gains: file size, nonzero parameters, CPU speed.

Speed is the median of many timed calls after warm-up, on ``threads`` CPU threads (one by
default, so that figures are comparable across machines of any core count): batch-1
latency in milliseconds and batch-256 throughput in samples per second.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

__all__ = ["dense_file_bytes", "nonzero_parameters", "time_calls"]


def nonzero_parameters(model: nn.Module) -> tuple[int, int]:
    """(nonzero entries, all entries) over the model's parameters."""
    params = list(model.parameters())
    return int(sum(int((p != 0).sum()) for p in params)), int(sum(p.numel() for p in params))


def dense_file_bytes(model: nn.Module) -> int:
    """Size of the model's weights as an fp32 dense safetensors file (what `deepnet train` writes)."""
    state = {k: v.detach().float().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(state, str(path))
        return path.stat().st_size


def _median_seconds(call: Callable[[], object], repeats: int, min_seconds: float) -> float:
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - started < min_seconds:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_calls(predict: Callable[[torch.Tensor], object], example: torch.Tensor, threads: int = 1,
               repeats: int = 300, min_seconds: float = 1.0) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-256 throughput (samples/s) of ``predict``.

    ``example`` is one input ``(1, *input_shape)``; after a warm-up, at least ``repeats``
    timed batch-1 calls and a tenth as many batch-256 calls (at least 20), each kind for at
    least ``min_seconds``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    # In training mode a model's batch norm would learn its running statistics from the timing
    # batches (one example, repeated): time what inference runs, and leave the model as it was.
    training = isinstance(predict, nn.Module) and predict.training
    if training:
        predict.eval()
    try:
        one = example[:1].contiguous()
        batch = example[:1].repeat(256, *([1] * (example.dim() - 1))).contiguous()
        batch = batch + 0.01 * torch.randn(batch.shape, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            for _ in range(min(20, repeats)):
                predict(one)
            for _ in range(min(3, repeats)):
                predict(batch)
            latency = _median_seconds(lambda: predict(one), repeats, min_seconds)
            per_batch = _median_seconds(lambda: predict(batch), max(min(20, repeats), repeats // 10), min_seconds)
    finally:
        torch.set_num_threads(previous)
        if training:
            predict.train()
    return {"latency_ms_batch1": 1000 * latency, "throughput_batch256": 256 / per_batch}
