"""Data-parallel training through torchrun: the same weights as one process, one line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from deepnet.cli import main
from deepnet.train.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _npz(path: Path, n: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 3
    y = rng.integers(0, 4, n)
    np.savez(path, x=(centers[y] + rng.normal(size=(n, 16))).astype(np.float32), y=y)
    return path


def _train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    # 2000 rows: 1400 train / 200 val / 400 test; 1400 // 32 = 43 steps an epoch.
    command = [sys.executable, "-m", "deepnet.cli", "train", "--data", str(data), "--model", "mlp", "--out", str(out),
               "--epochs", "2", "--batch-size", "32", "--quiet", "train.max_steps_per_epoch=25", "train.threads=1",
               "train.deterministic=true", "train.checkpoint_steps=10", "model.args.width=64", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    data = _npz(tmp_path / "blobs.npz")
    one = _train(data, tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = _train(data, tmp_path / "two", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test_accuracy") == 1  # rank 0 alone reports and writes
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:  # 50 steps of Adam; gradients averaged over 2 x 16 instead of summed over 32
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=0), (key, (a[key] - b[key]).abs().max())
    steps = [int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path / "two" / "checkpoints")]
    assert steps == [50, 40, 30]


def test_resume_under_two_processes(tmp_path):
    data = _npz(tmp_path / "blobs.npz")
    out = tmp_path / "run"
    full = _train(data, out, "--nproc", "2")
    assert full.returncode == 0, full.stderr
    finished = load_file(str(out / "model.safetensors"))
    # As if both workers had been killed after step 34: the checkpoints of steps 40 and 50 and
    # the final weights never written. Step 30 is in the middle of the second epoch.
    for path in list_checkpoints(out / "checkpoints")[:2]:
        path.unlink()
    (out / "model.safetensors").unlink()
    resumed = subprocess.run([sys.executable, "-m", "deepnet.cli", "train", "--resume", str(out), "--quiet", "--nproc", "2"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert resumed.returncode == 0, resumed.stderr
    again = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(finished[k], again[k]) for k in finished)


def test_nproc_beyond_the_cpus_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "r"), "--nproc", "512", "train.device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --nproc 512 is more worker processes than the") and len(err.splitlines()) == 1


def test_nproc_beyond_the_gpus_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "r"), "--nproc", "4", "train.device=cuda"]) == 2
    assert "--nproc 4 asks for one GPU per worker but this machine has 1. Use --nproc 1 or fewer." in capsys.readouterr().err


def test_a_batch_the_workers_cannot_share_is_refused(tmp_path):
    data = _npz(tmp_path / "blobs.npz")
    result = _train(data, tmp_path / "r", "--nproc", "2", "train.batch_size=33")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: A global batch of 33 cannot be shared evenly by 2 processes. Use a batch size "
                      "divisible by 2 (e.g. train.batch_size=32)."], result.stderr
