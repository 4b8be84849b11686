"""Export a run's inference graph (preprocessing → model → softmax) to ONNX or to a
``torch.export`` ExportedProgram, then check the file against PyTorch at once.

The graph takes raw inputs ``(batch, *input_shape)`` with a dynamic batch dimension and
returns ``logits`` and ``probabilities`` ``(batch, num_classes)``. The metadata a caller
needs (class names, input shape, dtype, value range, preprocessing, deepnet version) is
stored in the file: ONNX ``metadata_props["deepnet"]``, or ``extra/deepnet.json`` in the
ExportedProgram archive, as JSON.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from deepnet.train.compressed import ONNX_INT8_FORMAT
from deepnet.train.inference import export_friendly, inference_metadata, inference_model
from deepnet.train.run import atomic_write, load_run

__all__ = ["FORMATS", "ExportError", "ExportResult", "export_model", "export_run", "read_onnx_metadata"]

Format = Literal["onnx", "exported-program"]
FORMATS: dict[str, str] = {"onnx": "model.onnx", "exported-program": "model.pt2"}
METADATA_KEY = "deepnet"
CHECK_BATCH_SIZES = (1, 64)
# A file passes when every output is within TOLERANCE of PyTorch's, scaled by the largest
# |value| of that output when it exceeds 1: fp32 kernels differ in summation order, so logits
# of size 50 differ by ~1e-4 (EfficientNet). Probabilities are at most 1: 1e-4 absolute.
TOLERANCE = 1e-4


class ExportError(ValueError):
    """The model could not be exported, or the exported file disagrees with PyTorch."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    # largest |file - PyTorch| over the check inputs and both outputs, each divided by
    # max(1, largest |PyTorch value| of that output)
    max_difference: float
    pytorch_fp32_error: float  # the same measure for PyTorch fp32 against a float64 copy
    checked_batch_sizes: tuple[int, ...]
    metadata: dict[str, Any]


def export_run(directory: str | os.PathLike, format: Format = "onnx", out: str | os.PathLike | None = None) -> ExportResult:
    """Export the run in ``directory`` to ``out`` (default ``RUN/model.onnx`` or
    ``RUN/model.pt2``) and check the file against PyTorch; see :func:`export_model`."""
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; expected one of {', '.join(FORMATS)}.")
    run = load_run(directory)
    weights = run.model_spec.get("weights") or {}
    if weights.get("format") == ONNX_INT8_FORMAT:
        raise ExportError(f"{directory} is an int8 run of `deepnet compress`: its model is already ONNX "
                          f"({Path(directory) / weights['file']}, taking preprocessed inputs). Serve it with "
                          f"`deepnet serve {directory}` (which adds the preprocessing), or export the fp32 "
                          f"parent run {run.model_spec.get('parent')}.")
    graph = inference_model(run)
    path = Path(out) if out is not None else Path(directory) / FORMATS[format]
    return export_model(graph, inference_metadata(run), path, format)


