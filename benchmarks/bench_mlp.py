"""Training speed of one MLP on MNIST: deepnet against the ways people train it elsewhere.

    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/bench_mlp.py
    .venv/bin/python benchmarks/bench_mlp.py --rounds 1 --epochs 1 --batch-sizes 512 --peers deepnet,pytorch
    make bench BENCH_ARGS="--epochs 1 --peers deepnet,sklearn"

The same 784-512-512-10 ReLU MLP, Adam (lr 1e-3, constant), cross-entropy, fp32, is trained
for a few epochs on MNIST's 55,000 training images by

  deepnet    deepnet.fit(create_model("mlp", width=512, depth=2), ...)
  pytorch    a hand-written loop as tutorials write it: TensorDataset + DataLoader(shuffle=True),
             zero_grad / backward / step, loss.item() every step for the running loss
  lightning  the same model in a LightningModule; no logger, checkpoints, progress bar,
             model summary or validation, so it pays for nothing the others skip
  keras      Keras 3 on the torch backend, model.fit on NumPy arrays (no extra metrics)
  sklearn    MLPClassifier(hidden_layer_sizes=(512, 512), solver="adam") on float32 arrays,
             one partial_fit per epoch (the same loop as fit(max_iter=epochs), but timable)

and, as a bound rather than a tool, "gemm-bound": the step's 8 matrix multiplies alone. A loop
on this model can only beat the peers by more than gemm-bound / peer with faster GEMMs.

Each (tool, batch size) runs in its own subprocess with the same environment and thread count:
every tool starts cold (epoch 1 pays its warm-up), and global state one tool sets (deepnet's
flush-denormal, Keras's and Lightning's import-time settings, allocator caches) cannot leak
into the next one. Only the training passes are timed: no data loading, validation or test.

The whole set runs ROUNDS times, each round in a rotated tool order, and every figure is a
median over rounds. This matters on shared and virtual machines: on the 2-core VM this was
written on, the same process switches for minutes at a time between two speeds 1.6x apart
(a host effect: no steal time is reported, and both threads stay on their cores), so a single
pass can hand any one tool the slow phase.

Before anything the script measures the machine's fp32 peak (torch.mm on square matrices,
median of several runs) and reports each tool's achieved GFLOP/s against it. FLOPs per
training sample, counted per Linear layer with MACs = in_features * out_features:
forward 2*MACs, weight gradient 2*MACs, input gradient 2*MACs except in the first layer
(its input, the image, needs no gradient). Biases, ReLU, softmax and Adam are not counted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _doc import DOC, write_block  # benchmarks/_doc.py; this script runs as a file
from _env import child_env  # benchmarks/_env.py

# -- settings -------------------------------------------------------------------------------
EPOCHS = 3                         # passes over the 55,000 training images
ROUNDS = 3                         # every tool runs once per round, in a rotated order; medians over rounds
BATCH_SIZES = (128, 512)           # samples per optimizer step
PEERS = ("deepnet", "pytorch", "lightning", "keras", "sklearn", "gemm-bound")  # gemm-bound: a bound, not a tool
WIDTH, DEPTH = 512, 2              # hidden units per layer, hidden layers: 784-512-512-10
LR = 1e-3                          # Adam learning rate, constant
THREADS = os.cpu_count() or 1      # intra-op threads for every tool (torch, MKL, OpenMP, OpenBLAS)
SEED = 0                           # weights and data order
PEAK_SIZE = 2048                   # square fp32 matrices for the peak torch.mm
PEAK_REPEATS = 15                  # timed torch.mm calls after 3 untimed; the median is reported
TARGET_SPEEDUP = 1.5               # deepnet / fastest peer at batch 128
TARGET_PEAK_FRACTION = 0.60        # deepnet's achieved GFLOP/s / peak at batch 512
TUNING_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND", "KMP_BLOCKTIME", "KMP_AFFINITY",
                    "LD_PRELOAD", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")  # recorded when set
ROOT = Path(__file__).resolve().parents[1]
CLOCKS = {"wall": time.perf_counter,  # what a user waits for
          "cpu": time.process_time}   # CPU seconds of the process: on a shared machine with
                                      # --threads 1, close to the wall time of an idle core
clock = CLOCKS["wall"]


# -- what is measured -----------------------------------------------------------------------
def layer_sizes() -> list[int]:
    return [28 * 28] + [WIDTH] * DEPTH + [10]


def train_flops_per_sample() -> int:
    """FLOPs of one training sample (forward, weight gradients, input gradients but the first)."""
    sizes = layer_sizes()
    total = 0
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        macs = fan_in * fan_out
        total += 2 * macs + 2 * macs + (2 * macs if index > 0 else 0)
    return total


def measure_peak(threads: int) -> tuple[float, float]:
    """GFLOP/s of an fp32 torch.mm of two PEAK_SIZE x PEAK_SIZE matrices: (median, best)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    for _ in range(3):
        torch.mm(a, b)
    seconds = []
    for _ in range(PEAK_REPEATS):
        start = clock()
        torch.mm(a, b)
        seconds.append(clock() - start)
    return 2 * PEAK_SIZE**3 / statistics.median(seconds) / 1e9, 2 * PEAK_SIZE**3 / min(seconds) / 1e9


