"""Text datasets: SST-2 (binary sentiment over word ids) and Tiny Shakespeare (character
language modelling), plus the encoders that prediction and sampling apply.

Both loaders read plain files found by ``find_data_file`` (``data_dir``, then
``$DEEPNET_DATA/<name>``, then the user cache) and keep everything in memory as int64
tensors. What a model needs to turn new text into ids is stored in ``preprocessing``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from deepnet.data._dataset import Dataset, Split
from deepnet.data._paths import DataError, find_data_file, missing_file_error

__all__ = [
    "PADDING_ID",
    "UNKNOWN_ID",
    "build_vocabulary",
    "decode_chars",
    "encode_chars",
    "encode_text",
    "load_sst2",
    "load_tiny_shakespeare",
    "tokenize",
]

PADDING_ID = 0
UNKNOWN_ID = 1
_PADDING_TOKEN = "<pad>"
_UNKNOWN_TOKEN = "<unk>"

SST2_FILES = {"train": "stsa.binary.train", "val": "stsa.binary.dev", "test": "stsa.binary.test"}
SST2_CLASS_NAMES = ["negative", "positive"]
SHAKESPEARE_FILE = "input.txt"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}). "
            f"Replace it with the original plain-text file."
        ) from None


# ---------------------------------------------------------------------------- words

# SST-2 is already tokenized in the Penn Treebank style ("was n't", "film 's", "-lrb-").
# The same rules turn raw text into those tokens at prediction time, and training applies
# them too, so that a sentence is encoded identically in both places.
_TOKEN_RULES = [
    (re.compile(r"\("), " -lrb- "),
    (re.compile(r"\)"), " -rrb- "),
    (re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b"), r" \1"),  # "isn't" → "is n't"
    (re.compile(r"(\.\.\.|--|[,;:!?\"]|\.(?=\s|$))"), r" \1 "),
    (re.compile(r"(?<!\\)/"), r"\\/"),  # the treebank escapes slashes
]


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Split ``text`` into SST-style tokens: ``"It isn't bad."`` → ``["it", "is", "n't", "bad", "."]``."""
    if lowercase:
        text = text.lower()
    for pattern, replacement in _TOKEN_RULES:
        text = pattern.sub(replacement, text)
    return text.split()


def build_vocabulary(sentences: list[list[str]], min_count: int = 1) -> list[str]:
    """The id → token table: padding (id 0), unknown (id 1), then every token seen at least
    ``min_count`` times, most frequent first (ties alphabetical, so the table is stable)."""
    counts = Counter(token for tokens in sentences for token in tokens)
    kept = [token for token, count in counts.items() if count >= min_count]
    return [_PADDING_TOKEN, _UNKNOWN_TOKEN, *sorted(kept, key=lambda token: (-counts[token], token))]


def _encode_tokens(sentences: list[list[str]], tokens: list[str], max_len: int) -> torch.Tensor:
    """Token lists → int64 ``(N, max_len)``: unknown tokens → 1, cut after ``max_len``
    tokens, right-padded with 0."""
    index = {token: i for i, token in enumerate(tokens)}
    rows = []
    for sentence in sentences:
        ids = [index.get(token, UNKNOWN_ID) for token in sentence[:max_len]]
        rows.append(ids + [PADDING_ID] * (max_len - len(ids)))
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), max_len)


def encode_text(texts: list[str], preprocessing: dict[str, Any]) -> torch.Tensor:
    """Raw sentences → int64 ids ``(N, max_len)`` with the vocabulary stored in
    ``preprocessing`` (``Dataset.preprocessing`` of ``load_sst2``, or ``model.json``)."""
    if isinstance(texts, str):
        raise TypeError(
            "encode_text takes a list of texts; received a single str. "
            "Wrap it in a list: encode_text([text], preprocessing)."
        )
    if preprocessing.get("kind") != "vocab":
        raise ValueError(
            f"encode_text needs word-vocabulary preprocessing ({{'kind': 'vocab', ...}}); "
            f"received kind={preprocessing.get('kind')!r}. Pass the preprocessing of the "
            f"dataset the model was trained on."
        )
    lowercase = preprocessing.get("lowercase", True)
    sentences = [tokenize(text, lowercase) for text in texts]
    return _encode_tokens(sentences, preprocessing["tokens"], preprocessing["max_len"])


def _read_sst2(path: Path) -> tuple[list[list[str]], list[int]]:
    """One ``<label> <sentence>`` per line → token lists and labels. Blank lines are skipped."""
    sentences, labels = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if parts[0] not in ("0", "1") or len(parts) < 2:
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise DataError(
                f"{path}, line {number}: expected `<label> <sentence>` with label 0 (negative) "
                f"or 1 (positive); received {shown!r}. Fix or delete that line: every line of "
                f"an SST-2 file reads like `1 a gripping , funny film .`."
            )
        labels.append(int(parts[0]))
        sentences.append(tokenize(parts[1]))
    return sentences, labels


