"""Devices and threads: every core path on each device, thread defaults inside containers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import deepnet as dn
from deepnet.cli import main
from deepnet.evaluate import evaluate_run, predict
from deepnet.train import devices
from deepnet.train.devices import available_cpus, cgroup_cpu_limit, limit_threads, resolve_device
from deepnet.config import TrainConfig
from tests.checkpoint_cases import OPTIONS, make_data, make_model


def test_fit_evaluate_predict_on_device(device, tmp_path):
    data = dn.load_dataset("digits")
    model = dn.create_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes, width=32)
    model.deepnet_spec = {"name": "mlp", "args": {"input_shape": list(data.input_shape), "num_classes": 10, "width": 32}}
    run = dn.fit(model, data, out=tmp_path / "r", device=device, epochs=4, batch_size=32, threads=1, quiet=True)
    assert run.metrics["device"].startswith(device) and run.metrics["test_accuracy"] > 0.8
    assert next(run.model.parameters()).device.type == device
    result = evaluate_run(tmp_path / "r", device=device)
    assert result["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    loaded = dn.load_run(tmp_path / "r", device=device)
    rows = predict(loaded, data.test.x[:5])  # inputs on the CPU, model on the device
    assert len(rows) == 5 and all(0 <= row["probability"] <= 1 for row in rows)


def test_resume_mid_epoch_on_device_is_bit_identical(device, tmp_path):
    data = make_data()
    options = {**OPTIONS, "device": device, "epochs": 2}
    dn.fit(make_model(data), data, out=tmp_path / "full", **options)

    class StopAt(dn.Callback):
        def on_train_begin(self, logs):
            self.trainer = logs["trainer"]

        def on_batch_end(self, batch, logs):
            if self.trainer.step == 17:
                raise KeyboardInterrupt  # a crash between checkpoints 15 and 20

    with pytest.raises(KeyboardInterrupt):
        dn.fit(make_model(data), data, out=tmp_path / "part", callbacks=[StopAt()], **options)
    dn.fit(make_model(data), data, out=tmp_path / "part", resume=True, **options)
    full, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("full", "part"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(device, precision):
    data = make_data()
    run = dn.fit(make_model(data), data, device=device, precision=precision, **{**OPTIONS, "epochs": 2})
    assert run.metrics["test_accuracy"] > 0.8


def test_channels_last_cnn(device):
    data = dn.Dataset("img", *[dn.Split(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))) for _ in range(3)],
                      input_shape=(1, 28, 28), num_classes=10, class_names=list("0123456789"))
    model = dn.create_model("lenet5", input_shape=(1, 28, 28), num_classes=10)
    run = dn.fit(model, data, epochs=1, batch_size=16, device=device, channels_last=True, quiet=True)
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


# -- choosing the device ------------------------------------------------------------------

def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else resolve_device("auto").type)
    with pytest.raises(ValueError, match="Unknown device 'gpu': expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    code = main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--quiet", "train.device=cuda"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Device 'cuda' was requested but") and err.endswith("Use device cpu (or auto).")
    assert len(err.splitlines()) == 1


def test_bad_device_name_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "r"), "--device", "gpu0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config: invalid value for 'train.device'") and len(err.splitlines()) == 1
    assert main(["evaluate", str(tmp_path / "r"), "--device", "gpu0"]) == 2


def test_cuda_index_beyond_the_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"'cuda:5' was requested but this machine has 2 CUDA GPU\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:5")


# -- threads ------------------------------------------------------------------------------

def _cgroup(tmp_path, cpu_max: str):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def test_cgroup_quota_is_read(tmp_path):
    assert cgroup_cpu_limit(_cgroup(tmp_path / "a", "150000 100000") if (tmp_path / "a").mkdir() is None else None) == 1.5
    assert cgroup_cpu_limit(_cgroup(tmp_path / "b", "max 100000") if (tmp_path / "b").mkdir() is None else None) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "v1") == 2.0
    assert cgroup_cpu_limit(tmp_path / "nothing") is None


def test_thread_default_follows_a_cpu_quota(tmp_path, monkeypatch):
    # A container limited to 2 CPUs on a 64-core host: 2 threads, not 64.
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert available_cpus(_cgroup(tmp_path, "200000 100000")) == 2
    assert available_cpus(_cgroup(tmp_path, "50000 100000")) == 1  # half a CPU still runs one thread
    assert available_cpus(_cgroup(tmp_path, "max 100000")) == 64
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(devices, "available_cpus", lambda: 2)
        torch.set_num_threads(64 if before < 64 else before)
        assert limit_threads(None) == 2  # PyTorch's host-wide default is cut to the quota
        assert limit_threads(None, processes=2) == 1  # two workers share it
        torch.set_num_threads(1)
        assert limit_threads(None) == 1  # a lower count already set is kept
        assert limit_threads(3) == 3  # train.threads overrides
    finally:
        torch.set_num_threads(before)


def test_trainer_applies_the_thread_default(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(devices, "available_cpus", lambda: 1)
        data = make_data()
        dn.Trainer(make_model(data), data, TrainConfig(epochs=1), quiet=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_evaluate_and_predict_cli_take_a_device(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert main(["evaluate", str(out), "--device", "cpu"]) == 0
    assert "test_accuracy" in json.loads((out / "evaluation.json").read_text())
    from sklearn.datasets import load_digits

    np.save(tmp_path / "x.npy", load_digits().images[:2])
    assert main(["predict", str(out), str(tmp_path / "x.npy"), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 2
