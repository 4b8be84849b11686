"""The learning-rate range test: a curve, a suggestion, and the model left as it was."""

import json

import pytest
import torch

from deepnet.cli import main
from deepnet.config import TrainConfig
from deepnet.models import create_model
from deepnet.tune import lr_find
from tests.conftest import blobs


def test_sweep_leaves_the_model_as_it_was_and_suggests_a_rate():
    data = blobs(n=600)
    model = create_model("mlp", input_shape=(8,), num_classes=3, depth=1, width=32, norm="batch")
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_find(model, data, TrainConfig(batch_size=32, optimizer="adam"), steps=120, end_lr=100)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN statistics
    assert not model.training and torch.equal(torch.get_rng_state(), rng)
    assert len(result.lrs) == len(result.losses) <= 120
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-7)
    assert result.lrs[0] < result.suggestion <= result.min_loss_lr / 10


def test_cli_writes_plot_and_json(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp, args: {width: 32}}\ntrain: {batch_size: 32}\n")
    assert main(["lr-find", "-c", str(config), "--steps", "80", "--end-lr", "1000", "--out", str(tmp_path / "lr")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("suggested learning rate: ") and "train.lr=" in out
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert saved["stopped_early"]  # Adam at rates near 1000 blows up: the sweep ends there
    assert saved["suggestion"] > 0 and (tmp_path / "lr" / "lr_find.png").stat().st_size > 5_000


def test_bad_sweep_bounds(capsys):
    with pytest.raises(ValueError, match="lr_find needs 0 < start_lr < end_lr; received start_lr=1.0, end_lr=0.1"):
        lr_find(torch.nn.Linear(8, 3), blobs(), start_lr=1.0, end_lr=0.1)
