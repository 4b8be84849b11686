"""Checkpoints and exact resume: kills at any instant, corrupt files, NaN losses, signals."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import deepnet as dn
from deepnet.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from tests.checkpoint_cases import EPOCHS, OPTIONS, STEPS_PER_EPOCH, make_data, make_model

ROOT = Path(__file__).resolve().parents[1]
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH


def _child(out: Path, die_at: int = 0, how: str = "none") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests._train_child", str(out), str(die_at), how],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def _assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], context: str = "") -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs {context}"


def _resume(out: Path, **overrides) -> dn.Run:
    data = make_data()
    return dn.fit(make_model(data), data, out=out, resume=True, **{**OPTIONS, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights of the run trained start to end in a child process."""
    out = tmp_path_factory.mktemp("full") / "run"
    result = _child(out)
    assert result.returncode == 0, result.stderr
    return _weights(out)


# -- kills --------------------------------------------------------------------------------

def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, uninterrupted):
    # A step inside an epoch (not its last) that is not itself a checkpoint step: the resumed
    # run must redo the steps since the last mid-epoch checkpoint.
    every = OPTIONS["checkpoint_steps"]
    candidates = [s for s in range(1, TOTAL_STEPS) if s % STEPS_PER_EPOCH and s % every
                  and (s - s % every) % STEPS_PER_EPOCH and s - s % every > s - s % STEPS_PER_EPOCH]
    die_at = random.choice(candidates)
    out = tmp_path / "run"
    result = _child(out, die_at, "sigkill")
    assert result.returncode == -9, f"SIGKILL at step {die_at}: {result.stderr}"
    assert not (out / "model.safetensors").exists()
    newest = json.loads(list_checkpoints(out / "checkpoints")[0].read_text())
    assert 0 < newest["batch"] < STEPS_PER_EPOCH, newest["batch"]  # a mid-epoch checkpoint
    assert newest["step"] == die_at - die_at % OPTIONS["checkpoint_steps"]
    _resume(out)
    _assert_bit_identical(_weights(out), uninterrupted, f"after a SIGKILL at step {die_at}")


@pytest.mark.parametrize("which", ["tensors", "json"])
def test_sigkill_while_a_checkpoint_is_written(tmp_path, uninterrupted, which):
    out = tmp_path / "run"
    result = _child(out, 15, f"sigkill-in-{which}")  # the third mid-epoch checkpoint
    assert result.returncode == -9, result.stderr
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert any(name.endswith(".tmp") for name in names), names  # it died mid-write
    # The previous checkpoint is intact and is the newest one listed.
    newest = list_checkpoints(out / "checkpoints")[0]
    assert newest.name == "step-000000012.json"
    read_checkpoint(newest)  # size and SHA-256 check out
    _resume(out)
    _assert_bit_identical(_weights(out), uninterrupted)
    assert not any(p.name.endswith(".tmp") for p in (out / "checkpoints").iterdir())


def test_sigterm_checkpoints_exits_143_and_resumes_bit_identical(tmp_path, uninterrupted):
    out = tmp_path / "run"
    result = _child(out, 17, "sigterm")
    assert result.returncode == 143, result.stderr
    assert "SIGTERM: training stopped after step 17; checkpoint step-000000017 written" in result.stderr
    assert f"deepnet train --resume {out}" in result.stderr
    assert list_checkpoints(out / "checkpoints")[0].name == "step-000000017.json"
    _resume(out)
    _assert_bit_identical(_weights(out), uninterrupted)


# -- corrupt checkpoints ------------------------------------------------------------------

def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, uninterrupted, capfd):
    out = tmp_path / "run"
    assert _child(out, 20, "sigkill").returncode == -9  # killed before step 20's checkpoint: 15 and 12 remain
    newest, previous = list_checkpoints(out / "checkpoints")[:2]
    tensors = newest.with_suffix(".safetensors")
    tensors.write_bytes(tensors.read_bytes()[:100])
    run = _resume(out)
    err = capfd.readouterr().err
    assert f"warning: checkpoint {newest.stem} skipped: {tensors.name} is truncated" in err
    assert run.history[-1]["epoch"] == EPOCHS
    _assert_bit_identical(_weights(out), uninterrupted)


