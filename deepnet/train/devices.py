"""Where tensors live and how many CPU threads compute on them.

``resolve_device`` turns ``auto | cpu | cuda | cuda:N | mps`` into a :class:`torch.device`, or
fails in one line when the machine cannot honour the request. ``available_cpus`` is the
number of CPUs this process may really use: the affinity mask and a cgroup CPU quota
(containers), not the host's core count that PyTorch's default thread count follows.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

__all__ = ["DEVICE_PATTERN", "available_cpus", "cgroup_cpu_limit", "limit_threads", "resolve_device"]

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else Apple's MPS when present, else the CPU."""
    if not re.match(DEVICE_PATTERN, name):
        raise ValueError(f"Unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"Device {name!r} was requested but {built}. Use device cpu (or auto).")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"Device {name!r} was requested but this machine has {count} CUDA GPU(s): "
                             f"cuda:0 to cuda:{count - 1}.")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"Device {name!r} was requested but Apple's MPS is not available here. Use device cpu (or auto).")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs granted by the cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None
    when there is no quota. A quota of 150000 per 100000 µs is 1.5 CPUs."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def limit_threads(threads: int | None = None, *, processes: int = 1) -> int:
    """Set PyTorch's intra-op threads: ``threads`` when given, else no more than the CPUs
    this process may use (shared among ``processes`` workers on one machine). A count
    already set lower (a test harness's 1, say) is kept. Returns the count in force."""
    if threads:
        torch.set_num_threads(threads)
    else:
        limit = max(1, available_cpus() // max(1, processes))
        if torch.get_num_threads() > limit:
            torch.set_num_threads(limit)
    return torch.get_num_threads()
