"""``deepnet attack``: accuracy under attack, written as ``robustness.json`` and two figures.

One row per attack and ε, merged with the rows an earlier ``deepnet attack`` of the same run
wrote (a row with the same settings is replaced), so FGSM and PGD curves can come from two
commands. Every call re-runs the honesty checks over all rows and flags signs of gradient
masking (Athalye, Carlini & Wagner 2018), which make a defence look robust when it only
hides its gradients:

- ``single_step_stronger``: FGSM beats PGD at the same ε (PGD should never be weaker);
- ``unbounded``: accuracy does not fall to ~0 when the ε-ball holds every image (ε = 1, L∞);
- ``transfer_stronger``: examples crafted on another model beat white-box PGD;
- ``zero_gradients``: the cross-entropy gradient is exactly zero at clean inputs (a
  saturated softmax: what defensive distillation does);
- ``margin_stronger``: the margin loss on the logits beats cross-entropy on the softmax.

For a distilled run (``hardening.json`` says ``distill``) PGD also runs with the margin loss.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from deepnet.robust.attacks import (NORMS, OBJECTIVES, PixelModel, deepfool, fgsm, least_likely, perturbation_norm, pgd,
                                    project)
from deepnet.train.experiment import load_experiment_data
from deepnet.train.run import Run, atomic_write, load_run

__all__ = ["ATTACK_METHODS", "TARGETS", "attack_run", "masking_flags", "parse_eps"]

ATTACK_METHODS = ("fgsm", "pgd", "deepfool", "transfer")
TARGETS = ("least-likely", "random")
MASKING_TOLERANCE = 0.005  # accuracy differences smaller than half a point are noise, not a flag
UNBOUNDED_ACCURACY = 0.05  # at eps = 1 (L-infinity) every image is reachable: accuracy should be ~0
UNBOUNDED_EXAMPLES = 500
ZERO_GRADIENT_FRACTION = 0.01
MARGIN_GAP = 0.05
KEY_FIELDS = ("method", "norm", "eps", "steps", "restarts", "step_size", "targeted", "target", "objective", "source", "n")


def parse_eps(text: str | list[float], norm: str = "linf") -> list[float]:
    """``"0.05,0.1,0.3"`` → ``[0.05, 0.1, 0.3]``; radii in pixel units ([0, 1] pixels)."""
    try:
        values = [float(v) for v in text.split(",")] if isinstance(text, str) else [float(v) for v in text]
    except ValueError:
        values = []
    if not values or any(not v > 0 or v != v for v in values):
        raise ValueError(f"Received an invalid value for --eps: expected comma-separated positive radii such as "
                         f"0.05,0.1,0.2,0.3. Received: {text!r}")
    if norm == "linf" and max(values) > 1:
        raise ValueError(f"Received --eps {max(values):g} for an L-infinity attack, but pixels lie in [0, 1]: a radius above 1 "
                         f"means nothing. Give it in pixel units (8/255 is 0.031). Received: {text!r}")
    return sorted(set(values))


def _image_run(run: Run) -> dict[str, Any]:
    spec = run.model_spec
    prep = spec.get("preprocessing", {})
    if spec.get("task", "classification") != "classification" or spec.get("input_kind") != "image" or prep.get("kind") != "normalize":
        raise ValueError(f"deepnet attack perturbs image pixels, but {run.directory} holds a {spec.get('task')} model of "
                         f"{spec.get('input_kind')} inputs ({spec.get('name')}, preprocessing {prep.get('kind')!r}). "
                         "Attack an image classifier (trained on mnist, digits or an image folder).")
    return prep


def _pixels(run: Run, prep: dict[str, Any], n: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images as pixels in [0, 1] ``(n, C, H, W)`` and their labels."""
    test = load_experiment_data(run.config).test
    count = len(test) if n is None else min(n, len(test))
    shape = (1, -1, 1, 1)
    mean, std = torch.tensor(prep["mean"]).view(shape), torch.tensor(prep["std"]).view(shape)
    x = (test.x[:count].float() * std + mean).clamp(0.0, 1.0)
    return x.to(device), test.y[:count].to(device)


def _predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])


def _pixel_model(run: Run) -> PixelModel:
    prep = _image_run(run)
    return PixelModel(run.model, prep["mean"], prep["std"]).eval()


