"""Time to accuracy on MNIST: how long each recipe makes a user wait for a good network.

    DEEPNET_DATA=../shared/data .venv/bin/python benchmarks/time_to_accuracy.py
    .venv/bin/python benchmarks/time_to_accuracy.py --tools deepnet,keras --seeds 0 --budget 120
    .venv/bin/python benchmarks/time_to_accuracy.py --task sst2 --write-doc

Each tool trains with its own published recipe, from fresh weights, and is stopped at the
same points to be measured on MNIST's 10,000 test images:

  deepnet    examples/mnist-fast.yaml (``--config deepnet=FILE`` for another), through deepnet.fit
  keras      keras.io's ``mnist_convnet`` on Keras 3 (torch backend): 2 conv + 2 max-pool,
             dropout 0.5, softmax; Adam (1e-3), batch 128, 15 epochs, on the first 90% of the
             60,000 training images (the example's validation_split=0.1)
  pytorch    pytorch/examples ``mnist/main.py``: 2 conv, max-pool, dropout 0.25, 9216-128
             dense, dropout 0.5; Adadelta (lr 1.0), StepLR(gamma 0.7), batch 64, 14 epochs;
             a Dataset that normalises each image as it is fetched, as torchvision's
             ToTensor + Normalize does
  lightning  deepnet's recipe (the same model, optimizer, schedule, batch size and epochs)
             as a LightningModule on a DataLoader, with no logger, checkpoints or progress bar

Evaluation is the same for every tool: every ``--eval-every`` training images (counted
across epochs) and at the end, the clock stops, the model is switched to eval mode, the test
accuracy is measured, and the clock starts again. So the seconds reported are training only;
the evaluation seconds are reported beside them. A tool stops when it reaches the highest
target, ends its recipe, or passes ``--budget`` seconds of training; with ``--full`` only the
last two, for the best accuracy a recipe reaches in the budget (``examples/mnist-10min.yaml``).

``--task sst2`` and ``--task shakespeare`` time deepnet's text recipes the same way, today's
configs against the fast ones: seconds to SST-2 test accuracy 80% (the LSTM and the
transformer) and to Tiny Shakespeare validation loss 1.70 nats per character.

Each (tool, seed) runs in its own subprocess with the same environment and thread count, and
the seeds run in rounds in rotated tool order: this 2-core VM switches for minutes between two
speeds 1.6x apart (docs/benchmarks.md), so a single pass can hand any one tool the slow phase.
Figures are medians over seeds; a target a seed never reached counts as missed, and the
median is given only when most seeds reached it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _doc import write_block  # benchmarks/_doc.py; this script runs as a file
from _env import child_env  # benchmarks/_env.py

# -- settings -------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SEEDS = (0, 1, 2)
BUDGET_S = 600.0                   # seconds of training after which a tool is stopped
THREADS = os.cpu_count() or 1
clock = time.perf_counter


@dataclass(frozen=True)
class Task:
    metric: str                    # "accuracy" or "loss", measured at every evaluation
    split: str                     # on which split
    targets: tuple[float, ...]     # values whose first crossing is timed
    eval_every: int                # training examples between evaluations
    tools: dict[str, Path | None]  # name -> deepnet recipe (None: a peer with its own recipe)

    def reached(self, value: float, target: float) -> bool:
        return value >= target if self.metric == "accuracy" else value <= target

    def best(self, values: list[float]) -> float:
        return max(values) if self.metric == "accuracy" else min(values)


TASKS = {
    "mnist": Task("accuracy", "test", (0.990, 0.994, 0.996), 7_500,  # 1/8 of an epoch of 60,000
                  {"deepnet": EXAMPLES / "mnist-fast.yaml", "keras": None, "pytorch": None,
                   "lightning": EXAMPLES / "mnist-fast.yaml"}),
    "sst2": Task("accuracy", "test", (0.80,), 1_730,  # 1/4 of an epoch of 6,920 sentences
                 {"lstm": EXAMPLES / "sst2-lstm.yaml", "lstm-fast": EXAMPLES / "sst2-lstm-fast.yaml",
                  "transformer": EXAMPLES / "sst2-transformer.yaml",
                  "transformer-fast": EXAMPLES / "sst2-transformer-fast.yaml"}),
    "shakespeare": Task("loss", "val", (1.70,), 2_400,  # 75 steps of 32 windows
                        {"lstm": EXAMPLES / "shakespeare-lstm.yaml", "gpt": EXAMPLES / "shakespeare-gpt.yaml",
                         "fast": EXAMPLES / "shakespeare-fast.yaml"}),
}


class Stop(Exception):
    """The last target is reached or the budget is spent: this tool is done."""


class Probe:
    """The shared evaluation schedule: call ``after(n)`` after every training step of n
    examples; every ``every`` examples it stops the clock, measures the task's metric,
    restarts the clock, prints a record, and raises :class:`Stop` when the tool is done: at
    the hardest target or the budget, or with ``full`` only at the budget."""

    def __init__(self, evaluate, task: Task, every: int, budget: float, full: bool = False) -> None:
        self.evaluate, self.task, self.every, self.budget = evaluate, task, every, budget
        self.last_target = None if full else task.best(list(task.targets))  # the hardest to reach
        self.seen, self.next_eval, self.eval_seconds = 0, every, 0.0
        self.start = clock()

    def train_seconds(self) -> float:
        return clock() - self.start - self.eval_seconds

    def after(self, examples: int) -> None:
        self.seen += examples
        if self.seen >= self.next_eval:
            self.next_eval += self.every
            self.measure()

    def measure(self, final: bool = False) -> None:
        seconds = self.train_seconds()
        began = clock()
        value = float(self.evaluate())
        self.eval_seconds += clock() - began
        print("RECORD " + json.dumps({"seconds": seconds, "examples": self.seen, "value": value,
                                       "eval_seconds": self.eval_seconds}), flush=True)
        done = self.last_target is not None and self.task.reached(value, self.last_target)
        if not final and (done or seconds >= self.budget):
            raise Stop


def torch_accuracy(model, x, y, batch_size: int = 1000) -> float:
    import torch

    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


# -- the tools (each runs in a subprocess) --------------------------------------------------
def load_mnist():
    import deepnet

    return deepnet.load_dataset("mnist", val_fraction=0)  # all 60,000 training images; the test split


def run_deepnet(args) -> None:
    import deepnet
    from deepnet.config import load_config
    from deepnet.data import AugmentConfig
    from deepnet.train.experiment import build_model, load_experiment_data
    from deepnet.train.loop import evaluate_split, seed_everything

    config = load_config(args.recipe, [f"train.seed={args.seed}", f"train.threads={args.threads}",
                                       "train.checkpoint_every=0"])
    data = load_experiment_data(config)
    split = getattr(data, args.task.split)

    def evaluate() -> float:
        was_training = model.training
        result = evaluate_split(model, split, loss=config.train.loss, batch_size=config.train.eval_batch_size)
        model.train(was_training)
        return result[args.task.metric]

    targets_per_example = data.train.y[0].numel()  # a language model's "seen" counts predicted characters

    class Hook(deepnet.Callback):
        def __init__(self) -> None:
            self.last = 0

        def on_batch_end(self, batch, logs) -> None:
            seen = logs["seen"]  # targets this epoch
            probe.after((seen - self.last if seen >= self.last else seen) // targets_per_example)
            self.last = seen

        def on_epoch_end(self, epoch, logs) -> None:
            self.last = 0

    probe = Probe(evaluate, args.task, args.eval_every, args.budget, args.full)
    seed_everything(config.train.seed, config.train.deterministic)
    model = build_model(config, data)
    try:
        deepnet.fit(model, data, config.train, augment=AugmentConfig(**config.data.augment.model_dump()),
                    quiet=True, experiment=config, callbacks=[Hook()])
    except Stop:
        return
    probe.measure(final=True)


def run_keras(args) -> None:
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported (the parent also sets it)
    import keras
    import torch

    torch.set_num_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    data = load_mnist()
    mean, std = data.preprocessing["mean"][0], data.preprocessing["std"][0]
    to_unit = lambda x: (x * std + mean).permute(0, 2, 3, 1).numpy()  # noqa: E731  the example's x / 255, NHWC
    x_train, y_train = to_unit(data.train.x), keras.utils.to_categorical(data.train.y.numpy(), 10)
    split = int(len(x_train) * 0.9)  # validation_split=0.1 holds out the last 10%
    x_train, y_train = x_train[:split], y_train[:split]
    x_test, y_test = to_unit(data.test.x), data.test.y.numpy()
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    def evaluate() -> float:
        return float((model.predict(x_test, batch_size=1000, verbose=0).argmax(1) == y_test).mean())

    class Hook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None) -> None:
            probe.after(min(128, split - 128 * batch))

    probe = Probe(evaluate, args.task, args.eval_every, args.budget, args.full)
    try:
        # The example's validation_split is an evaluation, which the shared schedule replaces.
        model.fit(x_train, y_train, batch_size=128, epochs=15, verbose=0, callbacks=[Hook()])
    except Stop:
        return
    probe.measure(final=True)


def run_pytorch(args) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_mnist()
    mean, std = data.preprocessing["mean"][0], data.preprocessing["std"][0]
    raw = (data.train.x * std + mean).mul(255).round().to(torch.uint8)  # the IDX bytes, as torchvision holds them

    class MNIST(Dataset):  # torchvision.datasets.MNIST with ToTensor() + Normalize((0.1307,), (0.3081,))
        def __len__(self) -> int:
            return len(raw)

        def __getitem__(self, i: int):
            return (raw[i].float().div(255) - 0.1307) / 0.3081, int(data.train.y[i])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = self.dropout1(F.max_pool2d(x, 2))
            x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
            return F.log_softmax(self.fc2(x), dim=1)

    probe = Probe(lambda: torch_accuracy(model, data.test.x, data.test.y), args.task, args.eval_every, args.budget,
                  args.full)
    model = Net()
    loader = DataLoader(MNIST(), batch_size=64, shuffle=True)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    try:
        for _ in range(14):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.nll_loss(model(x), y)
                loss.backward()
                optimizer.step()
                probe.after(len(y))
            scheduler.step()
    except Stop:
        return
    probe.measure(final=True)


def run_lightning(args) -> None:
    import logging
    import warnings

    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from deepnet.config import load_config
    from deepnet.train.experiment import build_model, load_experiment_data

    warnings.filterwarnings("ignore")  # "no num_workers", "no validation loop"...
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = load_config(args.recipe, [f"train.seed={args.seed}"])
    t = config.train
    if t.optimizer != "adamw" or t.schedule != "onecycle" or any(config.data.augment.model_dump().values()):
        raise SystemExit(f"the Lightning twin is written for AdamW + one-cycle without augmentation; {args.recipe} "
                         f"uses {t.optimizer} + {t.schedule}. Extend run_lightning.")
    data = load_experiment_data(config)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=t.batch_size, shuffle=True)

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_model(config, data)
            self.criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

        def training_step(self, batch, batch_index):
            x, y = batch
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.criterion(self.model(x), y)

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, epochs=t.epochs,
                                                           steps_per_epoch=len(loader))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    class Hook(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
            probe.after(len(batch[1]))

    module = Classifier()
    if t.channels_last:
        module.model.to(memory_format=torch.channels_last)
    probe = Probe(lambda: torch_accuracy(module.model, data.test.x, data.test.y), args.task, args.eval_every,
                  args.budget, args.full)
    precision = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[t.precision]  # autocast, as ours
    trainer = L.Trainer(max_epochs=t.epochs, accelerator="cpu", devices=1, logger=False, precision=precision,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Hook()])
    try:
        trainer.fit(module, loader)
    except Stop:
        return
    probe.measure(final=True)


PEERS = {"keras": run_keras, "pytorch": run_pytorch, "lightning": run_lightning}  # MNIST only; any other tool is a deepnet recipe


# -- the parent: rounds of subprocesses, the table, the plot --------------------------------
def run_tool(task_name: str, tool: str, config: Path | None, seed: int, args) -> list[dict]:
    command = [sys.executable, __file__, "--task", task_name, "--worker", tool, "--seeds", str(seed),
               "--threads", str(args.threads), "--eval-every", str(args.eval_every), "--budget", str(args.budget)]
    if args.full:
        command.append("--full")
    if config is not None:
        command += ["--recipe", str(config)]
    done = subprocess.run(command, env=child_env(args.threads), capture_output=True, text=True, cwd=ROOT)
    records = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RECORD ")]
    if done.returncode != 0 or not records:
        raise SystemExit(f"{tool} (seed {seed}) failed with exit {done.returncode}:\n{done.stderr[-3000:]}")
    return records


def first_crossing(task: Task, records: list[dict], target: float) -> float | None:
    return next((r["seconds"] for r in records if task.reached(r["value"], target)), None)


def summarize(task: Task, results: dict[str, dict[int, list[dict]]]) -> dict[str, dict]:
    """Per tool: for each target the seconds of every seed (None: missed) and their median,
    a miss counting as slower than any time, so given only when most seeds reached it."""
    summary = {}
    for tool, by_seed in results.items():
        row: dict = {"seeds": len(by_seed)}
        for target in task.targets:
            times = [first_crossing(task, records, target) for records in by_seed.values()]
            reached = sum(t is not None for t in times)
            median = statistics.median(math.inf if t is None else t for t in times)
            row[str(target)] = {"reached": reached, "seconds": times, "median": None if math.isinf(median) else median}
        row["best"] = statistics.median(task.best([r["value"] for r in records]) for records in by_seed.values())
        row["train_seconds"] = statistics.median(records[-1]["seconds"] for records in by_seed.values())
        row["eval_seconds"] = statistics.median(records[-1]["eval_seconds"] for records in by_seed.values())
        summary[tool] = row
    return summary


def show(task: Task, value: float) -> str:
    return f"{100 * value:.2f}%" if task.metric == "accuracy" else f"{value:.3f}"


def table(task: Task, summary: dict[str, dict]) -> str:
    name = f"{task.split} {task.metric}"
    head = "| tool | " + " | ".join(f"s to {show(task, t)}" for t in task.targets) + \
           f" | best {name} | trained s | evaluation s |"
    lines = [head, "|" + "---|" + "---:|" * (len(task.targets) + 3)]
    for tool, row in summary.items():
        cells = []
        for target in task.targets:
            cell = row[str(target)]
            value = "—" if cell["median"] is None else f"{cell['median']:.1f}"
            cells.append(f"{value} ({cell['reached']}/{row['seeds']})")
        lines.append(f"| {tool} | " + " | ".join(cells) +
                     f" | {show(task, row['best'])} | {row['train_seconds']:.0f} | {row['eval_seconds']:.0f} |")
    return "\n".join(lines)


def plot(task_name: str, task: Task, results: dict[str, dict[int, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100 if task.metric == "accuracy" else 1
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for (tool, by_seed), colour in zip(results.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for index, records in enumerate(by_seed.values()):
            axis.plot([r["seconds"] for r in records], [scale * r["value"] for r in records], color=colour,
                      alpha=0.8, lw=1.2, marker=".", ms=3, label=tool if index == 0 else None)
    for target in task.targets:
        axis.axhline(scale * target, color="grey", lw=0.6, ls=":")
    if task_name == "mnist":
        axis.set_ylim(97.5, 100)
    axis.set_xlabel("seconds of training (evaluation excluded)")
    axis.set_ylabel(f"{task_name} {task.split} {task.metric}" + (" (%)" if task.metric == "accuracy" else " (nats)"))
    axis.set_title(f"Time to {task.metric} on {task_name}, one line per seed")
    axis.legend(loc="lower right" if task.metric == "accuracy" else "upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="mnist")
    parser.add_argument("--tools", help="comma-separated (default: all of the task's)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--eval-every", type=int, help="training examples between evaluations (default: the task's)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds of training before a tool is stopped")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--config", action="append", default=[], metavar="TOOL=YAML",
                        help="another recipe for a deepnet tool, or a new tool (repeatable)")
    parser.add_argument("--full", action="store_true",
                        help="train every recipe to its end (or the budget), past the last target: its best accuracy")
    parser.add_argument("--json", type=Path, help="write every record here")
    parser.add_argument("--plot", type=Path, help="accuracy or loss against seconds (--write-doc: docs/img/)")
    parser.add_argument("--write-doc", action="store_true", help="put the table into docs/benchmarks.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    task = TASKS[args.task]
    args.task_name, args.task = args.task, task
    args.eval_every = args.eval_every or task.eval_every
    if args.worker:
        args.seed = int(args.seeds)
        (PEERS.get(args.worker) or run_deepnet)(args)
        return

    tools = dict(task.tools)
    for option in args.config:
        name, _, path = option.partition("=")
        if not path:
            raise SystemExit(f"--config takes TOOL=YAML; received {option!r}")
        tools[name] = Path(path)
    if args.tools:
        chosen = args.tools.split(",")
        unknown = sorted(set(chosen) - set(tools))
        if unknown:
            raise SystemExit(f"unknown tool(s) {unknown} for --task {args.task_name}; choose from {', '.join(tools)}")
        tools = {name: tools[name] for name in chosen}
    names, seeds = list(tools), [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[int, list[dict]]] = {name: {} for name in names}
    started = datetime.datetime.now(datetime.timezone.utc)
    for round_index, seed in enumerate(seeds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            records = run_tool(args.task_name, name, tools[name], seed, args)
            results[name][seed] = records
            crossings = ", ".join(f"{show(task, t)} at {s:.1f}s" if (s := first_crossing(task, records, t)) is not None
                                  else f"{show(task, t)} missed" for t in task.targets)
            print(f"seed {seed} {name:17s} best {show(task, task.best([r['value'] for r in records]))}  "
                  f"last {show(task, records[-1]['value'])}  {crossings}  "
                  f"(trained {records[-1]['seconds']:.0f}s, evaluated {records[-1]['eval_seconds']:.0f}s)", flush=True)
    summary = summarize(task, results)
    text = table(task, summary)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"task": args.task_name, "results": results, "summary": summary}, indent=1))
    picture = ROOT / "docs" / "img" / f"time_to_accuracy_{args.task_name}.png"
    if args.plot or args.write_doc:
        plot(args.task_name, task, results, args.plot or picture)
    if args.write_doc:
        recipes = ", ".join(f"{name}: `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`"
                            for name, path in tools.items() if path is not None)
        header = (f"Measured {started:%Y-%m-%d %H:%M} UTC on {platform.machine()}, {args.threads} threads, seeds "
                  f"{args.seeds}, evaluation every {args.eval_every:,} training examples, budget {args.budget:.0f} s; "
                  f"medians over seeds, (seeds that reached it/seeds) in brackets. Recipes: {recipes}.\n"
                  f"`{' '.join(['benchmarks/time_to_accuracy.py', *sys.argv[1:]])}`\n\n")
        write_block(f"time-to-accuracy-{args.task_name}", header + text + f"\n\n![{args.task_name}](img/{picture.name})\n")


if __name__ == "__main__":
    main()
