"""From a config to a trained run directory: data → model → fit. The CLI's `train` calls this."""

from __future__ import annotations

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

__all__ = ["build_model", "default_run_dir", "load_experiment_data", "resume_experiment", "run_experiment"]


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
    model = create_model(name, **args)
    model.deepnet_spec = {"name": name, "args": args}
    return initialize(model, config.model.init)


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
