import gzip

import numpy as np
import pytest
import torch

from deepnet.data import Augment, AugmentConfig, BatchLoader, DataError, Split, load_dataset, load_mnist
from deepnet.data.vision import MNIST_FILES


def test_digits_splits_and_train_only_normalisation():
    data = load_dataset("digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1294, 144, 359)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert abs(data.train.x.mean().item()) < 1e-5  # standardised on train...
    assert abs(data.test.x.mean().item()) > 1e-4  # ...not on test
    assert data.preprocessing["kind"] == "normalize" and data.preprocessing["scale"] == 16.0


def test_split_is_seeded():
    a, b, c = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.val.y, c.val.y)


def test_loader_covers_every_sample_once_and_is_seeded_per_epoch():
    split = Split(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    loader = BatchLoader(split, 3, shuffle=True, seed=5)
    first = torch.cat([y for _, y in loader])
    assert sorted(first.tolist()) == list(range(10)) and len(loader) == 4
    loader.set_epoch(1)
    second = torch.cat([y for _, y in loader])
    assert not torch.equal(first, second)
    loader.set_epoch(0)
    assert torch.equal(first, torch.cat([y for _, y in loader]))
    assert len(BatchLoader(split, 3, drop_last=True)) == 3


def test_loader_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(Split(torch.zeros(2, 1), torch.zeros(2)), 0)


def test_augment_keeps_shape_and_changes_pixels():
    x = torch.randn(8, 1, 28, 28)
    out = Augment(AugmentConfig(shift=0.1, rotate=10, scale=0.1, noise=0.05))(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert torch.equal(Augment(AugmentConfig())(x), x)


def test_augment_identity_warp_is_exact_for_zero_ranges():
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(Augment(AugmentConfig(shift=1e-9))(x), x, atol=1e-5)


def test_mnist_from_idx_files(fake_mnist):
    data = load_mnist(data_dir=fake_mnist, verify_md5=False, val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (90, 30, 40)
    assert data.train.x.shape[1:] == (1, 28, 28) and data.train.y.dtype == torch.int64


def test_mnist_wrong_md5(fake_mnist):
    with pytest.raises(DataError, match=r"has MD5 [0-9a-f]{32}, expected f68b3c2d.*download it again"):
        load_mnist(data_dir=fake_mnist)


def test_mnist_truncated_gzip(fake_mnist):
    path = fake_mnist / MNIST_FILES["train_images"][0]
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_mnist(data_dir=fake_mnist, verify_md5=False)


def test_mnist_wrong_magic(fake_mnist):
    images = fake_mnist / MNIST_FILES["train_images"][0]
    labels = fake_mnist / MNIST_FILES["train_labels"][0]
    images.write_bytes(labels.read_bytes())  # a labels file where the images should be
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        load_mnist(data_dir=fake_mnist, verify_md5=False)


def test_mnist_short_payload(fake_mnist):
    path = fake_mnist / MNIST_FILES["test_labels"][0]
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(data_dir=fake_mnist, verify_md5=False)


def test_mnist_missing_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPNET_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    with pytest.raises(DataError, match=r"'train-images-idx3-ubyte.gz' not found.*--data-dir"):
        load_mnist(data_dir=tmp_path)


def test_csv_loading_and_standardisation(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["a,b,label"] + [f"{rng.normal():.3f},{rng.normal() * 10:.3f},{'yes' if i % 2 else 'no'}" for i in range(50)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines))
    data = load_dataset(str(path))
    assert data.class_names == ["no", "yes"] and data.input_shape == (2,)
    assert torch.allclose(data.train.x.mean(0), torch.zeros(2), atol=1e-5)
    assert data.preprocessing["columns"] == ["a", "b"]


def test_csv_non_numeric_value(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,x\n3,red,y\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': 'red' is not a number"):
        load_dataset(str(path))


def test_csv_missing_label_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no label column 'label'"):
        load_dataset(str(path))


def test_npz_arrays(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.random.rand(30, 4).astype(np.float32), y=np.arange(30) % 2)
    assert load_dataset(str(path)).num_classes == 2


def test_unknown_dataset_suggests():
    with pytest.raises(DataError, match="Did you mean 'mnist'"):
        load_dataset("mnsit")
