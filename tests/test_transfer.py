"""Transfer learning: a parent run's layers, a new head, the backbone frozen or trained slower."""

import json

import pytest
import torch
from safetensors.torch import load_file

from deepnet.cli import main
from deepnet.config import TrainConfig
from deepnet.data import load_dataset
from deepnet.models import create_model
from deepnet.train import Trainer
from deepnet.train.experiment import finetune
from deepnet.train.run import RunError
from deepnet.train.transfer import backbone_blocks, head_parameter_names

FIRST, SECOND = "data.classes=[0,1,2,3,4]", "data.classes=[5,6,7,8,9]"


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer") / "parent"
    assert main(["train", "--data", "digits", "--model", "convnet", "--epochs", "2", "--batch-size", "64",
                 "--out", str(out), "--quiet", FIRST, "model.args={widths: [8, 16], dropout: 0.5}"]) == 0
    return out


def test_feature_extraction_trains_only_the_head(parent, tmp_path, capsys):
    out = tmp_path / "child"
    assert main(["finetune", str(parent), "--data", "digits", "--mode", "feature-extraction", "--epochs", "2",
                 "--out", str(out), "--quiet", SECOND]) == 0
    before, after = load_file(str(parent / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for key, tensor in before.items():  # weights and batch-norm statistics alike
        if not key.startswith("classifier"):
            assert torch.equal(tensor, after[key]), key
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    spec = json.loads((out / "model.json").read_text())
    assert spec["parent"] == str(parent) and spec["class_names"] == ["5", "6", "7", "8", "9"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # a fine-tuned run is a run like any other
    assert "test_accuracy" in capsys.readouterr().out


def test_fine_tune_trains_the_backbone_at_a_smaller_rate(parent, tmp_path):
    run = finetune(parent, "digits", "fine-tune", tmp_path / "child", overrides=[SECOND, "train.epochs=1"], quiet=True)
    assert run.config.train.backbone_lr_ratio == 0.1 and not run.config.train.freeze_backbone
    before = load_file(str(parent / "model.safetensors"))
    assert not torch.equal(before["features.0.0.weight"], run.model.state_dict()["features.0.0.weight"])


def test_backbone_parameter_groups_get_the_ratio():
    data = load_dataset("digits")
    model = create_model("convnet", input_shape=(1, 8, 8), num_classes=10, widths=(8, 16))
    trainer = Trainer(model, data, TrainConfig(epochs=1, lr=0.01, backbone_lr_ratio=0.25), quiet=True)
    rates = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            rates[p] = group["lr"]
    assert rates[model.classifier.weight] == pytest.approx(0.01)
    assert rates[model.features[0][0].weight] == pytest.approx(0.0025)
    assert head_parameter_names(model) == {"classifier.weight", "classifier.bias"}


def test_gradual_unfreezing_thaws_blocks_from_the_top():
    data = load_dataset("digits")
    model = create_model("convnet", input_shape=(1, 8, 8), num_classes=10, widths=(8, 16))
    blocks = list(backbone_blocks(model))
    assert blocks == ["features.0", "features.1", "features.3", "features.4"]  # features.2 is a pooling layer
    config = TrainConfig(epochs=3, freeze_backbone=True, unfreeze_every=1, batch_size=256, checkpoint_every=0)
    trainer = Trainer(model, data, config, quiet=True)
    assert [trainer.frozen_blocks(e) for e in range(6)] == [4, 3, 2, 1, 0, 0]
    first = model.features[0][0].weight.detach().clone()
    last = model.features[4][0].weight.detach().clone()
    trainer.fit()
    assert torch.equal(first, model.features[0][0].weight)  # still frozen after 3 epochs
    assert not torch.equal(last, model.features[4][0].weight)  # thawed after the first epoch


def test_input_shape_that_does_not_fit_the_parent(parent, tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "other.npz", x=np.random.rand(60, 3, 8, 8), y=np.arange(60) % 3)
    assert main(["finetune", str(parent), "--data", str(tmp_path / "other.npz"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "takes inputs of shape (1, 8, 8), but other holds (3, 8, 8). For an image folder set data.image_size" in err


def test_parent_must_be_a_run(tmp_path, capsys):
    assert main(["finetune", str(tmp_path), "--data", "digits"]) == 2
    assert "is not a finished run (no config.yaml / model.json). Train it first." in capsys.readouterr().err


def test_model_without_a_replaceable_head():
    model = create_model("transformer-classifier", vocab_size=50, num_classes=2, max_len=8, d_model=16, n_layer=1,
                         n_head=2)
    with pytest.raises(ValueError, match="has no reset_classifier\\(\\), so deepnet cannot tell its head"):
        head_parameter_names(model)


def test_parent_with_other_architecture(parent, tmp_path):
    with pytest.raises(RunError, match="does not fit this model: .*Keep the parent's model.name and model.args"):
        finetune(parent, "digits", "fine-tune", tmp_path / "c", overrides=[SECOND, "model.args.widths=[4, 16]"], quiet=True)
