"""The audit: label issues, duplicates, leakage, class counts and outliers of one dataset."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepnet.audit._neighbours import find_pairs, project
from deepnet.config import ExperimentConfig, load_config, parse_config
from deepnet.data import AugmentConfig, Dataset, Split, load_dataset
from deepnet.train.experiment import build_model
from deepnet.train.loop import fit, seed_everything
from deepnet.train.run import RunError

__all__ = ["AUDIT_KEYS", "audit", "out_of_fold_probabilities"]

AUDIT_KEYS = ("label_issues", "duplicates", "leakage", "class_counts", "outliers")

# The models the audit trains when given neither --model nor -c: small, quick, and accurate
# enough that confident learning separates wrong labels from hard examples.
DEFAULT_MODELS = {
    "image": {"name": "convnet", "args": {"widths": [16, 32], "convs_per_stage": 1, "dropout": 0.1,
                                          "global_pool": False}},
    "vector": {"name": "mlp", "args": {"depth": 2, "width": 256, "dropout": 0.1}},
    "tokens": {"name": "lstm-classifier", "args": {"embed_dim": 64, "hidden_size": 64}},
}
DEFAULT_TRAIN = {"epochs": 4, "batch_size": 128, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0001,
                 "schedule": "cosine"}


def audit_config(data: str, model: str | os.PathLike | None, config: str | os.PathLike | None,
                 overrides: list[str]) -> ExperimentConfig:
    """The recipe of the cross-validated models: a run's config.yaml (``model``), a config file
    (``config``) or the defaults, with the data set to ``data``."""
    if model is not None and config is not None:
        raise ValueError("Give --model RUN or -c CONFIG, not both: each names the recipe of the audit's models.")
    if model is not None:
        saved = Path(model) / "config.yaml"
        if not Path(model).is_dir():
            raise RunError(f"Run directory {model} not found. Train one first, or drop --model to use the default models.")
        if not saved.is_file():
            raise RunError(f"{model} has no config.yaml; the audit trains that run's recipe on the data's folds.")
        config = saved
    overrides = [f"data.name={data}", *overrides]
    if config is not None:
        return load_config(config, overrides)
    return load_config(None, overrides)


def audit(data: str, *, model: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, folds: int = 4, overrides: list[str] | None = None,
          near_threshold: float = 0.05, top: int = 50, quiet: bool = True) -> dict[str, Any]:
    """Audit dataset ``data`` (a name, a .npz/.csv file or an image folder) and write
    ``OUT/audit.json`` with the findings and ``OUT/*.png`` grids of the top ones.

    Label issues: confident learning (Northcutt et al. 2021, through cleanlab) on out-of-fold
    probabilities from ``folds`` models trained on the training split (the recipe of run
    ``model``, of config ``config``, or a small default per input kind); val and test labels are
    checked with the average of the fold models. Duplicates, leakage: pairs of examples within
    ``near_threshold`` (RMS difference per standardised feature; 0 = exact copies) inside a split
    and between train and test. Outliers: the ``top`` examples farthest from their 5th nearest
    neighbour in their split.
    """
    if folds < 2:
        raise ValueError(f"Received an invalid value for `folds`: cross-validation needs at least 2. Received: folds={folds}.")
    started = time.perf_counter()
    recipe = audit_config(data, model, config, list(overrides or []))
    explicit = model is not None or config is not None
    dataset = _load(recipe)
    if dataset.task != "classification":
        raise ValueError(f"{data} is a {dataset.task} dataset; the audit checks classification data (labels 0..K-1).")
    if not explicit:
        # The defaults fill only what the user's overrides leave open.
        user = {k.split("=", 1)[0] for k in (overrides or []) if "=" in k}
        model_defaults = {} if any(k.startswith("model.") for k in user) else DEFAULT_MODELS[dataset.input_kind]
        train = {k: v for k, v in DEFAULT_TRAIN.items() if f"train.{k}" not in user}
        recipe = parse_config({**recipe.model_dump(), "model": {**recipe.model.model_dump(), **model_defaults},
                               "train": {**recipe.train.model_dump(), **train}}, "audit defaults")
    out_dir = Path(out) if out is not None else Path("audits") / Path(str(data)).stem
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    splits = {name: split for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test))
              if len(split)}
    names = dataset.class_names

    tick = time.perf_counter()
    probabilities = out_of_fold_probabilities(dataset, recipe, folds, quiet=quiet)
    seconds["cross_validation"] = time.perf_counter() - tick
    tick = time.perf_counter()
    label_issues = _label_issues(splits, probabilities, names)
    seconds["label_issues"] = time.perf_counter() - tick

    tick = time.perf_counter()
    mean, components = project(dataset.train.x, seed=recipe.train.seed)
    duplicates, outliers = [], []
    for split_name, split in splits.items():
        pairs, neighbours = find_pairs(split.x, split.x, near_threshold, same=True, mean=mean, components=components)
        duplicates += [{"split": split_name, "index": i, "duplicate_of": j, "distance": d, "exact": d == 0.0}
                       for i, j, d in pairs]
        score = neighbours.distance[:, -1]  # distance to the 5th nearest neighbour
        for i in score.argsort(descending=True)[:top].tolist():
            outliers.append({"split": split_name, "index": i, "score": float(score[i])})
    outliers.sort(key=lambda row: -row["score"])
    outliers = outliers[:top]
    leakage = []
    for split_name in ("val", "test"):
        if split_name in splits:
            pairs, _ = find_pairs(splits[split_name].x, dataset.train.x, near_threshold, k=3, mean=mean,
                                  components=components)
            leakage += [{"train_index": j, f"{split_name}_index": i, "distance": d} for i, j, d in pairs]
    leakage.sort(key=lambda row: row["distance"])
    duplicates.sort(key=lambda row: row["distance"])
    seconds["neighbours"] = time.perf_counter() - tick

    counts = {name: {names[c]: int(n) for c, n in enumerate(torch.bincount(split.y, minlength=len(names)).tolist())}
              for name, split in splits.items()}
    train_counts = [n for n in counts["train"].values()]
    seconds["total"] = time.perf_counter() - started
    result = {
        "data": str(data),
        "splits": {name: len(split) for name, split in splits.items()},
        "model": {"name": recipe.model.name, "args": recipe.model.args, "epochs": recipe.train.epochs, "folds": folds,
                  "source": str(model) if model else (str(config) if config else "audit default")},
        "out_of_fold_accuracy": float((probabilities["train"].argmax(1) == dataset.train.y).double().mean()),
        "label_issues": label_issues,
        "duplicates": duplicates,
        "leakage": leakage,
        "class_counts": counts,
        "imbalance_ratio": max(train_counts) / max(min(train_counts), 1),
        "outliers": outliers,
        "near_threshold": near_threshold,
        "seconds": seconds,
    }
    (out_dir / "audit.json").write_text(json.dumps(result, indent=1))
    _draw(result, splits, dataset.preprocessing, out_dir)
    return result


def _load(recipe: ExperimentConfig) -> Dataset:
    """The dataset with no validation split carved out of the training split, so train indices are
    the file's (for named datasets and .npz files with x_train) — unless the file holds x_val."""
    options = recipe.data.loader_options()
    if recipe.data.name not in ("sst2", "tiny-shakespeare"):  # their own validation splits
        options["val_fraction"] = 0.0
    return load_dataset(recipe.data.name, data_dir=recipe.data.data_dir, seed=recipe.train.seed, **options)


def out_of_fold_probabilities(dataset: Dataset, recipe: ExperimentConfig, folds: int, *,
                              quiet: bool = True) -> dict[str, torch.Tensor]:
    """Class probabilities ``(N, K)`` per split: for train, each example's from the model that did
    not train on it (``folds`` seeded folds); for val and test, the mean of the fold models."""
    from deepnet.evaluate import class_logits

    train = dataset.train
    g = torch.Generator().manual_seed(recipe.train.seed)
    fold_of = torch.randperm(len(train), generator=g) % folds
    result = {"train": torch.zeros(len(train), dataset.num_classes)}
    others = {"val": dataset.val, "test": dataset.test}
    for name, split in others.items():
        result[name] = torch.zeros(len(split), dataset.num_classes)
    train_config = recipe.train.model_copy(update={"checkpoint_every": 0, "early_stopping": False})
    for fold in range(folds):
        held = fold_of == fold
        fit_split, held_split = Split(train.x[~held], train.y[~held]), Split(train.x[held], train.y[held])
        part = Dataset(dataset.name, fit_split, held_split, held_split, task=dataset.task,
                       input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                       class_names=dataset.class_names, preprocessing=dataset.preprocessing,
                       vocab_size=dataset.vocab_size, input_kind=dataset.input_kind)
        seed_everything(recipe.train.seed + fold)
        model = build_model(recipe, part)
        augment = AugmentConfig(**recipe.data.augment.model_dump())
        run = fit(model, part, train_config, augment=augment, quiet=quiet, experiment=recipe)
        run.model.eval()
        result["train"][held] = torch.softmax(class_logits(run.model, held_split.x), dim=-1)
        for name, split in others.items():
            if len(split):
                result[name] += torch.softmax(class_logits(run.model, split.x), dim=-1) / folds
    return result


def _label_issues(splits: dict[str, Split], probabilities: dict[str, torch.Tensor],
                  names: list[str]) -> list[dict[str, Any]]:
    """cleanlab's confident learning per split (prune by noise rate), ranked by how little
    probability the model gives the given label (score = 1 - p(given))."""
    from cleanlab.filter import find_label_issues

    issues = []
    for split_name, split in splits.items():
        labels = split.y.numpy()
        pred_probs = probabilities[split_name].double().numpy()
        pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)
        if len(np.unique(labels)) < 2 or len(labels) < 2 * len(names):
            continue
        flagged = find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate",
                                    return_indices_ranked_by="self_confidence", n_jobs=1)
        for i in flagged.tolist():
            issues.append({"split": split_name, "index": int(i), "given": names[int(labels[i])],
                           "suggested": names[int(pred_probs[i].argmax())], "score": float(1 - pred_probs[i, labels[i]])})
    issues.sort(key=lambda row: -row["score"])
    return issues


def _draw(result: dict[str, Any], splits: dict[str, Split], preprocessing: dict[str, Any], out: Path) -> None:
    """Image grids of the top findings (image data only): label issues, duplicate and leakage
    pairs side by side, outliers."""
    if splits["train"].x.dim() != 4:
        return
    from deepnet.train.plots import as_raw, plot_image_grid

    splits = {name: Split(torch.from_numpy(as_raw(split.x, preprocessing)), split.y) for name, split in splits.items()}

    issues = result["label_issues"][:32]
    if issues:
        plot_image_grid([splits[r["split"]].x[r["index"]].numpy() for r in issues],
                        [f"{r['split']} #{r['index']} {r['given']}→{r['suggested']}" for r in issues],
                        out / "label_issues.png", suptitle="likely label errors: split #index given→suggested")
    for key, first, second in (("duplicates", None, None), ("leakage", "train", "test")):
        rows = result[key][:16]
        if not rows:
            continue
        images, titles = [], []
        for r in rows:
            if key == "duplicates":
                a, b = splits[r["split"]].x[r["index"]], splits[r["split"]].x[r["duplicate_of"]]
                titles += [f"{r['split']} #{r['index']}", f"#{r['duplicate_of']} d={r['distance']:.3f}"]
            else:
                held = "test" if "test_index" in r else "val"
                a, b = splits["train"].x[r["train_index"]], splits[held].x[r[f"{held}_index"]]
                titles += [f"train #{r['train_index']}", f"{held} #{r[f'{held}_index']} d={r['distance']:.3f}"]
            images += [a.numpy(), b.numpy()]
        plot_image_grid(images, titles, out / f"{key}.png", suptitle=f"{key}: pairs side by side (d: RMS distance)")
    if result["outliers"]:
        rows = result["outliers"][:32]
        plot_image_grid([splits[r["split"]].x[r["index"]].numpy() for r in rows],
                        [f"{r['split']} #{r['index']} {r['score']:.2f}" for r in rows], out / "outliers.png",
                        suptitle="outliers: farthest from their 5th nearest neighbour")