def attack_run(run_dir: str | os.PathLike, methods: list[str] | str = "pgd", eps: list[float] | str = (0.1, 0.2, 0.3), *,
               norm: str = "linf", steps: int = 40, restarts: int = 1, step_size: float | None = None,
               targeted: bool = False, target: str = "least-likely", objective: str = "ce",
               source: str | os.PathLike | None = None, n: int | None = 10000, batch_size: int = 500,
               device: str = "auto", seed: int = 0, quiet: bool = True) -> dict[str, Any]:
    """Attack the run ``run_dir`` with each of ``methods`` at each ε; write
    ``robustness.json``, ``plots/robustness_curve.png`` and ``plots/adversarial_examples.png``
    into it and return what ``robustness.json`` holds.

    ``target``: with ``targeted``, ``least-likely``, ``random`` or a class index. ``source``:
    the run whose model crafts the examples of a ``transfer`` attack (PGD on it)."""
    methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    for method in methods:
        if method not in ATTACK_METHODS:
            raise ValueError(f"Unknown attack {method!r}; choose one of {', '.join(ATTACK_METHODS)}.")
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; choose one of {', '.join(NORMS)}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown attack loss {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
    eps_values = parse_eps(eps if isinstance(eps, str) else list(eps), norm)
    if steps < 1 or restarts < 1 or (n is not None and n < 1):
        raise ValueError(f"Received steps={steps}, restarts={restarts}, n={n}; each must be at least 1.")
    if "transfer" in methods and source is None:
        raise ValueError("A transfer attack crafts its examples on a second model: give --source RUN (another run "
                         "trained on the same data).")
    if targeted and "deepfool" in methods:
        raise ValueError("DeepFool is untargeted; drop --targeted or attack with fgsm/pgd.")
    run = load_run(run_dir, device=device)
    out = Path(run_dir)
    prep = _image_run(run)
    model = _pixel_model(run)
    source_model = None
    if source is not None:
        source_run = load_run(source, device=device)
        source_model = _pixel_model(source_run)
        if source_run.model_spec.get("input_shape") != run.model_spec.get("input_shape"):
            raise ValueError(f"The source run {source} takes inputs of shape {source_run.model_spec.get('input_shape')}, "
                             f"{run_dir} takes {run.model_spec.get('input_shape')}: a transfer attack needs the same inputs.")
    x, y = _pixels(run, prep, n, model.mean.device)
    if not quiet:
        print(f"attacking {out} ({run.model_spec.get('name')}) on {len(x)} test images: {', '.join(methods)} {norm} "
              f"eps {', '.join(f'{e:g}' for e in eps_values)}" + (f" targeted ({target})" if targeted else ""),
              file=sys.stderr, flush=True)
    generator = torch.Generator().manual_seed(seed)
    clean_predicted = _predict(model, x, batch_size)
    clean_correct = clean_predicted == y
    target_labels = _targets(model, x, y, target, run.model_spec["num_classes"], generator, batch_size) if targeted else None

    distilled = _hardening(out).get("method") == "distill"
    jobs = [(m, objective) for m in methods]
    if distilled and "pgd" in methods and objective == "ce":
        jobs.append(("pgd", "margin"))  # Carlini & Wagner (2016): the logits, not the saturated softmax
    rows, example = [], None
    minimal: dict[str, torch.Tensor] = {}  # DeepFool's smallest perturbations, found once for every ε
    for method, loss in jobs:
        for radius in eps_values:
            start = time.perf_counter()
            if method == "deepfool":
                if "deepfool" not in minimal:
                    minimal["deepfool"] = deepfool(model, x, y, float("inf"), norm=norm, steps=steps, batch_size=batch_size)
                x_adv = x + project(minimal["deepfool"] - x, x, radius, norm)
            else:
                x_adv = _craft(method, model, source_model, x, y, radius, norm=norm, steps=steps, restarts=restarts,
                               step_size=step_size, target=target_labels, objective=loss, batch_size=batch_size,
                               generator=generator)
            seconds = time.perf_counter() - start
            predicted = _predict(model, x_adv, batch_size)
            rows.append(_row(method, norm, radius, steps, restarts, step_size, targeted, target, loss, source,
                             x, x_adv, y, predicted, clean_correct, target_labels, seconds))
            if not quiet:
                _print_row(rows[-1])
            title = f"{method} {norm} eps={radius:g}" + (" margin loss" if loss == "margin" else "") + \
                (f" targeted ({target})" if targeted else "")
            example = (title, x_adv[:8], predicted[:8])
    report = _merge(out, run, rows, clean_correct.float().mean().item(), len(x), str(x.device))
    report["checks"] = _checks(model, x, y, steps, batch_size)
    report["masking"] = masking_flags(report["attacks"], report["checks"], distilled)
    atomic_write(out / "robustness.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    from deepnet.robust.plots import plot_adversarial_examples, plot_robustness_curve

    (out / "plots").mkdir(exist_ok=True)
    plot_robustness_curve(report, out / "plots" / "robustness_curve.png")
    if example is not None:
        title, x_adv, predicted = example
        plot_adversarial_examples(x[:8].cpu(), x_adv.cpu(), y[:8].cpu(), predicted.cpu(), title,
                                  out / "plots" / "adversarial_examples.png")
    return report


def _hardening(out: Path) -> dict[str, Any]:
    path = out / "hardening.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _targets(model: PixelModel, x: torch.Tensor, y: torch.Tensor, target: str, num_classes: int,
             generator: torch.Generator, batch_size: int) -> torch.Tensor:
    if target == "least-likely":
        return least_likely(model, x, batch_size)
    if target == "random":  # uniformly among the classes other than the true one
        shift = torch.randint(1, num_classes, (len(y),), generator=generator).to(y.device)
        return (y + shift) % num_classes
    if target.isdigit() and int(target) < num_classes:
        return torch.full_like(y, int(target))
    raise ValueError(f"Received an invalid value for --target: expected least-likely, random or a class index 0..{num_classes - 1}. "
                     f"Received: {target!r}")


def _craft(method: str, model: PixelModel, source_model: PixelModel | None, x: torch.Tensor, y: torch.Tensor, eps: float, *,
           norm: str, steps: int, restarts: int, step_size: float | None, target: torch.Tensor | None, objective: str,
           batch_size: int, generator: torch.Generator) -> torch.Tensor:
    if method == "fgsm":
        return fgsm(model, x, y, eps, norm=norm, target=target, objective=objective, batch_size=batch_size)
    transfer = method == "transfer"  # every step on the source: examples that barely fool it rarely transfer
    return pgd(source_model if transfer else model, x, y, eps, norm=norm, steps=steps, restarts=restarts,
               step_size=step_size, target=target, objective=objective, batch_size=batch_size, generator=generator,
               early_stop=not transfer)


def _row(method: str, norm: str, eps: float, steps: int, restarts: int, step_size: float | None, targeted: bool,
         target: str, objective: str, source: Any, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
         predicted: torch.Tensor, clean_correct: torch.Tensor, target_labels: torch.Tensor | None,
         seconds: float) -> dict[str, Any]:
    if target_labels is not None:
        eligible = target_labels != y
        success = (predicted == target_labels) & eligible
    else:
        eligible = clean_correct
        success = (predicted != y) & clean_correct
    sizes = perturbation_norm(x_adv, x, norm)[success]
    single = method in ("fgsm", "deepfool")
    return {
        "method": method, "norm": norm, "eps": eps, "clean_accuracy": clean_correct.float().mean().item(),
        "steps": 1 if method == "fgsm" else steps, "restarts": 1 if single else restarts,
        "step_size": None if single else (step_size if step_size is not None else 2.5 * eps / steps),
        "targeted": target_labels is not None, "target": target if target_labels is not None else None,
        "objective": objective, "source": str(source) if method == "transfer" else None, "n": len(y),
        "accuracy": (predicted == y).float().mean().item(),
        "success_rate": (success.sum() / eligible.sum().clamp_min(1)).item(),
        "mean_perturbation": sizes.mean().item() if len(sizes) else None,  # over the inputs the attack fooled
        "max_perturbation": perturbation_norm(x_adv, x, norm).max().item(),
        "seconds": round(seconds, 2),
    }


def _print_row(row: dict[str, Any]) -> None:
    size = "-" if row["mean_perturbation"] is None else f"{row['mean_perturbation']:.3f}"
    print(f"  {row['method']:<9}{row['objective']:<7}{row['norm']:<5} eps {row['eps']:<6g} accuracy {100 * row['accuracy']:6.2f}%  "
          f"success {100 * row['success_rate']:6.2f}%  mean perturbation {size}  ({row['seconds']:.0f}s)", flush=True)


def _merge(out: Path, run: Run, rows: list[dict[str, Any]], clean_accuracy: float, n: int, device: str) -> dict[str, Any]:
    """The rows of an earlier report with other settings, then these rows, ordered for reading."""
    path = out / "robustness.json"
    kept: list[dict[str, Any]] = []
    if path.is_file():
        try:
            kept = json.loads(path.read_text()).get("attacks", [])
        except json.JSONDecodeError:
            kept = []
    new_keys = {tuple(r.get(k) for k in KEY_FIELDS) for r in rows}
    merged = [r for r in kept if tuple(r.get(k) for k in KEY_FIELDS) not in new_keys] + rows
    merged.sort(key=lambda r: (r["method"], r["objective"], r["norm"], bool(r["targeted"]), str(r.get("source")), r["eps"]))
    return {"run": str(out), "model": run.model_spec.get("name"), "n": n, "clean_accuracy": clean_accuracy,
            "pixel_range": [0.0, 1.0], "device": device, "attacks": merged}


def _checks(model: PixelModel, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int) -> dict[str, Any]:
    """Measurements behind the masking flags that need the model: the share of inputs whose
    cross-entropy gradient is exactly zero, and PGD accuracy when every image is in reach."""
    zero = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xb), y[i:i + batch_size], reduction="sum"), xb)
        zero += int((grad.flatten(1).abs().amax(1) == 0).sum())
    count = min(len(x), UNBOUNDED_EXAMPLES)
    x_far = pgd(model, x[:count], y[:count], 1.0, norm="linf", steps=min(steps, 40), random_start=False, batch_size=batch_size)
    return {"zero_gradient_fraction": zero / len(x),
            "unbounded": {"method": "pgd", "norm": "linf", "eps": 1.0, "steps": min(steps, 40), "random_start": False,
                          "n": count, "accuracy": (_predict(model, x_far, batch_size) == y[:count]).float().mean().item()}}


