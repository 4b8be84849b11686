"""The recurrent family against torch's fused nn.RNN / nn.LSTM / nn.GRU, plus model contracts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deepnet.models import create_model
from deepnet.models.rnn import CELLS, ReferenceRecurrent, reverse_padded

TOLERANCE = 1e-5
CELL_NAMES = ["rnn", "lstm", "gru"]
CLASSIFIERS = ["rnn-classifier", "lstm-classifier", "gru-classifier"]
LANGUAGE_MODELS = ["char-rnn", "char-lstm", "char-gru"]


def _pair(cell: str, bidirectional: bool, batch_first: bool = True) -> tuple[nn.Module, ReferenceRecurrent]:
    """A built-in 2-layer stack and a reference stack holding the same weights."""
    torch.manual_seed(0)
    builtin = CELLS[cell].builtin(5, 7, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    reference = ReferenceRecurrent(cell, 5, 7, num_layers=2, batch_first=batch_first,
                                   bidirectional=bidirectional)
    reference.load_state_dict(builtin.state_dict())
    return builtin, reference


def _states(h: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return h if isinstance(h, tuple) else (h,)


def _padded_tokens(vocab_size: int = 50) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randint(1, vocab_size, (4, 9))
    x[1, 6:] = 0
    x[2, 2:] = 0
    x[3, :] = 0  # an all-padding row must still work
    return x


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_reference_matches_builtin_forward_and_backward(cell: str, bidirectional: bool) -> None:
    builtin, reference = _pair(cell, bidirectional)
    x = torch.randn(3, 6, 5, requires_grad=True)
    num_states = 2 if cell == "lstm" else 1
    initial = tuple(torch.randn(2 * (2 if bidirectional else 1), 3, 7) for _ in range(num_states))
    hx = initial if cell == "lstm" else initial[0]

    out_builtin, h_builtin = builtin(x, hx)
    out_reference, h_reference = reference(x, hx)

    assert out_reference.shape == out_builtin.shape == (3, 6, 7 * (2 if bidirectional else 1))
    torch.testing.assert_close(out_reference, out_builtin, atol=TOLERANCE, rtol=0)
    for ours, theirs in zip(_states(h_reference), _states(h_builtin), strict=True):
        torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)

    grad_builtin = torch.autograd.grad(out_builtin.square().sum(), [x, *builtin.parameters()])
    grad_reference = torch.autograd.grad(out_reference.square().sum(), [x, *reference.parameters()])
    for ours, theirs in zip(grad_reference, grad_builtin, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_reference_time_major_matches_builtin(cell: str) -> None:
    builtin, reference = _pair(cell, bidirectional=True, batch_first=False)
    x = torch.randn(6, 3, 5)  # (T, B, F)
    torch.testing.assert_close(reference(x)[0], builtin(x)[0], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_reference_lengths_match_packed_builtin(cell: str, bidirectional: bool) -> None:
    builtin, reference = _pair(cell, bidirectional)
    x = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 2, 4])

    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_packed, h_builtin = builtin(packed)
    out_builtin = pad_packed_sequence(out_packed, batch_first=True, total_length=6)[0]
    out_reference, h_reference = reference(x, lengths=lengths)

    torch.testing.assert_close(out_reference, out_builtin, atol=TOLERANCE, rtol=0)
    for ours, theirs in zip(_states(h_reference), _states(h_builtin), strict=True):
        torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)


def test_reverse_padded_keeps_padding_in_place_and_is_its_own_inverse() -> None:
    x = torch.arange(1, 6).float().view(1, 5, 1).repeat(2, 1, 1)  # rows: 1 2 3 4 5
    lengths = torch.tensor([5, 3])
    flipped = reverse_padded(x, lengths)
    assert flipped[:, :, 0].tolist() == [[5, 4, 3, 2, 1], [3, 2, 1, 4, 5]]
    torch.testing.assert_close(reverse_padded(flipped, lengths), x)


def test_reference_has_the_builtin_parameter_layout() -> None:
    builtin, reference = _pair("lstm", bidirectional=True)
    assert {k: v.shape for k, v in reference.state_dict().items()} == {
        k: v.shape for k, v in builtin.state_dict().items()
    }
    assert "weight_hh_l1_reverse" in reference.state_dict()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_implementations_agree(name: str) -> None:
    torch.manual_seed(0)
    builtin = create_model(name, vocab_size=50, num_classes=3, embed_dim=6, hidden_size=7,
                           num_layers=2, bidirectional=True).eval()
    reference = create_model(name, vocab_size=50, num_classes=3, embed_dim=6, hidden_size=7,
                             num_layers=2, bidirectional=True, implementation="reference").eval()
    assert isinstance(builtin.rnn, nn.RNNBase) and isinstance(reference.rnn, ReferenceRecurrent)
    reference.load_state_dict(builtin.state_dict())
    x = _padded_tokens()
    torch.testing.assert_close(reference(x), builtin(x), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("pooling", ["max", "mean"])
@pytest.mark.parametrize("implementation", ["builtin", "reference"])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_logits_ignore_padding(name: str, implementation: str, pooling: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, vocab_size=50, embed_dim=6, hidden_size=7, num_layers=2,
                         bidirectional=True, pooling=pooling, implementation=implementation).eval()
    x = _padded_tokens()
    longer = torch.cat([x, torch.zeros(4, 7, dtype=torch.long)], dim=1)  # (4, 16)
    logits = model(x)
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    torch.testing.assert_close(model(longer), logits, atol=TOLERANCE, rtol=0)
    # A row alone gives what it gives inside a batch of longer rows.
    torch.testing.assert_close(model(x[2:3, :2]), logits[2:3], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_shapes_and_one_training_step(name: str) -> None:
    model = create_model(name, vocab_size=30, num_classes=5, embed_dim=4, hidden_size=6)
    x = torch.randint(0, 30, (3, 8))
    logits = model(x)
    assert logits.shape == (3, 5)
    assert model.forward_features(x).shape == (3, model.num_features)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 4])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.reset_classifier(7)
    assert model(x).shape == (3, 7)


def test_lstm_classifier_is_bidirectional_by_default() -> None:
    assert create_model("lstm-classifier").rnn.bidirectional
    assert not create_model("gru-classifier").rnn.bidirectional


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_language_model_shapes_and_implementations_agree(name: str) -> None:
    torch.manual_seed(0)
    builtin = create_model(name, vocab_size=20, block_size=12, embed_dim=6, hidden_size=7).eval()
    reference = create_model(name, vocab_size=20, block_size=12, embed_dim=6, hidden_size=7,
                             implementation="reference").eval()
    reference.load_state_dict(builtin.state_dict())
    idx = torch.randint(0, 20, (2, 12))
    logits = builtin(idx)
    assert builtin.block_size == 12
    assert logits.shape == (2, 12, 20)
    torch.testing.assert_close(reference(idx), logits, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("implementation", ["builtin", "reference"])
def test_generate_carries_the_state(implementation: str) -> None:
    torch.manual_seed(0)
    model = create_model("char-lstm", vocab_size=20, embed_dim=6, hidden_size=7,
                         implementation=implementation).eval()
    prompt = torch.randint(0, 20, (2, 4))
    torch.manual_seed(3)
    out = model.generate(prompt, max_new_tokens=5, top_k=1)  # top-1: greedy
    assert out.shape == (2, 9) and torch.equal(out[:, :4], prompt)
    # Greedy continuation equals re-running the whole sequence and taking the argmax.
    torch.testing.assert_close(model(out[:, :-1])[:, 3:].argmax(-1), out[:, 4:])


def test_invalid_arguments_fail_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"`cell`.*Did you mean 'gru'.*Received: cell='gruu'"):
        create_model("gru-classifier", cell="gruu")
    with pytest.raises(ValueError, match=r"`implementation`.*Received: implementation='fast'"):
        create_model("char-lstm", implementation="fast")
    with pytest.raises(ValueError, match=r"`hidden_size`: expected a positive integer"):
        create_model("lstm-classifier", hidden_size=0)
    with pytest.raises(ValueError, match=r"integer token ids of shape \(batch, time\)"):
        create_model("lstm-classifier", vocab_size=10)(torch.randn(2, 5))
