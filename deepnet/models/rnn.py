"""The recurrent family: Elman RNN, LSTM and GRU cells, a sequence classifier and a
character language model.

The cells are written out with PyTorch's exact gate equations and parameter layout
(``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, ``_reverse`` for
the backward direction), so ``ReferenceRecurrent`` and ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``
load each other's state dicts and agree to float rounding. The models run the fused
built-in by default (``implementation="builtin"``); ``"reference"`` runs the written-out
cells, one Python step per time step — for reading, teaching and checking, not for speed.

Papers: Elman, "Finding Structure in Time" (1990); Hochreiter & Schmidhuber, "Long
Short-Term Memory" (1997); Cho et al., "Learning Phrase Representations using RNN
Encoder-Decoder for Statistical Machine Translation" (2014); Schuster & Paliwal,
"Bidirectional Recurrent Neural Networks" (1997).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deepnet.models._registry import register_model

__all__ = [
    "CharLanguageModel",
    "CharLanguageModelConfig",
    "RecurrentClassifier",
    "RecurrentClassifierConfig",
    "ReferenceRecurrent",
    "elman_step",
    "gru_step",
    "lstm_step",
    "recurrent_stack",
    "reverse_padded",
]

CellName = Literal["rnn", "lstm", "gru"]
Implementation = Literal["builtin", "reference"]
Pooling = Literal["max", "mean"]

# A cell's state is a tuple: (h,) for the Elman RNN and the GRU, (h, c) for the LSTM.
State = tuple[torch.Tensor, ...]


# --------------------------------------------------------------------------- cells


def elman_step(input_gates: torch.Tensor, state: State, weight_hh: torch.Tensor,
               bias_hh: torch.Tensor) -> State:
    """One Elman step: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``.

    ``input_gates`` is ``W_ih x + b_ih``, shape ``(B, H)``, computed for all steps at once.
    """
    (h,) = state
    return (torch.tanh(input_gates + F.linear(h, weight_hh, bias_hh)),)


def lstm_step(input_gates: torch.Tensor, state: State, weight_hh: torch.Tensor,
              bias_hh: torch.Tensor) -> State:
    """One LSTM step; ``input_gates`` is ``(B, 4H)`` in PyTorch's gate order i, f, g, o.

    ``c' = σ(f) * c + σ(i) * tanh(g)``, ``h' = σ(o) * tanh(c')``.
    """
    h, c = state
    gates = input_gates + F.linear(h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_step(input_gates: torch.Tensor, state: State, weight_hh: torch.Tensor,
             bias_hh: torch.Tensor) -> State:
    """One GRU step; ``input_gates`` is ``(B, 3H)`` in PyTorch's gate order r, z, n.

    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.
    """
    (h,) = state
    reset_x, update_x, new_x = input_gates.chunk(3, dim=1)  # each (B, H)
    reset_h, update_h, new_h = F.linear(h, weight_hh, bias_hh).chunk(3, dim=1)
    r = torch.sigmoid(reset_x + reset_h)
    z = torch.sigmoid(update_x + update_h)
    # PyTorch (like cuDNN) applies r after the hidden projection and its bias; Cho et al.
    # apply it before. The two differ, and the built-in's layout is the one we match.
    n = torch.tanh(new_x + r * new_h)
    return ((1 - z) * n + z * h,)


@dataclass(frozen=True)
class _Cell:
    gates: int  # blocks of H rows in weight_ih / weight_hh
    step: Callable[..., State]
    builtin: type[nn.RNNBase]


CELLS: dict[str, _Cell] = {
    "rnn": _Cell(1, elman_step, nn.RNN),
    "lstm": _Cell(4, lstm_step, nn.LSTM),
    "gru": _Cell(3, gru_step, nn.GRU),
}


def _check_choice(argument: str, value: str, options: list[str]) -> None:
    if value not in options:
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Received an invalid value for `{argument}`: expected one of "
            f"{', '.join(repr(o) for o in options)}.{hint} Received: {argument}={value!r}."
        )


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x`` ``(B, T, F)`` within its own length ``lengths`` ``(B,)``;
    the right padding stays where it is. Its own inverse."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    last = lengths.unsqueeze(1) - 1  # (B, 1)
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


# ------------------------------------------------------------ the written-out stack


class ReferenceRecurrent(nn.Module):
    """``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` written out: same arguments (less ``bias``,
    ``nonlinearity`` and ``proj_size``), same parameter names and initialisation, same
    outputs.

    One difference: ``batch_first`` defaults to True, as everywhere in deepnet.
    """

    def __init__(self, cell: CellName, input_size: int, hidden_size: int, num_layers: int = 1,
                 *, batch_first: bool = True, dropout: float = 0.0,
                 bidirectional: bool = False) -> None:
        super().__init__()
        _check_choice("cell", cell, list(CELLS))
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = dropout
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        gate_rows = CELLS[cell].gates * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                self.register_parameter(f"weight_ih_{name}", nn.Parameter(torch.empty(gate_rows, layer_input)))
                self.register_parameter(f"weight_hh_{name}", nn.Parameter(torch.empty(gate_rows, hidden_size)))
                self.register_parameter(f"bias_ih_{name}", nn.Parameter(torch.empty(gate_rows)))
                self.register_parameter(f"bias_hh_{name}", nn.Parameter(torch.empty(gate_rows)))
        self.reset_parameters()

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse")[: self.num_directions]

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)  # nn.RNNBase's own initialisation
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(
        self,
        x: torch.Tensor,
        hx: torch.Tensor | State | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | State]:
        """Run the stack over ``x`` ``(B, T, input_size)`` (``(T, B, input_size)`` when not
        ``batch_first``).

        ``hx``: initial state ``(num_layers * num_directions, B, H)``, a pair ``(h0, c0)`` for
        the LSTM; zeros when omitted. ``lengths`` ``(B,)``: number of real steps of each
        right-padded row (the reference's answer to a ``PackedSequence``): padding steps
        leave the state unchanged, the backward direction starts at each row's last real
        step, and outputs at padding are zero.

        Returns ``output`` ``(B, T, num_directions * H)`` and ``h_n`` (``(h_n, c_n)`` for the
        LSTM), each ``(num_layers * num_directions, B, H)``, as the built-in does.
        """
        if x.dim() != 3:
            raise ValueError(
                f"ReferenceRecurrent expects a 3-D input (batch, time, features); "
                f"received shape {tuple(x.shape)}."
            )
        if not self.batch_first:
            x = x.transpose(0, 1)  # (B, T, input_size)
        batch, time = x.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), time, device=x.device)
        lengths = lengths.to(x.device)
        if hx is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            hx = (zeros, zeros) if self.cell == "lstm" else (zeros,)
        elif isinstance(hx, torch.Tensor):
            hx = (hx,)

        final_states: list[State] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes()):
                index = layer * self.num_directions + direction
                initial = tuple(s[index] for s in hx)
                output, state = self._scan(x, initial, f"l{layer}{suffix}", lengths,
                                           reverse=direction == 1)
                outputs.append(output)
                final_states.append(state)
            x = torch.cat(outputs, dim=2)  # (B, T, num_directions * H)
            if layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)

        h_n = tuple(torch.stack(parts) for parts in zip(*final_states))  # each (L * D, B, H)
        output = x if self.batch_first else x.transpose(0, 1)
        return output, (h_n if self.cell == "lstm" else h_n[0])

    def _scan(self, x: torch.Tensor, state: State, name: str, lengths: torch.Tensor,
              reverse: bool) -> tuple[torch.Tensor, State]:
        """One direction of one layer over ``x`` ``(B, T, F)`` → ``(B, T, H)``, final state."""
        step = CELLS[self.cell].step
        weight_hh = getattr(self, f"weight_hh_{name}")
        bias_hh = getattr(self, f"bias_hh_{name}")
        if reverse:
            x = reverse_padded(x, lengths)
        # The input projection has no recurrence: one matmul for every step at once.
        input_gates = F.linear(x, getattr(self, f"weight_ih_{name}"), getattr(self, f"bias_ih_{name}"))
        outputs = []
        for t in range(x.shape[1]):
            new_state = step(input_gates[:, t], state, weight_hh, bias_hh)
            real = (t < lengths).unsqueeze(1)  # (B, 1)
            state = tuple(torch.where(real, new, old) for new, old in zip(new_state, state))
            outputs.append(torch.where(real, new_state[0], 0.0))
        output = torch.stack(outputs, dim=1)  # (B, T, H)
        if reverse:
            output = reverse_padded(output, lengths)
        return output, state


def recurrent_stack(cell: CellName, input_size: int, hidden_size: int, num_layers: int,
                    bidirectional: bool, dropout: float,
                    implementation: Implementation) -> nn.Module:
    """A batch-first stack: the fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``"builtin"``) or
    ``ReferenceRecurrent`` (``"reference"``). Both have the same state-dict keys."""
    _check_choice("cell", cell, list(CELLS))
    _check_choice("implementation", implementation, ["builtin", "reference"])
    # Both put dropout between layers only; the built-in warns when there is no such place.
    between_layers = dropout if num_layers > 1 else 0.0
    if implementation == "builtin":
        return CELLS[cell].builtin(input_size, hidden_size, num_layers, batch_first=True,
                                   dropout=between_layers, bidirectional=bidirectional)
    return ReferenceRecurrent(cell, input_size, hidden_size, num_layers,
                              dropout=between_layers, bidirectional=bidirectional)


def _run_padded(stack: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Outputs ``(B, T, D)`` of a stack over right-padded ``x`` ``(B, T, E)``, zero at padding.
    Padding never reaches a real position, in either direction."""
    if isinstance(stack, ReferenceRecurrent):
        return stack(x, lengths=lengths)[0]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    output, _ = stack(packed)
    return pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])[0]


def _check_tokens(model: str, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.is_floating_point():
        raise ValueError(
            f"{model} expects integer token ids of shape (batch, time); received "
            f"{x.dtype} of shape {tuple(x.shape)}. Encode text with the dataset's vocabulary "
            f"first (e.g. deepnet.data.text.encode_text)."
        )


def _check_config(config: Any, positive: tuple[str, ...]) -> None:
    for name in positive:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Received an invalid value for `{name}`: expected a positive integer. "
                f"Received: {name}={value!r}."
            )
    dropout = config.dropout
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"Received an invalid value for `dropout`: expected a probability in [0, 1). "
            f"Received: dropout={dropout!r}."
        )
    _check_choice("cell", config.cell, list(CELLS))
    _check_choice("implementation", config.implementation, ["builtin", "reference"])


# ------------------------------------------------------------------------- models


@dataclass(frozen=True)
class RecurrentClassifierConfig:
    vocab_size: int = 20_000
    num_classes: int = 2
    embed_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    cell: CellName = "lstm"
    dropout: float = 0.5
    pooling: Pooling = "max"
    implementation: Implementation = "builtin"
    embed_dropout: float = 0.0  # dropout on the word embeddings (0 = off, the original model)

    def __post_init__(self) -> None:
        _check_config(self, ("vocab_size", "num_classes", "embed_dim", "hidden_size", "num_layers"))
        _check_choice("pooling", self.pooling, ["max", "mean"])
        if not 0.0 <= self.embed_dropout < 1.0:
            raise ValueError(
                f"Received an invalid value for `embed_dropout`: expected a probability in [0, 1). "
                f"Received: embed_dropout={self.embed_dropout!r}."
            )


class RecurrentClassifier(nn.Module):
    """Embedding (id 0 = padding) → dropout (``embed_dropout``) → recurrent stack → max or mean
    pooling over the real positions → dropout → linear head.

    Input: token ids ``(B, T)``, right-padded with 0; a row's length runs to its last
    non-zero id. Output: logits ``(B, num_classes)``, unchanged by extra padding.
    """

    def __init__(self, config: RecurrentClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        # Small text sets (SST-2: 6,920 sentences) overfit through the embedding table first;
        # dropping embedding units is the usual remedy. No parameters, so state dicts are unchanged.
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.rnn = recurrent_stack(config.cell, config.embed_dim, config.hidden_size,
                                   config.num_layers, config.bidirectional, config.dropout,
                                   config.implementation)
        self.num_features = config.hidden_size * (2 if config.bidirectional else 1)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.num_features, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` → pooled features ``(B, num_features)``."""
        _check_tokens(type(self).__name__, x)
        positions = torch.arange(1, x.shape[1] + 1, device=x.device)  # (T,)
        # An all-padding row keeps one step, so that it still gets (constant) logits.
        lengths = torch.where(x != 0, positions, 0).amax(dim=1).clamp(min=1)  # (B,)
        real = (positions <= lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        outputs = _run_padded(self.rnn, self.embed_dropout(self.embedding(x)), lengths)  # (B, T, num_features)
        if self.config.pooling == "max":
            return outputs.masked_fill(~real, float("-inf")).amax(dim=1)
        return (outputs * real).sum(dim=1) / lengths.unsqueeze(1).to(outputs.dtype)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` → logits ``(B, num_classes)``."""
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)