def test_corrupt_bytes_are_caught_by_the_hash(tmp_path):
    write_checkpoint(tmp_path, 1, {"w": torch.ones(4)}, {"epoch": 0}, keep=3)
    path = tmp_path / "step-000000001.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(tmp_path / "step-000000001.json")


def test_no_good_checkpoint_is_a_clear_error(tmp_path):
    write_checkpoint(tmp_path, 1, {"w": torch.ones(4)}, {"epoch": 0}, keep=3)
    (tmp_path / "step-000000001.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"No good checkpoint in .*step-000000001.safetensors is missing.*start the run again"):
        latest_checkpoint(tmp_path, report=lambda line: None)
    with pytest.raises(CheckpointError, match="No checkpoint in"):
        latest_checkpoint(tmp_path / "nothing")


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in range(1, 6):
        write_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {"epoch": 0}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000005.json", "step-000000004.json"]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["step-000000004.safetensors", "step-000000005.safetensors"]


def test_checkpoints_every_n_steps_and_at_epoch_ends(tmp_path):
    data = make_data()
    dn.fit(make_model(data), data, out=tmp_path / "r", **{**OPTIONS, "keep_checkpoints": 100})
    steps = sorted(int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path / "r" / "checkpoints"))
    assert steps == [5, 10, 12, 15, 20, 24, 25, 30, 35, 36]


def test_resume_refuses_a_changed_config_and_changed_data(tmp_path):
    data = make_data()
    options = {**OPTIONS, "epochs": 2}
    dn.fit(make_model(data), data, out=tmp_path / "r", **options)
    with pytest.raises(dn.RunError, match=r"config changed since the checkpoint \(train.lr: 0.003 -> 0.01\)"):
        dn.fit(make_model(data), data, out=tmp_path / "r", resume=True, **{**options, "lr": 0.01})
    other = make_data()
    other.train.x[0, 0] += 1
    with pytest.raises(dn.RunError, match="the training data changed since the checkpoint"):
        dn.fit(make_model(other), other, out=tmp_path / "r", resume=True, **options)
    # What only changes speed or length may differ.
    run = dn.fit(make_model(data), data, out=tmp_path / "r", resume=True, **{**options, "epochs": 3, "threads": 2})
    assert len(run.history) == 3


# -- non-finite losses --------------------------------------------------------------------

class PoisonAt(dn.Callback):
    """Makes the model's output NaN during the optimizer steps in ``steps`` (1-based);
    ``once`` poisons each step only the first time it runs (a rolled-back run redoes it)."""

    def __init__(self, steps, once: bool = True) -> None:
        self.steps, self.once, self.done = set(steps), once, set()

    def on_train_begin(self, logs):
        trainer = logs["trainer"]

        def hook(module, inputs, output):
            step = trainer.step + 1
            if step in self.steps and not (self.once and step in self.done):
                self.done.add(step)
                return output * float("nan")
            return output

        trainer.model.register_forward_hook(hook)


def _fit_poisoned(tmp_path, poison: PoisonAt, **overrides) -> dn.Run:
    data = make_data()
    options = {**OPTIONS, "augment": None, **overrides}
    return dn.fit(make_model(data), data, out=tmp_path / "r", callbacks=[poison], **options)


def test_on_nan_stop_names_the_step_the_cause_and_the_checkpoint(tmp_path):
    with pytest.raises(dn.TrainingError, match=r"loss became nan at step 17 \(epoch 2\)\. Likely cause: the updates "
                                                r"diverged.*The last good checkpoint is .*step-000000015\.json"):
        _fit_poisoned(tmp_path, PoisonAt([17]))


def test_on_nan_skip_batch_skips_the_update(tmp_path):
    run = _fit_poisoned(tmp_path, PoisonAt([7, 8]), on_nan="skip_batch")
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert all(row["train_loss"] == row["train_loss"] for row in run.history)  # NaN batches left out of the mean
    assert run.history[-1]["step"] == TOTAL_STEPS


