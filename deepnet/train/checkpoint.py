"""Checkpoints on disk: the full training state as safetensors + JSON, written so that a
process killed at any instant leaves the previous checkpoint intact.

A checkpoint is two files, ``step-<step>.safetensors`` (every tensor: weights, optimizer
moments, RNG states, the best weights of early stopping) and ``step-<step>.json`` (everything
else, plus the size and SHA-256 of the tensor file). Each is written to a temporary file,
fsynced, renamed, and the directory fsynced; the JSON goes last, so a checkpoint exists only
once both files are complete. Reading checks the size and hash, so a truncated or corrupt
newest checkpoint is reported and the previous good one used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from deepnet.config import ExperimentConfig
from deepnet.data import Dataset
from deepnet.train.run import RunError, atomic_write

__all__ = ["CheckpointError", "check_same_run", "data_fingerprint", "flatten_optimizer_state", "latest_checkpoint",
           "list_checkpoints", "read_checkpoint", "remove_checkpoints", "rng_states", "run_identity", "set_rng_states",
           "unflatten_optimizer_state", "write_checkpoint"]

FORMAT = 1
_NAME = re.compile(r"^step-(\d+)\.json$")


class CheckpointError(RunError):
    """No usable checkpoint: the message says what was found and what to do."""


def _stem(step: int) -> str:
    return f"step-{step:09d}"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The JSON files of the checkpoints in ``directory``, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def write_checkpoint(directory: str | os.PathLike, step: int, tensors: dict[str, torch.Tensor],
                     meta: dict[str, Any], keep: int) -> Path:
    """Write one checkpoint durably, then delete all but the newest ``keep``. Returns the JSON path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("*.tmp"):  # from a process killed mid-write
        leftover.unlink(missing_ok=True)
    blob = save_safetensors(tensors)
    stem = _stem(step)
    atomic_write(directory / f"{stem}.safetensors", lambda tmp: tmp.write_bytes(blob))
    record = {"format": FORMAT, "tensors": f"{stem}.safetensors", "bytes": len(blob),
              "sha256": hashlib.sha256(blob).hexdigest(), **meta}
    path = directory / f"{stem}.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record)))
    # Only now, with the new checkpoint durable, may older ones go.
    for old in list_checkpoints(directory)[keep:]:
        _remove(old)
    for orphan in directory.glob("step-*.safetensors"):  # a tensor file whose JSON never landed
        if not orphan.with_suffix(".json").exists():
            orphan.unlink(missing_ok=True)
    return path


def remove_checkpoints(directory: str | os.PathLike) -> None:
    """Delete every checkpoint in ``directory`` (before a finished run is trained afresh)."""
    for path in list_checkpoints(directory):
        _remove(path)


def _remove(json_path: Path) -> None:
    json_path.unlink(missing_ok=True)  # the JSON first: a half-removed checkpoint is not listed
    json_path.with_suffix(".safetensors").unlink(missing_ok=True)


