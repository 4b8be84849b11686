"""Text loaders on small files written here (never the shared data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepnet.data._paths import DataError
from deepnet.data.text import (
    decode_chars,
    encode_chars,
    encode_text,
    load_sst2,
    load_tiny_shakespeare,
    tokenize,
)

TRAIN = [
    "1 a gripping , funny film .",
    "0 a dull , dull film .",
    "",  # blank lines are skipped
    "1 funny and warm",
]
DEV = ["0 a tedious film", "1 gripping"]
TEST = ["1 funny film ."]


@pytest.fixture(autouse=True)
def _no_outside_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the files a test writes may be found: no $DEEPNET_DATA, an empty user cache."""
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _write_sst2(root: Path, train: list[str] = TRAIN, dev: list[str] = DEV,
                test: list[str] = TEST) -> Path:
    folder = root / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    for filename, lines in (("stsa.binary.train", train), ("stsa.binary.dev", dev),
                            ("stsa.binary.test", test)):
        (folder / filename).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_sst2_splits_shapes_and_metadata(tmp_path: Path) -> None:
    data = load_sst2(_write_sst2(tmp_path), max_len=8)
    assert (len(data.train), len(data.val), len(data.test)) == (3, 2, 1)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == split.y.dtype == torch.int64
        assert split.x.shape[1] == 8
    assert data.train.y.tolist() == [1, 0, 1]
    assert data.val.y.tolist() == [0, 1]
    assert data.name == "sst2" and data.task == "classification" and data.input_kind == "tokens"
    assert data.num_classes == 2 and data.class_names == ["negative", "positive"]
    assert data.input_shape == (8,)
    assert data.preprocessing["kind"] == "vocab" and data.preprocessing["max_len"] == 8
    assert data.preprocessing["lowercase"] is True
    assert data.vocab_size == len(data.preprocessing["tokens"])


def test_sst2_finds_files_through_a_parent_folder_and_deepnet_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_sst2(tmp_path)
    assert len(load_sst2(tmp_path).train) == 3  # the parent of sst2/
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path))
    assert len(load_sst2().train) == 3


def test_sst2_vocabulary_comes_from_train_only(tmp_path: Path) -> None:
    data = load_sst2(_write_sst2(tmp_path), max_len=8)
    tokens = data.preprocessing["tokens"]
    assert tokens[:2] == ["<pad>", "<unk>"]
    # Most frequent first, ties alphabetical: a/dull/film/funny x2 (","/"." x2 too).
    assert tokens[2:8] == [",", ".", "a", "dull", "film", "funny"]
    assert "tedious" not in tokens  # a dev-only word
    tedious_row = data.val.x[0]
    assert tedious_row[:3].tolist() == [tokens.index("a"), 1, tokens.index("film")]


def test_sst2_min_count_drops_rare_words(tmp_path: Path) -> None:
    data = load_sst2(_write_sst2(tmp_path), min_count=2)
    assert "gripping" not in data.preprocessing["tokens"]
    assert data.train.x[0, 1].item() == 1  # "gripping" is now unknown


def test_sst2_pads_right_and_truncates(tmp_path: Path) -> None:
    data = load_sst2(_write_sst2(tmp_path), max_len=4)
    tokens = data.preprocessing["tokens"]
    long_row, short_row = data.train.x[0], data.train.x[2]  # 6 tokens, 3 tokens
    assert [tokens[i] for i in long_row.tolist()] == ["a", "gripping", ",", "funny"]
    assert [tokens[i] for i in short_row.tolist()] == ["funny", "and", "warm", "<pad>"]


def test_encode_text_matches_training_encoding(tmp_path: Path) -> None:
    data = load_sst2(_write_sst2(tmp_path), max_len=8)
    encoded = encode_text(["A gripping, funny film.", "Wonderful"], data.preprocessing)
    assert encoded.dtype == torch.int64 and encoded.shape == (2, 8)
    torch.testing.assert_close(encoded[0], data.train.x[0])
    assert encoded[1].tolist() == [1] + [0] * 7
    with pytest.raises(TypeError, match=r"Wrap it in a list"):
        encode_text("a funny film", data.preprocessing)


def test_tokenize_follows_the_treebank_conventions() -> None:
    assert tokenize("It isn't bad (at all)... A 1/2-star film's charm!") == [
        "it", "is", "n't", "bad", "-lrb-", "at", "all", "-rrb-", "...",
        "a", "1\\/2-star", "film", "'s", "charm", "!",
    ]
    already = "it 's a charming and often affecting journey . -lrb- sic -rrb- and\\/or"
    assert tokenize(already) == already.split()


