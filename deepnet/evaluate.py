"""After training: test metrics with a confusion matrix, and predictions on new files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepnet.data import DataError
from deepnet.train.experiment import load_experiment_data
from deepnet.train.loop import evaluate_objective, evaluate_split, model_device
from deepnet.train.run import Run, load_run

__all__ = ["class_logits", "class_probabilities", "evaluate_run", "per_class_scores", "predict", "predict_file",
           "prepare_inputs"]


def evaluate_run(directory: str | os.PathLike, batch_size: int = 1024, device: str | None = None) -> dict[str, Any]:
    """Test loss/accuracy; for classifiers also per-class accuracy, precision, recall and F1, a
    confusion matrix (``plots/confusion_matrix.png``) and the most confident mistakes
    (``plots/confident_mistakes.png``, image data; confidence after the run's calibration).
    Written to ``evaluation.json`` beside the run. ``device``: auto | cpu | cuda[:N] | mps (default cpu)."""
    run = load_run(directory, device=device)
    data = load_experiment_data(run.config)
    if hasattr(run.model, "evaluation_losses"):  # a generative family: its own objective's terms, no classes
        result = {f"test_{k}": v for k, v in evaluate_objective(run.model, data.test, batch_size=batch_size).items()
                  if k != "accuracy"}
        (Path(directory) / "evaluation.json").write_text(json.dumps(result, indent=2))
        return result
    result: dict[str, Any] = evaluate_split(run.model, data.test, loss=run.config.train.loss, batch_size=batch_size)
    result = {f"test_{k}": v for k, v in result.items()}
    if data.task == "classification":
        probabilities = class_probabilities(run, data.test.x, batch_size)
        confidence, predicted = probabilities.max(dim=-1)
        truth = data.test.y.numpy()
        k = data.num_classes
        matrix = np.bincount(truth * k + predicted.numpy(), minlength=k * k).reshape(k, k)
        result["confusion_matrix"] = matrix.tolist()
        result["per_class_accuracy"] = {
            name: float(matrix[i, i] / max(matrix[i].sum(), 1)) for i, name in enumerate(data.class_names)
        }
        result["per_class"] = per_class_scores(matrix, data.class_names)
        from deepnet.train.plots import plot_confusion_matrix

        out = Path(directory) / "plots"
        out.mkdir(exist_ok=True)
        plot_confusion_matrix(matrix, data.class_names, out / "confusion_matrix.png",
                              title=f"{data.name} test: {100 * result['test_accuracy']:.2f}% correct")
        wrong = torch.nonzero(predicted != data.test.y).flatten()
        ranked = wrong[confidence[wrong].argsort(descending=True)][:32]
        result["confident_mistakes"] = [
            {"index": int(i), "true": data.class_names[int(data.test.y[i])],
             "predicted": data.class_names[int(predicted[i])], "confidence": float(confidence[i])} for i in ranked]
        if data.input_kind == "image" and len(ranked):
            from deepnet.train.plots import as_raw, plot_image_grid

            raw = as_raw(data.test.x[ranked], data.preprocessing)
            plot_image_grid(list(raw),
                            [f"#{int(i)} {data.class_names[int(data.test.y[i])]}→{data.class_names[int(predicted[i])]}"
                             f" {float(confidence[i]):.2f}" for i in ranked],
                            out / "confident_mistakes.png",
                            suptitle="most confident mistakes (test): index true→predicted confidence")
    (Path(directory) / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def class_probabilities(run: Run, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``softmax(logits / run.temperature)`` of prepared inputs ``(N, *input_shape)`` → ``(N, K)``
    on the CPU, computed ``batch_size`` rows at a time."""
    return torch.softmax(class_logits(run.model, x, batch_size) / run.temperature, dim=-1)


def class_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's logits ``(N, K)`` (fp32, CPU) for prepared inputs ``(N, ...)``, in chunks."""
    chunks = []
    device = model_device(model)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunks.append(model(x[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)


def per_class_scores(matrix: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows: true)."""
    scores = {}
    for i, name in enumerate(class_names):
        true_positive = float(matrix[i, i])
        predicted, actual = float(matrix[:, i].sum()), float(matrix[i].sum())
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(actual)}
    return scores


def prepare_inputs(raw: np.ndarray, spec: dict[str, Any]) -> torch.Tensor:
    """Raw inputs (pixels 0..255 / 0..16, or unscaled features) → the tensor the model saw."""
    shape = tuple(spec["input_shape"])
    x = torch.as_tensor(np.asarray(raw, dtype=np.float32))
    if tuple(x.shape) == shape:
        x = x.unsqueeze(0)
    elif x.dim() == len(shape) and spec["input_kind"] == "image" and len(shape) == 3 and shape[0] == 1:
        x = x.unsqueeze(1)  # (N, H, W) grey images
    if tuple(x.shape[1:]) != shape:
        raise DataError(
            f"Inputs of shape {tuple(x.shape)} do not fit the model, which takes {shape} per example "
            f"(or a batch (N, {', '.join(map(str, shape))})). Resize or reshape the input."
        )
    prep = spec.get("preprocessing", {})
    if prep.get("kind") == "normalize":
        view = [1, -1] + [1] * (x.dim() - 2)
        x = (x / prep["scale"] - torch.tensor(prep["mean"]).view(view)) / torch.tensor(prep["std"]).view(view)
    elif prep.get("kind") == "standardize":
        x = (x - torch.tensor(prep["mean"])) / torch.tensor(prep["std"])
    return x


def _read_file(path: Path, spec: dict[str, Any]) -> torch.Tensor:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"Input file {path} not found.")
    if spec.get("preprocessing", {}).get("kind") == "vocab":
        from deepnet.data.text import encode_text

        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return encode_text(lines, spec["preprocessing"])
    if suffix == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise DataError(f"{path} is not a plain NumPy array file ({err}).") from None
    elif suffix == ".csv":
        import csv

        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        columns = spec.get("preprocessing", {}).get("columns")
        if rows and columns and rows[0] and not _is_number(rows[0][0]):
            header, rows = rows[0], rows[1:]
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path} lacks the columns {missing} the model was trained on.")
            rows = [[r[header.index(c)] for c in columns] for r in rows]
        try:
            raw = np.array([[float(v) for v in row] for row in rows], dtype=np.float32)
        except ValueError as err:
            raise DataError(f"{path} holds a value that is not a number ({err}).") from None
    elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        from PIL import Image, UnidentifiedImageError

        channels, height, width = spec["input_shape"]
        try:
            image = Image.open(path).convert("L" if channels == 1 else "RGB").resize((width, height))
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{path} is not a readable image ({err}).") from None
        raw = np.asarray(image, dtype=np.float32)
        raw = raw[None] if channels == 1 else raw.transpose(2, 0, 1)
        scale = spec.get("preprocessing", {}).get("scale", 255.0)
        raw = raw * (scale / 255.0)  # images are 0..255; the model's data may use another range
    else:
        raise DataError(f"Cannot read {path}: expected a .png/.jpg image, a .npy array or a .csv file.")
    return prepare_inputs(raw, spec)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def predict(run: Run, x: torch.Tensor) -> list[dict[str, Any]]:
    """Class and probability for each row of a prepared input batch; the probability is calibrated
    when ``deepnet calibrate`` has stored a temperature in the run."""
    with torch.inference_mode():
        logits = run.model(x.to(model_device(run.model))).float()
        probabilities = torch.softmax(logits / run.temperature, dim=-1).cpu()
    names = run.model_spec.get("class_names") or [str(i) for i in range(probabilities.shape[-1])]
    top = probabilities.max(dim=-1)
    return [{"class": names[int(i)], "index": int(i), "probability": float(p)} for p, i in zip(top.values, top.indices)]


def predict_file(directory: str | os.PathLike, path: str | os.PathLike, device: str | None = None) -> list[dict[str, Any]]:
    run = load_run(directory, device=device)
    return predict(run, _read_file(Path(path), run.model_spec))
