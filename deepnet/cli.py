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
    from deepnet.train import distributed
    from deepnet.train.experiment import default_run_dir, resume_experiment, run_experiment

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.resume:
        for flag in ("config", "model", "data", "data_dir", "batch_size", "lr", "seed", "out"):
            if getattr(args, flag) is not None:
                option = "-c" if flag == "config" else f"--{flag.replace('_', '-')}"
                raise ValueError(f"{option} cannot change a resumed run: --resume continues {args.resume} with its own "
                                 "config.yaml. Drop it, or start a new run with another --out.")
        if args.epochs:
            overrides.append(f"train.epochs={args.epochs}")
        saved = Path(args.resume) / "config.yaml"
        config = load_config(saved, overrides) if saved.is_file() else None  # resume_experiment says what is missing
    else:
        flags = {"model.name": args.model, "data.name": args.data, "data.data_dir": args.data_dir,
                 "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.lr": args.lr,
                 "train.seed": args.seed}
        overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + overrides
        config = load_config(args.config, overrides)
    if args.nproc is not None and not distributed.world().distributed:
        distributed.check_nproc(args.nproc, config.train.device if config else "auto")
        if args.nproc > 1 or (args.nnodes or 1) != 1:
            rendezvous = {key: getattr(args, key) for key in distributed.RENDEZVOUS_OPTIONS}
            worker_argv = _strip_options(args.argv, ("--nproc", *(f"--{k.replace('_', '-')}" for k in rendezvous)))
            if not args.quiet:
                print(f"launching {args.nproc} worker(s) per node through torchrun", file=sys.stderr)
            return distributed.launch(worker_argv, args.nproc, rendezvous)
    if args.resume:
        run = resume_experiment(args.resume, quiet=args.quiet, overrides=overrides)
    else:
        out = Path(args.out) if args.out else default_run_dir(config)
        if not args.quiet and distributed.world().is_main:
            print(f"training {config.model.name} on {config.data.name} → {out}", file=sys.stderr)
        run = run_experiment(config, out, quiet=args.quiet)
    if not distributed.world().is_main:
        return 0
    _print_result(run)
    return 0


def _print_result(run) -> None:
    metrics = run.metrics
    summary = f"test_loss {metrics['test_loss']:.4f}"
    if "test_accuracy" in metrics:
        summary = (f"test_accuracy {100 * metrics['test_accuracy']:.2f}% "
                   f"(error {100 * (1 - metrics['test_accuracy']):.2f}%)  " + summary)
    print(f"{summary}  train {metrics['train_seconds']:.1f}s  {metrics['samples_per_second']:.0f} samples/s  "
          f"run: {run.directory}")


