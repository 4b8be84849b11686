"""A user's own data: image folders, .npz files with explicit splits, class subsets, subsets
of the training split; and one clear line for each way such data can be wrong."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepnet.cli import main
from deepnet.data import DataError, load_dataset


def _shapes(n: int, size: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Three classes a small network tells apart: a bright square, a bright bar, dark noise."""
    images: dict[str, list[np.ndarray]] = {"square": [], "bar": [], "dark": []}
    for _ in range(n):
        base = rng.integers(0, 60, (size, size)).astype(np.uint8)
        square = base.copy()
        r, c = rng.integers(0, size // 2, 2)
        square[r : r + size // 2, c : c + size // 2] = 250
        bar = base.copy()
        bar[:, rng.integers(0, size - 3) :][:, :3] = 250
        images["square"].append(square)
        images["bar"].append(bar)
        images["dark"].append(base)
    return images


def write_folder(root: Path, n: int = 12, size: int = 12, colour: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, arrays in _shapes(n, size, rng).items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(arrays):
            image = Image.fromarray(array)
            image = image.convert("RGB") if colour else image
            image.save(root / name / (f"{i}.png" if i % 2 else f"{i}.jpg"), quality=95)
    return root


def test_image_folder_is_split_normalised_and_grey(tmp_path):
    data = load_dataset(str(write_folder(tmp_path / "shapes")))
    assert data.class_names == ["bar", "dark", "square"]
    assert data.input_shape == (1, 12, 12) and data.num_classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (26, 3, 7)
    assert data.preprocessing["kind"] == "normalize" and data.preprocessing["scale"] == 255.0
    assert abs(data.train.x.mean().item()) < 1e-5


def test_image_folder_colour_and_resize(tmp_path):
    root = write_folder(tmp_path / "shapes", colour=True)
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(root / "dark" / "odd.png")  # grey among colour
    data = load_dataset(str(root), image_size=[10, 8])
    assert data.input_shape == (3, 10, 8)
    assert load_dataset(str(root), image_size=8, channels=1).input_shape == (1, 8, 8)


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    write_folder(tmp_path / "f" / "train", n=10)
    write_folder(tmp_path / "f" / "test", n=4, seed=1)
    data = load_dataset(str(tmp_path / "f"), val_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 12)


def test_image_folder_mixed_sizes_say_to_set_image_size(tmp_path):
    root = write_folder(tmp_path / "shapes")
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(root / "dark" / "odd.png")
    with pytest.raises(DataError, match=r"different sizes: .* is 12x12 but .*odd.png is 16x20\. Set data.image_size"):
        load_dataset(str(root))


def test_image_folder_unreadable_image(tmp_path):
    root = write_folder(tmp_path / "shapes")
    (root / "bar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"broken.png is not a readable image .* Delete or replace the file"):
        load_dataset(str(root))


def test_image_folder_empty_class_folder(tmp_path):
    root = write_folder(tmp_path / "shapes")
    (root / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"Class folder .*zebra holds no images .* Add images to it or remove the folder"):
        load_dataset(str(root))


def test_image_folder_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class sub-folders; expected .*one sub-folder per class"):
        load_dataset(str(tmp_path / "flat"))


def test_image_size_on_a_named_dataset_is_refused():
    with pytest.raises(DataError, match="data.image_size applies to image folders only"):
        load_dataset("digits", image_size=8)


def test_npz_with_explicit_splits(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.normal(size=(40, 5)), y_train=np.arange(40) % 4, x_val=rng.normal(size=(8, 5)),
             y_val=np.arange(8) % 4, x_test=rng.normal(size=(12, 5)), y_test=np.arange(12) % 4,
             class_names=np.array(["a", "b", "c", "d"]))
    data = load_dataset(str(path))
    assert (len(data.train), len(data.val), len(data.test)) == (40, 8, 12)
    assert data.class_names == ["a", "b", "c", "d"] and data.input_kind == "vector"
    assert torch.equal(data.test.y, torch.arange(12) % 4)  # the user's test split, untouched

    np.savez(path, x_train=rng.normal(size=(40, 5)), y_train=np.arange(40) % 4, x_test=rng.normal(size=(10, 5)),
             y_test=np.arange(10) % 4)
    assert (len(load_dataset(str(path), val_fraction=0.25).val)) == 10


def test_npz_labels_out_of_range(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((6, 2)), y_train=np.array([0, 1, 2, 0, 1, 2]), x_test=np.zeros((2, 2)),
             y_test=np.array([0, 7]))
    with pytest.raises(DataError, match=r"test labels hold 7, but the training labels are 0..2: labels out of range"):
        load_dataset(str(path))
    np.savez(path, x=np.zeros((4, 2)), y=np.array([0, -1, 1, 0]))
    with pytest.raises(DataError, match=r"hold -1: labels out of range; expected integers 0..K-1"):
        load_dataset(str(path))


def test_npz_wrong_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 2)), y_train=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=r"must hold arrays 'x' and 'y', or 'x_train', 'y_train', 'x_test', 'y_test'"):
        load_dataset(str(path))
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"is not a readable .npz file"):
        load_dataset(str(path))


def test_classes_subset_is_relabelled_in_the_order_given():
    full = load_dataset("digits")
    data = load_dataset("digits", classes=[7, "3"])
    assert data.class_names == ["7", "3"] and data.num_classes == 2
    assert set(data.train.y.tolist()) == {0, 1}
    assert len(data.test) == int(((full.test.y == 7) | (full.test.y == 3)).sum())
    assert torch.equal(data.test.x[data.test.y == 0], full.test.x[full.test.y == 7])


def test_unknown_class_names_the_classes():
    with pytest.raises(DataError, match=r"data.classes names 'eleven', which digits does not have; its classes are"):
        load_dataset("digits", classes=["eleven"])


def test_max_train_samples_is_a_seeded_subset():
    a = load_dataset("digits", max_train_samples=100, seed=3)
    b = load_dataset("digits", max_train_samples=100, seed=3)
    c = load_dataset("digits", max_train_samples=100, seed=4)
    assert len(a.train) == 100 and torch.equal(a.train.y, b.train.y) and not torch.equal(a.train.y, c.train.y)
    assert len(a.test) == len(load_dataset("digits").test)  # only the training split shrinks


def test_train_on_an_image_folder_and_predict_one_file(tmp_path, capsys):
    root = write_folder(tmp_path / "shapes", n=30, size=16)
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--model", "convnet", "--epochs", "6", "--batch-size", "16",
                 "--out", str(out), "--quiet", "model.args={widths: [8, 16]}", "train.lr=0.01"]) == 0
    assert "test_accuracy" in capsys.readouterr().out
    probe = tmp_path / "probe.png"
    array = np.full((32, 32), 20, np.uint8)
    array[:, 10:16] = 250  # a bar, and twice the training size: predict resizes it as training did
    Image.fromarray(array).convert("RGB").save(probe)
    assert main(["predict", str(out), str(probe)]) == 0
    index, name, probability = capsys.readouterr().out.split()
    assert name == "bar" and 0 < float(probability) <= 1
