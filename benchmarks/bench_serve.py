"""Load test of `deepnet serve` on loopback: micro-batching against one-at-a-time serving.

The MNIST CNN of examples/mnist-cnn.yaml (the architecture is what sets the latency; a short
training run is enough and is made when --run is not given) is exported to ONNX and served
three times, each time by a fresh `deepnet serve` process:

  micro-batching         the defaults (--max-batch 64; --max-wait-ms 0 on the CPU): the
                         requests that queue while the model is busy form the next batch
  micro-batching, 5 ms   --max-wait-ms 5: the first request of a batch also waits up to 5 ms
                         for company while the model is free
  one at a time          --max-batch 1: every request is its own model call

Each gets CLIENTS concurrent clients for SECONDS seconds (after a warm-up), each client on
its own keep-alive HTTP/1.1 connection, sending one 28x28 image per request as JSON raw
pixels and waiting for the answer before sending the next (a closed loop). The clients are
asyncio coroutines in this process, the server is another process: on a 2-core machine
they share the cores, as a real client on the same host would.

Reported per mode: requests per second, latency p50 / p90 / p99 / max, failed requests
(anything but 200, or a broken connection), and the mean micro-batch size (from the
server's /metrics); then the throughput ratio. --write-doc rewrites its block in
docs/serving.md.

    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/bench_serve.py [--seconds 30] [--clients 32]
        [--run RUN] [--rounds 1] [--write-doc]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from _doc import write_block  # benchmarks/_doc.py; this script runs as a file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "mnist-cnn.yaml"
DOC = ROOT / "docs" / "serving.md"
TRAIN_STEPS = 60  # a short run: the benchmark measures the serving of the architecture, not its accuracy

# name → `deepnet serve` options
MODES = {
    "micro-batching (defaults: --max-batch 64, --max-wait-ms 0)": [],
    "micro-batching, waiting (--max-wait-ms 5)": ["--max-wait-ms", "5"],
    "one at a time (--max-batch 1)": ["--max-batch", "1"],
}


def make_run(out: Path) -> Path:
    """A short training run of the MNIST CNN, exported to ONNX."""
    if not (out / "model.safetensors").is_file():
        command = [sys.executable, "-m", "deepnet.cli", "train", "-c", str(CONFIG), "--out", str(out), "--quiet",
                   "--epochs", "1", f"train.max_steps_per_epoch={TRAIN_STEPS}", "train.threads=1",
                   "train.checkpoint_every=0"]
        print(f"training a short MNIST CNN run: {' '.join(command[2:])}", file=sys.stderr)
        subprocess.run(command, cwd=ROOT, check=True)
    if not (out / "model.onnx").is_file():
        subprocess.run([sys.executable, "-m", "deepnet.cli", "export", str(out)], cwd=ROOT, check=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, options: list[str], threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "deepnet.cli", "serve", str(run), "--port", str(port), "--runtime", "onnx",
               "--threads", str(threads), *options]
    # The per-request log lines go to /dev/null: a pipe nobody reads would stall the server.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not come up: {' '.join(command)}")


def batch_sizes(port: int) -> tuple[float, float]:
    """(sum, count) of the server's deepnet_batch_size histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = dict(re.findall(r"^(deepnet_batch_size_(?:sum|count)) (\S+)$", text, re.MULTILINE))
    return float(values["deepnet_batch_size_sum"]), float(values["deepnet_batch_size_count"])