def _cmd_finetune(args: argparse.Namespace) -> int:
    from deepnet.train.experiment import finetune

    flags = {"data.data_dir": args.data_dir, "train.epochs": args.epochs, "train.lr": args.lr,
             "train.batch_size": args.batch_size, "train.device": args.device}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)
    run = finetune(args.parent, args.data, args.mode, args.out, overrides=overrides, quiet=args.quiet)
    _print_result(run)
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from deepnet.diagnose import diagnose

    result = diagnose(args.run)
    if args.json:
        print(result.to_json())
        return 0
    print(f"verdict: {result.verdict} — {result.summary}")
    e = result.evidence
    figures = [("train loss", e["train_loss"], ".4f"), ("val loss", e["val_loss"], ".4f"),
               ("train accuracy", e["train_accuracy"], ".2%"), ("val accuracy", e["val_accuracy"], ".2%"),
               ("loss gap (val - train)", e.get("loss_gap"), ".4f"), ("best val epoch", e["best_val_epoch"], "d"),
               ("val loss trend / epoch", e["val_loss_trend"], "+.1%"), ("train loss trend / epoch", e["train_loss_trend"], "+.1%"),
               ("step loss noise", e["loss_noise"], ".3f")]
    print(f"evidence ({e['epochs']} epochs, {e['steps']} steps):")
    for name, value, spec in figures:
        if value is not None:
            print(f"  {name:<26}{format(value, spec)}")
    print("remedies:")
    for remedy in result.remedies:
        print(f"  - {remedy['remedy']}" + (f": {remedy['try']}" if remedy["try"] else ""))
    print(f"written: {Path(args.run) / 'diagnosis.json'}, {Path(args.run) / 'plots' / 'learning_curves.png'}")
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from deepnet.config import load_config
    from deepnet.train.experiment import default_run_dir
    from deepnet.tune import lr_find_experiment

    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    config = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path(f"{default_run_dir(config)}-lr-find")
    result = lr_find_experiment(config, out, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"suggested learning rate: {result.suggestion:.3g}  (steepest descent {result.steepest_lr:.3g}, "
          f"lowest loss at {result.min_loss_lr:.3g}; config lr {config.train.lr:.3g})")
    print(f"use it: train.lr={result.suggestion:.3g}   plot: {out / 'lr_find.png'}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from deepnet.tune import tune

    summary = tune(args.config, trials=args.trials, storage=args.storage, study=args.study, out=args.out,
                   workers=args.workers, metric=args.metric, overrides=list(args.overrides), quiet=args.quiet,
                   summarize=not args.no_summary)
    if args.no_summary:
        return 0
    print(f"{summary['n_complete']} complete, {summary['n_pruned']} pruned, {summary['n_fail']} failed trials "
          f"in study {summary['study']!r}")
    if summary["best_trial"] is not None:
        print(f"best: trial {summary['best_trial']}  {summary['metric']} {summary['best_value']:.4f}  {summary['best_params']}")
        print(f"best run: {summary['best_run']}   summary: {Path(summary['best_run']).parent / 'tune.json'}")
    return 0


def _strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--x v`` or ``--x=v``)."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in names:
            skip = True
        elif not token.startswith(tuple(f"{name}=" for name in names)):
            kept.append(token)
    return kept


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from deepnet.evaluate import evaluate_run

    result = evaluate_run(args.run, device=args.device or "auto")
    if "test_accuracy" in result:
        print(f"test_accuracy {100 * result['test_accuracy']:.2f}%  test_loss {result['test_loss']:.4f}")
        print(f"  {'class':>12}  {'precision':>9}  {'recall':>7}  {'F1':>7}  {'support':>7}")
        for name, row in result["per_class"].items():
            print(f"  {name:>12}  {100 * row['precision']:8.2f}%  {100 * row['recall']:6.2f}%  "
                  f"{100 * row['f1']:6.2f}%  {row['support']:>7}")
        plots = Path(args.run) / "plots"
        print(f"confusion matrix: {plots / 'confusion_matrix.png'}")
        if (plots / "confident_mistakes.png").is_file():
            print(f"most confident mistakes: {plots / 'confident_mistakes.png'}")
    else:
        print(f"test_loss {result['test_loss']:.4f}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from deepnet.calibrate import calibrate

    result = calibrate(args.run, bins=args.bins, device=args.device or "auto")
    print(f"temperature {result.temperature:.4f} (fitted on {result.val_examples} validation examples: "
          f"NLL {result.val_nll_before:.4f} → {result.val_nll_after:.4f})")
    print(f"test ECE {100 * result.ece_before:.2f}% → {100 * result.ece_after:.2f}% ({result.bins} bins); "
          f"test accuracy {100 * result.accuracy_before:.2f}% → {100 * result.accuracy_after:.2f}%")
    print(f"written: {Path(args.run) / 'calibration.json'} (predict applies it), "
          f"{Path(args.run) / 'plots' / 'reliability.png'}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from deepnet.explain import explain

    result = explain(args.run, args.method, samples=args.samples, target=args.target, chunk=args.chunk,
                     steps=args.steps, device=args.device or "auto")
    print(f"{args.method}: {len(result.indices)} test examples, target {args.target}")
    if result.completeness_error:
        print(f"completeness (|sum of attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)|): "
              f"max {100 * max(result.completeness_error):.3f}%, mean "
              f"{100 * sum(result.completeness_error) / len(result.completeness_error):.3f}% "
              f"({args.steps} steps, doubled for the examples above 1%)")
    print(f"written: {result.image}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from deepnet.audit import audit

    out = Path(args.out) if args.out else Path("audits") / Path(args.data).stem
    result = audit(args.data, model=args.model, config=args.config, out=out, folds=args.folds,
                   overrides=list(args.overrides), near_threshold=args.near_threshold, quiet=args.quiet)
    print(f"audited {args.data}: {', '.join(f'{n} {k}' for k, n in result['splits'].items())} examples "
          f"in {result['seconds']['total']:.0f} s")
    print(f"  label issues {len(result['label_issues'])} (out-of-fold accuracy "
          f"{100 * result['out_of_fold_accuracy']:.2f}%, {result['model']['folds']} folds of {result['model']['name']})")
    print(f"  duplicates {len(result['duplicates'])} ({sum(r['exact'] for r in result['duplicates'])} exact), "
          f"leakage {len(result['leakage'])} pairs, train imbalance {result['imbalance_ratio']:.2f}x, "
          f"outliers: top {len(result['outliers'])}")
    print(f"written: {out / 'audit.json'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from deepnet.report import build_report

    path = build_report(args.run)
    print(f"written: {path} ({path.stat().st_size / 1e6:.2f} MB, self-contained; open it in any browser)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from deepnet.evaluate import predict_file

    for i, row in enumerate(predict_file(args.run, args.file, device=args.device or "auto")):
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

    run = load_run(args.run, device=args.device or "auto")
    prep = run.model_spec.get("preprocessing", {})
    if prep.get("kind") != "chars" and run.model_spec.get("task") in ("generation", "classification"):
        return _sample_images(args)
    if prep.get("kind") != "chars":
        raise ValueError(f"{args.run} is not a character language model (preprocessing {prep.get('kind')!r}); "
                         "train one with examples/shakespeare-gpt.yaml.")
    chars = prep["chars"]
    unknown = sorted({c for c in args.prompt if c not in chars})
    if unknown:
        raise ValueError(f"The prompt holds characters the model never saw: {unknown!r}. Remove them.")
    device = next(run.model.parameters()).device
    idx = torch.tensor([[chars.index(c) for c in args.prompt]], dtype=torch.int64, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    out = generate(run.model, idx, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=generator)
    print("".join(chars[i] for i in out[0].tolist()))
    return 0


def _sample_images(args: argparse.Namespace) -> int:
    from deepnet.generate import sample_run

    result = sample_run(args.run, args.n, label=args.label, seed=args.seed, method=args.method, steps=args.steps,
                        eta=args.eta, guidance=args.guidance, out=args.out, score=args.score, classifier=args.classifier,
                        device=args.device or "cpu")
    print(f"wrote {result['grid']}")
    if args.score:
        histogram = " ".join(f"{name}:{100 * share:.1f}%" for name, share in result["class_histogram"].items())
        print(f"n {result['n']}  confident (>= 0.9) {100 * result['confident_fraction']:.1f}%  "
              f"mean confidence {result['mean_confidence']:.3f}  Fréchet distance {result['frechet_distance']:.3g}")
        print(f"classes {histogram}")
        if args.label is not None:
            print(f"classified as {args.label}: {100 * result['label_fraction']:.1f}%")
        print(f"scores: {Path(args.run) / 'samples.json'}")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from deepnet.generate import encode_run

    codes = encode_run(args.run, args.data, args.out, split=args.split, data_dir=args.data_dir, device=args.device or "cpu")
    print(f"wrote {args.out}: {codes.shape[0]} codes of {codes.shape[1]} dimensions ({args.split} split of {args.data})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from deepnet.export import export_run

    result = export_run(args.run, args.format, args.out)
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB, {args.format}); checked against PyTorch "
          f"at batch sizes {', '.join(map(str, result.checked_batch_sizes))}: max difference {result.max_difference:.2g}")
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from deepnet.compress import CompressionSettings, compress_run

    settings = CompressionSettings(prune=args.prune, prune_scope=args.prune_scope, prune_steps=args.prune_steps,
                                   prune_schedule=args.prune_schedule, prune_min_density=args.prune_min_density,
                                   structured=args.structured, share_bits=args.share_bits, quantize=args.quantize,
                                   finetune_epochs=args.finetune_epochs, finetune_lr_ratio=args.finetune_lr_ratio,
                                   threads=args.threads, overrides=list(args.overrides))
    result = compress_run(args.run, settings, args.out, quiet=args.quiet)
    header = ("stage", "accuracy", "nonzero", "file bytes", "ratio", "batch-1 ms", "batch-256/s", "runtime")
    rows = [(row["name"], f"{100 * row['test_accuracy']:.2f}%", f"{row['nonzero_parameters']:,}", f"{row['file_bytes']:,}",
             f"{row.get('compression_ratio', 1.0):.1f}x", f"{row['latency_ms_batch1']:.3f}",
             f"{row['throughput_batch256']:,.0f}", row["runtime"]) for row in result["stages"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))))
    out = Path(result["directory"])
    print(f"run: {out}  ({result['file']}; {out / 'compression.json'}, {out / 'plots' / 'compression.png'}; "
          f"timings on {args.threads} thread(s))")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from deepnet.serve import ServeSettings, serve

    settings = ServeSettings(run=args.run, runtime=args.runtime, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_body_bytes=args.max_body_bytes, max_examples=args.max_examples, threads=args.threads,
                             device=args.device or "cpu")
    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    import torch

    from deepnet.robust.report import attack_run

    if args.threads:
        torch.set_num_threads(args.threads)
    report = attack_run(args.run, args.method, args.eps, norm=args.norm, steps=args.steps, restarts=args.restarts,
                        step_size=args.step_size, targeted=args.targeted, target=args.target, objective=args.loss,
                        source=args.source, n=args.n, batch_size=args.batch_size, device=args.device or "auto",
                        seed=args.seed, quiet=False)
    print(f"clean accuracy {100 * report['clean_accuracy']:.2f}% on {report['n']} test images")
    for flag in report["masking"]:
        print(f"warning: possible gradient masking ({flag['check']}): {flag['message']}")
    out = Path(args.run)
    print(f"written: {out / 'robustness.json'}, {out / 'plots' / 'robustness_curve.png'}, "
          f"{out / 'plots' / 'adversarial_examples.png'}")
    return 0


def _cmd_harden(args: argparse.Namespace) -> int:
    from deepnet.robust import harden

    flags = {"train.epochs": args.epochs, "train.threads": args.threads, "train.device": args.device}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)
    run = harden(args.run, args.method, args.out, eps=args.eps, step_size=args.step_size, steps=args.steps,
                 eps_ramp=args.eps_ramp, temperature=args.temperature, members=args.members, overrides=overrides, quiet=args.quiet)
    _print_result(run)
    print(f"hardened with {args.method}; attack it: deepnet attack {run.directory} --method pgd --eps {args.eps}")
    return 0


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="auto (CUDA when present, the default) | cpu | cuda | cuda:N | mps")


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
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its newest good checkpoint")
    train.add_argument("--quiet", action="store_true", help="print only the final result")
    _add_device(train)
    parallel = train.add_argument_group("data-parallel training (launched through torchrun)")
    parallel.add_argument("--nproc", type=int, metavar="N", help="worker processes per machine (one per GPU, or CPU processes)")
    parallel.add_argument("--nnodes", help="machines taking part (torchrun's --nnodes)")
    parallel.add_argument("--node-rank", type=int, help="this machine's rank, 0 to nnodes-1")
    parallel.add_argument("--master-addr", help="address of the node-rank 0 machine")
    parallel.add_argument("--master-port", type=int, help="a free port on the node-rank 0 machine")
    parallel.add_argument("--rdzv-backend", help="torchrun rendezvous backend (c10d, static)")
    parallel.add_argument("--rdzv-endpoint", help="host:port of the rendezvous (elastic jobs)")
    parallel.add_argument("--rdzv-id", help="job id shared by the nodes of one rendezvous")
    train.add_argument("overrides", nargs="*", metavar="section.key=value")
    train.set_defaults(func=_cmd_train)

    tune_in = verbs.add_parser("finetune", help="transfer learning: a trained run's layers, a new head, new data")
    tune_in.add_argument("parent", help="the trained run to start from")
    tune_in.add_argument("--data", required=True, help="the new data: a dataset name, .npz/.csv file or image folder")
    tune_in.add_argument("--mode", choices=("feature-extraction", "fine-tune"), default="fine-tune",
                         help="feature-extraction: only the new head learns; fine-tune: everything, the backbone "
                              "at train.backbone_lr_ratio x lr (default 0.1)")
    tune_in.add_argument("--out", help="the new run directory (default <parent>-<data>-<mode>)")
    tune_in.add_argument("--data-dir", help="folder holding the dataset files")
    tune_in.add_argument("--epochs", type=int)
    tune_in.add_argument("--lr", type=float)
    tune_in.add_argument("--batch-size", type=int)
    tune_in.add_argument("--quiet", action="store_true")
    _add_device(tune_in)
    tune_in.add_argument("overrides", nargs="*", metavar="section.key=value")
    tune_in.set_defaults(func=_cmd_finetune)

    diagnose = verbs.add_parser("diagnose", help="over/underfitting verdict, evidence and remedies from a run's curves")
    diagnose.add_argument("run")
    diagnose.add_argument("--json", action="store_true", help="print diagnosis.json instead of the summary")
    diagnose.set_defaults(func=_cmd_diagnose)

    finder = verbs.add_parser("lr-find", help="learning-rate range test: loss against rate, and a suggested rate")
    finder.add_argument("-c", "--config", help="YAML experiment config")
    finder.add_argument("--steps", type=int, default=200, help="optimizer steps in the sweep (default 200)")
    finder.add_argument("--start-lr", type=float, default=1e-7)
    finder.add_argument("--end-lr", type=float, default=10.0)
    finder.add_argument("--out", help="folder for lr_find.png and lr_find.json (default runs/<data>-<model>-lr-find)")
    _add_device(finder)
    finder.add_argument("overrides", nargs="*", metavar="section.key=value")
    finder.set_defaults(func=_cmd_lr_find)

    tuner = verbs.add_parser("tune", help="hyperparameter search with Optuna over the config's search: section")
    tuner.add_argument("-c", "--config", required=True, help="YAML config with a search: section")
    tuner.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    tuner.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/tune.db); rerun to continue")
    tuner.add_argument("--study", help="study name (default: the config's file name)")
    tuner.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    tuner.add_argument("--metric", choices=("val_accuracy", "val_loss"), help="what to optimise (default val_accuracy)")
    tuner.add_argument("--out", help="folder for trials/, best/ and tune.json (default runs/tune-<study>)")
    tuner.add_argument("--quiet", action="store_true")
    tuner.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # set for worker processes
    tuner.add_argument("overrides", nargs="*", metavar="section.key=value")
    tuner.set_defaults(func=_cmd_tune)

    attacker = verbs.add_parser("attack", help="accuracy under adversarial attack: robustness.json, curve, examples")
    attacker.add_argument("run")
    attacker.add_argument("--method", default="pgd", help="fgsm | pgd | deepfool | transfer, or several: fgsm,pgd")
    attacker.add_argument("--norm", default="linf", help="linf | l2")
    attacker.add_argument("--eps", default="0.05,0.1,0.2,0.3", help="radii in pixel units ([0, 1]), comma-separated")
    attacker.add_argument("--steps", type=int, default=40, help="PGD steps (DeepFool: at most this many)")
    attacker.add_argument("--restarts", type=int, default=1, help="PGD random restarts (only for inputs not yet fooled)")
    attacker.add_argument("--step-size", type=float, help="PGD step (default 2.5 eps / steps)")
    attacker.add_argument("--loss", default="ce", help="ce (cross-entropy on the softmax) | margin (Carlini-Wagner, on the logits)")
    attacker.add_argument("--targeted", action="store_true", help="push toward --target instead of away from the label")
    attacker.add_argument("--target", default="least-likely", help="least-likely | random | a class index")
    attacker.add_argument("--source", help="transfer: the run whose model crafts the examples")
    attacker.add_argument("--n", type=int, default=10000, help="test images attacked (the first n)")
    attacker.add_argument("--batch-size", type=int, default=500)
    attacker.add_argument("--seed", type=int, default=0, help="random starts and random targets")
    attacker.add_argument("--threads", type=int, help="CPU threads")
    _add_device(attacker)
    attacker.set_defaults(func=_cmd_attack)

    hardener = verbs.add_parser("harden", help="a defended model in a new run: adversarial training, distillation, ensembles")
    hardener.add_argument("run", help="the parent run; its config is retrained with the defence")
    hardener.add_argument("--method", required=True, help="fast-at | pgd-at | distill | ensemble")
    hardener.add_argument("--eps", type=float, default=0.3, help="L-infinity radius in pixels [0, 1] (adversarial training)")
    hardener.add_argument("--step-size", type=float, help="attack step (default 1.25 eps for fast-at, 2.5 eps/steps for pgd-at)")
    hardener.add_argument("--steps", type=int, default=40, help="PGD steps per batch (pgd-at)")
    hardener.add_argument("--eps-ramp", type=int, default=0, metavar="EPOCHS",
                          help="adversarial training: grow eps linearly to its value over the first EPOCHS epochs")
    hardener.add_argument("--temperature", type=float, default=100.0, help="distillation temperature T")
    hardener.add_argument("--members", type=int, default=3, help="ensemble size, the parent included")
    hardener.add_argument("--out", help="the new run directory (default <run>-<method>)")
    hardener.add_argument("--epochs", type=int)
    hardener.add_argument("--threads", type=int, help="CPU threads (train.threads)")
    hardener.add_argument("--quiet", action="store_true")
    _add_device(hardener)
    hardener.add_argument("overrides", nargs="*", metavar="section.key=value")
    hardener.set_defaults(func=_cmd_harden)

    evaluate = verbs.add_parser("evaluate", help="test metrics and confusion matrix of a run")
    evaluate.add_argument("run")
    _add_device(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    calibrate = verbs.add_parser("calibrate", help="temperature scaling on the validation split; ECE and a reliability "
                                 "diagram; predict then applies it")
    calibrate.add_argument("run")
    calibrate.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE (default 15)")
    _add_device(calibrate)
    calibrate.set_defaults(func=_cmd_calibrate)

    explain = verbs.add_parser("explain", help="attribution maps of test examples: explanations/<method>.png")
    explain.add_argument("run")
    explain.add_argument("--method", default="integrated-gradients",
                         help="saliency | integrated-gradients (default) | smoothgrad | gradcam | occlusion")
    explain.add_argument("--samples", type=int, default=16, help="test examples to explain (default 16)")
    explain.add_argument("--target", default="predicted", help="predicted (default) | true | a class index or name")
    explain.add_argument("--chunk", type=int, default=8, help="examples per pass; bounds memory (default 8)")
    explain.add_argument("--steps", type=int, default=64, help="integration steps of integrated gradients (default 64)")
    _add_device(explain)
    explain.set_defaults(func=_cmd_explain)

    auditor = verbs.add_parser("audit", help="data quality: label errors, duplicates, train/test leakage, class "
                               "counts, outliers → OUT/audit.json")
    auditor.add_argument("--data", required=True, help="digits | mnist | sst2 | file.npz | file.csv | an image folder")
    recipe = auditor.add_mutually_exclusive_group()
    recipe.add_argument("--model", metavar="RUN", help="train the cross-validated models with this run's recipe")
    recipe.add_argument("-c", "--config", help="... or with this config's model and training settings")
    auditor.add_argument("--out", help="folder for audit.json and the image grids (default audits/<data>)")
    auditor.add_argument("--folds", type=int, default=4, help="cross-validation folds (default 4)")
    auditor.add_argument("--near-threshold", type=float, default=0.05,
                         help="near duplicates: RMS difference per standardised feature at most this (default 0.05)")
    auditor.add_argument("--quiet", action="store_true")
    auditor.add_argument("overrides", nargs="*", metavar="section.key=value")
    auditor.set_defaults(func=_cmd_audit)

    report = verbs.add_parser("report", help="one self-contained HTML page with everything known about a run")
    report.add_argument("run")
    report.set_defaults(func=_cmd_report)

    predict = verbs.add_parser("predict", help="classify a PNG, .npy or CSV file with a run's model")
    predict.add_argument("run")
    predict.add_argument("file")
    _add_device(predict)
    predict.set_defaults(func=_cmd_predict)

    models = verbs.add_parser("models", help="list the model zoo with parameter counts")
    models.add_argument("--family")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)

    sample = verbs.add_parser("sample", help="draw images from a generative run (a grid PNG; --score measures them), "
                                             "or text from a character language model run")
    sample.add_argument("run")
    sample.add_argument("--n", type=int, default=64, help="images to draw (default 64)")
    sample.add_argument("--label", type=int, help="the class to draw (class-conditional models)")
    sample.add_argument("--method", choices=("ddpm", "ddim"), help="diffusion sampler (default ddpm: ancestral, every step)")
    sample.add_argument("--steps", type=int, help="DDIM steps (default 50)")
    sample.add_argument("--eta", type=float, help="DDIM noise: 0 deterministic (default), 1 ancestral over the steps")
    sample.add_argument("--guidance", type=float, metavar="W",
                        help="diffusion trained with clusters: the guidance weight (default: the run's model.args.guidance)")
    sample.add_argument("--out", help="the grid PNG (default RUN/samples.png)")
    sample.add_argument("--score", action="store_true",
                        help="classify the samples: confident share, class histogram, Fréchet distance -> RUN/samples.json")
    sample.add_argument("--classifier", help="the classifier run for --score (default: the run 'classifier' beside RUN)")
    sample.add_argument("--prompt", default="\n", help="text models: the start of the text")
    sample.add_argument("--tokens", type=int, default=500, help="text models: characters to generate")
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--seed", type=int, default=0)
    _add_device(sample)
    sample.set_defaults(func=_cmd_sample)

    encode = verbs.add_parser("encode", help="an autoencoder's codes for a dataset split, as .npy")
    encode.add_argument("run")
    encode.add_argument("--data", required=True, help="dataset name or path (as for train)")
    encode.add_argument("--out", required=True, help="the .npy file to write")
    encode.add_argument("--split", default="test", help="train | val | test (default test)")
    encode.add_argument("--data-dir")
    _add_device(encode)
    encode.set_defaults(func=_cmd_encode)

    export = verbs.add_parser("export", help="the model with its preprocessing as ONNX or an ExportedProgram")
    export.add_argument("run")
    export.add_argument("--format", choices=["onnx", "exported-program"], default="onnx")
    export.add_argument("--out", help="output file (default RUN/model.onnx or RUN/model.pt2)")
    export.set_defaults(func=_cmd_export)

    compress = verbs.add_parser("compress", help="prune, share weights or quantize a run; a new, smaller run with each stage measured")
    compress.add_argument("run", help="the trained run to compress")
    compress.add_argument("--prune", type=float, metavar="FRACTION",
                          help="magnitude pruning: the fraction of parameters set to zero (e.g. 0.92)")
    compress.add_argument("--prune-scope", choices=("global", "layer"), default="global",
                          help="one threshold over all layers (default) or the same fraction in each layer")
    compress.add_argument("--prune-min-density", type=float, default=0.0, metavar="FRACTION",
                          help="global pruning: each layer keeps at least this fraction of its weights (default 0)")
    compress.add_argument("--prune-steps", type=int, default=1,
                          help="prune → retrain rounds reaching --prune (default 1: one-shot)")
    compress.add_argument("--prune-schedule", choices=("rounds", "gradual"), default="rounds",
                          help="rounds: --prune-steps rounds of prune → retrain (default); gradual: prune a little "
                               "every few steps of one --finetune-epochs retraining (Zhu & Gupta 2017)")
    compress.add_argument("--structured", type=float, metavar="FRACTION",
                          help="remove this fraction of each hidden layer's units (MLP) or each convolution's channels (convnet) "
                               "and rebuild the network smaller")
    compress.add_argument("--share-bits", type=int, metavar="BITS",
                          help="trained weight sharing: 2**BITS shared values per layer, stored Huffman-coded")
    compress.add_argument("--quantize", choices=("int8", "int8-static", "int8-dynamic", "int8-qat"),
                          help="int8 with ONNX Runtime (int8 = static, calibrated on training data; int8-qat: "
                               "--finetune-epochs of quantization-aware retraining first)")
    compress.add_argument("--finetune-epochs", type=int, default=2,
                          help="retraining epochs after each pruning round and for the shared weights (default 2)")
    compress.add_argument("--finetune-lr-ratio", type=float, default=1.0,
                          help="retraining learning rate as a fraction of the parent run's; its schedule restarts (default 1)")
    compress.add_argument("--threads", type=int, default=1, help="CPU threads for retraining and timing (default 1)")
    compress.add_argument("--out", help="the new run directory (default <run>-compressed)")
    compress.add_argument("--quiet", action="store_true")
    compress.add_argument("overrides", nargs="*", metavar="train.key=value", help="retraining settings")
    compress.set_defaults(func=_cmd_compress)

    serve = verbs.add_parser("serve", help="an HTTP inference server for a run (POST /predict, /metrics, /docs)")
    serve.add_argument("run")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="server processes, each with its own model and batcher")
    serve.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto",
                       help="onnx reads RUN/model.onnx (deepnet export); auto: onnx when that file exists, else torch")
    serve.add_argument("--max-batch", type=int, default=64, help="examples per model call (1: one request at a time)")
    serve.add_argument("--max-wait-ms", type=float, default=None,
                       help="how long a request waits for others to batch with while the model is free "
                            "(default: 0 on the CPU, 5 on a GPU)")
    serve.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger request bodies get 413")
    serve.add_argument("--max-examples", type=int, default=1024, help="examples per request; more get 413")
    serve.add_argument("--threads", type=int, default=1, help="runtime threads per worker")
    _add_device(serve)
    serve.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    from deepnet.train import distributed
    from deepnet.train.loop import TrainingError, TrainingInterrupted

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes positionals in one run; a `section.key=value` after an option lands here.
    stray = [token for token in extra if token.startswith("-") or "=" not in token or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    args.argv = argv
    try:
        return args.func(args)
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: stopped before training began; nothing to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, TrainingError) as err:
        if args.debug:
            raise
        if distributed.world().is_main:  # the other workers fail alike: one line is enough
            message = " ".join(str(err).split())
            print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
