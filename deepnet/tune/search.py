"""Hyperparameter search with Optuna: a ``search:`` section in the config, TPE sampling,
median pruning on each epoch's validation figure, and a study kept in a database so that a
killed tuner continues where it stopped and several workers share one study.

::

    search:
      train.lr: {loguniform: [1.0e-4, 1.0e-1]}
      train.weight_decay: {uniform: [0.0, 0.1]}
      model.args.width: {int: [64, 1024], log: true}
      train.optimizer: {choice: [adamw, sgd]}

Each trial is an ordinary run directory under ``OUT/trials/``; the best is copied to
``OUT/best``, and ``OUT/tune.json`` sums the study up.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepnet.config import ConfigError, ExperimentConfig, apply_overrides, parse_config, read_config_file
from deepnet.train.callbacks import Callback

__all__ = ["SearchSpace", "load_search", "tune"]

HEARTBEAT_SECONDS = 5  # a trial whose worker stopped beating this long x2 is failed and retried


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = Field(None, alias="int")
    choice: list[Any] | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> _Param:
        kinds = [k for k in ("loguniform", "uniform", "integer", "choice") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of loguniform: [low, high], uniform: [low, high], int: [low, high], "
                             f"choice: [a, b, ...]; received {kinds or 'none'}")
        bounds = self.loguniform or self.uniform or self.integer
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"low must be below high; received {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform bounds must be positive; received {list(self.loguniform)}")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self

    def suggest(self, trial, name: str) -> Any:
        if self.loguniform is not None:
            return trial.suggest_float(name, *self.loguniform, log=True)
        if self.uniform is not None:
            return trial.suggest_float(name, *self.uniform, log=self.log, step=self.step)
        if self.integer is not None:
            return trial.suggest_int(name, *self.integer, log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(name, self.choice)

    def example(self) -> Any:
        bounds = self.loguniform or self.uniform or self.integer
        return bounds[0] if bounds is not None else self.choice[0]


class SearchSpace(BaseModel):
    """The base experiment and the parameters to search over (``section.key`` -> range)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    base: dict[str, Any]
    params: dict[str, _Param]

    def config_for(self, values: dict[str, Any], source: str = "search") -> ExperimentConfig:
        raw = json.loads(json.dumps(self.base))
        return parse_config(apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in values.items()]), source)


def load_search(path: str | os.PathLike, overrides: list[str] | None = None) -> SearchSpace:
    """Read a config with a ``search:`` section; every searched key is checked against the
    config schema up front (a typo fails now with the nearest key, not at trial 12)."""
    path = Path(path)
    raw = read_config_file(path)
    if not isinstance(raw.get("search"), dict) or not raw["search"]:
        raise ConfigError(f"{path} has no search: section. Add one, e.g. search: {{train.lr: {{loguniform: [1.0e-4, 0.1]}}}}.")
    search = raw.pop("search")
    apply_overrides(raw, list(overrides or []))
    params = {}
    for key, spec in search.items():
        try:
            params[str(key)] = _Param.model_validate(spec if isinstance(spec, dict) else {"choice": spec})
        except ValidationError as err:
            message = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{path}: search.{key}: {message}.") from None
    space = SearchSpace(base=raw, params=params)
    space.config_for({k: p.example() for k, p in params.items()}, f"{path} (search)")
    return space


def _storage(url: str):
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats and their retry callback are "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
            heartbeat_interval=HEARTBEAT_SECONDS, grace_period=2 * HEARTBEAT_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))


