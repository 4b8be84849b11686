"""What runs the model behind the server: ONNX Runtime on the run's exported ``model.onnx``
(read as a file: this package never imports ``deepnet.export``), or PyTorch on the run's
weights through the same inference graph that export traces."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from deepnet.train.compressed import ONNX_INT8_FORMAT
from deepnet.train.inference import inference_metadata, inference_model
from deepnet.train.run import RunError, load_run

__all__ = ["Runtime", "load_runtime"]

RuntimeName = Literal["auto", "onnx", "torch"]


class Runtime:
    """``predict(x)``: raw inputs ``(N, *input_shape)`` → probabilities ``(N, num_classes)``."""

    name: str
    metadata: dict[str, Any]
    version: str
    device: str = "cpu"  # where the model runs: "cpu", or a torch device such as "cuda:0"

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntime(Runtime):
    name = "onnx"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own error types
            raise RunError(f"{path} is not a readable ONNX model ({' '.join(str(err).split())[:200]}). "
                           f"Export it again: deepnet export {path.parent}") from None
        stored = self.session.get_modelmeta().custom_metadata_map.get("deepnet")
        if stored is None:
            raise RunError(f"{path} holds no deepnet metadata. Export it again: deepnet export {path.parent}")
        self.metadata = json.loads(stored)
        self.version = _version(path)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"input": x})[0]


class TorchRuntime(Runtime):
    """The run's weights through the inference graph. An int8 run of ``deepnet compress``
    (``model.int8.onnx``) runs the same way: its model is ONNX Runtime behind a module's call,
    with the preprocessing and softmax around it in PyTorch."""

    name = "torch"

    def __init__(self, directory: Path, threads: int, device: str) -> None:
        run = load_run(directory, device=device)
        self.graph = inference_model(run)
        self.metadata = inference_metadata(run)
        weights = run.model_spec.get("weights") or {"format": "safetensors", "file": "model.safetensors"}
        if weights["format"] == ONNX_INT8_FORMAT:
            self.name = "torch + onnxruntime int8"
        self.version = _version(directory / weights["file"])
        tensor = next(iter(self.graph.parameters()), None)
        self._device = tensor.device if tensor is not None else torch.device("cpu")
        self.device = str(self._device) if self._device.type != "cpu" else "cpu"
        self.threads = threads

    def predict(self, x: np.ndarray) -> np.ndarray:
        # The batches run on one executor thread: its own torch thread count.
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.graph(torch.from_numpy(x).to(self._device))[1].cpu().numpy()


def load_runtime(directory: str | os.PathLike, runtime: RuntimeName = "auto", threads: int = 1,
                 device: str = "cpu") -> Runtime:
    """The runtime for the run in ``directory``: ``onnx`` reads ``RUN/model.onnx`` (written by
    ``deepnet export``), ``torch`` the weights; ``auto`` picks ONNX when the file exists."""
    out = Path(directory)
    if runtime not in ("auto", "onnx", "torch"):
        raise ValueError(f"Unknown runtime {runtime!r}; expected auto, onnx or torch.")
    if threads < 1:
        raise ValueError(f"threads must be a positive integer; received {threads}.")
    if not out.is_dir():
        raise RunError(f"Run directory {out} not found. Train one first: deepnet train ... --out {out}")
    onnx_file = out / "model.onnx"
    if runtime == "onnx" and not onnx_file.is_file():
        raise RunError(f"{out} has no model.onnx for --runtime onnx. Export it first: deepnet export {out}")
    if runtime == "onnx" or (runtime == "auto" and onnx_file.is_file()):
        if onnx_file.is_file() and (out / "model.safetensors").is_file() and \
                onnx_file.stat().st_mtime < (out / "model.safetensors").stat().st_mtime:
            raise RunError(f"{onnx_file} is older than the run's weights. Export it again: deepnet export {out}")
        return OnnxRuntime(onnx_file, threads)
    return TorchRuntime(out, threads, device)


def _version(path: Path) -> str:
    """``<run name>@<first 12 hex digits of the file's SHA-256>``: changes when the weights do."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.parent.name}@{digest}"
