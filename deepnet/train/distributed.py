"""Data-parallel training on PyTorch's own engine: torchrun launches, DDP averages gradients.

A worker learns its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``); one process alone is a world of size 1 and nothing
here does anything. ``launch`` is what ``deepnet train --nproc N`` calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["World", "all_gather_objects", "any_rank", "launch", "setup", "shutdown", "sum_across", "world"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from torchrun's environment (a world of one without it)."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(env["RANK"]), size=size, local_rank=int(env.get("LOCAL_RANK", "0")),
                 local_size=int(env.get("LOCAL_WORLD_SIZE", "1")))


def setup(device: torch.device) -> bool:
    """Join the process group (gloo on CPU, NCCL on CUDA) when launched by torchrun.
    Returns True when this call created the group (and so should destroy it)."""
    if not world().distributed or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_across(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sums over all ranks (the values themselves in a world of one)."""
    if not _active():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any: keeps the ranks' decisions in step."""
    if not _active():
        return flag
    return sum_across([float(flag)], device)[0] > 0


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (small, JSON-like: RNG states), in rank order."""
    if not _active():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


# torchrun options that `deepnet train` passes through (name → takes a value).
RENDEZVOUS_OPTIONS = ("nnodes", "node_rank", "master_addr", "master_port", "rdzv_backend", "rdzv_endpoint", "rdzv_id")


def check_nproc(nproc: int, device_name: str) -> None:
    """Refuse a worker count that cannot work on this machine, before any worker starts."""
    from deepnet.train.devices import available_cpus, resolve_device

    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1. Received: {nproc}.")
    device = resolve_device(device_name)
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ValueError(f"--nproc {nproc} asks for one GPU per worker but this machine has {gpus}. "
                             f"Use --nproc {gpus} or fewer.")
    elif device.type == "mps":
        raise ValueError("Data-parallel training needs CPU (gloo) or CUDA (NCCL) workers; MPS has no backend. "
                         "Drop --nproc or use train.device=cpu.")
    else:
        cpus = available_cpus()
        if nproc > cpus:
            raise ValueError(f"--nproc {nproc} is more worker processes than the {cpus} CPU(s) this process may use: "
                             f"each would get less than a core. Use --nproc {cpus} or fewer.")


def launch(worker_argv: list[str], nproc: int, rendezvous: dict[str, Any]) -> int:
    """Run ``python -m deepnet.cli *worker_argv`` in ``nproc`` workers per node through
    ``torch.distributed.run`` (torchrun); returns the exit code of the first failing worker."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from deepnet.train.devices import available_cpus

    # torchrun sets 1 OpenMP thread per worker (with a warning) unless told; the workers share
    # the CPUs this process may use instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cpus() // nproc)))
    options = [f"--nproc-per-node={nproc}"]
    for key, value in rendezvous.items():
        if value is not None:
            options.append(f"--{key.replace('_', '-')}={value}")
    single_node = rendezvous.get("nnodes") in (None, 1, "1")
    if single_node and not any(rendezvous.get(k) for k in ("master_addr", "master_port", "rdzv_endpoint")):
        options.append("--standalone")  # one machine: a free local port, no fixed master port
    args = get_args_parser().parse_args([*options, "-m", "deepnet.cli", *worker_argv])
    try:
        run(args)
    except ChildFailedError as err:
        codes = [failure.exitcode for failure in err.failures.values()]
        return next((code for code in codes if code not in (0, None)), 1) if codes else 1
    return 0