# -- one tool, one batch size (runs in a subprocess) ----------------------------------------
def load_mnist():
    import deepnet

    return deepnet.load_dataset("mnist", seed=SEED)


def run_deepnet(data, batch_size: int, epochs: int, threads: int) -> dict:
    import dataclasses

    import torch

    import deepnet

    class EpochTimer(deepnet.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs) -> None:
            self.start = clock()

        def on_epoch_end(self, epoch, logs) -> None:
            self.seconds.append(clock() - self.start)

    # No validation split, so no validation pass inside the timed epoch: the peers have none.
    data = dataclasses.replace(data, val=deepnet.Split(data.val.x[:0], data.val.y[:0]))
    torch.manual_seed(SEED)
    model = deepnet.create_model("mlp", width=WIDTH, depth=DEPTH)
    timer = EpochTimer()
    run = deepnet.fit(model, data, epochs=epochs, batch_size=batch_size, optimizer="adam", lr=LR,
                      schedule="constant", seed=SEED, threads=threads, quiet=True, callbacks=[timer])
    return {"seconds": timer.seconds,
            "samples": [round(row["samples_per_second"] * row["seconds"]) for row in run.history],
            "test_accuracy": run.metrics["test_accuracy"]}


def run_pytorch(data, batch_size: int, epochs: int, threads: int) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import deepnet

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    model = deepnet.create_model("mlp", width=WIDTH, depth=DEPTH)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    seconds, samples = [], []
    for _ in range(epochs):
        model.train()
        running_loss, seen = 0.0, 0
        start = clock()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(y)
            seen += len(y)
        seconds.append(clock() - start)
        samples.append(seen)
    model.eval()
    with torch.no_grad():
        accuracy = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
    return {"seconds": seconds, "samples": samples, "test_accuracy": accuracy}


def run_lightning(data, batch_size: int, epochs: int, threads: int) -> dict:
    import logging
    import warnings

    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import deepnet

    warnings.filterwarnings("ignore")  # "no num_workers", "no validation loop"...
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = deepnet.create_model("mlp", width=WIDTH, depth=DEPTH)
            self.criterion = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_index):
            x, y = batch
            return self.criterion(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.start = clock()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.seconds.append(clock() - self.start)

    module, timer = Classifier(), EpochTimer()
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=batch_size, shuffle=True)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, loader)
    model = module.model.eval()
    with torch.no_grad():
        accuracy = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
    return {"seconds": timer.seconds, "samples": [len(data.train)] * len(timer.seconds), "test_accuracy": accuracy}


