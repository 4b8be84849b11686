"""The typed experiment config: ``data``, ``model`` and ``train`` sections, YAML in and out.

Every field is validated by pydantic; an unknown key fails with the nearest valid key, and
``section.key=value`` overrides are applied before validation, so they are checked too.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AugmentSection",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
    "read_config_file",
    "save_config",
]


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentSection(_Section):
    shift: float = Field(0.0, ge=0, le=0.5, description="max translation, fraction of the side")
    rotate: float = Field(0.0, ge=0, le=180, description="max rotation in degrees")
    scale: float = Field(0.0, ge=0, lt=1, description="max relative zoom")
    noise: float = Field(0.0, ge=0, description="std of Gaussian noise")


class DataConfig(_Section):
    name: str = Field("digits", description="digits | mnist | sst2 | tiny-shakespeare | path/to/file.csv|.npz | an image folder")
    data_dir: str | None = None
    val_fraction: float | None = Field(None, ge=0, lt=1)
    label: str | None = Field(None, description="label column of a CSV")
    max_len: int | None = Field(None, ge=1, description="tokens per sentence (sst2)")
    block_size: int | None = Field(None, ge=2, description="characters per window (tiny-shakespeare)")
    min_count: int | None = Field(None, ge=1, description="train occurrences a word needs to get its own id; rarer words read as <unk> (sst2)")
    image_size: int | tuple[int, int] | None = Field(None, description="resize an image folder's images: side or [height, width]")
    channels: Literal[1, 3] | None = Field(None, description="image folder: 1 grey, 3 colour (default: grey when every image is)")
    classes: list[str | int] | None = Field(None, description="keep these classes (names or indices), relabelled 0..K-1")
    max_train_samples: int | None = Field(None, ge=1, description="train on a seeded random subset of this many examples")
    augment: AugmentSection = Field(default_factory=AugmentSection)

    def loader_options(self) -> dict[str, Any]:
        options = {"val_fraction": self.val_fraction, "label": self.label,
                   "max_len": self.max_len, "block_size": self.block_size, "min_count": self.min_count,
                   "image_size": self.image_size, "channels": self.channels,
                   "classes": self.classes, "max_train_samples": self.max_train_samples}
        return {k: v for k, v in options.items() if v is not None}


class ModelConfig(_Section):
    name: str = "mlp"
    args: dict[str, Any] = Field(default_factory=dict, description="constructor arguments")
    init: Literal["default", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal"] = "default"
    parent: str | None = Field(None, description="run directory whose weights start this model (transfer learning); the head is new")


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    loss: Literal["cross_entropy", "bce", "mse"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, ge=1, description="epochs between decays (step schedule)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step schedule)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr (cosine)")
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")
    early_stopping: bool = False
    patience: int = Field(5, ge=1)
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    device: str = Field("auto", description="auto (CUDA when present) | cpu | cuda | cuda:N | mps")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp16 adds a gradient scaler")
    channels_last: bool = Field(False, description="NHWC memory format for CNNs")
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    threads: int | None = Field(None, ge=1, description="CPU threads; default: the CPUs this process may use (affinity, cgroup quota)")
    aux_loss_weight: float = Field(1.0, ge=0, description="multiplier on a model's aux_loss (MoE load balancing; already weighted by the model)")
    checkpoint_every: int = Field(1, ge=0, description="epochs between epoch-end checkpoints; 0 = no checkpoints at all")
    checkpoint_steps: int = Field(500, ge=0, description="optimizer steps between mid-epoch checkpoints; 0 = epoch ends only")
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept on disk")
    on_nan: Literal["stop", "skip_batch", "reduce_lr"] = Field(
        "stop", description="on a non-finite loss: stop, skip the update, or restore the last good state and halve the lr")
    nan_retries: int = Field(10, ge=1, description="skip_batch: non-finite batches in a row; reduce_lr: halvings; then stop")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch")
    freeze_backbone: bool = Field(False, description="train only the head (feature extraction); the backbone's weights, norms and dropout stay fixed")
    backbone_lr_ratio: float = Field(1.0, gt=0, le=1, description="the backbone's learning rate as a fraction of the head's (fine-tuning)")
    unfreeze_every: int = Field(0, ge=0, description="with freeze_backbone: thaw one backbone block, from the top, every N epochs (0 = never)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> TrainConfig:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})"
            )
        return self


class ExperimentConfig(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def _section_for(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel]:
    model = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None) if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            break
    return model


def _explain(err: ValidationError, source: str, root: type[BaseModel] | None = None) -> ConfigError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "<top level>"
    if first["type"] == "extra_forbidden":
        valid = list(_section_for(loc, root or ExperimentConfig).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean {'.'.join(str(p) for p in loc[:-1]) + '.' if len(loc) > 1 else ''}{close[0]}?" if close else ""
        return ConfigError(
            f"{source}: unknown key {key!r}; {hint or 'valid keys here are ' + ', '.join(valid) + '.'}"
        )
    received = first.get("input")
    shown = "" if isinstance(received, dict) else f" (received {received!r})"
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{source}: invalid value for {key!r}: {message}{shown}.")


def parse_config(raw: dict[str, Any] | None, source: str = "config") -> ExperimentConfig:
    """Validate a plain dict (as read from YAML) into an :class:`ExperimentConfig`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with sections data/model/train, received {type(raw).__name__}.")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise _explain(err, source) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a raw config dict; values are parsed as YAML."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"Override {item!r} is not of the form section.key=value (e.g. train.lr=0.01).")
        dotted, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        node = raw
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Override {item!r}: {part!r} is a value, not a section.")
            node = child
        node[parts[-1]] = value
    return raw


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a YAML config file, before validation."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {p} not found. Check the path (examples/ has ready-made configs).")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p} is not valid YAML{where}: {getattr(err, 'problem', err)}. Fix the syntax.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping with sections data/model/train, received {type(raw).__name__}.")
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or start from the defaults), apply overrides, validate."""
    raw = read_config_file(path) if path is not None else {}
    apply_overrides(raw, overrides or [])
    return parse_config(raw, str(path) if path else "config")


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config, every default spelled out."""
    data = config.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