def load_sst2(
    data_dir: str | os.PathLike | None = None,
    max_len: int = 64,
    seed: int = 0,
    min_count: int = 1,
) -> Dataset:
    """SST-2 sentence-level binary sentiment (Socher et al. 2013; split of Kim 2014):
    6,920 train / 872 val (the dev file) / 1,821 test sentences.

    ``x``: int64 ``(N, max_len)`` word ids, cut after ``max_len`` tokens and right-padded with
    0; id 1 is every word outside the vocabulary. ``y``: int64 ``(N,)``, 0 = negative,
    1 = positive. The vocabulary comes from the train file only: words seen at least
    ``min_count`` times there. ``seed`` is accepted like every loader's; the splits are the
    published files, so nothing here is random.
    """
    del seed  # fixed published splits
    for name, value in (("max_len", max_len), ("min_count", min_count)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Received an invalid value for `{name}`: expected a positive integer. "
                f"Received: {name}={value!r}."
            )
    parsed = {}
    for split, filename in SST2_FILES.items():
        path = find_data_file("sst2", filename, data_dir)
        if path is None:
            raise missing_file_error("sst2", filename, data_dir)
        parsed[split] = _read_sst2(path)

    tokens = build_vocabulary(parsed["train"][0], min_count)
    splits = {
        split: Split(_encode_tokens(sentences, tokens, max_len), torch.tensor(labels, dtype=torch.int64))
        for split, (sentences, labels) in parsed.items()
    }
    return Dataset(
        name="sst2",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        task="classification",
        input_shape=(max_len,),
        num_classes=2,
        class_names=list(SST2_CLASS_NAMES),
        # tokens[i] is the word of id i, padding and unknown included.
        preprocessing={"kind": "vocab", "tokens": tokens, "max_len": max_len, "lowercase": True},
        vocab_size=len(tokens),
        input_kind="tokens",
    )


# ---------------------------------------------------------------------- characters


def encode_chars(text: str, preprocessing: dict[str, Any]) -> torch.Tensor:
    """Text → int64 ids ``(len(text),)`` with the character table in ``preprocessing``
    (``{"kind": "chars", "chars": ...}``); e.g. a prompt to sample from."""
    if preprocessing.get("kind") != "chars":
        raise ValueError(
            f"encode_chars needs character preprocessing ({{'kind': 'chars', ...}}); received "
            f"kind={preprocessing.get('kind')!r}. Pass the preprocessing of the dataset the "
            f"model was trained on."
        )
    index = {char: i for i, char in enumerate(preprocessing["chars"])}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        raise ValueError(
            f"The text holds characters outside the model's vocabulary: "
            f"{''.join(unknown)!r}. Remove or replace them; the vocabulary is "
            f"{preprocessing['chars']!r}."
        )
    return torch.tensor([index[char] for char in text], dtype=torch.int64)


def decode_chars(ids: torch.Tensor | list[int], preprocessing: dict[str, Any]) -> str:
    """Ids ``(T,)`` → text; the inverse of ``encode_chars``."""
    chars = preprocessing["chars"]
    values = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    return "".join(chars[i] for i in values)


def _windows(ids: torch.Tensor, block_size: int, stride: int, split: str) -> Split:
    """Windows of ``block_size`` ids every ``stride`` ids: ``x`` ``(N, block_size)`` and ``y``,
    the same window one character later. A tail shorter than a stride is dropped."""
    if len(ids) < block_size + 1:
        raise ValueError(
            f"Tiny Shakespeare's {split} split has {len(ids)} characters, fewer than "
            f"block_size + 1 = {block_size + 1}. Lower block_size or raise val_fraction."
        )
    windows = ids.unfold(0, block_size + 1, stride)  # (N, block_size + 1)
    return Split(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())


def load_tiny_shakespeare(
    data_dir: str | os.PathLike | None = None,
    block_size: int = 256,
    stride: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Tiny Shakespeare (Karpathy's char-rnn corpus, 1,115,394 characters) for character
    language modelling.

    Split by position, never shuffled, so no window straddles two splits: the first
    ``1 - val_fraction`` of the text trains; the rest is halved, its first half is ``val`` and
    its second half ``test`` (with the default, 5% each). ``x`` and ``y`` are int64
    ``(N, block_size)``, ``y`` being ``x`` shifted by one character. Training windows start
    every ``stride`` characters (default ``block_size // 2``, so they overlap); validation and
    test windows do not overlap (stride ``block_size``). The character table is the sorted
    set of the whole file, so every split can be encoded. ``seed`` is accepted like every
    loader's; nothing here is random.
    """
    del seed  # the split is positional
    stride = max(block_size // 2, 1) if stride is None else stride
    for name, value in (("block_size", block_size), ("stride", stride)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Received an invalid value for `{name}`: expected a positive integer. "
                f"Received: {name}={value!r}."
            )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"Received an invalid value for `val_fraction`: expected a fraction strictly "
            f"between 0 and 1. Received: val_fraction={val_fraction!r}."
        )
    path = find_data_file("tiny-shakespeare", SHAKESPEARE_FILE, data_dir)
    if path is None:
        raise missing_file_error("tiny-shakespeare", SHAKESPEARE_FILE, data_dir)
    text = _read_text(path)

    preprocessing = {"kind": "chars", "chars": "".join(sorted(set(text)))}
    ids = encode_chars(text, preprocessing)  # (L,)
    train_end = int(len(ids) * (1 - val_fraction))
    val_end = train_end + (len(ids) - train_end) // 2
    return Dataset(
        name="tiny-shakespeare",
        train=_windows(ids[:train_end], block_size, stride, "train"),
        val=_windows(ids[train_end:val_end], block_size, block_size, "val"),
        test=_windows(ids[val_end:], block_size, block_size, "test"),
        task="language_modeling",
        input_shape=(block_size,),
        preprocessing=preprocessing,
        vocab_size=len(preprocessing["chars"]),
        input_kind="lm",
    )