def run_keras(data, batch_size: int, epochs: int, threads: int) -> dict:
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported (the parent also sets it)
    import keras
    import torch

    torch.set_num_threads(threads)
    keras.utils.set_random_seed(SEED)
    x = data.train.x.reshape(len(data.train), -1).numpy()
    y = data.train.y.numpy()
    model = keras.Sequential([keras.Input((x.shape[1],))]
                             + [keras.layers.Dense(WIDTH, activation="relu") for _ in range(DEPTH)]
                             + [keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.start = clock()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(clock() - self.start)

    timer = EpochTimer()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    logits = model.predict(data.test.x.reshape(len(data.test), -1).numpy(), batch_size=1024, verbose=0)
    accuracy = float((logits.argmax(1) == data.test.y.numpy()).mean())
    return {"seconds": timer.seconds, "samples": [len(x)] * epochs, "test_accuracy": accuracy}


def run_sklearn(data, batch_size: int, epochs: int, threads: int) -> dict:
    import numpy as np
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    x = data.train.x.reshape(len(data.train), -1).numpy()  # float32: sklearn keeps the dtype
    y = data.train.y.numpy()
    model = MLPClassifier(hidden_layer_sizes=(WIDTH,) * DEPTH, solver="adam", learning_rate_init=LR,
                          batch_size=batch_size, max_iter=epochs, shuffle=True, random_state=SEED)
    classes = np.unique(y)
    seconds = []
    with threadpool_limits(threads):
        for _ in range(epochs):
            start = clock()
            model.partial_fit(x, y, classes=classes)
            seconds.append(clock() - start)
    accuracy = model.score(data.test.x.reshape(len(data.test), -1).numpy(), data.test.y.numpy())
    return {"seconds": seconds, "samples": [len(x)] * epochs, "test_accuracy": float(accuracy)}


def run_gemm_bound(data, batch_size: int, epochs: int, threads: int) -> dict:
    """Not a tool: a bound. Only the step's 8 matrix multiplies (3 forward, 3 weight gradients,
    2 input gradients) on ready-made contiguous batches: no loss, activations, optimizer or
    batching. No training loop on this model can beat it without faster GEMMs."""
    import torch
    from _gemms import gemms_alone  # benchmarks/ is on sys.path: this script runs as a file

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    sizes = layer_sizes()
    weights = [torch.randn(fan_out, fan_in) / fan_in**0.5 for fan_in, fan_out in zip(sizes, sizes[1:])]
    biases = [torch.zeros(fan_out) for fan_out in sizes[1:]]
    x = data.train.x.flatten(1)
    steps = len(x) // batch_size
    seconds = []
    for _ in range(epochs):
        start = clock()
        for i in range(steps):
            gemms_alone(x[i * batch_size:(i + 1) * batch_size], weights, biases)
        seconds.append(clock() - start)
    return {"seconds": seconds, "samples": [steps * batch_size] * epochs, "test_accuracy": float("nan")}


RUNNERS = {"deepnet": run_deepnet, "pytorch": run_pytorch, "lightning": run_lightning,
           "keras": run_keras, "sklearn": run_sklearn, "gemm-bound": run_gemm_bound}


def worker(peer: str, batch_size: int, epochs: int, threads: int, clock_name: str) -> None:
    global clock
    clock = CLOCKS[clock_name]
    data = load_mnist()
    result = RUNNERS[peer](data, batch_size, epochs, threads)
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent: peak, subprocesses, table, docs/benchmarks.md ------------------------------
def run_peer(peer: str, batch_size: int, epochs: int, threads: int, clock_name: str) -> dict:
    command = [sys.executable, __file__, "--worker", peer, "--batch-sizes", str(batch_size),
               "--epochs", str(epochs), "--threads", str(threads), "--clock", clock_name]
    done = subprocess.run(command, env=child_env(threads), capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"{peer} at batch {batch_size} failed (exit code {done.returncode}).")
    result = json.loads(lines[-1][len("RESULT "):])
    result["per_epoch"] = [n / s for n, s in zip(result["samples"], result["seconds"])]
    steady = result["per_epoch"][1:] or result["per_epoch"]  # epoch 1 pays the warm-up
    result["steady"] = statistics.median(steady)
    return result


def combine_rounds(rounds: list[dict]) -> dict:
    """One tool's rounds as one row: per-epoch medians, and the steady state as the median of
    every round's later epochs pooled; each round's own steady state is kept for the spread."""
    per_epoch = [statistics.median(values) for values in zip(*(r["per_epoch"] for r in rounds))]
    pooled = [v for r in rounds for v in (r["per_epoch"][1:] or r["per_epoch"])]
    return {"per_epoch": per_epoch, "steady": statistics.median(pooled),
            "round_steady": [r["steady"] for r in rounds],
            "test_accuracy": statistics.median(r["test_accuracy"] for r in rounds)}


def machine_facts(threads: int) -> dict[str, str]:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": f"{cpu}, {os.cpu_count()} logical cores",
            "torch": f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()}, "
                     f"{torch.__config__.parallel_info().splitlines()[-1].strip()})",
            "python": platform.python_version(), "threads": str(threads),
            "env": ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k in TUNING_VARIABLES)
                   or "none of " + ", ".join(TUNING_VARIABLES),
            "peers": ", ".join(f"{name} {_version(name)}" for name in ("lightning", "keras", "scikit-learn", "numpy")),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, {os.cpu_count()} cores)"


