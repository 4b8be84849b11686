"""A trained run as one inference graph: raw inputs in, logits and probabilities out.

``deepnet export`` traces this graph into ONNX or an ExportedProgram and ``deepnet serve``
runs it (or the exported file), so both apply exactly the preprocessing that training
saw, recorded in ``model.json``. It lives in the run layer because both verbs read it and
neither may import the other.

Raw inputs are in the dataset's own units: pixels ``0..scale`` (255 for MNIST, 16 for
digits), unscaled CSV features, or int64 token ids ``0..vocab_size-1``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import torch
from torch import nn

from deepnet.train.run import Run

__all__ = ["InferenceModel", "Preprocess", "export_friendly", "inference_metadata", "inference_model"]


class Preprocess(nn.Module):
    """The ``preprocessing`` record of ``model.json`` as a module: ``normalize`` (images:
    ``(x / scale - mean) / std`` per channel), ``standardize`` (features: ``(x - mean) / std``),
    anything else passes the input through (token ids, ``none``).

    Input ``(B, *input_shape)`` raw; output ``(B, *input_shape)`` as the model saw it in training.
    """

    def __init__(self, preprocessing: dict[str, Any], input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.kind = preprocessing.get("kind", "none")
        shape: list[int] | None = None
        if self.kind == "normalize":
            shape = [1, -1] + [1] * (len(input_shape) - 1)  # (1, C, 1, 1) for (C, H, W)
            self.scale = float(preprocessing["scale"])
        elif self.kind == "standardize":
            shape = [1, *input_shape]
            self.scale = 1.0
        if shape is not None:
            self.register_buffer("mean", torch.tensor(preprocessing["mean"], dtype=torch.float32).reshape(shape))
            self.register_buffer("std", torch.tensor(preprocessing["std"], dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "normalize":
            return (x / self.scale - self.mean) / self.std
        if self.kind == "standardize":
            return (x - self.mean) / self.std
        return x


class InferenceModel(nn.Module):
    """Preprocess → model → softmax. ``forward(x)`` with raw ``x`` ``(B, *input_shape)``
    returns ``(logits, probabilities)``, each ``(B, num_classes)``; the probabilities are
    ``softmax(logits / temperature)`` (the run's calibration, 1.0 when uncalibrated)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, temperature: float = 1.0) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(self.preprocess(x)).float()
        if self.temperature == 1.0:
            return logits, torch.softmax(logits, dim=-1)
        return logits, torch.softmax(logits / self.temperature, dim=-1)


def export_friendly(model: nn.Module) -> nn.Module:
    """``model`` with the modules that graph exporters cannot trace swapped for equivalents
    that they can, weights shared: the fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` of the
    recurrent classifiers run on ``PackedSequence``\\ s, which neither ONNX nor ``torch.export``
    knows; their written-out twin :class:`~deepnet.models.rnn.ReferenceRecurrent` (same
    parameter names, same outputs) masks padding with plain tensor ops instead.
    Modifies ``model`` in place and returns it."""
    from deepnet.models.rnn import CELLS, ReferenceRecurrent

    builtin = {spec.builtin: name for name, spec in CELLS.items()}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            cell = builtin.get(type(child))
            if cell is None:
                continue
            twin = ReferenceRecurrent(cell, child.input_size, child.hidden_size, child.num_layers,
                                      batch_first=child.batch_first, dropout=child.dropout,
                                      bidirectional=child.bidirectional).to(next(child.parameters()).device)
            twin.load_state_dict(child.state_dict())
            twin.train(child.training)
            setattr(parent, child_name, twin)
    return model


def inference_model(run: Run) -> InferenceModel:
    """The run's model behind its preprocessing, in eval mode, ready to trace or to serve."""
    spec = run.model_spec
    if spec.get("task", "classification") != "classification" or spec.get("input_kind") not in ("image", "vector", "tokens"):
        raise ValueError(
            f"Only classifiers of images, feature vectors or token sequences have an inference graph; "
            f"{run.directory} holds a {spec.get('task')} model of {spec.get('input_kind')} inputs "
            f"({spec.get('name')}). Use `deepnet sample` for language models."
        )
    preprocess = Preprocess(spec.get("preprocessing", {}), tuple(spec["input_shape"]))
    # An int8 run's model is ONNX Runtime behind a module's call, with no parameters: the CPU.
    tensor = next(iter(run.model.parameters()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    return InferenceModel(run.model, preprocess.to(device), run.temperature).eval()


def inference_metadata(run: Run) -> dict[str, Any]:
    """What a caller of the inference graph needs to know, stored in exported files and
    shown by the server: input shape, dtype and value range, class names, preprocessing."""
    spec = run.model_spec
    prep = spec.get("preprocessing", {})
    kind = spec["input_kind"]
    if kind == "tokens":
        value_range = [0, int(spec.get("vocab_size") or 0) - 1]
    elif prep.get("kind") == "normalize":
        value_range = [0.0, float(prep["scale"])]
    else:
        value_range = None  # any finite number
    try:
        version = metadata.version("deepnet")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "model": spec.get("name"),
        "run": run.directory.name if run.directory is not None else None,
        "input_kind": kind,
        "input_shape": list(spec["input_shape"]),
        "input_dtype": "int64" if kind == "tokens" else "float32",
        "value_range": value_range,
        "class_names": list(spec.get("class_names") or [str(i) for i in range(spec["num_classes"])]),
        "preprocessing": prep,
        "outputs": ["logits", "probabilities"],
        "deepnet_version": version,
    }
