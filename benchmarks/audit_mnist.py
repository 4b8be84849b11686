"""The audit's acceptance figures on real MNIST, in one command (docs/audit.md).

    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/audit_mnist.py --threads 1

Builds one .npz from the original MNIST files (outside the repository, under --workdir):
  - 5% of the 60,000 training labels flipped, each to a uniformly drawn other class;
  - 100 training images planted into the test set (they replace 100 test images, with their
    true labels);
runs `deepnet audit --data that.npz` once (default models, 4 folds) and prints:
  - label issues: precision among the top-k training issues, k = the number flipped (acceptance: >= 85%);
  - leakage: how many of the 100 planted pairs were found, and the false pairs (acceptance: 100, <= 5);
  - the wall time of the audit and the machine's load average around it (acceptance: < 15 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FLIP_FRACTION = 0.05  # of the training labels
PLANTED = 100         # training images copied into the test set
SEED = 0


def build_npz(path: Path) -> dict:
    from deepnet.data.vision import MNIST_FILES, _mnist_file, read_idx

    arrays = {key: read_idx(_mnist_file(key, None, True), 2051 if "images" in key else 2049) for key in MNIST_FILES}
    x_train = arrays["train_images"][:, None].astype(np.uint8)  # (60000, 1, 28, 28)
    y_train = arrays["train_labels"].astype(np.int64)
    x_test = arrays["test_images"][:, None].astype(np.uint8).copy()
    y_test = arrays["test_labels"].astype(np.int64).copy()
    rng = np.random.default_rng(SEED)
    flipped = rng.choice(len(y_train), int(FLIP_FRACTION * len(y_train)), replace=False)
    noisy = y_train.copy()
    noisy[flipped] = (y_train[flipped] + rng.integers(1, 10, len(flipped))) % 10  # never the true class
    sources = rng.choice(len(y_train), PLANTED, replace=False)
    targets = rng.choice(len(y_test), PLANTED, replace=False)
    x_test[targets] = x_train[sources]
    y_test[targets] = y_train[sources]
    np.savez(path, x_train=x_train, y_train=noisy, x_test=x_test, y_test=y_test)
    return {"flipped": sorted(flipped.tolist()), "planted": sorted(zip(sources.tolist(), targets.tolist()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/deepnet-audit-mnist", help="where the .npz and the audit go")
    parser.add_argument("--threads", type=int, default=None, help="train.threads of the audit's models")
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    npz = work / "mnist-noisy-planted.npz"
    truth = build_npz(npz)
    command = [sys.executable, "-m", "deepnet.cli", "audit", "--data", str(npz), "--out", str(work / "audit"),
               "--folds", str(args.folds), "--quiet"] + ([f"train.threads={args.threads}"] if args.threads else [])
    print("running:", " ".join(command), flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU the audit itself used (others' load excluded)
    load_after = os.getloadavg()
    result = json.loads((work / "audit" / "audit.json").read_text())

    k = len(truth["flipped"])
    flipped = set(truth["flipped"])
    train_issues = [row["index"] for row in result["label_issues"] if row["split"] == "train"]
    top = train_issues[:k]
    hits = sum(i in flipped for i in top)
    planted = set(map(tuple, truth["planted"]))
    found_pairs = {(row["train_index"], row["test_index"]) for row in result["leakage"] if "test_index" in row}
    figures = {
        "flipped": k, "train_label_issues": len(train_issues),
        "precision_at_k": hits / k, "recall_at_k": hits / k,
        "flagged_precision": sum(i in flipped for i in train_issues) / max(len(train_issues), 1),
        "out_of_fold_accuracy": result["out_of_fold_accuracy"],
        "planted": len(planted), "planted_found": len(planted & found_pairs), "false_pairs": len(found_pairs - planted),
        "wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime, "audit_seconds": result["seconds"],
        "threads": args.threads,
        "load_average_before": load_before, "load_average_after": load_after, "cpus": os.cpu_count(),
    }
    print(json.dumps(figures, indent=1))
    (work / "figures.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
