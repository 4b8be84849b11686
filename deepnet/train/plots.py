"""Figures people would rather look at than read: learning curves, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_learning_curves", "plot_confusion_matrix"]


def plot_learning_curves(history: list[dict[str, float]], path: Path) -> None:
    epochs = [row["epoch"] for row in history]
    has_accuracy = any(np.isfinite(row.get("train_accuracy", float("nan"))) for row in history)
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5, 3.6))
    axes = np.atleast_1d(axes)
    for split, style in (("train", "-o"), ("val", "-s")):
        axes[0].plot(epochs, [row.get(f"{split}_loss", np.nan) for row in history], style, label=split, markersize=3)
        if has_accuracy:
            axes[1].plot(epochs, [100 * row.get(f"{split}_accuracy", np.nan) for row in history], style,
                         label=split, markersize=3)
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss")
    if has_accuracy:
        axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path, title: str = "") -> None:
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 else "black")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title=title or "Confusion matrix (rows: true class)")
    plt.setp(ax.get_xticklabels(), rotation=45 if max(len(c) for c in class_names) > 2 else 0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
