"""`deepnet diagnose`: the right verdict on runs trained into each state for real."""

import json
import math

import pytest

from deepnet.cli import main
from deepnet.diagnose import VERDICTS, diagnose, diagnose_history

MLP = "--model", "mlp", "--batch-size", "64"
RUNS = {  # name: (verdict, training arguments on the bundled digits, 1,294 training images)
    "too_small_model": ("underfitting", [*MLP, "--epochs", "30", "model.args={depth: 1, width: 2}", "train.lr=0.01"]),
    "large_model_500_samples": ("overfitting", [*MLP, "--epochs", "60", "data.max_train_samples=500",
                                                "model.args={depth: 3, width: 512, dropout: 0}", "train.schedule=constant",
                                                "train.lr=0.001", "train.weight_decay=0"]),
    "lr_100x_too_high": ("unstable", [*MLP, "--epochs", "20", "model.args={depth: 2, width: 128, dropout: 0.3}",
                                      "train.lr=0.3", "train.weight_decay=0.05", "data.val_fraction=0.2"]),
    "stopped_after_one_epoch": ("still_improving", ["--model", "mlp", "--batch-size", "32", "--epochs", "1",
                                                    "model.args={depth: 2, width: 128, dropout: 0.3}", "train.lr=0.003",
                                                    "train.weight_decay=0.05", "data.val_fraction=0.2"]),
    "good_run": ("good_fit", [*MLP, "--epochs", "15", "model.args={depth: 2, width: 128, dropout: 0.3}",
                              "train.lr=0.003", "train.weight_decay=0.05", "data.val_fraction=0.2"]),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_verdict_on_a_real_run(name, tmp_path, capsys):
    verdict, arguments = RUNS[name]
    out = tmp_path / name
    assert main(["train", "--data", "digits", "--out", str(out), "--quiet", *arguments]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"verdict: {verdict} — ") and "remedies:" in printed
    saved = json.loads((out / "diagnosis.json").read_text())
    assert saved["verdict"] == verdict and saved["remedies"]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "loss_gap", "val_loss_trend", "loss_noise",
            "val_loss_turned_at_epoch"} <= saved["evidence"].keys()
    assert (out / "plots" / "learning_curves.png").stat().st_size > 10_000


def test_overfitting_names_the_turn_and_the_regularisers(tmp_path):
    out = tmp_path / "run"
    main(["train", "--data", "digits", "--out", str(out), "--quiet", *RUNS["large_model_500_samples"][1]])
    result = diagnose(out)
    turn = result.evidence["val_loss_turned_at_epoch"]
    assert 2 <= turn < 60 and result.evidence["val_loss_rise"] >= 0.1
    tries = " ".join(r["try"] for r in result.remedies)
    assert "train.early_stopping=true" in tries and "train.weight_decay" in tries and "model.args.dropout" in tries


def _rows(train, val, accuracy=None):
    return [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": t, "val_loss": v,
             "train_accuracy": accuracy or math.nan, "val_accuracy": accuracy or math.nan}
            for i, (t, v) in enumerate(zip(train, val))]


def test_a_run_too_short_to_judge_says_so():
    result = diagnose_history(_rows([1.0], [0.9], 0.5), steps=[], num_classes=10)
    assert result.verdict == "too_short" and "too few to judge" in result.summary


def test_nan_and_divergence_are_unstable():
    assert diagnose_history(_rows([1.0, 0.5, math.nan], [1, 0.6, math.nan]), num_classes=10).verdict == "unstable"
    diverged = diagnose_history(_rows([1.0, 0.4, 0.3, 0.9], [1.0, 0.5, 0.4, 1.1], 0.6), num_classes=10)
    assert diverged.verdict == "unstable" and "diverged" in diverged.summary


def test_missing_history_is_one_clear_error(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path)]) == 2
    assert "has no history.csv to diagnose. Train a run there first" in capsys.readouterr().err


def test_verdicts_are_the_documented_ones():
    assert set(VERDICTS) == {"underfitting", "good_fit", "overfitting", "unstable", "still_improving", "too_short"}
