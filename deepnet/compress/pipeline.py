"""`deepnet compress`: a trained run in, a new, smaller run directory out, every stage measured.

Stages run in this order, each optional: structured pruning (rebuild the MLP smaller,
retrain) → magnitude pruning (one-shot, iterative or gradual, masks held while retraining) →
trained weight sharing (k-means codebooks, centroids retrained) → or int8 quantization (ONNX
Runtime; after quantization-aware retraining with ``int8-qat``).
Retraining goes through the one training loop (:class:`deepnet.train.Trainer`), with the
parent run's data, augmentation and optimizer at a lower learning rate.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepnet.config import apply_overrides, parse_config, save_config
from deepnet.data import AugmentConfig, Dataset
from deepnet.models import model_info
from deepnet.train import fit
from deepnet.train.compressed import COMPRESSED_FORMAT, ONNX_INT8_FORMAT, OnnxClassifier, write_compressed
from deepnet.train.experiment import load_experiment_data
from deepnet.train.loop import evaluate_split
from deepnet.train.run import Run, atomic_write, load_run, save_weights, weights_record

from deepnet.compress.measure import dense_file_bytes, nonzero_parameters, time_calls
from deepnet.compress.pruning import (GradualPruning, HoldMasks, check_fraction, check_structured_supported, magnitude_masks,
                                      prunable_weights, sparsity_schedule, structured_prune)
from deepnet.compress.quantize import QUANTIZE_MODES, export_onnx, quantize_onnx, simulate_int8
from deepnet.compress.sharing import release_sharing, share_weights

__all__ = ["CompressionSettings", "compress_run"]


@dataclass(frozen=True)
class CompressionSettings:
    """What ``deepnet compress`` does; ``None`` skips a stage."""

    prune: float | None = None  # fraction of all parameters set to zero (magnitude pruning)
    prune_scope: str = "global"  # "global" | "layer"
    prune_steps: int = 1  # rounds of prune → retrain (1: one-shot)
    prune_schedule: str = "rounds"  # "rounds" (prune_steps of prune → retrain) | "gradual" (prune while retraining)
    prune_min_density: float = 0.0  # global scope: each layer keeps at least this fraction of its weights
    structured: float | None = None  # fraction of each hidden layer's units removed
    share_bits: int | None = None  # 2**bits shared values per tensor
    quantize: str | None = None  # "int8" (static) | "int8-static" | "int8-dynamic" | "int8-qat" (retrain, then static)
    finetune_epochs: int = 2  # retraining epochs after each pruning round and for the codebooks
    finetune_lr_ratio: float = 1.0  # retraining learning rate as a fraction of the parent's (its schedule restarts)
    threads: int = 1  # CPU threads for retraining and timing
    calibration_samples: int = 512  # static int8: training inputs that calibrate activation ranges
    timing_repeats: int = 300  # timed batch-1 calls per stage (a tenth as many batch-256 calls, at least 20)
    timing_seconds: float = 1.0  # and at least this long for each batch size
    overrides: list[str] = field(default_factory=list)  # train.* settings for retraining

    def check(self) -> None:
        check_fraction(self.prune, "--prune")
        check_fraction(self.structured, "--structured")
        sparsity_schedule(self.prune or 0.5, self.prune_steps)
        if self.prune_scope not in ("global", "layer"):
            raise ValueError(f"Received an invalid value for `--prune-scope`: expected 'global' or 'layer'. "
                             f"Received: --prune-scope {self.prune_scope!r}")
        if self.prune_schedule not in ("rounds", "gradual"):
            raise ValueError(f"Received an invalid value for `--prune-schedule`: expected 'rounds' or 'gradual'. "
                             f"Received: --prune-schedule {self.prune_schedule!r}")
        if self.prune_schedule == "gradual" and self.prune_steps != 1:
            raise ValueError("--prune-schedule gradual prunes a little every few steps of one retraining; "
                             "--prune-steps counts rounds of the other schedule. Drop --prune-steps.")
        if self.prune_schedule == "gradual" and self.prune is not None and self.finetune_epochs < 1:
            raise ValueError("--prune-schedule gradual prunes while retraining: set --finetune-epochs to 1 or more "
                             "(e.g. --finetune-epochs 20).")
        if self.quantize is not None and self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"Received an invalid value for `--quantize`: expected one of {', '.join(QUANTIZE_MODES)}. "
                             f"Received: --quantize {self.quantize!r}")
        if self.quantize and self.share_bits:
            raise ValueError("--quantize int8 and --share-bits are two storage formats for the same weights; "
                             "pick one (--share-bits for the smallest file, --quantize for int8 speed).")
        if not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise ValueError(f"Received an invalid value for `--finetune-epochs`: expected an integer >= 0. "
                             f"Received: --finetune-epochs {self.finetune_epochs!r}")
        if self.quantize == "int8-qat" and self.finetune_epochs < 1:
            raise ValueError("--quantize int8-qat retrains with int8 rounding simulated: set --finetune-epochs to 1 "
                             "or more (e.g. --finetune-epochs 2).")
        if self.prune is None and self.structured is None and self.share_bits is None and self.quantize is None:
            raise ValueError("Nothing to do: name at least one stage, e.g. --prune 0.92 --share-bits 5, "
                             "--structured 0.5 or --quantize int8.")


class _Stages:
    """Measures each stage into one ``compression.json`` row."""

    def __init__(self, data: Dataset, settings: CompressionSettings, loss: str) -> None:
        self.data, self.settings, self.threads, self.loss = data, settings, settings.threads, loss
        self.rows: list[dict[str, Any]] = []
        self.example = data.test.x[:1]

    def add(self, name: str, model: nn.Module, file_bytes: int, runtime: str = "pytorch",
            counted: nn.Module | None = None, **extra: Any) -> dict[str, Any]:
        test = evaluate_split(model, self.data.test, loss=self.loss)
        nonzero, total = nonzero_parameters(counted if counted is not None else model)
        speed = time_calls(model, self.example, threads=self.threads, repeats=self.settings.timing_repeats,
                           min_seconds=self.settings.timing_seconds)
        baseline = self.rows[0] if self.rows else None
        row = {"name": name, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "nonzero_parameters": nonzero, "parameters": total, "sparsity": 1 - nonzero / total,
               "file_bytes": file_bytes, **speed, "runtime": runtime, "threads": self.threads, **extra}
        if baseline is not None:
            row["compression_ratio"] = baseline["file_bytes"] / file_bytes
            row["speedup_batch1"] = baseline["latency_ms_batch1"] / row["latency_ms_batch1"]
            row["throughput_ratio"] = row["throughput_batch256"] / baseline["throughput_batch256"]
            row["test_error_change"] = baseline["test_accuracy"] - row["test_accuracy"]
        self.rows.append(row)
        return row


def _check_supported(run: Run, settings: CompressionSettings) -> None:
    spec = run.model_spec
    name = spec.get("name")
    if isinstance(run.model, OnnxClassifier):
        raise ValueError(f"{run.directory} holds an int8 ONNX model, which cannot be compressed further. "
                         f"Compress its parent ({spec.get('parent')}) instead.")
    if spec.get("task", "classification") != "classification" or spec.get("input_kind") not in ("image", "vector"):
        family = model_info(name).family if name else "unknown"
        raise ValueError(f"deepnet compress supports classifiers of images and feature vectors; {name} (family "
                         f"{family!r}, {spec.get('input_kind')} inputs) is not supported.")
    if settings.structured is not None:
        check_structured_supported(run.model, spec)


def _retrain(model: nn.Module, run: Run, data: Dataset, settings: CompressionSettings, epochs: int,
             callbacks: list, quiet: bool) -> None:
    """Retrain through the Trainer: the parent's recipe at ``finetune_lr_ratio`` x its rate."""
    if epochs == 0:
        return
    config = run.config.model_dump(mode="json")
    train = config["train"]
    train.update(epochs=epochs, lr=train["lr"] * settings.finetune_lr_ratio, warmup_epochs=0, threads=settings.threads,
                 checkpoint_every=0, early_stopping=False, freeze_backbone=False, backbone_lr_ratio=1.0,
                 unfreeze_every=0, device="cpu")
    experiment = parse_config(apply_overrides(config, list(settings.overrides)), "compress")
    augment = AugmentConfig(**experiment.data.augment.model_dump())
    fit(model, data, experiment.train, augment=augment, callbacks=callbacks, quiet=quiet, experiment=experiment)


