"""The two small-data options the SST-2 examples use: the recurrent classifiers'
``embed_dropout`` and the config's ``data.min_count`` (on small files written here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepnet.config import load_config
from deepnet.models import create_model
from deepnet.train.experiment import load_experiment_data

CLASSIFIERS = ["rnn-classifier", "lstm-classifier", "gru-classifier"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_embed_dropout_is_off_by_default_and_adds_no_parameters(name: str) -> None:
    torch.manual_seed(0)
    plain = create_model(name, vocab_size=30, embed_dim=6, hidden_size=5)
    torch.manual_seed(0)
    dropped = create_model(name, vocab_size=30, embed_dim=6, hidden_size=5, embed_dropout=0.5)
    assert plain.embed_dropout.p == 0.0
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    x = torch.tensor([[3, 4, 5, 0], [7, 8, 0, 0]])
    # eval mode: no dropout anywhere, so the same weights give the same logits
    torch.testing.assert_close(plain.eval()(x), dropped.eval()(x))


def test_embed_dropout_acts_in_training_only() -> None:
    model = create_model("lstm-classifier", vocab_size=30, embed_dim=6, hidden_size=5,
                         embed_dropout=0.9, dropout=0.0)
    x = torch.randint(2, 30, (16, 7))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_embed_dropout_out_of_range_is_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="embed_dropout"):
        create_model("lstm-classifier", vocab_size=30, embed_dropout=value)


def test_config_min_count_reaches_the_sst2_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "sst2"
    folder.mkdir()
    files = {"stsa.binary.train": ["1 a funny film", "0 a dull film", "1 warm"],
             "stsa.binary.dev": ["0 a film"], "stsa.binary.test": ["1 funny"]}
    for filename, lines in files.items():
        (folder / filename).write_text("\n".join(lines) + "\n", encoding="utf-8")
    every_word = load_experiment_data(load_config(None, ["data.name=sst2", f"data.data_dir={folder}"]))
    twice = load_experiment_data(load_config(None, ["data.name=sst2", f"data.data_dir={folder}",
                                                    "data.min_count=2"]))
    assert every_word.vocab_size == 2 + 5  # <pad>, <unk> and a, film, funny, dull, warm
    assert twice.preprocessing["tokens"] == ["<pad>", "<unk>", "a", "film"]
    with pytest.raises(ValueError, match="min_count"):
        load_config(None, ["data.min_count=0"])