def masking_flags(rows: list[dict[str, Any]], checks: dict[str, Any], distilled: bool = False) -> list[dict[str, str]]:
    """Signs of gradient masking in a report's rows and checks: a list of ``{"check", "message"}``."""
    flags: list[dict[str, str]] = []

    def same(row: dict[str, Any], **fields: Any) -> list[dict[str, Any]]:
        return [r for r in rows if all(r.get(k) == v for k, v in fields.items())
                and (r["norm"], r["eps"], r["targeted"], r["n"]) == (row["norm"], row["eps"], row["targeted"], row["n"])]

    for row in rows:
        where = f"{row['norm']} eps={row['eps']:g}"
        if row["method"] == "fgsm":
            for other in same(row, method="pgd", objective=row["objective"]):
                if row["accuracy"] < other["accuracy"] - MASKING_TOLERANCE:
                    flags.append({"check": "single_step_stronger", "message": (
                        f"FGSM ({100 * row['accuracy']:.1f}%) beats {other['steps']}-step PGD ({100 * other['accuracy']:.1f}%) "
                        f"at {where}: iterative attacks should be stronger; the gradients mislead PGD")})
        if row["method"] == "transfer":
            for other in same(row, method="pgd", source=None):
                if row["accuracy"] < other["accuracy"] - MASKING_TOLERANCE:
                    flags.append({"check": "transfer_stronger", "message": (
                        f"examples crafted on {row['source']} ({100 * row['accuracy']:.1f}%) beat white-box PGD "
                        f"({100 * other['accuracy']:.1f}%) at {where}: the model's own gradients are not informative")})
        if row["method"] == "pgd" and row["objective"] == "margin":
            for other in same(row, method="pgd", objective="ce", source=None):
                if row["accuracy"] < other["accuracy"] - MARGIN_GAP:
                    flags.append({"check": "margin_stronger", "message": (
                        f"PGD with the margin loss on the logits ({100 * row['accuracy']:.1f}%) beats PGD on the softmax "
                        f"({100 * other['accuracy']:.1f}%) at {where}: the softmax saturates and hides the gradients")})
    unbounded = checks.get("unbounded")
    if unbounded and unbounded["accuracy"] > UNBOUNDED_ACCURACY:
        flags.append({"check": "unbounded", "message": (
            f"PGD at eps=1 (every image in reach) leaves {100 * unbounded['accuracy']:.1f}% accuracy: it should reach ~0%; "
            "the gradients do not lead anywhere")})
    zero = checks.get("zero_gradient_fraction", 0.0)
    if zero > ZERO_GRADIENT_FRACTION:
        flags.append({"check": "zero_gradients", "message": (
            f"the cross-entropy gradient is exactly zero at {100 * zero:.1f}% of clean inputs: the softmax saturates, so "
            "gradient attacks on it stall" + ("; defensive distillation does this — attack the logits (--loss margin)"
                                              if distilled else "; attack the logits with --loss margin"))})
    return flags
