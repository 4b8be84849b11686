"""deepnet explain: attribution maps through Captum, integrated gradients' completeness."""

import json
from pathlib import Path

import pytest
import torch

from deepnet.cli import main
from deepnet.explain import METHODS, attribute, explain
from deepnet.explain._attribute import _token_attributions, _token_baseline, output_difference
from deepnet.models import create_model
from deepnet.train.experiment import load_experiment_data
from deepnet.train.run import load_run
from tests._tiny_runs import make_digits_cnn_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return make_digits_cnn_run(tmp_path_factory.mktemp("explain"))


def test_integrated_gradients_completeness_within_one_percent(digits_run: Path):
    """Acceptance 1: the attributions sum to f(x) - f(baseline) within 1%, for every example;
    the difference is computed here from the model, not taken from Captum's delta."""
    run = load_run(digits_run)
    x = load_experiment_data(run.config).test.x[:24]
    baseline = torch.full_like(x, -1.0)
    target = run.model(x).argmax(-1)
    attributions, error = attribute(run.model, x, target, "integrated-gradients", baseline=baseline, chunk=8)
    with torch.no_grad():
        rows = torch.arange(len(x))
        difference = run.model(x)[rows, target] - run.model(baseline)[rows, target]
    relative = (attributions.sum(dim=(1, 2, 3)) - difference).abs() / difference.abs()
    assert relative.max() <= 0.01, relative
    assert error.max() <= 0.01 and torch.allclose(error, relative.float(), atol=1e-4)


def test_integrated_gradients_completeness_for_a_text_model():
    torch.manual_seed(0)
    model = create_model("lstm-classifier", vocab_size=50, num_classes=3, embed_dim=16, hidden_size=8, dropout=0.0).eval()
    ids = torch.randint(2, 50, (4, 7))
    ids[1, 5:] = 0  # a shorter sentence, right-padded
    target = torch.tensor([0, 1, 2, 0])
    attributions, error = _token_attributions(model, ids, target, "integrated-gradients", steps=32, chunk=4)
    assert attributions.shape == (4, 7)
    difference = output_difference(model, ids, _token_baseline(ids), target)
    relative = (attributions.sum(dim=1).double() - difference).abs() / difference.abs()
    assert relative.max() <= 0.01 and error.max() <= 0.01


def test_every_method_writes_its_grid(digits_run: Path):
    for method in METHODS:
        result = explain(digits_run, method, samples=4, chunk=2)
        assert result.image == digits_run / "explanations" / f"{method}.png"
        assert result.image.stat().st_size > 1000
        record = json.loads((digits_run / "explanations" / f"{method}.json").read_text())
        assert record["indices"] == [0, 1, 2, 3] and record["targets"] == record["predicted"]


def test_targets_true_and_class_index(digits_run: Path):
    labels = load_experiment_data(load_run(digits_run).config).test.y[:3].tolist()
    assert explain(digits_run, "saliency", samples=3, target="true").targets == labels
    assert explain(digits_run, "saliency", samples=3, target="7").targets == [7, 7, 7]


def test_chunks_do_not_change_the_attributions(digits_run: Path):
    run = load_run(digits_run)
    x = load_experiment_data(run.config).test.x[:6]
    target = run.model(x).argmax(-1)
    whole, _ = attribute(run.model, x, target, "occlusion", chunk=64)
    pieces, _ = attribute(run.model, x, target, "occlusion", chunk=1)
    assert torch.allclose(whole, pieces, atol=1e-5)


@pytest.mark.parametrize("argv, expected", [
    (["--method", "integrated-gradient"], "Did you mean 'integrated-gradients'"),
    (["--target", "eleven"], "Received: target='eleven'"),
    (["--target", "10"], "Received: target='10'"),
    (["--samples", "0"], "samples=0"),
])
def test_explain_bad_input_is_one_line_and_exit_2(argv, expected, digits_run: Path, capsys):
    assert main(["explain", str(digits_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected in err


def test_explain_refuses_a_model_that_is_not_a_classifier(digits_run: Path, tmp_path: Path, capsys):
    import shutil

    run = shutil.copytree(digits_run, tmp_path / "run")
    spec = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**spec, "task": "language_modeling", "input_kind": "lm"}))
    assert main(["explain", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "attributes the predictions of classifiers" in err and "\n" not in err


def test_explain_missing_run_and_gradcam_without_convolutions(tmp_path: Path, capsys):
    assert main(["explain", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    config = tmp_path / "mlp.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp, args: {width: 16}}\n"
                      "train: {epochs: 1, threads: 1, checkpoint_every: 0}\n")
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "mlp"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "mlp"), "--method", "gradcam"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no layer with a (C, H, W) output" in err and "\n" not in err