def _quantization_aware_retrain(model: nn.Module, run: Run, data: Dataset, settings: CompressionSettings,
                                quiet: bool) -> None:
    """Retrain with int8 rounding simulated; weights a pruning stage zeroed stay zero."""
    simulation = simulate_int8(model)
    try:
        pruned = {name: p.detach() != 0 for name, p in model.named_parameters()
                  if name.endswith("parametrizations.weight.original") and bool((p == 0).any())}
        _retrain(model, run, data, settings, settings.finetune_epochs, [HoldMasks(model, pruned)], quiet)
    finally:
        simulation.remove()


def _say(quiet: bool, line: str) -> None:
    if not quiet:
        import sys

        print(line, file=sys.stderr)


def compress_run(parent: str | os.PathLike, settings: CompressionSettings, out: str | os.PathLike | None = None,
                 *, quiet: bool = False) -> dict[str, Any]:
    """Compress the run ``parent`` into the new run directory ``out`` (default
    ``<parent>-compressed``); returns what ``compression.json`` holds."""
    settings.check()
    parent = Path(parent)
    run = load_run(parent, device="cpu")
    _check_supported(run, settings)
    out_dir = Path(out) if out is not None else parent.parent / f"{parent.name}-compressed"
    if out_dir.resolve() == parent.resolve():
        raise ValueError(f"--out {out_dir} is the parent run itself; compress writes a new run directory.")
    torch.set_num_threads(settings.threads)
    data = load_experiment_data(run.config)
    loss = run.config.train.loss
    stages = _Stages(data, settings, loss)
    model, spec = run.model, dict(run.model_spec)
    stages.add("baseline", model, dense_file_bytes(model), note="the parent run: fp32 dense safetensors")
    _say(quiet, _format_row(stages.rows[-1]))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if settings.structured is not None:
            model, spec = structured_prune(model, settings.structured, spec)
            _retrain(model, run, data, settings, settings.finetune_epochs, [], quiet)
            widths = {k: spec["args"][k] for k in ("hidden_layers", "widths") if k in spec["args"]}
            stages.add(f"structured-{settings.structured:g}", model, dense_file_bytes(model), **widths)
            _say(quiet, _format_row(stages.rows[-1]))
        if settings.prune is not None and settings.prune_schedule == "gradual":
            pruning = GradualPruning(model, settings.prune, settings.prune_scope, settings.prune_min_density)
            _retrain(model, run, data, settings, settings.finetune_epochs, [pruning], quiet)
            stages.add(f"pruned-{settings.prune:g}-gradual", model, write_compressed(model, tmp / "pruned.compressed"),
                       note="unstructured, pruned gradually while retraining: dense tensors in PyTorch; "
                            "file: sparse positions + fp32 values")
            _say(quiet, _format_row(stages.rows[-1]))
        elif settings.prune is not None:
            for i, sparsity in enumerate(sparsity_schedule(settings.prune, settings.prune_steps)):
                masks = magnitude_masks(model, sparsity, settings.prune_scope, settings.prune_min_density)
                _retrain(model, run, data, settings, settings.finetune_epochs, [HoldMasks(model, masks)], quiet)
                HoldMasks(model, masks).on_train_end({})  # the masks hold even without retraining
                name = f"pruned-{settings.prune:g}" + (f"-step{i + 1}" if settings.prune_steps > 1 else "")
                stages.add(name, model, write_compressed(model, tmp / "pruned.compressed"),
                           note="unstructured: dense tensors in PyTorch; file: sparse positions + fp32 values")
                _say(quiet, _format_row(stages.rows[-1]))
        weights = {"format": "safetensors", "file": "model.safetensors"}
        if settings.share_bits is not None:
            # Pruned tensors too small to share keep their zeros by masks while the rest retrains.
            zeros = {name: w.detach() != 0 for name, w in prunable_weights(model).items() if bool((w == 0).any())}
            shared = share_weights(model, settings.share_bits)
            unshared = {name: mask for name, mask in zeros.items() if name in dict(model.named_parameters())}
            _retrain(model, run, data, settings, settings.finetune_epochs, [HoldMasks(model, unshared)], quiet)
            HoldMasks(model, unshared).on_train_end({})
            release_sharing(shared)
            with torch.no_grad():  # the rest is stored in fp16 too
                for p in model.parameters():
                    p.copy_(p.half().float())
            weights = {"format": COMPRESSED_FORMAT, "file": "model.compressed"}
            size = write_compressed(model, tmp / weights["file"])
            stages.add(f"shared-{settings.share_bits}bit", model, size,
                       note="Huffman-coded sparse positions and codebook indices (deepnet-compressed)")
            _say(quiet, _format_row(stages.rows[-1]))
        elif settings.prune is not None:
            weights = {"format": COMPRESSED_FORMAT, "file": "model.compressed"}
            write_compressed(model, tmp / weights["file"])
        if settings.quantize is not None:
            mode = "int8-static" if settings.quantize == "int8" else settings.quantize
            export_onnx(model, data.test.x[:1], tmp / "model.fp32.onnx")
            fp32 = OnnxClassifier(tmp / "model.fp32.onnx", settings.threads)
            stages.add("fp32-onnxruntime", fp32, (tmp / "model.fp32.onnx").stat().st_size, runtime="onnxruntime",
                       counted=model, note="the same model in ONNX Runtime: the int8 row's same-runtime peer")
            _say(quiet, _format_row(stages.rows[-1]))
            calibration = data.train.x[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
                                       [: settings.calibration_samples]]
            weights = {"format": ONNX_INT8_FORMAT, "file": "model.int8.onnx"}
            if mode == "int8-qat":
                _quantization_aware_retrain(model, run, data, settings, quiet)
                export_onnx(model, data.test.x[:1], tmp / "model.fp32.onnx")
            quantize_onnx(tmp / "model.fp32.onnx", tmp / weights["file"], mode, calibration)
            int8 = OnnxClassifier(tmp / weights["file"], settings.threads)
            stages.add(mode, int8, (tmp / weights["file"]).stat().st_size, runtime="onnxruntime", counted=model)
            _say(quiet, _format_row(stages.rows[-1]))
            fp32_onnx = stages.rows[-2]
            stages.rows[-1]["throughput_ratio_same_runtime"] = (stages.rows[-1]["throughput_batch256"]
                                                                / fp32_onnx["throughput_batch256"])
            stages.rows[-1]["speedup_batch1_same_runtime"] = (fp32_onnx["latency_ms_batch1"]
                                                              / stages.rows[-1]["latency_ms_batch1"])
        result = _write_run(out_dir, run, model, spec, weights, tmp, stages.rows, settings)
    return result


