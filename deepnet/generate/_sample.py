"""Samples, their scores and codes from a run directory.

The score follows the Inception-score / FID recipe (Salimans et al. 2016, Heusel et al. 2017)
with a classifier trained on the same data in place of Inception: the share of samples it
classifies with confidence >= 0.9, the mean confidence, the histogram of its classes, and the
Fréchet distance between Gaussians fitted to its penultimate-layer features (the input of its
last linear layer) of the samples and of the test images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepnet.data import load_dataset
from deepnet.train.plots import as_raw, save_image_grid
from deepnet.train.run import Run, atomic_write, load_run

__all__ = ["CONFIDENT", "draw_samples", "encode_run", "frechet_distance", "sample_run", "score_samples"]

CONFIDENT = 0.9  # a sample counts as recognisable when the classifier gives its class at least this probability
GRID_MAX = 256  # images shown in the grid; the score uses all of them


def _generative_run(run: Run) -> Run:
    if not hasattr(run.model, "sample"):
        kind = "an autoencoder (it encodes; it does not sample)" if hasattr(run.model, "encode") else \
            f"a {run.model_spec.get('task', 'classification')} model ({run.model_spec.get('name')})"
        raise ValueError(f"{run.directory} holds {kind}; `deepnet sample` draws images from a VAE, GAN or diffusion run "
                         "(train one with examples/mnist-vae.yaml, mnist-dcgan.yaml or mnist-ddpm.yaml).")
    return run


def draw_samples(run: Run, n: int, *, label: int | None = None, seed: int = 0, method: str | None = None,
                 steps: int | None = None, eta: float | None = None, guidance: float | None = None,
                 batch_size: int = 500) -> torch.Tensor:
    """``n`` images ``(n, C, H, W)`` in [0, 1] from a generative run; ``label`` asks a
    class-conditional model for one class; ``method``/``steps``/``eta`` choose a diffusion sampler,
    ``guidance`` the guidance weight of a self-guided one (default: its config's)."""
    _generative_run(run)
    model = run.model
    classes = getattr(model, "conditional_classes", 0)
    if n < 1:
        raise ValueError(f"--n must be at least 1; received {n}.")
    if label is not None and not classes:
        raise ValueError(f"{run.directory} holds an unconditional model ({run.model_spec.get('name')}): it cannot be asked "
                         "for a class. Drop --label, or train a class-conditional one (examples/mnist-cgan.yaml).")
    if label is not None and not 0 <= label < classes:
        raise ValueError(f"--label {label} is out of range: {run.directory} knows classes 0..{classes - 1}.")
    options: dict[str, Any] = {}
    if method is not None or steps is not None or eta is not None:
        if not hasattr(model, "denoiser"):
            raise ValueError(f"--method/--steps/--eta choose a diffusion sampler; {run.model_spec.get('name')} has none. "
                             "Drop them.")
        if eta is not None and method != "ddim":
            raise ValueError("--eta sets the noise of DDIM steps: add --method ddim, or drop --eta.")
        options = {"method": method or "ddpm", "steps": steps, "eta": eta or 0.0}
    if guidance is not None:
        if getattr(model, "clusters", None) is None or not hasattr(model, "denoiser"):
            raise ValueError(f"--guidance weighs the guidance of a diffusion model trained with clusters; "
                             f"{run.model_spec.get('name')} in {run.directory} has none. Drop --guidance, or train with "
                             "model.args.clusters=K.")
        options["guidance"] = guidance
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            labels = torch.full((count,), label, dtype=torch.int64) if label is not None else None
            chunks.append(model.sample(count, labels=labels, generator=generator, **options).cpu())
    return torch.cat(chunks)


def sample_run(directory: str | os.PathLike, n: int = 64, *, label: int | None = None, seed: int = 0,
               method: str | None = None, steps: int | None = None, eta: float | None = None,
               guidance: float | None = None, out: str | os.PathLike | None = None,
               score: bool = False, classifier: str | os.PathLike | None = None,
               device: str = "cpu") -> dict[str, Any]:
    """Draw ``n`` images from the run ``directory`` and write them as a grid PNG (default
    ``RUN/samples.png``); with ``score``, measure them with the ``classifier`` run (default:
    the run ``classifier`` beside ``RUN``) and write ``RUN/samples.json``. Returns
    ``{"grid": path, **scores}``."""
    run = _generative_run(load_run(directory, device=device))
    judge = _classifier_run(run, classifier, device) if score else None  # refused before the slow part,
    reference = _reference_images(judge) if judge is not None else None  # as is a missing data file
    images = draw_samples(run, n, label=label, seed=seed, method=method, steps=steps, eta=eta, guidance=guidance)
    grid = Path(out) if out is not None else run.directory / "samples.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(images[:GRID_MAX].numpy(), grid, columns=min(16, max(8, int(len(images[:GRID_MAX]) ** 0.5))))
    result: dict[str, Any] = {"grid": str(grid)}
    if judge is not None:
        scores = score_samples(images, judge, label=label, reference=reference)
        scores.update({"run": str(run.directory), "classifier": str(judge.directory), "seed": seed})
        if hasattr(run.model, "denoiser"):
            timesteps = run.model.config.timesteps
            scores["method"] = method or "ddpm"
            scores["steps"] = timesteps if scores["method"] == "ddpm" else (steps or min(50, timesteps))
            if scores["method"] == "ddim":
                scores["eta"] = eta or 0.0
            if getattr(run.model, "clusters", None) is not None:
                scores["guidance"] = run.model.config.guidance if guidance is None else guidance
        atomic_write(run.directory / "samples.json", lambda tmp: tmp.write_text(json.dumps(scores, indent=2)))
        result.update(scores)
    return result


def _classifier_run(run: Run, classifier: str | os.PathLike | None, device: str) -> Run:
    path = Path(classifier) if classifier is not None else run.directory.parent / "classifier"
    if not (path / "model.json").is_file():
        raise ValueError(f"No classifier run at {path} to score the samples with. Train one on the same data "
                         f"(deepnet train -c examples/mnist-cnn.yaml --out {path}) or pass --classifier RUN.")
    judge = load_run(path, device=device)
    spec = judge.model_spec
    if spec.get("task", "classification") != "classification":
        raise ValueError(f"--classifier {path} holds a {spec.get('task')} model; scoring needs a classifier run.")
    shape = tuple(run.model_spec.get("input_shape", ()))
    if tuple(spec.get("input_shape", ())) != shape:
        raise ValueError(f"The classifier {path} reads inputs of shape {tuple(spec.get('input_shape', ()))}, but the "
                         f"samples of {run.directory} have shape {shape}. Pass a classifier trained on the same data.")
    return judge


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"The classifier {type(model).__name__} has no linear layer whose input could serve as "
                         "penultimate features for the Fréchet distance.")
    return linears[-1]


