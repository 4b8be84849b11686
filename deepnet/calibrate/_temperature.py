"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one
scalar ``T > 0`` divides the logits, fitted by minimising the negative log-likelihood of the
validation split. The arg-max, hence the accuracy, cannot change."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepnet.evaluate import class_logits
from deepnet.train.experiment import load_experiment_data
from deepnet.train.run import atomic_write, load_run

__all__ = ["Calibration", "calibrate", "expected_calibration_error", "fit_temperature", "reliability_bins"]


@dataclass
class Calibration:
    """What ``calibration.json`` holds. ECE and accuracy are measured on the test split; the
    temperature is fitted on the validation split."""

    temperature: float
    bins: int
    fitted_on: str
    val_nll_before: float
    val_nll_after: float
    ece_before: float
    ece_after: float
    accuracy_before: float
    accuracy_after: float
    test_examples: int
    val_examples: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 100) -> float:
    """The ``T`` minimising ``cross_entropy(logits / T, labels)``; logits ``(N, K)``, labels ``(N,)``.
    Optimised over ``log T`` (so ``T`` stays positive) with L-BFGS; the problem is convex in
    ``1/T``, so the optimum is unique."""
    if len(labels) == 0:
        raise ValueError("Temperature scaling needs validation examples; received an empty validation split. "
                         "Set data.val_fraction (e.g. 0.1) and retrain, or calibrate a run that has one.")
    logits, labels = logits.detach().double(), labels.detach()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability_bins(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> list[dict[str, float]]:
    """Equal-width confidence bins over (0, 1]: each with its count, mean confidence and accuracy.
    ``probabilities`` ``(N, K)``, ``labels`` ``(N,)``."""
    confidence, predicted = probabilities.max(dim=-1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence.double(), edges[1:-1], right=True)  # bin b holds (edge_b, edge_b+1]
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "confidence": float(confidence[mask].double().mean()) if count else 0.0,
                     "accuracy": float(correct[mask].mean()) if count else 0.0})
    return rows


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: the count-weighted mean of |accuracy - confidence| over equal-width confidence bins
    (Naeini et al. 2015; 15 bins as in Guo et al. 2017)."""
    rows = reliability_bins(probabilities, labels, bins)
    total = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / max(total, 1)


def calibrate(directory: str | os.PathLike, *, bins: int = 15, batch_size: int = 1024,
              device: str | None = None) -> Calibration:
    """Fit the temperature of a classification run on its validation split, measure ECE before and
    after on its test split, draw ``plots/reliability.png`` and store ``calibration.json``."""
    if bins < 2:
        raise ValueError(f"Received an invalid value for `bins`: a reliability diagram needs at least 2 bins. "
                         f"Received: bins={bins}.")
    out = Path(directory)
    run = load_run(out, device=device)
    if run.model_spec.get("task", "classification") != "classification" or run.config.train.loss != "cross_entropy":
        raise ValueError(f"{out} holds a {run.model_spec.get('task')} model trained with {run.config.train.loss}; "
                         "temperature scaling calibrates the softmax of classifiers trained with cross_entropy.")
    data = load_experiment_data(run.config)
    val_logits = class_logits(run.model, data.val.x, batch_size)
    temperature = fit_temperature(val_logits, data.val.y)
    test_logits = class_logits(run.model, data.test.x, batch_size)
    before = torch.softmax(test_logits.double(), dim=-1)
    after = torch.softmax(test_logits.double() / temperature, dim=-1)
    labels = data.test.y
    result = Calibration(
        temperature=temperature, bins=bins, fitted_on="val",
        val_nll_before=float(F.cross_entropy(val_logits.double(), data.val.y)),
        val_nll_after=float(F.cross_entropy(val_logits.double() / temperature, data.val.y)),
        ece_before=expected_calibration_error(before, labels, bins),
        ece_after=expected_calibration_error(after, labels, bins),
        accuracy_before=float((before.argmax(-1) == labels).double().mean()),
        accuracy_after=float((after.argmax(-1) == labels).double().mean()),
        test_examples=len(labels), val_examples=len(data.val))
    (out / "plots").mkdir(exist_ok=True)
    plot_reliability(reliability_bins(before, labels, bins), reliability_bins(after, labels, bins), result,
                     out / "plots" / "reliability.png")
    atomic_write(out / "calibration.json", lambda tmp: tmp.write_text(result.to_json()))
    return result


def plot_reliability(before: list[dict[str, float]], after: list[dict[str, float]], result: Calibration,
                     path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True)
    for ax, rows, label, ece in ((axes[0], before, "before (T = 1)", result.ece_before),
                                 (axes[1], after, f"after (T = {result.temperature:.3f})", result.ece_after)):
        centers = np.array([(r["low"] + r["high"]) / 2 for r in rows])
        width = rows[0]["high"] - rows[0]["low"]
        accuracy = np.array([r["accuracy"] if r["count"] else np.nan for r in rows])
        confidence = np.array([r["confidence"] if r["count"] else np.nan for r in rows])
        ax.bar(centers, np.nan_to_num(accuracy), width=width * 0.95, color="tab:blue", label="accuracy")
        ax.bar(centers, np.nan_to_num(confidence - accuracy), bottom=np.nan_to_num(accuracy), width=width * 0.95,
               color="tab:red", alpha=0.35, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{label}: ECE {100 * ece:.2f}%")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"reliability on the test split ({result.test_examples} examples, {result.bins} bins); "
                 f"temperature fitted on {result.val_examples} validation examples", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
