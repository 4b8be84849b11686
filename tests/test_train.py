import json

import pytest
import torch
from safetensors.torch import load_file

import deepnet as dn
from deepnet.config import TrainConfig
from deepnet.train.optim import lr_factor
from tests.conftest import blobs


def _mlp(data, **kw):
    return dn.create_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes, width=32, **kw)


def test_fit_learns_and_writes_the_run_directory(blob_data, tmp_path):
    run = dn.fit(_mlp(blob_data), blob_data, epochs=5, batch_size=16, lr=1e-2, quiet=True, out=tmp_path / "run")
    assert run.metrics["test_accuracy"] > 0.9
    for name in ("config.yaml", "model.json", "model.safetensors", "history.csv", "metrics.json",
                 "plots/learning_curves.png", "checkpoints/step-000000025.safetensors",
                 "checkpoints/step-000000025.json"):  # 5 epochs of 80 / 16 steps
        assert (tmp_path / "run" / name).is_file(), name
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"test_accuracy", "test_loss", "samples_per_second", "train_seconds", "parameters"} <= set(metrics)
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds"
    spec = json.loads((tmp_path / "run" / "model.json").read_text())
    assert spec["name"] == "mlp" and spec["args"]["width"] == 32


def test_load_run_rebuilds_the_same_model(blob_data, tmp_path):
    run = dn.fit(_mlp(blob_data), blob_data, epochs=2, quiet=True, out=tmp_path / "r")
    loaded = dn.load_run(tmp_path / "r")
    x = blob_data.test.x
    run.model.eval()
    assert torch.equal(loaded.model(x), run.model(x))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
def test_every_optimizer_and_schedule_trains(blob_data, optimizer, schedule):
    lr = 0.05 if optimizer in ("sgd", "adagrad") else 5e-3
    run = dn.fit(_mlp(blob_data), blob_data, epochs=4, batch_size=16, optimizer=optimizer, lr=lr,
                 schedule=schedule, step_size=1, quiet=True)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"] * 1.05


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "mse"])
def test_losses(blob_data, loss):
    run = dn.fit(_mlp(blob_data), blob_data, epochs=3, loss=loss, label_smoothing=0.0, quiet=True)
    assert run.metrics["test_loss"] == run.metrics["test_loss"]  # finite, not NaN


def test_warmup_cosine_shape():
    c = TrainConfig(epochs=10, warmup_epochs=1, schedule="cosine")
    factors = [lr_factor(s, 100, 10, c, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[-1] < 0.01 and all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_deterministic_runs_are_bit_identical(tmp_path):
    data = blobs()
    for name in ("a", "b"):
        torch.manual_seed(123)  # the model's initial weights
        dn.fit(_mlp(data, dropout=0.3), data, epochs=3, deterministic=True, seed=7, quiet=True,
               augment={"noise": 0.1}, out=tmp_path / name)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


class _KillAfter(dn.Callback):
    """Simulates a killed process: interrupts training after ``epochs`` epochs."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epochs:
            raise KeyboardInterrupt


def test_resumed_run_equals_uninterrupted(tmp_path):
    data = blobs()
    options = dict(epochs=4, seed=3, quiet=True, augment={"noise": 0.1}, schedule="cosine", warmup_epochs=1)
    torch.manual_seed(0)
    model = _mlp(data, dropout=0.3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    full = dn.fit(model, data, out=tmp_path / "full", **options)
    full_state = {k: v.clone() for k, v in full.model.state_dict().items()}
    model.load_state_dict(initial)
    with pytest.raises(KeyboardInterrupt):
        dn.fit(model, data, out=tmp_path / "part", callbacks=[_KillAfter(2)], **options)
    resumed = dn.fit(_mlp(data, dropout=0.3), data, out=tmp_path / "part", resume=True, **options)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert resumed.steps == full.steps and len(full.steps) >= 4  # steps.csv too
    for key, value in full_state.items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_early_stopping_restores_best_weights(blob_data):
    run = dn.fit(_mlp(blob_data), blob_data, epochs=30, lr=0.5, optimizer="sgd", early_stopping=True,
                 patience=2, monitor="val_loss", quiet=True)
    best = min(r["val_loss"] for r in run.history)
    assert len(run.history) < 30
    final = dn.evaluate_split(run.model, blob_data.val)["loss"]
    assert final == pytest.approx(best, rel=1e-5)


def test_nan_loss_stops_with_advice(blob_data):
    blob_data.train.x[0, 0] = float("nan")
    with pytest.raises(dn.TrainingError, match=r"loss became nan.*Lower train.lr"):
        dn.fit(_mlp(blob_data), blob_data, epochs=2, batch_size=1000, quiet=True)


def test_shape_mismatch_is_found_before_training(blob_data):
    model = dn.create_model("mlp", input_shape=(5,), num_classes=3)
    with pytest.raises(ValueError, match=r"does not fit the data 'blobs': inputs of shape \(8,\)"):
        dn.fit(model, blob_data, epochs=1, quiet=True)


def test_wrong_number_of_classes(blob_data):
    model = dn.create_model("mlp", input_shape=(8,), num_classes=7)
    with pytest.raises(ValueError, match=r"3 classes. Set model.args.num_classes=3"):
        dn.fit(model, blob_data, epochs=1, quiet=True)


def test_bad_fit_argument():
    data = blobs()
    with pytest.raises(ValueError, match="unknown key 'epoch'; did you mean epochs"):
        dn.fit(_mlp(data), data, epoch=3, quiet=True)


def test_gradient_clipping_and_bf16_run(blob_data):
    run = dn.fit(_mlp(blob_data), blob_data, epochs=3, batch_size=16, grad_clip=0.5, precision="bf16", quiet=True)
    assert run.metrics["test_accuracy"] > 0.5


@pytest.mark.parametrize("native", [False, True, None])
def test_bf16_on_a_cpu_that_emulates_it_says_to_use_fp32(blob_data, capsys, monkeypatch, native):
    monkeypatch.setattr("deepnet.train.loop.cpu_has_native_bf16", lambda: native)
    dn.fit(_mlp(blob_data), blob_data, epochs=1, batch_size=16, precision="bf16", quiet=False)
    warned = "without native bfloat16" in capsys.readouterr().err
    assert warned == (native is False)  # None: a CPU whose features cannot be read gets no guess


def test_progress_line_per_epoch_when_not_a_terminal(blob_data, capsys):
    dn.fit(_mlp(blob_data), blob_data, epochs=2)
    err = capsys.readouterr().err
    assert err.count("epoch ") == 2 and "eta" in err


def test_googlenet_auxiliary_heads_join_the_loss():
    data = dn.Dataset("img", *[dn.Split(torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))) for _ in range(3)],
                      input_shape=(3, 32, 32), num_classes=4, class_names=list("abcd"))
    torch.manual_seed(0)
    model = dn.create_model("googlenet", input_shape=(3, 32, 32), num_classes=4, aux_logits=True)
    trainer = dn.Trainer(model, data, TrainConfig(epochs=1, batch_size=8), quiet=True)
    trainer.train_step(data.train.x, data.train.y)
    assert all(p.grad is not None for p in model.aux1.parameters())