def test_on_nan_skip_batch_gives_up(tmp_path):
    with pytest.raises(dn.TrainingError, match="non-finite for 4 batches in a row"):
        _fit_poisoned(tmp_path, PoisonAt(range(7, 40)), on_nan="skip_batch", nan_retries=3)


def test_on_nan_reduce_lr_restores_and_halves(tmp_path):
    clean = _fit_poisoned(tmp_path / "clean", PoisonAt([]), on_nan="reduce_lr")
    run = _fit_poisoned(tmp_path, PoisonAt([17]), on_nan="reduce_lr")
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert run.history[-1]["step"] == TOTAL_STEPS
    assert run.history[0]["train_loss"] == clean.history[0]["train_loss"]  # epoch 1 was before the rollback
    assert run.history[-1]["lr"] == pytest.approx(0.5 * clean.history[-1]["lr"])


def test_on_nan_reduce_lr_gives_up(tmp_path):
    with pytest.raises(dn.TrainingError, match="after the learning rate was halved 2 times"):
        _fit_poisoned(tmp_path, PoisonAt([17], once=False), on_nan="reduce_lr", nan_retries=2)


# -- the command line ---------------------------------------------------------------------

def test_cli_sigterm_exits_143_with_the_resume_line_then_resumes(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "deepnet.cli", "train", "--data", "digits", "--model", "mlp", "--epochs", "20",
               "--out", str(out), "--quiet", "train.threads=1", "train.checkpoint_steps=5", "train.batch_size=32"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(out / "checkpoints") and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: SIGTERM: training stopped after step ") and line.endswith(
        f"written; continue with `deepnet train --resume {out}`")
    resumed = subprocess.run([sys.executable, "-m", "deepnet.cli", "train", "--resume", str(out), "--quiet",
                              "--lr", "0.1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2 and "--lr cannot change a resumed run" in resumed.stderr
    resumed = subprocess.run([sys.executable, "-m", "deepnet.cli", "train", "--resume", str(out), "--quiet",
                              "--epochs", "21"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 21  # --epochs may lengthen it


def test_cli_resume_of_a_changed_config_or_data_is_one_line(tmp_path, capsys):
    from deepnet.cli import main

    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(200, 4)).astype(np.float32), y=rng.integers(0, 2, 200))
    out = tmp_path / "r"
    assert main(["train", "--data", str(data), "--model", "mlp", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    config = out / "config.yaml"
    original = config.read_text()
    config.write_text(original.replace("lr: 0.003", "lr: 0.1"))
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: Cannot resume {out}: its config changed since the checkpoint (train.lr: 0.003 -> 0.1). "
                   "Put the old values back, or start a new run with another --out.")
    config.write_text(original)
    np.savez(data, x=rng.normal(size=(200, 4)).astype(np.float32), y=rng.integers(0, 2, 200))
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: Cannot resume {out}: the training data changed since the checkpoint")
    assert len(err.splitlines()) == 1


def test_cli_maps_an_interruption_to_its_exit_code(monkeypatch, tmp_path, capsys):
    from deepnet.cli import main
    from deepnet.train import experiment

    def interrupted(*args, **kwargs):
        raise dn.TrainingInterrupted(signal.SIGINT, 7, tmp_path / "r" / "checkpoints" / "step-000000007.json")

    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "r"), "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted: SIGINT: training stopped after step 7; checkpoint step-000000007 written; "
        f"continue with `deepnet train --resume {tmp_path / 'r'}`")


def test_a_fresh_run_never_overwrites_an_unfinished_one(tmp_path, capsys):
    from deepnet.cli import main

    out = tmp_path / "r"
    argv = ["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--out", str(out), "--quiet"]
    assert main([*argv, "train.checkpoint_steps=3"]) == 0  # keeps steps 20, 18, 15
    argv.append("train.checkpoint_steps=4")
    assert main(argv) == 0  # a finished run may be trained again in place
    # 10 steps an epoch: the second run keeps 20, 16, 12, and nothing of the first is left
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-000000020.json", "step-000000016.json",
                                                                       "step-000000012.json"]
    (out / "metrics.json").unlink()  # as if killed before the end
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {out} holds an unfinished run (newest checkpoint step-000000020). Continue it with "
        f"`deepnet train --resume {out}`, or pick another --out.")