def _study(storage_url: str, name: str, direction: str, seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(storage_url)
    probe = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    if probe.direction.name.lower() != direction:
        raise ConfigError(f"Study {name!r} in {storage_url} maximises/minimises another metric ({probe.direction.name}). "
                          "Use another --study name or the same --metric.")
    # A fresh sampler seed per start: TPE's random start-up trials must not replay earlier ones.
    sampler = optuna.samplers.TPESampler(seed=seed + len(probe.trials))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


class _Report(Callback):
    """Reports each epoch's validation figure to Optuna and stops a trial the pruner gives up on."""

    def __init__(self, trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        import optuna

        value = logs[self.metric]
        self.trial.report(value if math.isfinite(value) else _worst(self.metric), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {self.metric} {value:.4g} below the median of earlier trials")


def _worst(metric: str) -> float:
    return 0.0 if "accuracy" in metric else 1e9


def _objective(space: SearchSpace, out: Path, metric: str, quiet: bool, threads: int | None):
    import optuna

    from deepnet.train.checkpoint import list_checkpoints, remove_checkpoints
    from deepnet.train.experiment import build_model, load_experiment_data
    from deepnet.train.loop import TrainingError, fit, seed_everything

    datasets: dict[str, Any] = {}

    def objective(trial) -> float:
        values = {name: param.suggest(trial, name) for name, param in space.params.items()}
        config = space.config_for(values, f"trial {trial.number}")
        if threads:
            config.train.threads = threads
        config.train.keep_checkpoints = 1
        # the retry callback marks a retry with the numbers of the trials it repeats
        history = trial.study.get_trials(deepcopy=False)[trial.number].system_attrs.get("retry_history") or [None]
        retried = history[-1]
        run_dir = out / "trials" / f"trial-{trial.number:04d}"
        resume = False
        if retried is not None:  # a trial whose worker was killed: continue its run from its checkpoint
            previous = out / "trials" / f"trial-{retried:04d}"
            if not (previous / "metrics.json").is_file():
                if list_checkpoints(previous / "checkpoints"):
                    previous.rename(run_dir)
                    resume = True
                else:  # killed before its first checkpoint: nothing to keep, the retry starts afresh
                    shutil.rmtree(previous, ignore_errors=True)
        key = config.data.model_dump_json()
        if key not in datasets:
            datasets[key] = load_experiment_data(config)
        data = datasets[key]
        seed_everything(config.train.seed, config.train.deterministic)
        model = build_model(config, data)
        from deepnet.data import AugmentConfig

        augment = AugmentConfig(**config.data.augment.model_dump())
        started = time.perf_counter()
        try:
            run = fit(model, data, config.train, augment=augment, callbacks=[_Report(trial, metric)], quiet=True,
                      out=run_dir, resume=resume, experiment=config)
        except optuna.TrialPruned:
            shutil.rmtree(run_dir, ignore_errors=True)
            if not quiet:
                print(f"trial {trial.number}: pruned  {values}", file=sys.stderr, flush=True)
            raise
        except TrainingError as err:  # a diverging setting is a bad trial, not a broken study
            shutil.rmtree(run_dir, ignore_errors=True)
            trial.set_user_attr("error", str(err))
            if not quiet:
                print(f"trial {trial.number}: failed ({str(err).splitlines()[0][:80]})  {values}", file=sys.stderr, flush=True)
            return _worst(metric)
        remove_checkpoints(run_dir / "checkpoints")
        value = run.history[-1][metric]
        trial.set_user_attr("run", str(run_dir))
        trial.set_user_attr("test_accuracy", run.metrics.get("test_accuracy"))
        trial.set_user_attr("seconds", time.perf_counter() - started)
        if not quiet:
            print(f"trial {trial.number}: {metric} {value:.4f}  {values}", file=sys.stderr, flush=True)
        return value if math.isfinite(value) else _worst(metric)

    return objective


def tune(config_path: str | os.PathLike, *, trials: int, storage: str | None = None, study: str | None = None,
         out: str | os.PathLike | None = None, workers: int = 1, metric: str | None = None,
         overrides: list[str] | None = None, quiet: bool = False, summarize: bool = True) -> dict[str, Any]:
    """Run (or continue) the study until it holds ``trials`` finished trials (complete or
    pruned); with ``workers`` > 1, that many processes share it. Returns ``tune.json``'s content."""
    import optuna

    space = load_search(config_path, overrides)
    study_name = study or Path(config_path).stem
    out_dir = Path(out) if out is not None else Path("runs") / f"tune-{study_name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    storage_url = storage or f"sqlite:///{out_dir / 'tune.db'}"
    classification = space.config_for({k: p.example() for k, p in space.params.items()}).train.loss == "cross_entropy"
    metric = metric or ("val_accuracy" if classification else "val_loss")
    if metric not in ("val_accuracy", "val_loss"):
        raise ConfigError(f"--metric must be val_accuracy or val_loss; received {metric!r}.")
    direction = "maximize" if metric == "val_accuracy" else "minimize"
    if trials < 1 or workers < 1:
        raise ConfigError(f"--trials and --workers must be at least 1; received {trials} and {workers}.")
    base_seed = space.config_for({k: p.example() for k, p in space.params.items()}).train.seed
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if workers > 1:
        from deepnet.train.devices import available_cpus

        _study(storage_url, study_name, direction, base_seed)  # the tables and the study, before workers race to make them

        threads = max(1, available_cpus() // workers)
        command = [sys.executable, "-m", "deepnet.cli", "tune", "-c", str(config_path), "--trials", str(trials),
                   "--storage", storage_url, "--study", study_name, "--out", str(out_dir), "--metric", metric,
                   "--workers", "1", "--no-summary", *(["--quiet"] if quiet else []), f"train.threads={threads}",
                   *(overrides or [])]
        processes = [subprocess.Popen(command) for _ in range(workers)]
        codes = [p.wait() for p in processes]
        if any(codes):
            raise RuntimeError(f"tune workers exited with codes {codes}; run the same command again to continue the study.")
    else:
        search = _study(storage_url, study_name, direction, base_seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(search)  # a killed tuner's trial: failed, and queued again
        done = len(search.get_trials(deepcopy=False, states=finished))
        if done < trials:
            running = (*finished, optuna.trial.TrialState.RUNNING)
            search.optimize(_objective(space, out_dir, metric, quiet, None), n_trials=None,
                            callbacks=[optuna.study.MaxTrialsCallback(trials, states=running)], gc_after_trial=True)
    return summarize_study(storage_url, study_name, out_dir, metric) if summarize else {}


def summarize_study(storage_url: str, study_name: str, out: Path, metric: str) -> dict[str, Any]:
    """``tune.json``, the best trial's run copied to ``out/best``, and the two plots."""
    import optuna

    search = optuna.load_study(study_name=study_name, storage=_storage(storage_url))
    states = optuna.trial.TrialState
    complete = [t for t in search.trials if t.state == states.COMPLETE]
    summary: dict[str, Any] = {
        "study": study_name, "storage": storage_url, "metric": metric, "direction": search.direction.name.lower(),
        "n_complete": len(complete), "n_pruned": sum(t.state == states.PRUNED for t in search.trials),
        "n_fail": sum(t.state == states.FAIL for t in search.trials),
        "best_value": None, "best_params": None, "best_trial": None, "best_run": None,
        "trials": [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                    "seconds": t.user_attrs.get("seconds")} for t in search.trials],
    }
    if complete:
        best = search.best_trial
        summary.update(best_value=best.value, best_params=best.params, best_trial=best.number)
        source = Path(best.user_attrs.get("run", ""))
        if source.is_dir():
            shutil.rmtree(out / "best", ignore_errors=True)
            shutil.copytree(source, out / "best")
            summary["best_run"] = str(out / "best")
        _plot_history(search, out / "optimization_history.png", metric)
        summary["importances"] = _plot_importances(search, out / "param_importances.png")
    (out / "tune.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _plot_history(search, path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in search.trials if t.value is not None]
    better = max if search.direction.name == "MAXIMIZE" else min
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([t.number for t in trials], [t.value for t in trials], "o", markersize=4, label="trial")
    best, running = [], None
    for t in trials:
        running = t.value if running is None else better(running, t.value)
        best.append(running)
    ax.step([t.number for t in trials], best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="Optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_importances(search, path: Path) -> dict[str, float] | None:
    import optuna

    # Too few distinct complete trials give no importances: Optuna warns and calls every
    # parameter equal, a plot that would mislead, so there is none.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*importances will be equal", category=UserWarning)
        try:
            importances = optuna.importance.get_param_importances(search)
        except (RuntimeError, ValueError, UserWarning):  # no complete trial, or none to tell apart
            return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.4 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (fANOVA)", title="Parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {k: float(v) for k, v in importances.items()}
