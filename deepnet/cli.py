"""The `deepnet` command: a thin layer over the Python API, holding no logic of its own.

Errors the user can fix (bad config, missing data, shape mismatch, NaN loss) print one line
and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def _cmd_train(args: argparse.Namespace) -> int:
    from deepnet.config import load_config
    from deepnet.train.experiment import default_run_dir, resume_experiment, run_experiment

    if args.resume:
        run = resume_experiment(args.resume, quiet=args.quiet)
    else:
        overrides = list(args.overrides)
        flags = {"model.name": args.model, "data.name": args.data, "data.data_dir": args.data_dir,
                 "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.lr": args.lr,
                 "train.seed": args.seed}
        overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + overrides
        config = load_config(args.config, overrides)
        out = Path(args.out) if args.out else default_run_dir(config)
        if not args.quiet:
            print(f"training {config.model.name} on {config.data.name} → {out}", file=sys.stderr)
        run = run_experiment(config, out, quiet=args.quiet)
    metrics = run.metrics
    summary = f"test_loss {metrics['test_loss']:.4f}"
    if "test_accuracy" in metrics:
        summary = (f"test_accuracy {100 * metrics['test_accuracy']:.2f}% "
                   f"(error {100 * (1 - metrics['test_accuracy']):.2f}%)  " + summary)
    print(f"{summary}  train {metrics['train_seconds']:.1f}s  {metrics['samples_per_second']:.0f} samples/s  "
          f"run: {run.directory}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from deepnet.evaluate import evaluate_run

    result = evaluate_run(args.run)
    if "test_accuracy" in result:
        print(f"test_accuracy {100 * result['test_accuracy']:.2f}%  test_loss {result['test_loss']:.4f}")
        for name, accuracy in result["per_class_accuracy"].items():
            print(f"  {name:>12}  {100 * accuracy:6.2f}%")
        print(f"confusion matrix: {Path(args.run) / 'plots' / 'confusion_matrix.png'}")
    else:
        print(f"test_loss {result['test_loss']:.4f}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from deepnet.evaluate import predict_file

    for i, row in enumerate(predict_file(args.run, args.file)):
        print(f"{i}\t{row['class']}\t{row['probability']:.4f}")
    return 0


def _format_count(n: float | None) -> str:
    if not n:
        return "-"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def _cmd_models(args: argparse.Namespace) -> int:
    from deepnet.models import count_parameters, list_models, model_info

    rows = []
    for name in list_models(args.family):
        info = model_info(name)
        counted = count_parameters(name)
        source = info.paper if len(info.paper) <= 72 or args.json else info.paper[:71] + "…"
        rows.append((name, info.family, str(info.year), _format_count(counted),
                     _format_count(info.published_parameters), source))
    if args.json:
        print(json.dumps([dict(zip(("name", "family", "year", "parameters", "published", "source"), r)) for r in rows], indent=1))
        return 0
    header = ("name", "family", "year", "parameters", "published", "source")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from deepnet.models._generate import generate
    from deepnet.train.run import load_run

    run = load_run(args.run)
    prep = run.model_spec.get("preprocessing", {})
    if prep.get("kind") != "chars":
        raise ValueError(f"{args.run} is not a character language model (preprocessing {prep.get('kind')!r}); "
                         "train one with examples/shakespeare-gpt.yaml.")
    chars = prep["chars"]
    unknown = sorted({c for c in args.prompt if c not in chars})
    if unknown:
        raise ValueError(f"The prompt holds characters the model never saw: {unknown!r}. Remove them.")
    idx = torch.tensor([[chars.index(c) for c in args.prompt]], dtype=torch.int64)
    generator = torch.Generator().manual_seed(args.seed)
    out = generate(run.model, idx, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=generator)
    print("".join(chars[i] for i in out[0].tolist()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepnet", description="Build, train, vet, shrink and ship deep neural networks.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    verbs = parser.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="train a model; writes a run directory")
    train.add_argument("-c", "--config", help="YAML experiment config (see examples/)")
    train.add_argument("--model", help="registered model name (deepnet models)")
    train.add_argument("--data", help="digits | mnist | sst2 | tiny-shakespeare | file.csv | file.npz")
    train.add_argument("--data-dir", help="folder holding the dataset files")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--out", help="run directory (default runs/<data>-<model>)")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its checkpoint")
    train.add_argument("--quiet", action="store_true", help="print only the final result")
    train.add_argument("overrides", nargs="*", metavar="section.key=value")
    train.set_defaults(func=_cmd_train)

    evaluate = verbs.add_parser("evaluate", help="test metrics and confusion matrix of a run")
    evaluate.add_argument("run")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = verbs.add_parser("predict", help="classify a PNG, .npy or CSV file with a run's model")
    predict.add_argument("run")
    predict.add_argument("file")
    predict.set_defaults(func=_cmd_predict)

    models = verbs.add_parser("models", help="list the model zoo with parameter counts")
    models.add_argument("--family")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)

    sample = verbs.add_parser("sample", help="generate text with a character language model run")
    sample.add_argument("run")
    sample.add_argument("--prompt", default="\n")
    sample.add_argument("--tokens", type=int, default=500)
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=_cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    from deepnet.train.loop import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: the last finished epoch is checkpointed; continue with `deepnet train --resume RUN`",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, TrainingError) as err:
        if args.debug:
            raise
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