def render(results: dict, epochs: int, peak: float, flops: int) -> tuple[str, list[str]]:
    epoch_heads = " | ".join(f"epoch {e + 1}" for e in range(epochs))
    steady_head = {1: "epoch 1", 2: "epoch 2"}.get(epochs, f"epochs 2-{epochs}")
    lines = [f"| tool | batch | {epoch_heads} | steady state per round | {steady_head}, median | GFLOP/s | "
             "% of peak | test accuracy |",
             "| --- | ---: | " + " | ".join(["---:"] * epochs) + " | ---: | ---: | ---: | ---: | ---: |"]
    verdicts = []
    for batch_size, by_peer in results.items():
        for peer, r in by_peer.items():
            gflops = r["steady"] * flops / 1e9
            cells = " | ".join(f"{v:,.0f}" for v in r["per_epoch"])
            rounds = " / ".join(f"{v / 1000:.1f}k" for v in r["round_steady"])
            name = {"deepnet": "**deepnet**", "gemm-bound": "*GEMMs alone (bound)*"}.get(peer, peer)
            accuracy = "" if r["test_accuracy"] != r["test_accuracy"] else f"{100 * r['test_accuracy']:.2f}%"
            lines.append(f"| {name} | {batch_size} | {cells} | {rounds} | **{r['steady']:,.0f}** | {gflops:.1f} | "
                         f"{100 * gflops / peak:.0f}% | {accuracy} |")
        if "deepnet" not in by_peer:
            continue
        ours = by_peer["deepnet"]["steady"]
        fraction = ours * flops / 1e9 / peak
        peers = {p: r["steady"] for p, r in by_peer.items() if p not in ("deepnet", "gemm-bound")}
        text = f"batch {batch_size}: deepnet reaches {100 * fraction:.0f}% of the measured peak"
        if batch_size == 512:
            text += f" (target ≥ {100 * TARGET_PEAK_FRACTION:.0f}%: {'met' if fraction >= TARGET_PEAK_FRACTION else 'MISSED'})"
        if peers:
            fastest = max(peers, key=peers.get)
            speedup = ours / peers[fastest]
            text += f"; {speedup:.2f}x the fastest peer ({fastest}, {peers[fastest]:,.0f} samples/s)"
            if batch_size == 128:
                text += f" (target ≥ {TARGET_SPEEDUP}x: {'met' if speedup >= TARGET_SPEEDUP else 'MISSED'})"
            paired = [a / b for a, b in zip(by_peer["deepnet"]["round_steady"], by_peer[fastest]["round_steady"])]
            if len(paired) > 1:
                text += f"; round by round {', '.join(f'{v:.2f}x' for v in paired)}"
            if "gemm-bound" in by_peer:
                bound = by_peer["gemm-bound"]["steady"]
                if bound < ours:
                    text += "; the GEMMs-alone bound ran slower than deepnet itself: the machine was disturbed"
                else:
                    text += (f"; deepnet spends {100 * ours / bound:.0f}% of its time in the GEMMs, and a loop that "
                             f"did nothing else would be {bound / peers[fastest]:.2f}x {fastest}")
        verdicts.append(text + ".")
    return "\n".join(lines), verdicts


