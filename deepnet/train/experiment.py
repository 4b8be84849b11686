"""From a config to a trained run directory: data → model → fit. The CLI's `train` calls this."""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from deepnet.config import ExperimentConfig, load_config
from deepnet.data import AugmentConfig, Dataset, load_dataset
from deepnet.models import create_model, initialize, model_info
from deepnet.models._registry import supported_data_arguments
from deepnet.train.checkpoint import list_checkpoints
from deepnet.train.loop import fit, seed_everything
from deepnet.train.run import Run, RunError

__all__ = ["build_model", "default_run_dir", "finetune", "load_experiment_data", "resume_experiment", "run_experiment"]


def load_experiment_data(config: ExperimentConfig) -> Dataset:
    return load_dataset(config.data.name, data_dir=config.data.data_dir, seed=config.train.seed,
                        **config.data.loader_options())


def build_model(config: ExperimentConfig, data: Dataset) -> nn.Module:
    """The configured model, sized for the data: the data fills ``input_shape``,
    ``num_classes``, ``vocab_size``... unless the config sets them explicitly."""
    name = config.model.name
    info = model_info(name)
    args = {**supported_data_arguments(name, data.model_arguments()), **config.model.args}
    if info.input_kind in ("tokens", "lm", "seq2seq") and data.input_kind not in ("tokens", "lm"):
        raise ValueError(
            f"Model {name!r} reads token ids but dataset {data.name!r} holds {data.input_kind} inputs. "
            "Pick an image/vector model (e.g. mlp, lenet5) or a text dataset (sst2, tiny-shakespeare)."
        )
    if info.input_kind == "generative" and data.input_kind != "image":
        raise ValueError(
            f"Model {name!r} generates images but dataset {data.name!r} holds {data.input_kind} inputs. "
            "Train it on an image dataset (mnist, digits, an image folder)."
        )
    model = initialize(create_model(name, **args), config.model.init)
    model.deepnet_spec = {"name": name, "args": args}
    if config.model.parent:
        _start_from_parent(model, Path(config.model.parent), data)
        model.deepnet_spec["parent"] = config.model.parent
    return model


def _start_from_parent(model: nn.Module, parent: Path, data: Dataset) -> None:
    """Transfer learning: the parent run's weights, all but the head, which stays new."""
    from deepnet.train.transfer import load_parent_weights

    spec_path = parent / "model.json"
    if not spec_path.is_file():
        raise RunError(f"model.parent {parent} is not a finished run (no model.json). Train it first, or fix the path.")
    spec = json.loads(spec_path.read_text())
    expected = tuple(spec.get("input_shape") or ())
    if expected and expected != tuple(data.input_shape):
        hint = ""
        if len(expected) == 3 and len(data.input_shape) == 3:
            hint = (f" For an image folder set data.image_size=[{expected[1]}, {expected[2]}] and "
                    f"data.channels={expected[0]}.")
        raise ValueError(f"The parent run {parent} takes inputs of shape {expected}, but {data.name} holds "
                         f"{tuple(data.input_shape)}.{hint or ' Prepare the data to the parent model input shape.'}")
    load_parent_weights(model, parent)


def default_run_dir(config: ExperimentConfig) -> Path:
    return Path("runs") / f"{Path(config.data.name).stem}-{config.model.name}"


def run_experiment(config: ExperimentConfig, out: str | os.PathLike | None = None, *, quiet: bool = False) -> Run:
    """Train the experiment ``config`` and write its run directory (default ``runs/<data>-<model>``)."""
    data = load_experiment_data(config)
    seed_everything(config.train.seed, config.train.deterministic)  # the initial weights are seeded too
    model = build_model(config, data)
    augment = AugmentConfig(**config.data.augment.model_dump())
    out_dir = Path(out) if out is not None else default_run_dir(config)
    return fit(model, data, config.train, augment=augment, quiet=quiet, out=out_dir, experiment=config)


def finetune(parent: str | os.PathLike, data: str, mode: str = "fine-tune", out: str | os.PathLike | None = None, *,
             overrides: list[str] | None = None, quiet: bool = False) -> Run:
    """Transfer learning: train on ``data`` starting from the run ``parent``, with a new head.
    ``mode``: ``feature-extraction`` (backbone frozen, head trained) or ``fine-tune``
    (everything trained, the backbone at ``train.backbone_lr_ratio`` x lr; add
    ``train.freeze_backbone=true train.unfreeze_every=N`` for gradual unfreezing).
    The new run (default ``<parent>-<data>-<mode>`` beside the parent) records its parent."""
    from deepnet.train.transfer import finetune_config

    config = finetune_config(parent, data, mode, overrides)  # type: ignore[arg-type]
    parent = Path(parent)
    out_dir = Path(out) if out is not None else parent.parent / f"{parent.name}-{Path(data).stem}-{mode}"
    return run_experiment(config, out_dir, quiet=quiet)


def resume_experiment(directory: str | os.PathLike, *, quiet: bool = False, epochs: int | None = None,
                      overrides: list[str] | None = None) -> Run:
    """Continue an interrupted run from its newest good checkpoint; the result equals an
    uninterrupted run. ``overrides`` may change only what does not change a step's result
    (``train.device``, ``train.threads``, ``train.epochs``...); anything else is refused."""
    out = Path(directory)
    if not (out / "config.yaml").is_file() or not list_checkpoints(out / "checkpoints"):
        raise RunError(f"{out} has no config.yaml and checkpoint to resume from. Start it with `deepnet train --out {out}`.")
    config = load_config(out / "config.yaml", [*(overrides or []), *([f"train.epochs={epochs}"] if epochs else [])])
    data = load_experiment_data(config)
    model = build_model(config, data)
    augment = AugmentConfig(**config.data.augment.model_dump())
    return fit(model, data, config.train, augment=augment, quiet=quiet, out=out, resume=True, experiment=config)
