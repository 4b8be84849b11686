"""CPU traps when training a small MLP with PyTorch, each measured before/after in one run.

    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/cpu_traps.py
    .venv/bin/python benchmarks/cpu_traps.py --traps adam-foreach,item --rounds 3 --no-doc
    .venv/bin/python benchmarks/cpu_traps.py --threads 1 --clock cpu   # on a busy machine

The workload is bench_mlp.py's: a 784-512-512-10 ReLU MLP, Adam lr 1e-3, cross-entropy, fp32,
MNIST batches. Each trap compares two variants of the training step that differ in one thing
only; everything else is what deepnet does (fused Adam, zero_grad(set_to_none=True), no
.item() per step, flush-denormal on, all cores). The two variants run in alternation, ROUNDS
times each, so that drift in the machine's load hits both alike. Reported: the median
samples/s of each variant and the median over rounds of the ratio after/before (> 1: the
"after" variant is faster). Traps that need a fresh process (environment variables read at
start-up, interop threads) alternate subprocesses instead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _doc import DOC, write_block  # benchmarks/_doc.py; this script runs as a file
import torch.nn.functional as F
from torch import nn
from _gemms import gemms_alone  # benchmarks/_gemms.py; this script runs as a file

# -- settings -------------------------------------------------------------------------------
BATCH_SIZE = 128                   # samples per step for every trap but the batch-size ones
STEPS = 40                         # steps per timing
ROUNDS = 7                         # alternations of before/after; medians are reported
EPOCH_ROUNDS = 3                   # alternations for the data-loading traps (a full epoch each)
PROCESS_ROUNDS = 3                 # alternations for the traps that need a fresh process
WIDTH, DEPTH = 512, 2              # hidden units per layer, hidden layers
LR = 1e-3                          # Adam learning rate
THREADS = os.cpu_count() or 1      # intra-op threads unless a trap says otherwise
SEED = 0
ROOT = Path(__file__).resolve().parents[1]
CLOCKS = {"wall": time.perf_counter,  # elapsed time
          "cpu": time.process_time}   # CPU seconds of the process: with --threads 1 on a shared
                                      # machine, close to the wall time of an idle core
clock = CLOCKS[os.environ.get("DEEPNET_CLOCK", "wall")]

# What deepnet does; each trap changes one of these.
BASELINE = dict(threads=THREADS, flush_denormal=True, optimizer="fused", set_to_none=True, item=False,
                compile=False, inplace_relu=False, mkldnn=True, batch_size=BATCH_SIZE, gemm_only=False)

# name: (what, before, after). A variant is BASELINE with the given changes.
TRAPS: dict[str, tuple[str, dict, dict]] = {
    "threads": ("intra-op threads: 1 → all cores", {"threads": 1}, {"threads": THREADS}),
    "denormals": ("torch.set_flush_denormal(False) → True", {"flush_denormal": False}, {}),
    "item": ("loss.item() every step (host sync) → loss kept as a tensor", {"item": True}, {}),
    "adam-for-loop": ("Adam, per-tensor for-loop (the CPU default) → fused=True", {"optimizer": "for-loop"}, {}),
    "adam-foreach": ("Adam foreach=True → fused=True", {"optimizer": "foreach"}, {}),
    "zero-grad": ("zero_grad(set_to_none=False) → set_to_none=True", {"set_to_none": False}, {}),
    "compile": ("eager → torch.compile(model) (compile time not counted)", {}, {"compile": True}),
    "relu-inplace": ("nn.ReLU() → nn.ReLU(inplace=True) (saves one activation write)", {}, {"inplace_relu": True}),
    "mkldnn": ("torch.backends.mkldnn.enabled False → True", {"mkldnn": False}, {}),
    "batch-512": ("batch 128 → 512 (same step, more work per Python call)", {}, {"batch_size": 512}),
    "gemm-share-128": ("batch 128: whole step → its 8 GEMMs alone", {}, {"gemm_only": True}),
    "gemm-share-512": ("batch 512: whole step → its 8 GEMMs alone",
                       {"batch_size": 512}, {"batch_size": 512, "gemm_only": True}),
}
EPOCH_TRAPS: dict[str, tuple[str, str, str]] = {  # one epoch of batches, loading included
    "dataloader": ("DataLoader(TensorDataset, shuffle=True) → one index_select per batch", "dataloader", "index_select"),
    "epoch-gather": ("one gather of the whole epoch, then views → one index_select per batch", "epoch_gather", "index_select"),
}
PROCESS_TRAPS: dict[str, tuple[str, dict, dict]] = {  # environment set before torch starts
    "interop": ("torch.set_num_interop_threads(default) → 1", {}, {"DEEPNET_INTEROP": "1"}),
    "omp-passive": ("OpenMP threads spin at barriers (default) → sleep at once (OMP_WAIT_POLICY=PASSIVE)",
                    {}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "gomp-spincount": ("OpenMP spin 300,000 iterations (default) → 10,000 then sleep (GOMP_SPINCOUNT=10000)",
                       {}, {"GOMP_SPINCOUNT": "10000"}),
}
OPTIMIZER_TRAPS: dict[str, tuple[str, str, str]] = {  # optimizer.step() alone, in steps/s
    "adam-step-foreach": ("Adam.step() alone: foreach=True → fused=True", "foreach", "fused"),
    "adam-step-for-loop": ("Adam.step() alone: per-tensor for-loop → fused=True", "for-loop", "fused"),
}


# -- the training step and its variants ------------------------------------------------------
def make_model(width: int = WIDTH) -> nn.Module:
    import deepnet

    torch.manual_seed(SEED)
    return deepnet.create_model("mlp", width=width, depth=DEPTH)


def make_optimizer(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    options = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[kind]
    return torch.optim.Adam(model.parameters(), lr=LR, **options)


def gemm_step(model: nn.Module):
    """The step's matrix multiplies alone: 3 forward, 3 weight gradients, 2 input gradients."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]
    biases = [m.bias.detach() for m in model.modules() if isinstance(m, nn.Linear)]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        gemms_alone(x.flatten(1), weights, biases)
    return step


