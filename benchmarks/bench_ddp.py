"""Data-parallel training on one machine: `deepnet train --nproc 2` against one process.

The MNIST CNN of examples/mnist-cnn.yaml (same global batch, same steps) trained three ways,
each a fresh `deepnet train` subprocess, in rounds with a rotated order (the machine has two
speeds, docs/benchmarks.md):

  1 process x 2 threads   the default on this machine
  2 processes x 1 thread  --nproc 2: DDP over gloo, each worker half of every batch
  1 process x 1 thread    the per-core baseline: the scaling of the other two against it

Reported: training samples per second (deepnet's own timer: the training passes only, no
start-up or evaluation), the wall clock of the whole command, and the ratios. Rewrites its
block in docs/benchmarks.md.

    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/bench_ddp.py [--rounds 3] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from _doc import write_block  # benchmarks/_doc.py; this script runs as a file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "mnist-cnn.yaml"

# name → extra command-line arguments
VARIANTS = {
    "1 process x 2 threads": ["train.threads=2"],
    "2 processes x 1 thread (--nproc 2)": ["--nproc", "2"],
    "1 process x 1 thread": ["train.threads=1"],
}


def run_once(extra: list[str], steps: int, out: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "deepnet.cli", "train", "-c", str(CONFIG), "--out", str(out), "--quiet",
               "--epochs", "1", f"train.max_steps_per_epoch={steps}", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"samples_per_second": metrics["samples_per_second"], "wall": wall,
            "test_accuracy": metrics["test_accuracy"], "processes": metrics["processes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps of batch 128 per run")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if not os.environ.get("DEEPNET_DATA"):
        raise SystemExit("Set DEEPNET_DATA to the folder holding mnist/ (e.g. DEEPNET_DATA=../shared/data).")
    names = list(VARIANTS)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            order = names[round_index % len(names):] + names[: round_index % len(names)]
            for name in order:
                row = run_once(VARIANTS[name], args.steps, Path(tmp) / f"r{round_index}-{names.index(name)}")
                results[name].append(row)
                print(f"round {round_index + 1}  {name:<36} {row['samples_per_second']:8.0f} samples/s  "
                      f"{row['wall']:6.1f} s wall  test {100 * row['test_accuracy']:.2f}%", flush=True)
    load_after = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    section = section_text(args, results, load_before, load_after)
    print(section)
    if not args.no_doc:
        write_block("bench_ddp", section)


def section_text(args, results, load_before: str, load_after: str) -> str:
    median = {name: statistics.median(r["samples_per_second"] for r in rows) for name, rows in results.items()}
    wall = {name: statistics.median(r["wall"] for r in rows) for name, rows in results.items()}
    baseline = median["1 process x 1 thread"]
    default = median["1 process x 2 threads"]
    lines = [
        "## Data-parallel: `--nproc 2` against one process (MNIST CNN)",
        "",
        f"`examples/mnist-cnn.yaml` (convnet 32/64/128, batch 128, AdamW one-cycle, augmentation), {args.steps} steps "
        f"of one epoch per run, each a fresh `deepnet train` subprocess; {args.rounds} round(s) in rotated order, "
        "medians over rounds. Samples/s is deepnet's training timer (training passes only); wall is the whole command "
        "(start-up, data loading, torchrun, test evaluation).",
        "",
        f"- command: `DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/bench_ddp.py --rounds {args.rounds} "
        f"--steps {args.steps}`",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} logical cores; Python {platform.python_version()}; torch {torch.__version__}",
        f"- load average before / after (1 / 5 / 15 min): {load_before} → {load_after}",
        "",
        "| run | samples/s (per round) | samples/s, median | vs 1 process x 2 threads | vs 1 thread | wall, median | test acc. after the run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in results.items():
        per_round = " / ".join(f"{r['samples_per_second'] / 1000:.1f}k" for r in rows)
        accuracy = statistics.median(r["test_accuracy"] for r in rows)
        lines.append(f"| {name} | {per_round} | **{median[name]:,.0f}** | {median[name] / default:.2f}x | "
                     f"{median[name] / baseline:.2f}x | {wall[name]:.1f} s | {100 * accuracy:.2f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