async def client(port: int, request: bytes, stop_at: float, record_from: float,
                 latencies: list[float], failures: list[str]) -> None:
    """One closed-loop client on one keep-alive connection; reconnects after a failure."""
    loop = asyncio.get_running_loop()
    reader = writer = None
    while loop.time() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            start = time.perf_counter()  # uvloop's loop.time() counts whole milliseconds
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            end = time.perf_counter()
            status = int(head[9:12])
            if loop.time() >= record_from:
                if status == 200:
                    latencies.append(end - start)
                else:
                    failures.append(f"HTTP {status}")
        except (OSError, asyncio.IncompleteReadError, AttributeError) as err:
            if loop.time() >= record_from:
                failures.append(type(err).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def load(port: int, clients: int, seconds: float, warmup: float) -> tuple[list[float], list[str], float]:
    pixels = np.random.default_rng(0).integers(0, 256, (1, 28, 28)).tolist()  # raw MNIST pixels
    body = json.dumps({"inputs": pixels}).encode()
    request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    record_from = loop.time() + warmup
    stop_at = record_from + seconds
    latencies: list[float] = []
    failures: list[str] = []
    await asyncio.gather(*(client(port, request, stop_at, record_from, latencies, failures) for _ in range(clients)))
    return latencies, failures, seconds


def measure(run: Path, options: list[str], clients: int, seconds: float, warmup: float, threads: int) -> dict:
    process, port = start_server(run, options, threads)
    try:
        before = batch_sizes(port)
        latencies, failures, elapsed = asyncio.run(load(port, clients, seconds, warmup))
        after = batch_sizes(port)
    finally:
        process.terminate()
        process.wait(timeout=60)
    ms = sorted(1000 * x for x in latencies)
    quantile = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")  # noqa: E731
    calls = after[1] - before[1]
    return {"requests_per_second": len(ms) / elapsed, "p50_ms": quantile(0.50), "p90_ms": quantile(0.90),
            "p99_ms": quantile(0.99), "max_ms": ms[-1] if ms else float("nan"), "completed": len(ms),
            "failed": len(failures), "failure_kinds": sorted(set(failures))[:5],
            "mean_batch": (after[0] - before[0]) / calls if calls else float("nan")}


def model_costs(run: Path, threads: int) -> dict[int, float]:
    """Milliseconds per example of the ONNX model alone at batch 1 and 64: the most that
    batching can save in the model itself (the rest is per-request and per-call overhead)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(run / "model.onnx"), options, providers=["CPUExecutionProvider"])
    costs = {}
    for batch in (1, 64):
        x = np.random.default_rng(0).uniform(0, 255, (batch, 1, 28, 28)).astype(np.float32)
        for _ in range(10):
            session.run(["probabilities"], {"input": x})
        calls = max(20, 2000 // batch)
        start = time.perf_counter()
        for _ in range(calls):
            session.run(["probabilities"], {"input": x})
        costs[batch] = 1000 * (time.perf_counter() - start) / (calls * batch)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory of the MNIST CNN (default: train a short one)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per mode and round")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, the order of the modes rotated each round")
    parser.add_argument("--threads", type=int, default=1, help="the server's runtime threads (--threads)")
    parser.add_argument("--write-doc", action="store_true", help="rewrite the block of docs/serving.md")
    args = parser.parse_args()

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the clients' loop, as cheap as the server's
    except ImportError:
        pass
    run = make_run(args.run or Path(tempfile.gettempdir()) / "deepnet-bench-serve-mnist-cnn")
    costs = model_costs(run, args.threads)
    names = list(MODES)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            result = measure(run, MODES[name], args.clients, args.seconds, args.warmup, args.threads)
            results[name].append(result)
            print(f"round {round_index + 1} {name}: {result['requests_per_second']:.0f} req/s, p50 "
                  f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, failed {result['failed']}, "
                  f"mean batch {result['mean_batch']:.1f}", file=sys.stderr, flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    batched, waiting, single = names
    ratio = median(batched, "requests_per_second") / median(single, "requests_per_second")
    rows = ["| mode | requests/s | p50 ms | p90 ms | p99 ms | max ms | failed | mean batch |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        rows.append(f"| {name} | {median(name, 'requests_per_second'):.0f} | {median(name, 'p50_ms'):.1f} | "
                    f"{median(name, 'p90_ms'):.1f} | {median(name, 'p99_ms'):.1f} | {median(name, 'max_ms'):.1f} | "
                    f"{sum(r['failed'] for r in results[name])} | {median(name, 'mean_batch'):.1f} |")
    import onnxruntime

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        f"Measured {when} by `benchmarks/bench_serve.py --seconds {args.seconds:g} --clients {args.clients} "
        f"--rounds {args.rounds}` on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"onnxruntime {onnxruntime.__version__}, server runtime threads {args.threads}; medians over rounds.",
        "", *rows, "",
        f"Micro-batching (the defaults) serves **{ratio:.2f}x** the requests per second of one-at-a-time serving; "
        f"waiting up to 5 ms for company, "
        f"{median(waiting, 'requests_per_second') / median(single, 'requests_per_second'):.2f}x. "
        f"The model alone (ONNX Runtime, {args.threads} thread(s), same run): {costs[1]:.3f} ms per example at "
        f"batch 1, {costs[64]:.3f} ms at batch 64 ({costs[1] / costs[64]:.2f}x)."])
    print(section)
    if args.write_doc:
        write_block("bench_serve", section, doc=DOC)


if __name__ == "__main__":
    main()
