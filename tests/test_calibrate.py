"""deepnet calibrate: temperature scaling, ECE, and predict applying the stored temperature."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from deepnet.calibrate import calibrate, expected_calibration_error, fit_temperature, reliability_bins
from deepnet.cli import main
from deepnet.evaluate import predict
from deepnet.train.experiment import load_experiment_data
from deepnet.train.run import load_run
from tests._tiny_runs import make_digits_cnn_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return make_digits_cnn_run(tmp_path_factory.mktemp("calibrate"))


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20000, 5, generator=g) * 2
    labels = torch.multinomial(torch.softmax(true_logits, -1), 1, generator=g).squeeze(1)
    # A model three times too confident: its logits are the true ones times 3.
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.05)


def test_ece_matches_a_hand_computed_case():
    probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 0, 0])
    # bin (0.8667, 0.9333]: confidence 0.9, accuracy 0.5; bin (0.5333, 0.6]: confidence 0.6, accuracy 1.
    assert expected_calibration_error(probabilities, labels, bins=15) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4)
    assert sum(row["count"] for row in reliability_bins(probabilities, labels, 15)) == 4


def test_calibrate_stores_the_temperature_and_predict_applies_it(digits_run: Path, tmp_path: Path):
    run_dir = shutil.copytree(digits_run, tmp_path / "run")
    run = load_run(run_dir)
    x = load_experiment_data(run.config).test.x[:8]
    before = predict(run, x)
    result = calibrate(run_dir)
    saved = json.loads((run_dir / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(result.temperature) and result.temperature > 0
    assert result.accuracy_after == result.accuracy_before
    assert result.val_nll_after <= result.val_nll_before + 1e-9
    assert (run_dir / "plots" / "reliability.png").stat().st_size > 1000
    calibrated = load_run(run_dir)
    assert calibrated.temperature == pytest.approx(result.temperature)
    after = predict(calibrated, x)
    assert [r["index"] for r in after] == [r["index"] for r in before]
    logits = run.model(x).detach()
    expected = torch.softmax(logits / result.temperature, -1).max(-1).values
    assert [r["probability"] for r in after] == pytest.approx(expected.tolist(), abs=1e-6)


def test_calibrate_cli_prints_the_figures(digits_run: Path, tmp_path: Path, capsys):
    run_dir = shutil.copytree(digits_run, tmp_path / "run")
    assert main(["calibrate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "ECE" in out


@pytest.mark.parametrize("case", ["missing", "not-a-classifier", "bad-bins", "bad-file"])
def test_calibrate_bad_input_is_one_line_and_exit_2(case: str, digits_run: Path, tmp_path: Path, capsys):
    run_dir = shutil.copytree(digits_run, tmp_path / "run")
    argv = ["calibrate", str(run_dir)]
    if case == "missing":
        argv = ["calibrate", str(tmp_path / "nowhere")]
    elif case == "not-a-classifier":
        spec = json.loads((run_dir / "model.json").read_text())
        (run_dir / "model.json").write_text(json.dumps({**spec, "task": "language_modeling"}))
    elif case == "bad-bins":
        argv += ["--bins", "1"]
    else:
        (run_dir / "calibration.json").write_text("{not json")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    expected = {"missing": "not found", "not-a-classifier": "classifiers", "bad-bins": "bins=1",
                "bad-file": "temperature"}[case]
    assert expected in err