def section_text(args, table: str, verdicts: list[str], peak: float, best: float, flops: int,
                 load_before: str, load_after: str) -> str:
    facts = machine_facts(args.threads)
    command = "DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/bench_mlp.py " + shlex.join(sys.argv[1:])
    return "\n".join([
        "## MLP on MNIST: deepnet against its peers",
        "",
        f"Samples per second of training (higher is better) for a {'-'.join(map(str, layer_sizes()))} ReLU MLP, "
        f"Adam lr {LR:g}, fp32, {args.epochs} epoch(s) of the 55,000 MNIST training images. Every tool runs in "
        "its own subprocess with the same thread settings; only the training passes are timed. Epoch 1 "
        "includes each tool's warm-up; the median of the later epochs is the steady state. "
        f"All tools ran {args.rounds} time(s), in rounds with a rotated order; each figure is the median over "
        "rounds (epoch columns: per-epoch medians; steady state: the median of all rounds' later epochs). "
        + ("Timed by the wall clock." if args.clock == "wall" else
           "**Timed by process CPU time** (`--clock cpu`), peak included: with one thread this is close to what an "
           "idle core would take, but it hides waiting, so it is a stand-in for a quiet machine, not a measurement of one."),
        "",
        f"- command: `{command.strip()}`",
        f"- date: {facts['date']}",
        f"- machine: {facts['cpu']}; Python {facts['python']}; torch {facts['torch']}; {facts['peers']}",
        f"- threads: {facts['threads']} for every tool (torch.set_num_threads, OMP/MKL/OPENBLAS_NUM_THREADS); "
        f"CPU tuning variables set: {facts['env']}",
        f"- load average before / after: {load_before} → {load_after}",
        f"- measured fp32 peak: **{peak:.1f} GFLOP/s** (torch.mm {PEAK_SIZE}x{PEAK_SIZE}, median of {PEAK_REPEATS}, "
        f"median over rounds; "
        f"best run {best:.1f}); \"% of peak\" below is against the median",
        f"- FLOPs counted per training sample: {flops / 1e6:.3f} M (forward 2·MACs + weight gradients 2·MACs + "
        "input gradients 2·MACs for every layer but the first; biases, activations, loss and optimizer not counted)",
        "",
        table,
        "",
        *[f"- {v}" for v in verdicts],
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="passes over all tools; figures are medians")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall: elapsed time (default); cpu: process CPU time, for noisy machines with --threads 1")
    parser.add_argument("--no-doc", action="store_true", help=f"print only; leave {DOC.relative_to(ROOT)} alone")
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    peers = [p.strip() for p in args.peers.split(",")]
    if unknown := set(peers) - set(PEERS):
        parser.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")
    if args.worker:
        worker(args.worker, batch_sizes[0], args.epochs, args.threads, args.clock)
        return

    global clock
    clock = CLOCKS[args.clock]
    if args.clock == "cpu" and args.threads > 1:
        print("note: --clock cpu adds up the CPU time of all threads; it is meant for --threads 1", file=sys.stderr)
    os.environ.update({k: v for k, v in child_env(args.threads).items() if k.endswith("_NUM_THREADS")})
    load_before = load_text()
    flops = train_flops_per_sample()
    peaks, bests = [], []
    runs: dict[int, dict[str, list[dict]]] = {b: {p: [] for p in peers} for b in batch_sizes}
    for round_index in range(args.rounds):
        peak, best = measure_peak(args.threads)
        peaks.append(peak)
        bests.append(best)
        print(f"round {round_index + 1}/{args.rounds}: fp32 peak {peak:.1f} GFLOP/s, best run {best:.1f} "
              f"(torch.mm {PEAK_SIZE}x{PEAK_SIZE}, {args.threads} threads); {flops / 1e6:.3f} MFLOP per "
              f"training sample; load {load_text()}", flush=True)
        shift = round_index % len(peers)
        for batch_size in batch_sizes:
            for peer in peers[shift:] + peers[:shift]:  # no tool always runs first or last
                r = run_peer(peer, batch_size, args.epochs, args.threads, args.clock)
                runs[batch_size][peer].append(r)
                print(f"  {peer:>10} batch {batch_size:>4}: " + "  ".join(f"{v:,.0f}" for v in r["per_epoch"])
                      + f" samples/s per epoch; test accuracy {100 * r['test_accuracy']:.2f}%", flush=True)
    peak, best = statistics.median(peaks), max(bests)
    results = {b: {p: combine_rounds(rs) for p, rs in by_peer.items()} for b, by_peer in runs.items()}
    table, verdicts = render(results, args.epochs, peak, flops)
    load_after = load_text()
    print("\n" + table + "\n\n" + "\n".join(verdicts))
    if args.no_doc:
        return
    write_block("bench_mlp", section_text(args, table, verdicts, peak, best, flops, load_before, load_after))
    print(f"\nwrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