def _classify(judge: Run, pixels: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities ``(N, K)`` and penultimate features ``(N, F)`` of images in [0, 1]."""
    model = judge.model.eval()
    prep = judge.model_spec.get("preprocessing", {})
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    hook = _last_linear(model).register_forward_pre_hook(lambda module, args: captured.append(args[0].flatten(1).cpu()))
    probabilities = []
    try:
        with torch.no_grad():
            for start in range(0, len(pixels), batch_size):
                x = pixels[start:start + batch_size].float()
                if prep.get("kind") == "normalize":
                    shape = (1, -1, 1, 1)
                    x = (x - torch.tensor(prep["mean"]).view(shape)) / torch.tensor(prep["std"]).view(shape)
                logits = model(x.to(device)).float().cpu()
                probabilities.append(torch.softmax(logits / judge.temperature, dim=1))
    finally:
        hook.remove()
    return torch.cat(probabilities), torch.cat(captured).double()


def _reference_images(judge: Run) -> torch.Tensor:
    """The classifier's test images ``(N, C, H, W)`` in [0, 1]: the Fréchet distance's reference."""
    data = load_dataset(judge.model_spec["dataset"], data_dir=judge.config.data.data_dir)
    return torch.from_numpy(as_raw(data.test.x.numpy(), data.preprocessing)).clamp(0, 1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``a`` and of ``b``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr((S_a S_b)^(1/2)) = tr((R S_b R)^(1/2)) with R = S_a^(1/2): a symmetric problem, solved by
    # eigenvalues, stable where the features' covariance is singular (dead ReLU units, N < F).
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(middle.clip(min=0)).sum())


def score_samples(images: torch.Tensor, judge: Run, *, label: int | None = None,
                  reference: torch.Tensor | None = None) -> dict[str, Any]:
    """Scores of images ``(N, C, H, W)`` in [0, 1] by the classifier run ``judge``; the Fréchet
    distance is to ``reference`` images in [0, 1] (default: the classifier's test split)."""
    if reference is None:
        reference = _reference_images(judge)
    probabilities, features = _classify(judge, images)
    _, reference_features = _classify(judge, reference)
    confidence, predicted = probabilities.max(1)
    names = judge.model_spec.get("class_names") or [str(k) for k in range(probabilities.shape[1])]
    counts = torch.bincount(predicted, minlength=len(names))
    scores: dict[str, Any] = {
        "n": len(images),
        "confident_fraction": float((confidence >= CONFIDENT).float().mean()),
        "mean_confidence": float(confidence.mean()),
        "class_histogram": {name: float(count) / len(images) for name, count in zip(names, counts.tolist())},
        "frechet_distance": frechet_distance(features.numpy(), reference_features.numpy()),
        "frechet_reference": f"{len(reference)} test images",
    }
    if label is not None:
        scores["label"] = label
        scores["label_fraction"] = float((predicted == label).float().mean())
    return scores


def encode_run(directory: str | os.PathLike, data: str, out: str | os.PathLike, *, split: str = "test",
               data_dir: str | None = None, batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """The codes ``(N, code_dim)`` of an autoencoder (or a VAE's posterior means) for one split
    of the dataset ``data``, written to ``out`` as ``.npy``."""
    run = load_run(directory, device=device)
    if not hasattr(run.model, "encode"):
        raise ValueError(f"{run.directory} holds a {run.model_spec.get('name')} model, which has no encoder; "
                         "`deepnet encode` reads autoencoder and VAE runs (examples/mnist-autoencoder.yaml).")
    if split not in ("train", "val", "test"):
        raise ValueError(f"--split must be train, val or test; received {split!r}.")
    dataset = load_dataset(data, data_dir=data_dir)
    expected = tuple(run.model_spec.get("input_shape", ()))
    if tuple(dataset.input_shape) != expected:
        raise ValueError(f"{run.directory} encodes inputs of shape {expected}, but {data} holds {tuple(dataset.input_shape)}. "
                         "Pass the data the autoencoder was trained on.")
    # From the data's own normalisation to pixels, then to the one the model was trained with.
    pixels = torch.from_numpy(as_raw(getattr(dataset, split).x.numpy(), dataset.preprocessing))
    model = run.model
    model_device = next(model.parameters()).device
    with torch.no_grad():
        codes = torch.cat([model.encode(model.pixels.from_pixels(pixels[i:i + batch_size].to(model_device))).cpu()
                           for i in range(0, len(pixels), batch_size)])
    array = codes.numpy().astype(np.float32)
    path = Path(out)
    if path.suffix != ".npy":
        raise ValueError(f"--out {path} should end in .npy (NumPy's format, read with numpy.load).")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return array