@dataclass(frozen=True)
class CharLanguageModelConfig:
    vocab_size: int = 65
    block_size: int = 256
    embed_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.2
    cell: CellName = "lstm"
    implementation: Implementation = "builtin"

    def __post_init__(self) -> None:
        _check_config(self, ("vocab_size", "block_size", "embed_dim", "hidden_size", "num_layers"))


class CharLanguageModel(nn.Module):
    """Embedding → unidirectional recurrent stack → dropout → linear head over the vocabulary.

    Input: ids ``(B, T)``; output: next-token logits ``(B, T, vocab_size)``. ``block_size`` is
    the training window; the recurrence itself takes any ``T``.
    """

    def __init__(self, config: CharLanguageModelConfig) -> None:
        super().__init__()
        self.config = config
        self.block_size = config.block_size
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.rnn = recurrent_stack(config.cell, config.embed_dim, config.hidden_size,
                                   config.num_layers, False, config.dropout,
                                   config.implementation)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward_features(self, idx: torch.Tensor) -> torch.Tensor:
        """Ids ``(B, T)`` → hidden states ``(B, T, hidden_size)``."""
        _check_tokens(type(self).__name__, idx)
        return self.rnn(self.embedding(idx))[0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(B, T, hidden_size)`` → logits ``(B, T, vocab_size)``."""
        return self.head(self.dropout(features))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(idx))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue each row of ``idx`` ``(B, T)`` by ``max_new_tokens`` sampled ids; returns
        ``(B, T + max_new_tokens)``. The recurrent state is carried, so each new id costs one
        step (a window-cropping sampler also works, but forgets beyond ``block_size``). Call
        ``eval()`` first to switch dropout off."""
        _check_tokens(type(self).__name__, idx)
        features, state = self.rnn(self.embedding(idx))  # the prompt primes the state
        for _ in range(max_new_tokens):
            logits = self.head(features[:, -1]) / temperature  # (B, vocab_size)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probabilities = F.softmax(logits, dim=-1)
            next_id = torch.multinomial(probabilities, 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
            features, state = self.rnn(self.embedding(next_id), state)
        return idx


# ------------------------------------------------------------------------ factories


def _create_recurrent_classifier(**arguments: Any) -> RecurrentClassifier:
    return RecurrentClassifier(RecurrentClassifierConfig(**arguments))


def _create_char_language_model(**arguments: Any) -> CharLanguageModel:
    return CharLanguageModel(CharLanguageModelConfig(**arguments))


_TINY_CLASSIFIER = {"vocab_size": 100, "embed_dim": 8, "hidden_size": 8, "num_layers": 2}
_TINY_LM = {"vocab_size": 32, "block_size": 16, "embed_dim": 8, "hidden_size": 8, "num_layers": 2}
_BIDIRECTIONAL = "Schuster & Paliwal, Bidirectional Recurrent Neural Networks (1997)"


# ------------------------------------------------------------------ registered models
# Each factory's parameters are its config's fields, passed on by name.


@register_model(
    "lstm-classifier", family="recurrent", year=1997,
    paper=f"Hochreiter & Schmidhuber, Long Short-Term Memory (1997); {_BIDIRECTIONAL}",
    input_kind="tokens", tiny=_TINY_CLASSIFIER,
)
def lstm_classifier(vocab_size: int = 20_000, num_classes: int = 2, embed_dim: int = 128,
                    hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = True,
                    cell: CellName = "lstm", dropout: float = 0.5, pooling: Pooling = "max",
                    implementation: Implementation = "builtin",
                    embed_dropout: float = 0.0) -> RecurrentClassifier:
    """Bidirectional LSTM sentence classifier with max pooling over the real tokens."""
    return _create_recurrent_classifier(
        vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim,
        hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, cell=cell,
        dropout=dropout, pooling=pooling, implementation=implementation,
        embed_dropout=embed_dropout,
    )


@register_model(
    "gru-classifier", family="recurrent", year=2014,
    paper="Cho et al., Learning Phrase Representations using RNN Encoder-Decoder (2014)",
    input_kind="tokens", tiny=_TINY_CLASSIFIER,
)
def gru_classifier(vocab_size: int = 20_000, num_classes: int = 2, embed_dim: int = 128,
                   hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False,
                   cell: CellName = "gru", dropout: float = 0.5, pooling: Pooling = "max",
                   implementation: Implementation = "builtin",
                   embed_dropout: float = 0.0) -> RecurrentClassifier:
    """GRU sentence classifier with max pooling over the real tokens."""
    return _create_recurrent_classifier(
        vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim,
        hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, cell=cell,
        dropout=dropout, pooling=pooling, implementation=implementation,
        embed_dropout=embed_dropout,
    )


@register_model(
    "rnn-classifier", family="recurrent", year=1990,
    paper="Elman, Finding Structure in Time (1990)",
    input_kind="tokens", tiny=_TINY_CLASSIFIER,
)
def rnn_classifier(vocab_size: int = 20_000, num_classes: int = 2, embed_dim: int = 128,
                   hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False,
                   cell: CellName = "rnn", dropout: float = 0.5, pooling: Pooling = "max",
                   implementation: Implementation = "builtin",
                   embed_dropout: float = 0.0) -> RecurrentClassifier:
    """Elman (tanh) RNN sentence classifier with max pooling over the real tokens."""
    return _create_recurrent_classifier(
        vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim,
        hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, cell=cell,
        dropout=dropout, pooling=pooling, implementation=implementation,
        embed_dropout=embed_dropout,
    )


@register_model(
    "char-lstm", family="recurrent", year=1997,
    paper="Hochreiter & Schmidhuber, Long Short-Term Memory (1997)",
    input_kind="lm", tiny=_TINY_LM,
)
def char_lstm(vocab_size: int = 65, block_size: int = 256, embed_dim: int = 64,
              hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.2,
              implementation: Implementation = "builtin") -> CharLanguageModel:
    """Character-level LSTM language model."""
    return _create_char_language_model(
        vocab_size=vocab_size, block_size=block_size, embed_dim=embed_dim,
        hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, cell="lstm",
        implementation=implementation,
    )


@register_model(
    "char-gru", family="recurrent", year=2014,
    paper="Cho et al., Learning Phrase Representations using RNN Encoder-Decoder (2014)",
    input_kind="lm", tiny=_TINY_LM,
)
def char_gru(vocab_size: int = 65, block_size: int = 256, embed_dim: int = 64,
             hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.2,
             implementation: Implementation = "builtin") -> CharLanguageModel:
    """Character-level GRU language model."""
    return _create_char_language_model(
        vocab_size=vocab_size, block_size=block_size, embed_dim=embed_dim,
        hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, cell="gru",
        implementation=implementation,
    )


@register_model(
    "char-rnn", family="recurrent", year=1990,
    paper="Elman, Finding Structure in Time (1990)",
    input_kind="lm", tiny=_TINY_LM,
)
def char_rnn(vocab_size: int = 65, block_size: int = 256, embed_dim: int = 64,
             hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.2,
             implementation: Implementation = "builtin") -> CharLanguageModel:
    """Character-level Elman (tanh) RNN language model."""
    return _create_char_language_model(
        vocab_size=vocab_size, block_size=block_size, embed_dim=embed_dim,
        hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, cell="rnn",
        implementation=implementation,
    )
