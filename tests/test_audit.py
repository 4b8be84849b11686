"""deepnet audit: label issues, duplicates, leakage, class counts and outliers on planted data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepnet.audit import AUDIT_KEYS, audit, find_pairs, project
from deepnet.cli import main


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    """Well-separated blobs (4 classes, 16 features) with known faults: 12 flipped training labels,
    6 training rows copied into the test split, one exact duplicate inside train, one far outlier."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (4, 16))
    y_train = rng.integers(0, 4, 600)
    x_train = (centers[y_train] + rng.normal(0, 1, (600, 16))).astype(np.float32)
    y_test = rng.integers(0, 4, 200)
    x_test = (centers[y_test] + rng.normal(0, 1, (200, 16))).astype(np.float32)
    flipped = rng.choice(600, 12, replace=False)
    noisy = y_train.copy()
    noisy[flipped] = (y_train[flipped] + rng.integers(1, 4, 12)) % 4
    sources, targets = rng.choice(600, 6, replace=False), rng.choice(200, 6, replace=False)
    x_test[targets], y_test[targets] = x_train[sources], y_train[sources]
    x_train[5] = x_train[400]  # an exact duplicate inside train
    noisy[5] = noisy[400]
    x_train[77] = centers[0] + 40  # far from everything
    path = tmp_path_factory.mktemp("audit") / "planted.npz"
    np.savez(path, x_train=x_train, y_train=noisy, x_test=x_test, y_test=y_test)
    truth = {"flipped": set(flipped.tolist()) - {5, 77}, "leaks": set(zip(sources.tolist(), targets.tolist())),
             "duplicate": (5, 400), "outlier": 77}
    return path, truth


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory) -> tuple[dict, dict, Path]:
    path, truth = planted
    out = tmp_path_factory.mktemp("audit-out")
    result = audit(str(path), out=out, folds=3, overrides=["train.epochs=8", "train.threads=1"])
    return result, truth, out


def test_audit_json_has_the_documented_keys(audited):
    result, _, out = audited
    saved = json.loads((out / "audit.json").read_text())
    assert set(AUDIT_KEYS) <= saved.keys()
    issue = saved["label_issues"][0]
    assert set(issue) == {"split", "index", "given", "suggested", "score"}
    assert set(saved["leakage"][0]) == {"train_index", "test_index", "distance"}
    assert saved["class_counts"]["train"] and sum(saved["class_counts"]["test"].values()) == 200


def test_flipped_labels_rank_first(audited):
    result, truth, _ = audited
    train = [row["index"] for row in result["label_issues"] if row["split"] == "train"]
    top = train[: len(truth["flipped"])]
    assert len(set(top) & truth["flipped"]) >= 0.85 * len(truth["flipped"])
    scores = [row["score"] for row in result["label_issues"]]
    assert scores == sorted(scores, reverse=True)


def test_every_planted_leak_and_the_duplicate_are_found(audited):
    result, truth, _ = audited
    pairs = {(row["train_index"], row["test_index"]) for row in result["leakage"]}
    assert truth["leaks"] <= pairs and len(pairs - truth["leaks"]) == 0
    duplicates = {(row["index"], row["duplicate_of"]) for row in result["duplicates"] if row["split"] == "train"}
    assert truth["duplicate"] in duplicates or truth["duplicate"][::-1] in duplicates
    assert all(row["exact"] for row in result["duplicates"])


def test_the_far_point_is_the_top_outlier(audited):
    result, truth, _ = audited
    assert result["outliers"][0] == {"split": "train", "index": truth["outlier"], "score": pytest.approx(
        result["outliers"][0]["score"])}


def test_pairs_match_a_brute_force_search():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 100, generator=g)
    x[150:160] = x[:10] + 0.01 * torch.randn(10, 100, generator=g)  # near copies
    mean, components = project(x, dims=16)
    pairs, _ = find_pairs(x, x, 0.2, same=True, mean=mean, components=components)
    distance = torch.cdist(x, x) / 100**0.5
    expected = {(i, j) for i in range(300) for j in range(i + 1, 300) if distance[i, j] <= 0.2}
    assert {tuple(sorted((i, j))) for i, j, _ in pairs} == expected and len(expected) == 10


def test_audit_with_a_runs_recipe(tmp_path: Path):
    config = tmp_path / "mlp.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp, args: {width: 32}}\n"
                      "train: {epochs: 1, threads: 1, checkpoint_every: 0}\n")
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    result = audit("digits", model=tmp_path / "run", out=tmp_path / "out", folds=2)
    assert result["model"]["name"] == "mlp" and result["model"]["args"]["width"] == 32
    assert result["splits"] == {"train": 1438, "test": 359}  # digits: no validation carve-out
    assert (tmp_path / "out" / "label_issues.png").is_file() or not result["label_issues"]


@pytest.mark.parametrize("case, expected", [
    ("wrong-arrays", "must hold arrays"),
    ("missing-run", "not found"),
    ("folds", "folds=1"),
    ("missing-file", "not found"),
    ("language-model", "checks classification data"),
])
def test_audit_bad_input_is_one_line_and_exit_2(case, expected, tmp_path: Path, capsys):
    data = tmp_path / "bad.npz"
    np.savez(data, images=np.zeros((4, 3)), labels=np.zeros(4, dtype=np.int64))
    argv = ["audit", "--data", str(data), "--out", str(tmp_path / "out")]
    if case == "missing-run":
        argv += ["--model", str(tmp_path / "no-run")]
    elif case == "folds":
        argv += ["--folds", "1"]
    elif case == "missing-file":
        argv[2] = str(tmp_path / "absent.npz")
    elif case == "language-model":
        (tmp_path / "tiny-shakespeare").mkdir()
        (tmp_path / "tiny-shakespeare" / "input.txt").write_text("to be, or not to be!\n" * 40)
        argv[2:3] = ["tiny-shakespeare", f"data.data_dir={tmp_path / 'tiny-shakespeare'}", "data.block_size=8"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected in err
