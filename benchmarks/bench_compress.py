"""Re-time compressed runs against their parent, without retraining: the speed figures of
docs/compression.md, to rerun on a quiet machine.

    DEEPNET_DATA=../shared/data python benchmarks/bench_compress.py runs/mnist-mlp runs/mnist-mlp-int8 \
        runs/mnist-mlp-structured [--threads 1] [--repeats 2000]

For each run: test accuracy, weight file size, median batch-1 latency and median batch-256
throughput (the models timed in turns, so that other work on the machine falls on each
alike), in the runtime the run uses (PyTorch for safetensors and deepnet-compressed
runs, ONNX Runtime for int8 runs). The first run (the parent) is also timed as an fp32
ONNX Runtime graph: the int8 model's same-runtime peer. Ratios are against the parent in
PyTorch and, for int8, against the parent in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from deepnet.compress.quantize import export_onnx
from deepnet.train.compressed import OnnxClassifier
from deepnet.train.experiment import load_experiment_data
from deepnet.train.loop import evaluate_split
from deepnet.train.run import load_run, weights_record

THREADS = 1  # CPU threads for every runtime (intra-op); one keeps figures comparable
REPEATS = 1000  # timed batch-1 calls per model; a tenth as many batch-256 calls


def _interleaved(models: list, example: torch.Tensor, threads: int, repeats: int) -> list[dict[str, float]]:
    """Median batch-1 latency and batch-256 throughput of each model, timed in turns (one
    model's calls, then the next's, round after round), so that a load that comes and goes
    on a shared machine falls on every model alike."""
    torch.set_num_threads(threads)
    one = example[:1].contiguous()
    batch = example[:1].repeat(256, *([1] * (example.dim() - 1))).contiguous()
    batch = batch + 0.01 * torch.randn(batch.shape, generator=torch.Generator().manual_seed(0))
    latency: list[list[float]] = [[] for _ in models]
    per_batch: list[list[float]] = [[] for _ in models]
    rounds = max(10, repeats // 50)
    with torch.inference_mode():
        for model in models:  # warm-up
            for _ in range(20):
                model(one)
            model(batch)
        for _ in range(rounds):
            for i, model in enumerate(models):
                for _ in range(50):
                    start = time.perf_counter()
                    model(one)
                    latency[i].append(time.perf_counter() - start)
                for _ in range(max(2, repeats // 10 // rounds)):
                    start = time.perf_counter()
                    model(batch)
                    per_batch[i].append(time.perf_counter() - start)
    return [{"latency_ms_batch1": 1000 * statistics.median(lat), "throughput_batch256": 256 / statistics.median(thr)}
            for lat, thr in zip(latency, per_batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="the parent run first, then compressed runs of it")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parent = load_run(args.runs[0])
    data = load_experiment_data(parent.config)
    example = data.test.x[:1]
    entries = []  # (name, model, file bytes, runtime)
    with tempfile.TemporaryDirectory() as tmp:
        entries.append((Path(args.runs[0]).name, parent.model,
                        (Path(args.runs[0]) / weights_record(parent.model_spec)["file"]).stat().st_size, "pytorch"))
        export_onnx(parent.model, example, Path(tmp) / "fp32.onnx")
        entries.append((f"{Path(args.runs[0]).name} (fp32 ONNX)", OnnxClassifier(Path(tmp) / "fp32.onnx", args.threads),
                        (Path(tmp) / "fp32.onnx").stat().st_size, "onnxruntime"))
        for directory in args.runs[1:]:
            run = load_run(directory)
            model, runtime = run.model, "pytorch"
            if isinstance(model, OnnxClassifier):
                model, runtime = OnnxClassifier(model.path, args.threads), "onnxruntime"
            entries.append((Path(directory).name, model,
                            (Path(directory) / weights_record(run.model_spec)["file"]).stat().st_size, runtime))
        accuracies = [evaluate_split(model, data.test)["accuracy"] for _, model, _, _ in entries]
        speeds = _interleaved([model for _, model, _, _ in entries], example, args.threads, args.repeats)
    rows = [{"name": name, "accuracy": accuracy, "file_bytes": size, "runtime": runtime, **speed}
            for (name, _, size, runtime), accuracy, speed in zip(entries, accuracies, speeds)]
    base, onnx_base = rows[0], rows[1]

    print(f"{args.threads} thread(s); medians of batch-1 and batch-256 calls timed in turns, model after model")
    header = f"{'run':<34}{'accuracy':>9}{'file bytes':>12}{'smaller':>9}{'batch-1 ms':>11}{'faster':>8}" \
             f"{'batch-256/s':>13}{'x fp32':>8}{'x same rt':>10}  runtime"
    print(header)
    for row in rows:
        same = onnx_base if row["runtime"] == "onnxruntime" else base
        print(f"{row['name']:<34}{100 * row['accuracy']:>8.2f}%{row['file_bytes']:>12,}"
              f"{base['file_bytes'] / row['file_bytes']:>8.1f}x{row['latency_ms_batch1']:>11.4f}"
              f"{base['latency_ms_batch1'] / row['latency_ms_batch1']:>7.2f}x{row['throughput_batch256']:>13,.0f}"
              f"{row['throughput_batch256'] / base['throughput_batch256']:>7.2f}x"
              f"{row['throughput_batch256'] / same['throughput_batch256']:>9.2f}x  {row['runtime']}")


if __name__ == "__main__":
    main()
