"""The figure of ``deepnet compress``: test accuracy against file size, one point per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_stages"]


def plot_stages(rows: list[dict[str, Any]], path: Path) -> None:
    sizes = [row["file_bytes"] / 1024 for row in rows]
    accuracies = [100 * row["test_accuracy"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, accuracies, "-o", color="tab:blue")
    for row, size, accuracy in zip(rows, sizes, accuracies):
        ax.annotate(row["name"], (size, accuracy), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("file size (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy against file size, per compression stage")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
