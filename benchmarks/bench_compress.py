"""Re-time compressed runs against their parent, without retraining: the speed figures of
docs/compression.md, to rerun on a quiet machine.

    DEEPNET_DATA=../shared/data python benchmarks/bench_compress.py runs/mnist-mlp runs/mnist-mlp-int8 \
        runs/mnist-mlp-structured [--threads 1] [--repeats 2000]

For each run: test accuracy, weight file size, median batch-1 latency and median batch-256
throughput, in the runtime the run uses (PyTorch for safetensors and deepnet-compressed
runs, ONNX Runtime for int8 runs). The first run (the parent) is also timed as an fp32
ONNX Runtime graph: the int8 model's same-runtime peer. Ratios are against the parent in
PyTorch and, for int8, against the parent in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from deepnet.compress.measure import time_calls
from deepnet.compress.quantize import export_onnx
from deepnet.train.compressed import OnnxClassifier
from deepnet.train.experiment import load_experiment_data
from deepnet.train.loop import evaluate_split
from deepnet.train.run import load_run, weights_record

THREADS = 1  # CPU threads for every runtime (intra-op); one keeps figures comparable
REPEATS = 1000  # timed batch-1 calls per model; a tenth as many batch-256 calls


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
    rows = []

    def measure(name: str, model, file_bytes: int, runtime: str) -> dict:
        accuracy = evaluate_split(model, data.test)["accuracy"]
        speed = time_calls(model, example, threads=args.threads, repeats=args.repeats)
        rows.append({"name": name, "accuracy": accuracy, "file_bytes": file_bytes, "runtime": runtime, **speed})
        return rows[-1]

    def file_size(run_dir: Path, spec: dict) -> int:
        return (run_dir / weights_record(spec)["file"]).stat().st_size

    base = measure(Path(args.runs[0]).name, parent.model, file_size(Path(args.runs[0]), parent.model_spec), "pytorch")
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(parent.model, example, Path(tmp) / "fp32.onnx")
        onnx_base = measure(f"{Path(args.runs[0]).name} (fp32 ONNX)", OnnxClassifier(Path(tmp) / "fp32.onnx", args.threads),
                            (Path(tmp) / "fp32.onnx").stat().st_size, "onnxruntime")
        for directory in args.runs[1:]:
            run = load_run(directory)
            runtime = "onnxruntime" if isinstance(run.model, OnnxClassifier) else "pytorch"
            if runtime == "onnxruntime":
                run.model = OnnxClassifier(run.model.path, args.threads)
            measure(Path(directory).name, run.model, file_size(Path(directory), run.model_spec), runtime)

    print(f"{args.threads} thread(s), medians of {args.repeats} batch-1 and {max(20, args.repeats // 10)} batch-256 calls")
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
