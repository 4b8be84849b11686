"""The report page, built from the run directory's files alone (no model is loaded).

Each section shows what its step wrote, or says which command would fill it: configuration
(config.yaml, model.json), data summary, training (history.csv, plots/learning_curves.png,
diagnosis.json), test metrics (metrics.json, evaluation.json, plots/confusion_matrix.png,
plots/confident_mistakes.png), calibration (calibration.json, plots/reliability.png),
explanations (explanations/*.png), robustness (robustness.json) and compression
(compression.json).
"""

from __future__ import annotations

import base64
import csv
import json
import os
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from deepnet.train.run import RunError, atomic_write

__all__ = ["SECTIONS", "build_report", "render_report"]

SECTIONS = ("configuration", "data", "training", "metrics", "calibration", "explanations", "robustness", "compression")

_TITLES = {"configuration": "Configuration", "data": "Data", "training": "Training and diagnosis",
           "metrics": "Test metrics", "calibration": "Calibration", "explanations": "Explanations",
           "robustness": "Robustness", "compression": "Compression"}

_CSS = """
:root { --ink: #1d232a; --muted: #5b6570; --rule: #d8dde3; --accent: #2458a6; --soft: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto,
       "Helvetica Neue", Arial, sans-serif; }
header { padding: 1.2rem 2rem 0.6rem; border-bottom: 1px solid var(--rule); }
header h1 { margin: 0 0 0.2rem; font-size: 1.5rem; }
header p { margin: 0; color: var(--muted); }
nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid var(--rule); padding: 0.4rem 2rem;
      display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; font-size: 0.9rem; z-index: 1; }
nav a { color: var(--accent); text-decoration: none; }
main { max-width: 1100px; margin: 0 auto; padding: 0 2rem 3rem; }
section { padding: 1rem 0 0.6rem; border-bottom: 1px solid var(--rule); }
h2 { font-size: 1.2rem; margin: 0.4rem 0 0.6rem; }
h3 { font-size: 1rem; margin: 0.8rem 0 0.4rem; }
table { border-collapse: collapse; margin: 0.3rem 0 0.8rem; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--rule); padding: 0.2rem 0.7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: var(--soft); font-weight: 600; }
pre { background: var(--soft); padding: 0.6rem 0.8rem; overflow-x: auto; font-size: 0.82rem; line-height: 1.35; }
figure { margin: 0.4rem 0 1rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: 0.85rem; }
.missing { color: var(--muted); font-style: italic; }
table.facts th { background: none; font-weight: 500; color: var(--muted); text-align: left; }
table.facts td { text-align: left; }
details summary { cursor: pointer; color: var(--accent); margin: 0.3rem 0; }
.verdict { font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 0 1.5rem; }
@media print {
  nav { display: none; }
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  header { padding: 0 0 0.5rem; }
  section { break-inside: avoid-page; page-break-inside: avoid; }
  figure { break-inside: avoid; }
  figure img { max-height: 9cm; width: auto; }
  pre { white-space: pre-wrap; }
  details > pre { display: none; }
  a { color: inherit; text-decoration: none; }
}
"""


def build_report(directory: str | os.PathLike) -> Path:
    """Write ``RUN/report.html`` and return its path."""
    run = Path(directory)
    if not run.is_dir():
        raise RunError(f"Run directory {run} not found. Train one first: deepnet train ... --out {run}")
    if not (run / "model.json").is_file():
        raise RunError(f"{run} has no model.json: it is not a run directory (or its training did not finish).")
    page = render_report(run)
    path = run / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def render_report(run: Path) -> str:
    """The page as one HTML string."""
    spec = _json(run / "model.json") or {}
    name = escape(run.resolve().name)
    sections = {key: render(run, spec) for key, render in (
        ("configuration", _configuration), ("data", _data), ("training", _training), ("metrics", _metrics),
        ("calibration", _calibration), ("explanations", _explanations), ("robustness", _robustness),
        ("compression", _compression))}
    nav = "".join(f'<a href="#{key}">{_TITLES[key]}</a>' for key in SECTIONS)
    body = "\n".join(f'<section id="{key}"><h2>{_TITLES[key]}</h2>\n{html}</section>' for key, html in sections.items())
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{escape(str(spec.get('name', '?')))} · {escape(str(run.resolve()))} · report written {created}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>deepnet report — {name}</title><style>{_CSS}</style></head>\n"
            f"<body><header><h1>deepnet report — {name}</h1><p>{subtitle}</p></header>\n"
            f"<nav>{nav}</nav>\n<main>\n{body}\n</main></body></html>\n")