def test_sst2_malformed_label_names_file_line_and_fix(tmp_path: Path) -> None:
    folder = _write_sst2(tmp_path, train=["1 fine", "0 bad", "", "2 what is this"])
    with pytest.raises(DataError, match=r"stsa\.binary\.train, line 4: expected `<label> "
                                        r"<sentence>` with label 0 \(negative\) or 1 "
                                        r"\(positive\); received '2 what is this'\. Fix or delete"):
        load_sst2(folder)


def test_sst2_label_without_sentence_is_malformed(tmp_path: Path) -> None:
    folder = _write_sst2(tmp_path, dev=["0 fine", "1"])
    with pytest.raises(DataError, match=r"stsa\.binary\.dev, line 2: .*received '1'"):
        load_sst2(folder)


def test_sst2_missing_file(tmp_path: Path) -> None:
    folder = _write_sst2(tmp_path)
    (folder / "stsa.binary.dev").unlink()
    with pytest.raises(DataError, match=r"Dataset 'sst2': file 'stsa\.binary\.dev' not found.*"
                                        r"Pass --data-dir DIR or set DEEPNET_DATA"):
        load_sst2(folder)


# ------------------------------------------------------------------ Tiny Shakespeare

TEXT = "".join(f"Line {i:02d}: to be, or not to be!\n" for i in range(20))  # 600 characters


def _write_shakespeare(root: Path, text: str = TEXT) -> Path:
    folder = root / "tiny-shakespeare"
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text(text, encoding="utf-8")
    return folder


def test_tiny_shakespeare_splits_windows_and_metadata(tmp_path: Path) -> None:
    data = load_tiny_shakespeare(_write_shakespeare(tmp_path), block_size=8)
    chars = data.preprocessing["chars"]
    assert data.preprocessing["kind"] == "chars" and chars == "".join(sorted(set(TEXT)))
    assert data.vocab_size == len(chars)
    assert data.task == "language_modeling" and data.input_kind == "lm"
    assert data.input_shape == (8,) and data.model_arguments()["block_size"] == 8

    train_text, val_text, test_text = TEXT[:540], TEXT[540:570], TEXT[570:]  # 90% / 5% / 5%
    assert len(data.train) == (540 - 9) // 4 + 1  # stride block_size // 2
    assert len(data.val) == len(data.test) == (30 - 9) // 8 + 1  # stride block_size
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == split.y.dtype == torch.int64 and split.x.shape[1] == 8
        torch.testing.assert_close(split.x[:, 1:], split.y[:, :-1])
    assert decode_chars(data.train.x[1], data.preprocessing) == train_text[4:12]
    assert decode_chars(data.train.y[1], data.preprocessing) == train_text[5:13]
    assert decode_chars(data.val.x[1], data.preprocessing) == val_text[8:16]
    assert decode_chars(data.test.x[0], data.preprocessing) == test_text[:8]


def test_tiny_shakespeare_stride_and_fraction(tmp_path: Path) -> None:
    data = load_tiny_shakespeare(_write_shakespeare(tmp_path), block_size=8, stride=8,
                                 val_fraction=0.2)
    assert len(data.train) == (480 - 9) // 8 + 1
    assert len(data.val) == len(data.test) == (60 - 9) // 8 + 1


def test_char_encoding_round_trip_and_unknown_characters(tmp_path: Path) -> None:
    data = load_tiny_shakespeare(_write_shakespeare(tmp_path), block_size=8)
    ids = encode_chars("to be", data.preprocessing)
    assert ids.dtype == torch.int64 and ids.shape == (5,)
    assert decode_chars(ids, data.preprocessing) == decode_chars(ids.tolist(), data.preprocessing) == "to be"
    with pytest.raises(ValueError, match=r"outside the model's vocabulary: 'Zq'"):
        encode_chars("Zq to be", data.preprocessing)


def test_tiny_shakespeare_block_too_long_for_a_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"val split has 30 characters, fewer than "
                                         r"block_size \+ 1 = 33\. Lower block_size"):
        load_tiny_shakespeare(_write_shakespeare(tmp_path), block_size=32)


def test_tiny_shakespeare_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Dataset 'tiny-shakespeare': file 'input\.txt' not found"):
        load_tiny_shakespeare(tmp_path)
