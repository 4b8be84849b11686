"""From learning curves to one verdict, its evidence and its remedies.

The verdicts are the textbook readings of a learning curve (Goodfellow, Bengio & Courville
2016, ch. 5.2 and 11; Bengio 2012, "Practical recommendations for gradient-based training"):

- ``unstable``: the loss is non-finite, diverges, stays at chance level, or jumps about —
  the learning rate is too high (or the gradients explode);
- ``overfitting``: the validation loss turned and rose while the training loss kept falling;
- ``still_improving``: the losses were still falling steeply when training stopped;
- ``underfitting``: training error stays high with train and validation close together —
  the model cannot fit even the data it sees;
- ``good_fit``: none of these;
- ``too_short``: too few epochs and steps to tell, said instead of guessed.

The thresholds are module constants, each with the reasoning behind it; the tests train
real networks into each state and check the verdict.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepnet.config import ExperimentConfig, load_config
from deepnet.train.run import RunError, read_history

__all__ = ["VERDICTS", "Diagnosis", "diagnose", "diagnose_history"]

VERDICTS = ("underfitting", "good_fit", "overfitting", "unstable", "still_improving", "too_short")

MIN_EPOCHS = 3  # a turn or a plateau needs at least three points on the epoch curve
MIN_STEP_ROWS = 10  # ...or this many rows of steps.csv to judge a short run from within its epochs
OVERFIT_RISE = 0.10  # validation loss ends >= 10% above its minimum: more than small-sample noise
STILL_FALLING = 0.02  # losses still falling >= 2% per epoch at the end: more epochs would pay...
STILL_FALLING_ABS = 0.005  # ...and by >= 0.5% of the starting loss (ln K) per epoch: not a wobble near zero
UNDERFIT_ACCURACY = 0.90  # training accuracy below this with no gap: the model cannot fit its data
NOISE_LIMIT = 0.1  # std of the step-to-step loss change / the first loss; stable runs stay under 0.02
DIVERGED = 1.5  # final training loss 1.5x its best: training went backwards
CHANCE_LOSS = 0.9  # training loss >= 90% of the chance-level loss ln(K): nothing learnt


@dataclass
class Diagnosis:
    verdict: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedies: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False, default=str)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _slope(values: list[float], x: list[float] | None = None) -> float | None:
    """Least-squares slope of log(values) against x: the relative change per unit of x."""
    pairs = [(xi, math.log(v)) for xi, v in zip(x or range(len(values)), values) if v and v > 0 and math.isfinite(v)]
    if len(pairs) < 2:
        return None
    xs, ys = np.array(pairs).T
    if np.ptp(xs) == 0:
        return None
    return float(np.polyfit(xs, ys, 1)[0])


def _noise(losses: list[float]) -> float | None:
    """How much the training loss jumps between consecutive rows of ``steps.csv`` in the
    second half of the run: a robust std of the changes after removing the trend (their
    median), relative to the loss at the start (so a run near zero loss is not called noisy
    for wobbling around 0.001)."""
    tail = [v for v in losses[len(losses) // 2 :] if math.isfinite(v)]
    if len(tail) < 5 or not losses or not math.isfinite(losses[0]) or losses[0] <= 0:
        return None
    steps = np.diff(tail)
    return float(1.4826 * np.median(np.abs(steps - np.median(steps))) / math.sqrt(2) / losses[0])


def diagnose_history(history: list[dict[str, float]], steps: list[dict[str, float]] | None = None,
                     config: ExperimentConfig | None = None, num_classes: int | None = None) -> Diagnosis:
    """The verdict on one run's epoch rows (``history.csv``) and step rows (``steps.csv``)."""
    steps = steps or []
    config = config or ExperimentConfig()
    train = config.train
    n = len(history)
    col = {key: [row.get(key, math.nan) for row in history] for key in
           ("train_loss", "val_loss", "train_accuracy", "val_accuracy")}
    has_val = any(math.isfinite(v) for v in col["val_loss"])
    has_accuracy = any(math.isfinite(v) for v in col["train_accuracy"])
    step_losses = [row["train_loss"] for row in steps]
    nonfinite = any(not math.isfinite(v) for v in col["train_loss"] + step_losses) or (
        has_val and any(not math.isfinite(v) for v in col["val_loss"]))

    early_stopped = bool(train.early_stopping and n < train.epochs and has_val)
    monitored = col["val_loss"] if has_val else col["train_loss"]
    finite_monitored = [v if math.isfinite(v) else math.inf for v in monitored]
    best = int(np.argmin(finite_monitored)) if n else 0
    judged = best if early_stopped else n - 1  # early stopping put the best epoch's weights back

    def at(key: str, index: int) -> float | None:
        return _finite(col[key][index]) if n else None

    k = max(MIN_EPOCHS, n // 3)
    epochs_axis = [row["epoch"] for row in history]
    chance_loss = math.log(num_classes) if num_classes and num_classes > 1 else None
    evidence: dict[str, Any] = {
        "epochs": n, "steps": int(history[-1]["step"]) if n else 0,
        "judged_epoch": judged + 1 if n else None, "early_stopped": early_stopped,
        "train_loss": at("train_loss", judged), "val_loss": at("val_loss", judged),
        "train_accuracy": at("train_accuracy", judged), "val_accuracy": at("val_accuracy", judged),
        "chance_accuracy": 1 / num_classes if num_classes else None, "chance_loss": chance_loss,
    }
    if n and has_val:
        evidence["loss_gap"] = _finite(col["val_loss"][judged] - col["train_loss"][judged])
    if n and has_accuracy and has_val:
        evidence["accuracy_gap"] = _finite(col["train_accuracy"][judged] - col["val_accuracy"][judged])
    best_val = finite_monitored[best] if n else math.inf
    rise = (finite_monitored[judged] / best_val - 1) if n and math.isfinite(best_val) and best_val > 0 else None
    evidence.update({
        "best_val_epoch": best + 1 if n and has_val else None,
        "best_val_loss": _finite(best_val) if has_val else None,
        "val_loss_rise": _finite(rise) if has_val else None,
        # relative change per epoch over the last third of the run (negative: still falling)
        "train_loss_trend": _slope(col["train_loss"][-k:], epochs_axis[-k:]) if n >= 2 else None,
        "val_loss_trend": _slope(col["val_loss"][-k:], epochs_axis[-k:]) if n >= 2 and has_val else None,
        # the same from steps.csv over the second half of training: what a short run is judged by
        "step_loss_trend": _slope(step_losses[len(steps) // 2 :],
                                  [row["epoch"] for row in steps][len(steps) // 2 :]) if len(steps) >= 10 else None,
        "loss_noise": _noise(step_losses),
        "train_loss_rises": sum(b > a * 1.1 for a, b in zip(col["train_loss"], col["train_loss"][1:])),
        "nonfinite_loss": nonfinite,
    })
    # a turn counts when the rise lasts: even the lowest of the last three epochs stays above
    sustained = n and min(finite_monitored[max(judged - 2, 0) : judged + 1]) >= best_val * (1 + OVERFIT_RISE)
    turn = best + 1 if has_val and rise is not None and sustained and best < n - 1 else None
    evidence["val_loss_turned_at_epoch"] = turn

    start_loss = chance_loss or (step_losses[0] if step_losses else (col["train_loss"][0] if n else None))
    evidence["start_loss"] = _finite(start_loss)
    verdict, summary = _verdict(evidence, n, len(steps), col, chance_loss, has_accuracy)
    return Diagnosis(verdict, summary, evidence, _remedies(verdict, config, evidence))


def _verdict(e: dict[str, Any], n: int, step_rows: int, col: dict[str, list[float]], chance_loss: float | None,
             has_accuracy: bool) -> tuple[str, str]:
    train_losses = [v for v in col["train_loss"] if math.isfinite(v)]
    if e["nonfinite_loss"]:
        return "unstable", "the loss became NaN or infinite: the updates blew up"
    if n and train_losses and len(train_losses) >= 2 and train_losses[-1] > DIVERGED * min(train_losses):
        return "unstable", (f"the training loss diverged: it ended at {train_losses[-1]:.3g}, "
                            f"{train_losses[-1] / min(train_losses):.1f}x its best {min(train_losses):.3g}")
    if n and chance_loss and e["train_loss"] is not None and e["train_loss"] >= CHANCE_LOSS * chance_loss:
        return "unstable", (f"the training loss {e['train_loss']:.3g} stayed at chance level (ln K = {chance_loss:.3g}): "
                            "nothing was learnt, which a too-high learning rate causes")
    if e["loss_noise"] is not None and e["loss_noise"] > NOISE_LIMIT:
        return "unstable", f"the training loss jumps about from step to step (noise {e['loss_noise']:.2f} > {NOISE_LIMIT})"
    if n < MIN_EPOCHS:
        trend = e["step_loss_trend"]
        if step_rows >= MIN_STEP_ROWS and trend is not None and trend <= -STILL_FALLING:
            return "still_improving", (f"after {n} epoch(s) the training loss was still falling "
                                       f"{-100 * trend:.0f}% per epoch when training stopped")
        return "too_short", (f"{n} epoch(s) and {step_rows} logged steps are too few to judge; "
                             f"train for at least {MIN_EPOCHS} epochs")
    if e["val_loss_turned_at_epoch"] and not e["early_stopped"]:
        return "overfitting", (f"the validation loss turned at epoch {e['val_loss_turned_at_epoch']} and ended "
                               f"{100 * e['val_loss_rise']:.0f}% above its minimum while the training loss kept falling")
    val_trend, train_trend = e["val_loss_trend"], e["train_loss_trend"]
    falling = val_trend if val_trend is not None else train_trend
    level = e["val_loss"] if val_trend is not None else e["train_loss"]
    steep = falling is not None and level is not None and (
        falling <= -STILL_FALLING and -falling * level >= STILL_FALLING_ABS * (e["start_loss"] or level))
    if steep and e["best_val_epoch"] in (None, n, n - 1):
        return "still_improving", (f"the {'validation' if val_trend is not None else 'training'} loss was still "
                                   f"falling {-100 * falling:.0f}% per epoch over the last epochs")
    if has_accuracy and e["train_accuracy"] is not None and e["train_accuracy"] < UNDERFIT_ACCURACY:
        gap = e.get("accuracy_gap")
        return "underfitting", (f"the model fits only {100 * e['train_accuracy']:.1f}% of its own training data"
                                + (f", with validation close behind (gap {100 * gap:.1f} points)" if gap is not None else ""))
    if e["early_stopped"] and e["val_loss_turned_at_epoch"]:
        return "good_fit", (f"early stopping caught the turn of the validation loss and restored epoch "
                            f"{e['judged_epoch']}")
    return "good_fit", "the losses have levelled off, the model fits its training data and validation agrees"


def _remedies(verdict: str, config: ExperimentConfig, e: dict[str, Any]) -> list[dict[str, str]]:
    """What the literature advises for ``verdict``, made concrete for this run's config."""
    t, args = config.train, config.model.args
    remedies: list[dict[str, str]] = []

    def add(remedy: str, try_: str = "", source: str = "") -> None:
        remedies.append({"remedy": remedy, "try": try_, "source": source})

    if verdict == "unstable":
        add("lower the learning rate (the first thing to try; 3-10x lower)", f"train.lr={t.lr / 10:.3g}  (or: deepnet lr-find)",
            "Bengio 2012; Smith 2017, cyclical learning rates / LR range test")
        if not t.grad_clip:
            add("clip the gradient norm", "train.grad_clip=1.0", "Pascanu, Mikolov & Bengio 2013")
        if not t.warmup_epochs and t.schedule != "onecycle":
            add("warm the learning rate up over the first epoch", "train.warmup_epochs=1", "Goyal et al. 2017")
        add("normalise activations and start from a scaled initialisation", "model.args.norm=batch, model.init=he_normal",
            "Ioffe & Szegedy 2015; He et al. 2015")
    elif verdict == "overfitting":
        if not t.early_stopping:
            add("stop early and keep the best epoch", f"train.early_stopping=true  (best was epoch {e['best_val_epoch']})",
                "Prechelt 1998")
        if t.weight_decay == 0:
            add("add weight decay (L2 regularisation)", "train.weight_decay=0.01 (AdamW) or 5e-4 (SGD)",
                "Krogh & Hertz 1992; Loshchilov & Hutter 2019")
        if not args.get("dropout"):
            add("add dropout", "model.args.dropout=0.3", "Srivastava et al. 2014")
        if not config.data.augment.shift and not config.data.augment.rotate:
            add("augment the training data", "data.augment.shift=0.1 data.augment.rotate=10", "Simard et al. 2003")
        add("get more training data (the cure when it is available)",
            f"compare data.max_train_samples at {_halves(config)} to see how much it helps", "")
        add("use a smaller model", "fewer layers or a smaller width", "")
    elif verdict == "still_improving":
        add("train for more epochs", f"deepnet train --resume RUN --epochs {2 * max(t.epochs, 1)}  (continues this run)",
            "")
        if t.schedule == "constant":
            add("decay the learning rate to the end of training", "train.schedule=cosine", "Loshchilov & Hutter 2017")
    elif verdict == "underfitting":
        add("use a bigger model: more layers or more width", _capacity_hint(args), "")
        add("train longer or with a higher learning rate if the loss still creeps down", f"train.epochs={2 * t.epochs}", "")
        if t.weight_decay > 0 or args.get("dropout"):
            add("regularise less", "train.weight_decay=0 model.args.dropout=0", "")
        add("give the model better features (e.g. a CNN for images instead of an MLP)", "", "LeCun et al. 1998")
    elif verdict == "too_short":
        add("train long enough to judge", f"train.epochs={max(MIN_EPOCHS, 10)}", "")
    else:
        add("nothing pressing; to go further, search the settings", "deepnet tune -c CONFIG --trials 20", "")
        add("more data or augmentation usually still helps", "data.augment.shift=0.1", "")
    return remedies


def _halves(config: ExperimentConfig) -> str:
    n = config.data.max_train_samples
    return f"{n // 2} and {n}" if n else "half and all of the training set"


def _capacity_hint(args: dict[str, Any]) -> str:
    if "width" in args:
        return f"model.args.width={2 * int(args['width'])}"
    if "widths" in args:
        return f"model.args.widths={[2 * int(w) for w in args['widths']]}"
    return "a wider or deeper variant of the model"


def diagnose(directory: str | os.PathLike, *, write: bool = True) -> Diagnosis:
    """Judge the run in ``directory`` from its history; write ``diagnosis.json`` and redraw
    ``plots/learning_curves.png`` with the verdict on it (``write=False``: only return it)."""
    out = Path(directory)
    if not (out / "history.csv").is_file():
        raise RunError(f"{out} has no history.csv to diagnose. Train a run there first: deepnet train ... --out {out}")
    history = read_history(out / "history.csv")
    steps = read_history(out / "steps.csv") if (out / "steps.csv").is_file() else []
    config = load_config(out / "config.yaml") if (out / "config.yaml").is_file() else ExperimentConfig()
    spec = json.loads((out / "model.json").read_text()) if (out / "model.json").is_file() else {}
    num_classes = spec.get("num_classes") if spec.get("task", "classification") == "classification" else None
    result = diagnose_history(history, steps, config, num_classes or None)
    if write:
        from deepnet.train.plots import plot_learning_curves
        from deepnet.train.run import atomic_write

        atomic_write(out / "diagnosis.json", lambda tmp: tmp.write_text(result.to_json()))
        (out / "plots").mkdir(exist_ok=True)
        plot_learning_curves(history, out / "plots" / "learning_curves.png", steps=steps,
                             verdict=f"{result.verdict}: {result.summary}",
                             mark_epoch=result.evidence.get("val_loss_turned_at_epoch"))
    return result