def _write_run(out_dir: Path, run: Run, model: nn.Module, spec: dict[str, Any], weights: dict[str, str],
               tmp: Path, rows: list[dict[str, Any]], settings: CompressionSettings) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    for stale in ("model.safetensors", "model.compressed", "model.int8.onnx", "metrics.json", "evaluation.json"):
        (out_dir / stale).unlink(missing_ok=True)
    if weights["format"] == "safetensors":
        save_weights(model, out_dir / weights["file"])
    else:
        shutil.copyfile(tmp / weights["file"], out_dir / weights["file"])
    final = rows[-1]
    nonzero, total = nonzero_parameters(model)
    spec = {**spec, "parent": str(run.directory), "parameters": total, "nonzero_parameters": nonzero}
    if weights["format"] == "safetensors":
        spec.pop("weights", None)
    else:
        spec["weights"] = weights
    weights_record(spec)  # what load_run will check
    save_config(run.config, out_dir / "config.yaml")
    atomic_write(out_dir / "model.json", lambda p: p.write_text(json.dumps(spec, indent=2)))
    result = {"parent": str(run.directory), "settings": {k: v for k, v in settings.__dict__.items()},
              "file": weights["file"], "format": weights["format"],
              "timing": f"medians of many calls after warm-up on {settings.threads} CPU thread(s); batch-1 latency "
                        "and batch-256 throughput; each row names its runtime",
              "stages": rows}
    atomic_write(out_dir / "compression.json", lambda p: p.write_text(json.dumps(result, indent=2)))
    metrics = {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"], "parameters": total,
               "nonzero_parameters": nonzero, "file_bytes": final["file_bytes"]}
    atomic_write(out_dir / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    from deepnet.compress.plot import plot_stages

    plot_stages(rows, out_dir / "plots" / "compression.png")
    result["directory"] = str(out_dir)
    return result


def _format_row(row: dict[str, Any]) -> str:
    ratio = f"  {row['compression_ratio']:.1f}x smaller" if "compression_ratio" in row else ""
    return (f"{row['name']:<20} accuracy {100 * row['test_accuracy']:.2f}%  nonzero {row['nonzero_parameters']:,}  "
            f"file {row['file_bytes']:,} B{ratio}  batch-1 {row['latency_ms_batch1']:.3f} ms  "
            f"batch-256 {row['throughput_batch256']:,.0f}/s ({row['runtime']})")
