"""Where a batch-128 training step of bench_mlp's MLP spends its time, and what is left to win.

    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/step_budget.py
    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/step_budget.py --threads 1 --rounds 3

bench_mlp.py compares whole tools in separate processes; this script answers the follow-up
question "how close to the limit is deepnet, and could it reach a given ratio?" by timing, in
one process and in alternation (so a slow phase of the machine hits every variant alike):

  fit        deepnet.fit, one epoch of MNIST (after one warm-up epoch)
  minimal    the leanest eager step: one index_select per batch, fused Adam, nothing else
  peer       bench_mlp's hand-written PyTorch loop (DataLoader, default Adam, loss.item())
  gemms      the step's 8 matrix multiplies alone, MKL (what ATen's Linear calls)
  gemms-dnnl the same 8 multiplies through oneDNN (torch.ops.mkldnn._linear_pointwise)
  adam       Adam.step() alone (fused, one parameter group)
  adam-direct the fused Adam kernel called directly (torch._fused_adam_), no Optimizer.step

and prints milliseconds per step (medians over rounds), deepnet's ratio to the peer, and the
step time a target ratio would need next to the GEMMs' share.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F

import deepnet
from _gemms import gemms_alone  # benchmarks/_gemms.py; this script runs as a file

BATCH = 128
WIDTH, DEPTH = 512, 2
LR = 1e-3
TARGET = 1.5  # bench_mlp's batch-128 target: deepnet / fastest peer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = deepnet.load_dataset("mnist", seed=0)
    data = dataclasses.replace(data, val=deepnet.Split(data.val.x[:0], data.val.y[:0]))
    X, Y = data.train.x, data.train.y
    steps = len(X) // BATCH

    def new_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return deepnet.create_model("mlp", width=WIDTH, depth=DEPTH)

    class EpochTimer(deepnet.Callback):
        def on_epoch_begin(self, epoch, logs) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs) -> None:
            self.seconds = time.perf_counter() - self.start

    def fit() -> float:
        timer = EpochTimer()
        deepnet.fit(new_model(), data, epochs=2, batch_size=BATCH, optimizer="adam", lr=LR, schedule="constant",
                    seed=0, threads=args.threads, quiet=True, callbacks=[timer])
        return timer.seconds / steps

    def minimal() -> float:
        model = new_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
        for _ in range(2):  # the first epoch warms up
            order = torch.randperm(len(X))
            start = time.perf_counter()
            for i in range(steps):
                index = order[i * BATCH:(i + 1) * BATCH]
                loss = F.cross_entropy(model(X.index_select(0, index)), Y.index_select(0, index))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            seconds = time.perf_counter() - start
        return seconds / steps

    def peer() -> float:
        from torch.utils.data import DataLoader, TensorDataset

        model = new_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        loader = DataLoader(TensorDataset(X, Y), batch_size=BATCH, shuffle=True)
        criterion = torch.nn.CrossEntropyLoss()
        for _ in range(2):
            start, count = time.perf_counter(), 0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                loss.item()
                count += 1
            seconds = time.perf_counter() - start
        return seconds / count

    sizes = [28 * 28] + [WIDTH] * DEPTH + [10]
    weights = [torch.randn(o, i) / i**0.5 for i, o in zip(sizes, sizes[1:])]
    biases = [torch.zeros(o) for o in sizes[1:]]
    x = X[:BATCH].flatten(1)

    def gemms_mkl() -> None:
        gemms_alone(x, weights, biases)

    linear = torch.ops.mkldnn._linear_pointwise  # y = x @ w.T (+ b), w given as (out, in)

    def gemms_dnnl() -> None:
        acts = [x]
        for w, b in zip(weights, biases):
            acts.append(linear(acts[-1], w, b, "none", [], ""))
        grad = acts[-1]
        for i in range(len(weights) - 1, -1, -1):
            linear(grad.t(), acts[i].t(), None, "none", [], "")  # weight gradient (out, in)
            if i:
                grad = linear(grad, weights[i].t(), None, "none", [], "")  # transposed view: no copy made here

    model = new_model()
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    adam = torch.optim.Adam(params, lr=LR, fused=True)
    adam.step()
    state = [adam.state[p] for p in params]

    def adam_direct() -> None:
        steps_ = [s["step"] for s in state]
        torch._foreach_add_(steps_, 1)
        torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in state],
                           [s["exp_avg_sq"] for s in state], [], steps_, lr=LR, beta1=0.9, beta2=0.999,
                           weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)

    def per_call(fn, calls: int = 300):
        def timed() -> float:
            for _ in range(20):
                fn()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            return (time.perf_counter() - start) / calls
        return timed

    variants = {"fit": fit, "minimal": minimal, "peer": peer, "gemms": per_call(gemms_mkl),
                "gemms-dnnl": per_call(gemms_dnnl), "adam": per_call(adam.step), "adam-direct": per_call(adam_direct)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(fn() * 1e3)
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in times.items()) + " ms", flush=True)
    ms = {name: statistics.median(v) for name, v in times.items()}
    print(f"\nmedians over {args.rounds} rounds, {args.threads} thread(s), batch {BATCH}, ms per step:")
    for name, value in ms.items():
        print(f"  {name:12s} {value:7.3f}")
    rest = ms["minimal"] - ms["gemms"] - ms["adam"]
    need = ms["peer"] / TARGET
    print(f"\ndeepnet.fit is {ms['peer'] / ms['fit']:.2f}x the peer; the minimal eager step {ms['peer'] / ms['minimal']:.2f}x; "
          f"the GEMMs alone {ms['peer'] / ms['gemms']:.2f}x.")
    print(f"fit's bookkeeping over the minimal step: {ms['fit'] - ms['minimal']:+.3f} ms; the minimal step beside its "
          f"GEMMs and Adam.step: {rest:.3f} ms (activations, bias gradients, loss, batch gather, dispatch).")
    print(f"{TARGET}x the peer needs {need:.3f} ms per step: {need - ms['gemms']:.3f} ms beside MKL's GEMMs "
          f"({need - ms['gemms-dnnl']:.3f} ms beside oneDNN's) for Adam ({ms['adam-direct']:.3f} ms at the least) "
          f"and everything else ({rest:.3f} ms now).")
    best = ms["gemms-dnnl"] + ms["adam-direct"] + rest + max(0.0, ms["fit"] - ms["minimal"])
    print(f"With every lever measured here (oneDNN GEMMs, direct fused Adam): about {best:.3f} ms, "
          f"{ms['peer'] / best:.2f}x the peer.")


if __name__ == "__main__":
    main()