def read_checkpoint(json_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of one checkpoint; :class:`CheckpointError` (one line) when it is
    incomplete, truncated or corrupt."""
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{json_path.name} is unreadable ({type(err).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path.name} is not a deepnet checkpoint of format {FORMAT}")
    tensor_path = json_path.with_name(meta["tensors"])
    try:
        blob = tensor_path.read_bytes()
    except OSError:
        raise CheckpointError(f"{tensor_path.name} is missing") from None
    if len(blob) != meta["bytes"]:
        raise CheckpointError(f"{tensor_path.name} is truncated ({len(blob)} of {meta['bytes']} bytes)")
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{tensor_path.name} is corrupt (its SHA-256 does not match)")
    try:
        tensors = load_safetensors(blob)
    except SafetensorError as err:
        raise CheckpointError(f"{tensor_path.name} is not valid safetensors ({err})") from None
    return tensors, meta


def latest_checkpoint(directory: str | os.PathLike, report: Callable[[str], None] | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """The newest good checkpoint; each bad newer one is reported in one line and skipped."""
    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    directory = Path(directory)
    candidates = list_checkpoints(directory)
    problems = []
    for path in candidates:
        try:
            tensors, meta = read_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            report(f"warning: checkpoint {path.stem} skipped: {err}")
            continue
        return tensors, meta, path
    if problems:
        raise CheckpointError(f"No good checkpoint in {directory}: {'; '.join(problems)}. "
                              "Nothing can be resumed; start the run again with `deepnet train`.")
    raise CheckpointError(f"No checkpoint in {directory}; nothing to resume. Start a new run with `deepnet train`.")


def flatten_optimizer_state(state_dict: dict[str, Any], prefix: str = "optim") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's ``state_dict`` split into tensors (``<prefix>/<index>/<name>``) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{index}/{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "optim") -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(f"{prefix}/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in meta["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_states(device: torch.device, augment: torch.Generator) -> dict[str, Any]:
    """Every random stream of this process, as JSON: torch's (CPU and the device's), the
    augmentation generator's, Python's and NumPy's."""
    return {
        "torch_rng": torch.get_rng_state().tolist(),
        "cuda_rng": torch.cuda.get_rng_state(device).tolist() if device.type == "cuda" else None,
        "augment_rng": augment.get_state().tolist(),
        "python_random": _jsonable(random.getstate()),
        "numpy_random": _jsonable(np.random.get_state()),
    }


def set_rng_states(states: dict[str, Any], device: torch.device, augment: torch.Generator) -> None:
    torch.set_rng_state(torch.tensor(states["torch_rng"], dtype=torch.uint8))
    if states["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(torch.tensor(states["cuda_rng"], dtype=torch.uint8), device)
    augment.set_state(torch.tensor(states["augment_rng"], dtype=torch.uint8))
    random.setstate(_python_random_state(states["python_random"]))
    np.random.set_state(_numpy_random_state(states["numpy_random"]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _python_random_state(value: list) -> tuple:
    version, internal, gauss = value
    return version, tuple(internal), gauss


def _numpy_random_state(value: list) -> tuple:
    name, keys, position, has_gauss, cached = value
    return name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached


# Settings that may differ between a run and its resumption: they change where and how fast
# it runs, or how long (epochs), not what one step computes.
_RESUMABLE_CHANGES = {"train.epochs", "train.threads", "train.device", "train.compile", "train.checkpoint_steps",
                      "train.checkpoint_every", "train.keep_checkpoints", "train.on_nan", "train.nan_retries",
                      "train.eval_batch_size", "data.data_dir"}


def run_identity(experiment: ExperimentConfig, data: Dataset) -> dict[str, Any]:
    """What a checkpoint records to refuse a resume with another config or other data."""
    flat = _flatten(experiment.model_dump(mode="json"))
    return {"config": {k: v for k, v in flat.items() if k not in _RESUMABLE_CHANGES}, "data": data_fingerprint(data)}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "args":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def data_fingerprint(data: Dataset) -> str:
    """A cheap hash of the three splits: shapes, dtypes, sums and 256 evenly spaced rows."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        for tensor in (split.x, split.y):
            tensor = tensor.detach().cpu()
            digest.update(f"{tuple(tensor.shape)} {tensor.dtype} {float(tensor.sum(dtype=torch.float64))!r}".encode())
            if len(tensor):
                digest.update(tensor[:: max(1, len(tensor) // 256)].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_same_run(meta: dict[str, Any], identity: dict[str, Any], directory: Path) -> None:
    if not identity:
        return
    saved, now = meta.get("config", {}), identity["config"]
    changed = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if changed:
        raise RunError(
            f"Cannot resume {directory}: its config changed since the checkpoint ({'; '.join(changed[:3])}). "
            f"Put the old values back, or start a new run with another --out."
        )
    if meta.get("data") != identity["data"]:
        raise RunError(
            f"Cannot resume {directory}: the training data changed since the checkpoint (fingerprint "
            f"{meta.get('data')} -> {identity['data']}). Restore the data, or start a new run with another --out."
        )
