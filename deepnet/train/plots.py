"""Figures people would rather look at than read: learning curves, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["as_raw", "displayable", "plot_confusion_matrix", "plot_generative", "plot_image_grid", "plot_learning_curves",
           "plot_loss_terms", "save_image_grid"]


def plot_learning_curves(history: list[dict[str, float]], path: Path, *, steps: list[dict[str, float]] | None = None,
                         verdict: str | None = None, mark_epoch: float | None = None) -> None:
    """Loss (and accuracy) per epoch for train and validation; with ``steps``, the training
    loss within epochs as a faint line; with ``verdict`` (``deepnet diagnose``), the verdict
    as the title and ``mark_epoch`` (where validation loss turned) as a dashed line."""
    epochs = [row["epoch"] for row in history]
    has_accuracy = any(np.isfinite(row.get("train_accuracy", float("nan"))) for row in history)
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5, 3.9 if verdict else 3.6))
    axes = np.atleast_1d(axes)
    if steps:
        axes[0].plot([row["epoch"] for row in steps], [row["train_loss"] for row in steps], "-", color="tab:blue",
                     alpha=0.3, linewidth=0.8, label="train (every few steps)")
    for split, style, color in (("train", "-o", "tab:blue"), ("val", "-s", "tab:orange")):
        axes[0].plot(epochs, [row.get(f"{split}_loss", np.nan) for row in history], style, label=split, markersize=3,
                     color=color)
        if has_accuracy:
            axes[1].plot(epochs, [100 * row.get(f"{split}_accuracy", np.nan) for row in history], style,
                         label=split, markersize=3, color=color)
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss")
    if has_accuracy:
        axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        if mark_epoch:
            ax.axvline(mark_epoch, color="tab:red", linestyle="--", linewidth=1, label="validation loss turned")
        ax.legend(fontsize=8)
    if verdict:
        import textwrap

        fig.suptitle(textwrap.shorten(f"diagnosis — {verdict}", 150), fontsize=9)
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


def as_raw(x, preprocessing: dict) -> np.ndarray:
    """Prepared inputs ``(N, C, H, W)`` back to the raw scale for display: undoes ``normalize``
    (per channel) and ``standardize`` (per feature; a rare pixel would otherwise outshine the
    digit in a per-image stretch)."""
    x = np.asarray(x, dtype=np.float32)
    kind = preprocessing.get("kind")
    if kind == "normalize":
        shape = [1, -1] + [1] * (x.ndim - 2)
        return x * np.asarray(preprocessing["std"], np.float32).reshape(shape) + np.asarray(
            preprocessing["mean"], np.float32).reshape(shape)
    if kind == "standardize":
        shape = [1, *x.shape[1:]]
        return x * np.asarray(preprocessing["std"], np.float32).reshape(shape) + np.asarray(
            preprocessing["mean"], np.float32).reshape(shape)
    return x


def displayable(image: np.ndarray) -> np.ndarray:
    """A model input ``(C, H, W)`` (any scale, any normalisation) as an ``(H, W)`` grey or
    ``(H, W, 3)`` colour image in 0..1, stretched to its own range."""
    image = np.asarray(image, dtype=np.float32)
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image[0] if image.shape[0] == 1 else image[:3].transpose(1, 2, 0)


def plot_image_grid(images: list[np.ndarray], titles: list[str], path: Path, *, suptitle: str = "",
                    overlays: list[np.ndarray] | None = None, columns: int = 8) -> None:
    """A grid of ``(C, H, W)`` images with a title each; ``overlays`` (one ``(H, W)`` map per
    image, signed) are drawn on top in a red/blue colour map, symmetric about zero."""
    n = max(len(images), 1)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows + (0.4 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        shown = displayable(images[i])
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
        if overlays is not None:
            heat = np.asarray(overlays[i], dtype=np.float32)
            bound = float(np.abs(heat).max()) or 1.0
            ax.imshow(heat, cmap="bwr", vmin=-bound, vmax=bound, alpha=0.55)
        ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_terms(history: list[dict[str, float]], path: Path) -> None:
    """One panel per named loss term of a family with its own objective (a GAN's ``d_loss``
    and ``g_loss``, a VAE's reconstruction and KL terms), train and validation per epoch."""
    names = list(dict.fromkeys(k[6:] for k in history[0] if k.startswith("train_") and k[6:] not in ("loss", "accuracy")))
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{split}_{name}", np.nan) for row in history]
            if np.isfinite(values).any():
                ax.plot(epochs, values, style, markersize=3, label=split)
        ax.set(xlabel="epoch", title=name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_image_grid(images, path: Path, columns: int = 8) -> None:
    """Images ``(N, C, H, W)`` with pixels in [0, 1] as one PNG tiled ``columns`` wide, at
    their own resolution (a 2-pixel gap between images)."""
    images = np.asarray(images, dtype=np.float32).clip(0, 1)
    n, channels, height, width = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    gap = 2
    canvas = np.ones((rows * (height + gap) + gap, columns * (width + gap) + gap, channels), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = gap + r * (height + gap), gap + c * (width + gap)
        canvas[top:top + height, left:left + width] = image.transpose(1, 2, 0)
    scale = max(1, 256 // max(canvas.shape[:2]))  # small digits are shown larger
    canvas = canvas.repeat(scale, 0).repeat(scale, 1)
    plt.imsave(path, canvas[..., 0] if channels == 1 else canvas, cmap="gray" if channels == 1 else None, vmin=0, vmax=1)


def plot_generative(model, data, directory: Path, *, seed: int = 0, n: int = 64) -> None:
    """The pictures of a generative run: ``samples.png`` (what the model draws), for models
    that encode ``reconstructions.png`` (test images above their reconstructions) and, for a
    VAE, ``interpolations.png`` (decoded straight lines between test images' codes)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        if hasattr(model, "sample"):
            options = getattr(model, "preview_sampling", {})
            save_image_grid(model.sample(n, generator=generator, **options).cpu(), directory / "samples.png")
        test = data.test.x[:n // 2].to(device)
        if hasattr(model, "encode") and len(test) and test.dim() == 4:
            originals = model.pixels.to_pixels(test)
            rebuilt = model(test)
            rows = [torch.cat([originals[i:i + 8], rebuilt[i:i + 8]]) for i in range(0, len(test), 8)]
            save_image_grid(torch.cat(rows).cpu(), directory / "reconstructions.png")
        if hasattr(model, "interpolate") and len(test) >= 16:
            paths = model.interpolate(test[:8], test[8:16], steps=10)  # (8, 10, C, H, W)
            save_image_grid(paths.flatten(0, 1).cpu(), directory / "interpolations.png", columns=10)
    model.train(was_training)
