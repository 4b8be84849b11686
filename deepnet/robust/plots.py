"""The figures of ``deepnet attack``: accuracy against ε, and clean / adversarial / difference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_adversarial_examples", "plot_robustness_curve"]


def _series_name(row: dict[str, Any]) -> str:
    name = row["method"].upper() if row["method"] in ("fgsm", "pgd") else row["method"]
    if row["method"] in ("pgd", "transfer"):
        name += f"-{row['steps']}" + (f" x{row['restarts']}" if row["restarts"] > 1 else "")
    if row["objective"] == "margin":
        name += " margin"
    if row["targeted"]:
        name += f" targeted ({row['target']})"
    return name


def plot_robustness_curve(report: dict[str, Any], path: Path) -> None:
    """Accuracy under attack against ε, one line per attack, one panel per norm; the clean
    accuracy at ε = 0 starts every line."""
    norms = sorted({row["norm"] for row in report["attacks"]}) or ["linf"]
    fig, axes = plt.subplots(1, len(norms), figsize=(5.2 * len(norms), 3.8), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        series: dict[str, list[dict[str, Any]]] = {}
        for row in report["attacks"]:
            if row["norm"] == norm:
                series.setdefault(_series_name(row), []).append(row)
        for name, rows in sorted(series.items()):
            rows = sorted(rows, key=lambda r: r["eps"])
            clean = rows[0].get("clean_accuracy", report["clean_accuracy"])  # on the images these rows attacked
            ax.plot([0.0] + [r["eps"] for r in rows], [100 * clean] + [100 * r["accuracy"] for r in rows],
                    "-o", markersize=3, label=name)
        ax.set_xlabel(f"ε ({'L∞' if norm == 'linf' else 'L2'}, pixels in [0, 1])")
        ax.set_ylabel("accuracy under attack (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.get('model')}: robustness on {report['n']} test images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_adversarial_examples(clean: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
                              predicted: torch.Tensor, title: str, path: Path) -> None:
    """Rows: clean images (true label), adversarial images (predicted label), and their
    difference (grey = 0, stretched to the largest change). Inputs ``(B, C, H, W)`` in [0, 1]."""
    count = len(clean)
    fig, axes = plt.subplots(3, count, figsize=(1.3 * count, 4.3), squeeze=False)
    difference = adversarial - clean
    scale = float(difference.abs().max()) or 1.0
    for i in range(count):
        panels = ((clean[i], f"label {int(labels[i])}", "gray", 0.0, 1.0),
                  (adversarial[i], f"→ {int(predicted[i])}", "gray", 0.0, 1.0),
                  (difference[i], "", "coolwarm", -scale, scale))
        for row, (image, caption, cmap, low, high) in enumerate(panels):
            ax = axes[row][i]
            if row == 2 or image.shape[0] not in (1, 3):
                picture = image.mean(0)  # (H, W): a signed change has no colour
            else:
                picture = image.permute(1, 2, 0).squeeze(-1)  # (H, W, C) or (H, W)
            ax.imshow(picture.numpy(), cmap=cmap, vmin=low, vmax=high)
            ax.set_title(caption, fontsize=8)
            ax.axis("off")
    for row, name in enumerate(("clean", "adversarial", f"difference (±{scale:.2f})")):
        axes[row][0].text(-0.15, 0.5, name, transform=axes[row][0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