# ----- reading the run directory -------------------------------------------------------------

def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not valid JSON ({err}); rerun the step that wrote it or delete the file.") from None


def _figure(path: Path, caption: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _missing(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_format(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(rows: list[list[Any]]) -> str:
    """A two-column table of name / value, left-aligned."""
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(_format(v))}</td></tr>" for k, v in rows)
    return f'<table class="facts"><tbody>{body}</tbody></table>'


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "—"


# ----- sections --------------------------------------------------------------------------------

def _configuration(run: Path, spec: dict[str, Any]) -> str:
    rows = [["model", spec.get("name")], ["arguments", json.dumps(spec.get("args", {}))],
            ["input shape", str(tuple(spec.get("input_shape", [])))], ["task", spec.get("task", "classification")]]
    if spec.get("parent"):
        rows.append(["parent run", spec["parent"]])
    config = run / "config.yaml"
    if not config.is_file():
        return _facts(rows) + _missing("No config.yaml in the run.")
    import yaml

    train = (yaml.safe_load(config.read_text()) or {}).get("train", {})
    for key in ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "label_smoothing", "precision",
                "seed"):
        if key in train:
            rows.append([key.replace("_", " "), train[key]])
    return (_facts(rows) + "<details><summary>config.yaml (every setting)</summary>"
            f"<pre>{escape(config.read_text())}</pre></details>")


def _data(run: Path, spec: dict[str, Any]) -> str:
    classes = spec.get("class_names") or []
    prep = spec.get("preprocessing", {})
    rows = [["inputs", f"{spec.get('input_kind', '?')} {tuple(spec.get('input_shape', []))}"],
            ["classes", f"{len(classes)}: {', '.join(map(str, classes[:20]))}{' …' if len(classes) > 20 else ''}"],
            ["preprocessing", prep.get("kind", "none")]]
    evaluation = _json(run / "evaluation.json") or {}
    per_class = evaluation.get("per_class")
    if per_class:
        rows.append(["test examples", sum(row["support"] for row in per_class.values())])
        counts = [row["support"] for row in per_class.values()]
        rows.append(["test class balance (largest / smallest)", f"{max(counts) / max(min(counts), 1):.2f}x"])
    config = run / "config.yaml"
    if config.is_file():
        import yaml

        data = (yaml.safe_load(config.read_text()) or {}).get("data", {})
        rows.insert(0, ["dataset", data.get("name", "?")])
        if data.get("max_train_samples"):
            rows.append(["training examples (subset)", data["max_train_samples"]])
    return _facts(rows)


def _training(run: Path, spec: dict[str, Any]) -> str:
    history = []
    if (run / "history.csv").is_file():
        with (run / "history.csv").open(newline="") as f:
            history = list(csv.DictReader(f))
    html = ""
    if history:
        last = history[-1]
        html += _table(["epochs", "final train loss", "final val loss", "final train accuracy", "final val accuracy"],
                       [[len(history), _float(last.get("train_loss")), _float(last.get("val_loss")),
                         _percent(_float(last.get("train_accuracy"))), _percent(_float(last.get("val_accuracy")))]])
    html += _figure(run / "plots" / "learning_curves.png", "learning curves (plots/learning_curves.png)")
    diagnosis = _json(run / "diagnosis.json")
    if diagnosis:
        html += (f'<p><span class="verdict">Diagnosis: {escape(str(diagnosis.get("verdict")))}</span> — '
                 f'{escape(str(diagnosis.get("summary", "")))}</p>')
        remedies = diagnosis.get("remedies", [])
        if remedies:
            html += "<ul>" + "".join(f"<li>{escape(str(r.get('remedy', '')))}"
                                      + (f": <code>{escape(str(r['try']))}</code>" if r.get("try") else "") + "</li>"
                                      for r in remedies) + "</ul>"
    else:
        html += _missing(f"No diagnosis yet: deepnet diagnose {run}")
    return html or _missing("No history.csv in the run.")


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _metrics(run: Path, spec: dict[str, Any]) -> str:
    metrics = _json(run / "metrics.json")
    html = ""
    if metrics:
        rows = [[key, _percent(value) if "accuracy" in key else value] for key, value in metrics.items()
                if isinstance(value, (int, float))]
        html += _table(["metric", "value"], rows)
    else:
        html += _missing("No metrics.json in the run.")
    evaluation = _json(run / "evaluation.json")
    if not evaluation:
        return html + _missing(f"No per-class figures yet: deepnet evaluate {run}")
    if evaluation.get("per_class"):
        html += "<h3>Per class</h3>" + _table(
            ["class", "precision", "recall", "F1", "support"],
            [[name, _percent(row["precision"]), _percent(row["recall"]), _percent(row["f1"]), row["support"]]
             for name, row in evaluation["per_class"].items()])
    html += '<div class="grid">' + _figure(run / "plots" / "confusion_matrix.png", "confusion matrix (rows: true class)")
    html += _figure(run / "plots" / "confident_mistakes.png", "the most confident mistakes on the test split") + "</div>"
    return html


def _calibration(run: Path, spec: dict[str, Any]) -> str:
    calibration = _json(run / "calibration.json")
    if not calibration:
        return _missing(f"Not calibrated yet: deepnet calibrate {run}")
    html = _table(["", "before", "after"], [
        ["temperature", 1.0, calibration.get("temperature")],
        ["expected calibration error (test)", _percent(calibration.get("ece_before")), _percent(calibration.get("ece_after"))],
        ["accuracy (test)", _percent(calibration.get("accuracy_before")), _percent(calibration.get("accuracy_after"))],
        ["NLL (validation)", calibration.get("val_nll_before"), calibration.get("val_nll_after")]])
    html += "<p>deepnet predict, evaluate, export and serve divide the logits by this temperature.</p>"
    return html + _figure(run / "plots" / "reliability.png", "reliability diagram before and after temperature scaling")


def _explanations(run: Path, spec: dict[str, Any]) -> str:
    images = sorted((run / "explanations").glob("*.png")) if (run / "explanations").is_dir() else []
    if not images:
        return _missing(f"No explanations yet: deepnet explain {run} --method integrated-gradients")
    html = ""
    for image in images:
        record = _json(image.with_suffix(".json")) or {}
        caption = f"{image.stem} (target: {record.get('target', '?')})"
        errors = record.get("completeness_error") or []
        if errors:
            caption += f"; completeness error at most {100 * max(errors):.2f}%"
        html += f"<h3>{escape(image.stem)}</h3>" + _figure(image, caption)
    return html


def _robustness(run: Path, spec: dict[str, Any]) -> str:
    robustness = _json(run / "robustness.json")
    if not robustness:
        return _missing(f"No robustness measurements yet: deepnet attack {run} --method pgd")
    html = f"<p>Clean accuracy: {_percent(robustness.get('clean_accuracy'))}</p>"
    fields = ["method", "norm", "eps", "steps", "restarts", "targeted", "accuracy", "success_rate", "mean_perturbation"]
    rows = [[_percent(row.get(f)) if f in ("accuracy", "success_rate") else row.get(f) for f in fields]
            for row in robustness.get("attacks", [])]
    html += _table([f.replace("_", " ") for f in fields], rows)
    flags = [flag for flag in robustness.get("masking", []) if isinstance(flag, dict)]
    if flags:  # deepnet attack's signs of gradient masking, when it wrote any
        html += "<p><strong>Signs of gradient masking:</strong></p><ul>" + "".join(
            f"<li>{escape(str(flag.get('message', flag.get('check', ''))))}</li>" for flag in flags) + "</ul>"
    html += '<div class="grid">' + _figure(run / "plots" / "robustness_curve.png", "accuracy against the attack budget")
    return html + _figure(run / "plots" / "adversarial_examples.png", "adversarial examples") + "</div>"


def _compression(run: Path, spec: dict[str, Any]) -> str:
    compression = _json(run / "compression.json")
    if not compression:
        return _missing(f"No compression results in this run (deepnet compress {run} writes them into a new run).")
    fields = ["name", "test_accuracy", "nonzero_parameters", "file_bytes", "latency_ms_batch1", "throughput_batch256"]
    rows = [[_percent(row.get(f)) if f == "test_accuracy" else row.get(f) for f in fields]
            for row in compression.get("stages", [])]
    return _table(["stage", "test accuracy", "nonzero parameters", "file bytes", "latency ms (batch 1)",
                   "throughput /s (batch 256)"], rows)
