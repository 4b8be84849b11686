"""Post-training int8 quantization with ONNX Runtime's quantizer, run by ONNX Runtime.

Why ONNX Runtime and not ``torch.ao.quantization``: PyTorch is removing the eager and FX
quantization APIs (``torch.ao.quantization`` is deprecated in favour of torchao, whose CPU
int8 kernels go through ``torch.compile``/Inductor and need a C++ toolchain at run time).
ONNX Runtime's quantizer is maintained, runs where the model will be deployed (the same
graph ``deepnet export`` writes, the same runtime ``deepnet serve --runtime onnx`` uses), and
its int8 kernels (MLAS: VNNI/AVX2 on x86, dot-product on ARM) need nothing compiled.

- dynamic: weights int8 ahead of time, activations quantized per batch from their observed
  range (``quantize_dynamic``; best for matrix-multiply networks).
- static: weights and activations int8, activation ranges calibrated on a sample of the
  training data (``quantize_static``, QDQ format, per-channel weights; needed for convolutions).
- quantization-aware (``int8-qat``): the network first retrains with int8 rounding simulated in
  its forward pass (:func:`simulate_int8`: per-channel symmetric int8 weights and per-tensor
  uint8 inputs to every linear layer and convolution, the scheme static int8 uses, with
  straight-through gradients), so that its weights settle where rounding costs least; then it
  is quantized statically like any other. For networks that post-training int8 costs accuracy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["QUANTIZE_MODES", "Int8Simulation", "export_onnx", "quantize_onnx", "simulate_int8"]

QUANTIZE_MODES = ("int8", "int8-dynamic", "int8-static", "int8-qat")
QUANTIZED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Int8Weights(nn.Module):
    """A parametrization: the weight rounded to int8 per output channel, symmetric around 0
    (ONNX Runtime's static per-channel scheme); gradients pass straight through."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        absmax = weight.detach().abs().flatten(1).amax(1).clamp(min=1e-8)
        scale = (2 * absmax / 255).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -128, 127)


class _Uint8Inputs:
    """A forward pre-hook: the layer's input rounded to uint8 over a running [min, max] range
    (widened to hold 0, as ONNX Runtime's calibration does), updated while training."""

    def __init__(self, momentum: float = 0.01) -> None:
        self.momentum = momentum
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        if module.training or self.low is None:
            low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
            if self.low is None:
                self.low, self.high = low, high
            else:
                self.low = torch.lerp(self.low, low, self.momentum)
                self.high = torch.lerp(self.high, high, self.momentum)
        scale = float((self.high - self.low).clamp(min=1e-8)) / 255
        zero = int(round(-float(self.low) / scale))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *inputs[1:])


class Int8Simulation:
    """What :func:`simulate_int8` changed in a model; :meth:`remove` puts the model back
    (its weights as trained, unrounded: the quantizer rounds them onto the same grid)."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, QUANTIZED_LAYERS)]
        self.hooks = [layer.register_forward_pre_hook(_Uint8Inputs()) for layer in self.layers]
        for layer in self.layers:
            parametrize.register_parametrization(layer, "weight", _Int8Weights())

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        for layer in self.layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        self.hooks, self.layers = [], []


def simulate_int8(model: nn.Module) -> Int8Simulation:
    """Quantization-aware training: make ``model``'s linear layers and convolutions compute
    as static int8 will (weights and inputs rounded, gradients straight through) until
    ``.remove()`` is called on the result."""
    return Int8Simulation(model)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and the quantizer log progress and warn about their own internals."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch._export", "torch.fx", "onnxscript", "root")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The fp32 model as ONNX: preprocessed input ``(B, *input_shape)`` → logits, any batch size."""
    model = model.eval()
    with _quiet():
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
        program.save(str(path), external_data=False)
    import onnx

    graph = onnx.load(str(path))
    # The exporter records shapes for every value, weights included; the quantizer's graph
    # optimisation transposes weights and would then contradict them: drop them.
    del graph.graph.value_info[:]
    _strip_annotations(graph)
    onnx.save(graph, str(path))


def _strip_annotations(model) -> None:
    """Drop what the exporter and the quantizer annotate the graph with (source stack traces,
    module paths, doc strings, node names) and give the values short names: in a small int8
    model these outweigh the weights (LeNet-5: 18 kB of names beside 60 kB of int8 weights),
    and no runtime reads them. The graph's inputs and outputs keep their names."""
    import onnx

    graph = model.graph
    del model.metadata_props[:]
    model.doc_string = graph.doc_string = ""
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for node in graph.node
           for attr in node.attribute):
        return  # control flow with subgraphs: their names would need renaming too; keep them
    keep = {value.name for value in [*graph.input, *graph.output]}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return short.setdefault(name, format(len(short), "x"))

    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = node.name = ""
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
        tensor.doc_string = ""
    del graph.value_info[:]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a tensor of training inputs."""

    def __init__(self, x: torch.Tensor, input_name: str, batch_size: int = 64) -> None:
        self.batches = iter([{input_name: x[i : i + batch_size].numpy()} for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def quantize_onnx(fp32_path: Path, int8_path: Path, mode: str, calibration: torch.Tensor | None = None) -> None:
    """Quantize the ONNX model at ``fp32_path`` to int8 at ``int8_path``. ``mode``:
    ``int8-dynamic`` or ``int8-static`` (``int8`` and ``int8-qat`` mean static); static needs
    ``calibration``, a sample of preprocessed training inputs ``(N, *input_shape)``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in QUANTIZE_MODES:
        raise ValueError(f"Received an invalid value for `--quantize`: expected one of {', '.join(QUANTIZE_MODES)}. "
                         f"Received: --quantize {mode!r}")
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if mode == "int8-dynamic":
            quantize_dynamic(str(prepared), str(int8_path), weight_type=QuantType.QInt8, per_channel=False)
        else:
            if calibration is None:
                raise ValueError("Static int8 quantization needs calibration inputs.")
            quantize_static(str(prepared), str(int8_path), _Calibration(calibration, "input"),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    import onnx

    model = onnx.load(str(int8_path))
    _strip_annotations(model)
    onnx.save(model, str(int8_path))