def export_model(graph: nn.Module, metadata: dict[str, Any], path: str | os.PathLike, format: Format = "onnx") -> ExportResult:
    """Trace ``graph`` (raw inputs ``(B, *input_shape)`` → ``(logits, probabilities)``, as
    :func:`~deepnet.train.inference.inference_model` builds it) into ``path``, then run the
    file on sample inputs of batch 1 and 64 and raise :class:`ExportError` unless it matches
    PyTorch. A layer that cannot be exported is named in the error with the reason."""
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; expected one of {', '.join(FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = export_friendly(graph.cpu().eval())
    example = sample_inputs(metadata, 2)
    try:
        if format == "onnx":
            _write_onnx(graph, example, metadata, path)
        else:
            _write_exported_program(graph, example, metadata, path)
    except ExportError:
        raise
    except Exception as err:  # the exporters raise dozens of error types
        raise ExportError(_explain_failure(graph, example, format, err)) from None
    difference, pytorch_error = _check(graph, metadata, path, format)
    return ExportResult(path, format, difference, pytorch_error, CHECK_BATCH_SIZES, metadata)


def sample_inputs(metadata: dict[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    """Seeded raw inputs ``(batch, *input_shape)`` inside the model's value range."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *metadata["input_shape"])
    if metadata["input_dtype"] == "int64":
        low, high = metadata["value_range"]
        return torch.randint(low, high + 1, shape, generator=generator)
    if metadata["value_range"] is not None:
        low, high = metadata["value_range"]
        return low + (high - low) * torch.rand(shape, generator=generator)
    prep = metadata.get("preprocessing", {})
    x = torch.randn(shape, generator=generator)
    if prep.get("kind") == "standardize":  # around the training data's own scale
        x = x * torch.tensor(prep["std"]).reshape(metadata["input_shape"]) + torch.tensor(prep["mean"]).reshape(metadata["input_shape"])
    return x


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The deepnet metadata stored in an exported ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ExportError(f"{path} holds no deepnet metadata; export it with `deepnet export RUN`.")


# ------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters log progress and warn about optional packages (torchvision's ops) that
    have nothing to do with our graphs; a user sees our one summary line instead."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export",
                                                    "torch.__trace", "torch.fx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # Deprecation notices inside the exporters' own code, not ours to fix; and the
            # warnings of a failing trace, whose error we report instead.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _batch_dim() -> dict[str, Any]:
    return {"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}}


def _write_onnx(graph: nn.Module, example: torch.Tensor, metadata: dict[str, Any], path: Path) -> None:
    with _quiet_exporter():
        program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["input"],
                                    output_names=["logits", "probabilities"], dynamic_shapes=_batch_dim(),
                                    verbose=False)
        program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
        atomic_write(path, lambda tmp: program.save(tmp, external_data=False))


def _write_exported_program(graph: nn.Module, example: torch.Tensor, metadata: dict[str, Any], path: Path) -> None:
    with _quiet_exporter():
        program = torch.export.export(graph, (example,), dynamic_shapes=_batch_dim())
        atomic_write(path, lambda tmp: torch.export.save(program, tmp, extra_files={"deepnet.json": json.dumps(metadata)}))


# ------------------------------------------------------------------------ checking


def _check(graph: nn.Module, metadata: dict[str, Any], path: Path, format: str) -> tuple[float, float]:
    """Run the written file on seeded inputs of each check batch size against PyTorch.

    Returns the largest difference from PyTorch and PyTorch's own fp32 rounding error (its
    distance from a float64 copy of the graph), both divided by max(1, largest |value|) of
    each output. The file passes within TOLERANCE of PyTorch, or when it is about as close to
    the float64 answer as PyTorch fp32 is (within twice PyTorch's own error): a deep network
    with random weights (ResNet-101 in the registry test) amplifies fp32 rounding beyond
    1e-4, and then no fp32 runtime can agree with PyTorch more closely than that.
    """
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        stored = json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "null"))

        def run(x: torch.Tensor) -> list[np.ndarray]:
            return session.run(None, {"input": x.numpy()})
    else:
        extra = {"deepnet.json": ""}
        with _quiet_exporter():
            loaded = torch.export.load(path, extra_files=extra).module()
        stored = json.loads(extra["deepnet.json"] or "null")

        def run(x: torch.Tensor) -> list[np.ndarray]:
            with torch.no_grad():
                return [t.numpy() for t in loaded(x)]
    if stored != json.loads(json.dumps(metadata)):
        raise ExportError(f"{path}: the metadata read back differs from what was written. Export again.")
    exact = copy.deepcopy(graph).double()
    worst = own_worst = 0.0
    for batch in CHECK_BATCH_SIZES:
        x = sample_inputs(metadata, batch, seed=batch)
        with torch.no_grad():
            expected = [t.numpy() for t in graph(x)]
            precise = [t.double().numpy() for t in exact(x if x.dtype == torch.int64 else x.double())]
        for name, got, want, best in zip(("logits", "probabilities"), run(x), expected, precise):
            if got.shape != want.shape:
                raise ExportError(f"{path}: {name} of shape {got.shape} for a batch of {batch}; PyTorch gives "
                                  f"{want.shape}. The batch dimension is not dynamic; export again.")
            scale = max(1.0, float(np.abs(want).max()))
            difference = float(np.abs(got.astype(np.float64) - want).max()) / scale
            own_error = float(np.abs(want - best).max()) / scale
            file_error = float(np.abs(got - best).max()) / scale
            worst, own_worst = max(worst, difference), max(own_worst, own_error)
            limit = TOLERANCE
            if difference > TOLERANCE and file_error > 2 * own_error:
                runtime = "ONNX Runtime" if format == "onnx" else "The ExportedProgram"
                raise ExportError(
                    f"{path}: {runtime} disagrees with PyTorch on {name} at batch {batch}: max |difference| "
                    f"{difference * scale:.3g} (tolerance {limit * scale:.3g}). Do not ship this file; "
                    "report the model and versions (torch, onnx, onnxruntime) as a bug.")
    return worst, own_worst


# ------------------------------------------------------------- naming what failed


def _explain_failure(graph: nn.Module, example: torch.Tensor, format: str, err: Exception) -> str:
    """Which layer cannot be exported, and why: record every module's inputs in one eager
    pass, then export the innermost failing module alone."""
    inputs: dict[str, tuple[Any, ...]] = {}
    names = {module: name for name, module in graph.named_modules()}

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        inputs.setdefault(names[module], args)

    hooks = [module.register_forward_pre_hook(record) for module in names]
    try:
        with torch.no_grad():
            graph(example)
    finally:
        for hook in hooks:
            hook.remove()
    reason = _first_line(err)
    culprit = ""
    for name, module in sorted(graph.named_modules(), key=lambda item: -item[0].count(".")):
        if not name or name not in inputs or any(not isinstance(a, torch.Tensor) for a in inputs[name]):
            continue
        try:
            with _quiet_exporter():
                if format == "onnx":
                    torch.onnx.export(module, inputs[name], dynamo=True, verbose=False)
                else:
                    torch.export.export(module, inputs[name])
        except Exception as layer_err:  # noqa: BLE001 - any failure names this layer
            culprit, reason = f"layer {name} ({type(module).__name__})", _first_line(layer_err)
            break
    where = culprit or "the model as a whole (each layer exports on its own)"
    return (f"Cannot export to {format}: {where} fails: {reason}. Replace that layer with tensor operations "
            "the exporter supports (no Python branches on tensor values, no .item()/.numpy()/.tolist()).")


def _first_line(err: BaseException) -> str:
    """The first line of the root cause (the ONNX exporter wraps torch.export's error)."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]