def make_step(v: dict, width: int = WIDTH):
    model = make_model(width)
    if v["inplace_relu"]:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = True
    if v["gemm_only"]:
        return gemm_step(model)
    optimizer = make_optimizer(model, v["optimizer"])
    forward = torch.compile(model) if v["compile"] else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=v["set_to_none"])
        loss.backward()
        optimizer.step()
        if v["item"]:
            step.running_loss += loss.item()
    step.running_loss = 0.0
    return step


@contextlib.contextmanager
def settings(v: dict):
    """Thread count, denormals and oneDNN for one timing; restored afterwards."""
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(v["threads"])
    torch.set_flush_denormal(v["flush_denormal"])
    torch.backends.mkldnn.enabled = v["mkldnn"]
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        torch.backends.mkldnn.enabled = mkldnn


def fixed_batches(data, batch_size: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(SEED))[: batch_size * steps]
    x, y = data.train.x[order], data.train.y[order]
    return [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]


def epoch_batches(data, batch_size: int, kind: str, epoch: int):
    """The batches of one shuffled epoch, made the way ``kind`` says (timed with the step)."""
    x, y = data.train.x, data.train.y
    if kind == "dataloader":
        from torch.utils.data import DataLoader, TensorDataset

        torch.manual_seed(epoch)
        yield from DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
        return
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
    if kind == "epoch_gather":
        x, y = x.index_select(0, order), y.index_select(0, order)
        for i in range(len(x) // batch_size):
            yield x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]
    else:
        for i in range(len(x) // batch_size):
            index = order[i * batch_size:(i + 1) * batch_size]
            yield x.index_select(0, index), y.index_select(0, index)


def samples_per_second(step, batches) -> float:
    start, seen = clock(), 0
    for x, y in batches:
        step(x, y)
        seen += len(y)
    return seen / (clock() - start)


def alternate(before, after, rounds: int) -> dict:
    """``before``/``after``: callables returning samples/s. Median of each and of the ratio."""
    a, b = [], []
    for _ in range(rounds):
        a.append(before())
        b.append(after())
    return {"before": statistics.median(a), "after": statistics.median(b),
            "ratio": statistics.median(y / x for x, y in zip(a, b))}


def measure_trap(name: str, data, rounds: int) -> dict:
    _, before_changes, after_changes = TRAPS[name]
    variants = [{**BASELINE, **before_changes}, {**BASELINE, **after_changes}]
    timers = []
    for v in variants:
        step, batches = make_step(v), fixed_batches(data, v["batch_size"], STEPS)
        with settings(v):
            samples_per_second(step, batches[:5])  # warm-up (and compilation) not timed

        def timer(step=step, batches=batches, v=v) -> float:
            with settings(v):
                return samples_per_second(step, batches)
        timers.append(timer)
    return alternate(*timers, rounds)


def measure_epoch_trap(name: str, data, rounds: int, with_step: bool = True) -> dict:
    """One shuffled epoch per timing; ``with_step=False`` times making the batches alone."""
    _, before_kind, after_kind = EPOCH_TRAPS[name]
    timers = []
    for kind in (before_kind, after_kind):
        step = make_step(BASELINE) if with_step else (lambda x, y: None)
        samples_per_second(step, fixed_batches(data, BATCH_SIZE, 5))

        def timer(step=step, kind=kind, epochs=iter(range(1, 1_000))) -> float:
            return samples_per_second(step, epoch_batches(data, BATCH_SIZE, kind, next(epochs)))
        timers.append(timer)
    return alternate(*timers, rounds)


def measure_process_trap(name: str, rounds: int) -> dict:
    _, before_env, after_env = PROCESS_TRAPS[name]

    def timer(env: dict) -> float:
        done = subprocess.run([sys.executable, __file__, "--worker"], env={**os.environ, **env},
                              capture_output=True, text=True, check=True, cwd=ROOT)
        return float(done.stdout.strip().splitlines()[-1])
    return alternate(lambda: timer(before_env), lambda: timer(after_env), rounds)


def worker() -> None:
    """One baseline measurement in a fresh process (for the PROCESS_TRAPS)."""
    if os.environ.get("DEEPNET_INTEROP"):
        torch.set_num_interop_threads(int(os.environ["DEEPNET_INTEROP"]))
    BASELINE["threads"] = int(os.environ.get("DEEPNET_THREADS", THREADS))
    torch.set_num_threads(BASELINE["threads"])
    torch.set_flush_denormal(True)
    step, batches = make_step(BASELINE), fixed_batches(load_data(), BATCH_SIZE, STEPS)
    samples_per_second(step, batches[:5])
    print(statistics.median(samples_per_second(step, batches) for _ in range(3)))


def measure_optimizer_trap(name: str, rounds: int) -> dict:
    """Steps per second of optimizer.step() alone, on the MLP's parameters with fixed gradients."""
    _, before_kind, after_kind = OPTIMIZER_TRAPS[name]
    timers = []
    for kind in (before_kind, after_kind):
        model = make_model()
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        optimizer = make_optimizer(model, kind)

        def timer(optimizer=optimizer) -> float:
            start = clock()
            for _ in range(STEPS):
                optimizer.step()
            return STEPS / (clock() - start)
        timer()
        timers.append(timer)
    return alternate(*timers, rounds)


DENORMAL_OPS = {  # the trap in its pure form: inputs all denormal (1e-39 < 1.2e-38, float32's smallest normal)
    "denormal-matmul": ("512² matmul of denormal inputs, flush off → on", lambda a, w: torch.mm(a, w)),
    "denormal-mul": ("x * 0.5 on 512² denormals, flush off → on", lambda a, w: a * 0.5),
    "denormal-sqrt": ("torch.sqrt on 512² denormals, flush off → on", lambda a, w: torch.sqrt(a)),
}


def measure_denormal_op(name: str, rounds: int) -> tuple[dict, float]:
    """Calls per second of one op on denormal inputs, flush-to-zero off (before) and on (after),
    and on normal inputs (1e-3) for reference."""
    op = DENORMAL_OPS[name][1]
    weight = torch.randn(512, 512)

    def timer(flush: bool, value: float = 1e-39) -> float:
        inputs = torch.full((512, 512), value)
        torch.set_flush_denormal(flush)
        start = clock()
        for _ in range(20):
            op(inputs, weight)
        torch.set_flush_denormal(True)
        return 20 / (clock() - start)
    timer(False)
    normal = statistics.median(timer(False, 1e-3) for _ in range(rounds))
    return alternate(lambda: timer(False), lambda: timer(True), rounds), normal


def microseconds_per_step(data, batch_size: int, steps: int, width: int = WIDTH) -> float:
    """The baseline step's median time on ``steps`` batches of ``batch_size``."""
    step, batches = make_step(BASELINE, width), fixed_batches(data, batch_size, steps)
    samples_per_second(step, batches[: steps // 10])
    return 1e6 * batch_size / statistics.median(samples_per_second(step, batches) for _ in range(ROUNDS))


def load_data():
    import deepnet

    return deepnet.load_dataset("mnist", seed=SEED)


# -- report ---------------------------------------------------------------------------------
def render(rows: list[tuple[str, str, dict]], costs: dict[str, float]) -> str:
    lines = ["| trap | before → after | before | after | after / before |",
             "| --- | --- | ---: | ---: | ---: |"]
    for name, what, r in rows:
        unit = "calls/s" if name in DENORMAL_OPS else "steps/s" if name in OPTIMIZER_TRAPS else "samples/s"
        verdict = (f"GEMMs are **{100 / r['ratio']:.0f}%** of the step" if name.startswith("gemm-share")
                   else f"**{r['ratio']:.2f}x**")
        lines.append(f"| {name} | {what} | {r['before']:,.0f} {unit} | {r['after']:,.0f} {unit} | {verdict} |")
    step = costs["step"]
    lines += ["", f"Per-step costs (baseline step, median): a batch-{BATCH_SIZE} step takes **{step:,.0f} µs**; "
              f"a batch-1 step **{costs['batch-1']:,.0f} µs** ({100 * costs['batch-1'] / step:.0f}% of it: Python, "
              f"dispatch, Adam and gradient writes, none of which shrink with the batch); the same step on a "
              f"784-8-8-10 MLP at batch 1, where all arithmetic is negligible, **{costs['python']:,.0f} µs** "
              f"({100 * costs['python'] / step:.0f}%: the Python and dispatch overhead alone)."]
    return "\n".join(lines)


def main() -> None:
    every = [*TRAPS, *EPOCH_TRAPS, *PROCESS_TRAPS, *OPTIMIZER_TRAPS, *DENORMAL_OPS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traps", default=",".join(every), help=f"comma-separated subset of {','.join(every)}")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=THREADS, help="intra-op threads of the baseline")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall: elapsed time (default); cpu: process CPU time, for noisy machines with --threads 1")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    chosen = [t.strip() for t in args.traps.split(",")]
    global clock
    clock = CLOCKS[args.clock]
    BASELINE["threads"] = args.threads
    os.environ["DEEPNET_THREADS"] = str(args.threads)  # for the PROCESS_TRAPS workers
    os.environ["DEEPNET_CLOCK"] = args.clock
    if unknown := set(chosen) - set(every):
        parser.error(f"unknown traps {sorted(unknown)}; choose from {', '.join(every)}")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    load_before = os.getloadavg()
    data = load_data()
    rows = []
    for name in chosen:
        if name in TRAPS:
            result, what = measure_trap(name, data, args.rounds), TRAPS[name][0]
        elif name in EPOCH_TRAPS:
            alone = measure_epoch_trap(name, data, args.rounds, with_step=False)
            rows.append((f"{name} (batching alone)", EPOCH_TRAPS[name][0], alone))
            print(f"{name:>15}: {alone['before']:>9,.0f} → {alone['after']:>9,.0f}  ({alone['ratio']:.2f}x)  batching alone")
            result, what = measure_epoch_trap(name, data, min(args.rounds, EPOCH_ROUNDS)), EPOCH_TRAPS[name][0]
        elif name in PROCESS_TRAPS:
            result, what = measure_process_trap(name, min(args.rounds, PROCESS_ROUNDS)), PROCESS_TRAPS[name][0]
        elif name in OPTIMIZER_TRAPS:
            result, what = measure_optimizer_trap(name, args.rounds), OPTIMIZER_TRAPS[name][0]
        else:
            result, normal = measure_denormal_op(name, args.rounds)
            what = f"{DENORMAL_OPS[name][0]} (normal inputs: {normal:,.0f} calls/s)"
        rows.append((name, what, result))
        print(f"{name:>15}: {result['before']:>9,.0f} → {result['after']:>9,.0f}  ({result['ratio']:.2f}x)  {what}", flush=True)
    costs = {"step": microseconds_per_step(data, BATCH_SIZE, STEPS), "batch-1": microseconds_per_step(data, 1, 200),
             "python": microseconds_per_step(data, 1, 200, width=8)}
    table = render(rows, costs)
    load_after = os.getloadavg()
    print("\n" + table)
    if args.no_doc:
        return
    command = "DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/cpu_traps.py " + " ".join(sys.argv[1:])
    section = "\n".join([
        "## CPU traps",
        "",
        f"Each row changes one thing in the training step of the MLP above (batch {BATCH_SIZE} unless the row "
        f"says otherwise, {args.threads} thread{'s' if args.threads > 1 else ''}) and times both variants in "
        f"alternation, {args.rounds} rounds of "
        f"{STEPS} steps (data-loading rows: a full epoch each, {EPOCH_ROUNDS} rounds; environment rows: fresh "
        f"processes, {PROCESS_ROUNDS} rounds). Medians; the ratio > 1 means the change helps. "
        + ("Timed by the wall clock." if args.clock == "wall" else
           "**Timed by process CPU time** (`--clock cpu`): with one thread close to what an idle core would take; "
           "it cannot see waiting, so the thread and OpenMP rows need the wall clock on a quiet machine."),
        "",
        f"- command: `{command.strip()}`",
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; torch {torch.__version__}",
        f"- load average (1 / 5 / 15 min) before: {' / '.join(f'{v:.2f}' for v in load_before)}, "
        f"after: {' / '.join(f'{v:.2f}' for v in load_after)} on {os.cpu_count()} cores",
        "",
        table,
    ])
    write_block("cpu_traps", section)
    print(f"\nwrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
