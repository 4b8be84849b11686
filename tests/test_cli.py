"""The `deepnet` command: one-line errors with exit code 2, and the happy path end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from deepnet.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err  # one line, last
    return errors[0]


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {name: digits}\nmodel: {name: mlp, args: {width: 32}}\ntrain: {epochs: 2, batch_size: 64}\n")
    return path


def test_train_evaluate_predict(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    assert main(["train", "-c", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    assert "test_accuracy" in capsys.readouterr().out
    assert main(["evaluate", str(out)]) == 0
    assert "per_class_accuracy" in json.loads((out / "evaluation.json").read_text())
    assert (out / "plots" / "confusion_matrix.png").is_file()
    capsys.readouterr()

    from sklearn.datasets import load_digits

    digits = load_digits()
    np.save(tmp_path / "x.npy", digits.images[:3])
    assert main(["predict", str(out), str(tmp_path / "x.npy")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(len(line.split("\t")) == 3 for line in lines)

    from PIL import Image

    Image.fromarray((digits.images[0] * 16).astype(np.uint8)).save(tmp_path / "d.png")
    assert main(["predict", str(out), str(tmp_path / "d.png")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_flags_and_overrides(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--model", "perceptron", "--data", "digits", "--epochs", "1", "--out", str(out),
                 "--quiet", "train.optimizer=sgd", "train.lr=0.1"]) == 0
    config = (out / "config.yaml").read_text()
    assert "optimizer: sgd" in config and "name: perceptron" in config and "lr: 0.1" in config


def test_resume_continues_an_interrupted_run(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    assert main(["train", "-c", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # already complete: nothing more to do


def test_bad_config_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epohcs: 3}\n")
    assert main(["train", "-c", str(path)]) == 2
    assert "unknown key 'train.epohcs'; did you mean train.epochs?" in _error_line(capsys)


def test_malformed_yaml(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3\n")
    assert main(["train", "-c", str(path)]) == 2
    assert "is not valid YAML" in _error_line(capsys)


def test_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPNET_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    assert main(["train", "--data", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert "not found" in _error_line(capsys)


def test_corrupt_data(fake_mnist, capsys):
    assert main(["train", "--data", "mnist", "--data-dir", str(fake_mnist)]) == 2
    assert "MD5" in _error_line(capsys)


def test_shape_mismatch(tmp_path, capsys):
    assert main(["train", "--model", "lenet5", "--data", "digits", "--out", str(tmp_path / "r"),
                 "model.args.input_shape=[1,28,28]"]) == 2
    line = _error_line(capsys)
    assert "does not fit the data 'digits'" in line and "(1, 8, 8)" in line


def test_text_model_on_images(tmp_path, capsys):
    assert main(["train", "--model", "lstm-classifier", "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    assert "reads token ids" in _error_line(capsys)


def test_csv_with_text(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("a,label\n1,x\nhello,y\n")
    assert main(["train", "--data", str(path), "--model", "mlp", "--out", str(tmp_path / "r")]) == 2
    assert "'hello' is not a number" in _error_line(capsys)


def test_unknown_model(capsys):
    assert main(["train", "--model", "lenet", "--data", "digits"]) == 2
    assert "Did you mean" in _error_line(capsys)


def test_missing_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "not found" in _error_line(capsys)


def test_models_listing(capsys):
    assert main(["models", "--family", "lenet"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "60.9k" in out and "LeCun" in out


def test_no_traceback_without_debug_and_traceback_with_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: -1}\n")
    plain = subprocess.run([sys.executable, "-m", "deepnet.cli", "train", "-c", str(path)],
                           capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("error: ") and "train.lr" in plain.stderr
    debug = subprocess.run([sys.executable, "-m", "deepnet.cli", "--debug", "train", "-c", str(path)],
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_cli_runs_are_reproducible(tmp_path, tiny_config, capsys):
    from safetensors.torch import load_file

    for name in ("a", "b"):
        assert main(["train", "-c", str(tiny_config), "--out", str(tmp_path / name), "--quiet",
                     "train.deterministic=true", "model.init=he_uniform"]) == 0
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(__import__("torch").equal(a[k], b[k]) for k in a)
