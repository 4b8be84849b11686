"""`deepnet tune`: Optuna over the config's search: section; a killed study continues, and
several workers share one."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from deepnet.cli import main
from deepnet.config import ConfigError
from deepnet.tune import load_search

ROOT = Path(__file__).resolve().parents[1]
SPEC = """data: {name: digits}
model: {name: mlp, args: {width: 16}}
train: {epochs: 2, batch_size: 128, threads: 1}
search:
  train.lr: {loguniform: [1.0e-3, 1.0e-1]}
  model.args.width: {int: [8, 32], log: true}
  train.optimizer: [adamw, sgd]
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def _trials(out: Path) -> list:
    return optuna.load_study(study_name="spec", storage=f"sqlite:///{out / 'tune.db'}").get_trials()


def _trial_states_read_only(db: Path) -> list[str]:
    """The trials' states while the tuner writes the database. Not through optuna: its storage
    creates the tables when they are missing, and doing that beside the tuner, which is
    creating them too, fails one of the two with "table studies already exists"."""
    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:  # no trials table yet, or the tuner holds the lock
        return []


def _last_trial_is_under_way(db: Path, params: int) -> bool:
    """Whether the newest trial has recorded a heartbeat and drawn all ``params`` of its point
    (read as _trial_states_read_only). Optuna fails a stale trial only by its heartbeat: one
    killed before its first would stay RUNNING. The heartbeat starts before the objective draws
    the point, and a trial killed between the two is retried with fresh draws of the values it
    had not drawn yet."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            (beats,), = connection.execute("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = "
                                           "(SELECT MAX(trial_id) FROM trials)")
            (drawn,), = connection.execute("SELECT COUNT(*) FROM trial_params WHERE trial_id = "
                                           "(SELECT MAX(trial_id) FROM trials)")
            return beats > 0 and drawn == params
    except sqlite3.OperationalError:
        return False


def test_study_summary_and_continuation(spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["tune", "-c", str(spec), "--trials", "3", "--out", str(out), "--quiet"]) == 0
    assert "3 complete, 0 pruned" in capsys.readouterr().out
    summary = json.loads((out / "tune.json").read_text())
    assert {"best_value", "best_params", "n_complete", "n_pruned"} <= summary.keys()
    assert summary["n_complete"] == 3 and set(summary["best_params"]) == {"train.lr", "model.args.width", "train.optimizer"}
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "metrics.json").is_file()
    assert (out / "optimization_history.png").is_file() and (out / "param_importances.png").is_file()
    first = {t.number: t.value for t in _trials(out)}
    assert main(["tune", "-c", str(spec), "--trials", "5", "--out", str(out), "--quiet"]) == 0  # the same study, 2 more
    after = {t.number: t.value for t in _trials(out)}
    assert sorted(after) == [0, 1, 2, 3, 4] and all(after[n] == v for n, v in first.items())


def test_a_killed_tuner_continues_where_it_stopped(spec, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "deepnet.cli", "tune", "-c", str(spec), "--trials", "6", "--out", str(out), "--quiet",
               "train.epochs=30"]  # trials of a few seconds, to be killed in the middle of one
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    params = len(load_search(spec).params)
    tuner = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and tuner.poll() is None:
        time.sleep(0.2)
        states = _trial_states_read_only(out / "tune.db")
        if states.count("COMPLETE") >= 2 and states[-1:] == ["RUNNING"] and _last_trial_is_under_way(out / "tune.db", params):
            break
    tuner.send_signal(signal.SIGKILL)
    tuner.wait()
    before = {t.number: (t.state, t.value, t.params) for t in _trials(out)}
    killed = max(before)
    assert before[killed][0] == optuna.trial.TrialState.RUNNING
    time.sleep(11)  # the killed trial's heartbeat goes stale
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = {t.number: (t.state, t.value, t.params) for t in _trials(out)}
    for number, (state, value, params) in before.items():  # no finished trial is redone or changed
        if state == optuna.trial.TrialState.COMPLETE:
            assert after[number] == (state, value, params)
    assert after[killed][0] == optuna.trial.TrialState.FAIL  # the killed one is failed...
    assert any(n > killed and t[2] == before[killed][2] for n, t in after.items())  # ...and retried, numbers going on
    finished = [n for n, t in after.items() if t[0] in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 6


def test_a_trial_killed_before_its_first_checkpoint_is_retried_afresh(spec, tmp_path):
    """The retry of a killed trial resumes its run only from a checkpoint; a trial killed before
    writing one (an empty checkpoints/ folder) leaves nothing to resume, and its retry starts over.
    The study is set up as the heartbeat's retry callback leaves it, without a kill's timing."""
    out = tmp_path / "out"
    assert main(["tune", "-c", str(spec), "--trials", "1", "--out", str(out), "--quiet"]) == 0
    # one trial tells no parameter from another: no importances, rather than a plot calling them equal
    assert json.loads((out / "tune.json").read_text())["importances"] is None
    assert not (out / "param_importances.png").exists()
    study = optuna.load_study(study_name="spec", storage=f"sqlite:///{out / 'tune.db'}")
    done = study.trials[0]
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=done.params,
                                              distributions=done.distributions))
    killed = out / "trials" / "trial-0001"
    (killed / "checkpoints").mkdir(parents=True)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, params=done.params,
                                              distributions=done.distributions,
                                              system_attrs={"failed_trial": 1, "retry_history": [1]}))
    assert main(["tune", "-c", str(spec), "--trials", "2", "--out", str(out), "--quiet"]) == 0
    retry = _trials(out)[2]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == done.params
    assert (out / "trials" / "trial-0002" / "metrics.json").is_file()
    assert not killed.exists()


def test_two_workers_share_one_study(spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["tune", "-c", str(spec), "--trials", "4", "--workers", "2", "--out", str(out), "--quiet"]) == 0
    trials = _trials(out)
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    summary = json.loads((out / "tune.json").read_text())
    assert summary["n_complete"] + summary["n_pruned"] == 4


def test_search_section_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("train: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="has no search: section"):
        load_search(path)
    path.write_text("search:\n  train.lr: {loguniform: [0.1, 0.01]}\n")
    with pytest.raises(ConfigError, match=r"search.train.lr: low must be below high; received \[0.1, 0.01\]"):
        load_search(path)
    path.write_text("search:\n  train.weight_decy: {loguniform: [0.001, 0.1]}\n")
    with pytest.raises(ConfigError, match="unknown key 'train.weight_decy'; did you mean train.weight_decay"):
        load_search(path)
    path.write_text("search:\n  train.lr: {between: [0.001, 0.1]}\n")
    with pytest.raises(ConfigError, match="search.train.lr: "):
        load_search(path)
