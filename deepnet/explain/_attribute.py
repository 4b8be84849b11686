"""Attributions of a run's predictions, through Captum.

Every method answers "which parts of this input raised the score of the target class": for
image and feature-vector models a map of the input's shape, for text models one number per
token (taken at the embedding layer, since token ids have no gradient).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepnet.train.experiment import load_experiment_data
from deepnet.train.run import Run, atomic_write, load_run

__all__ = ["METHODS", "Explanation", "attribute", "explain", "output_difference"]

METHODS = ("saliency", "integrated-gradients", "smoothgrad", "gradcam", "occlusion")
TOKEN_METHODS = ("saliency", "integrated-gradients", "occlusion")


@dataclass
class Explanation:
    """What ``explain`` computed: the test indices explained, their targets and predictions, and
    (integrated gradients) how far each sum of attributions is from ``f(x) - f(baseline)``."""

    method: str
    target: str
    indices: list[int]
    targets: list[int]
    predicted: list[int]
    image: Path
    completeness_error: list[float] = field(default_factory=list)  # relative, integrated gradients only
    tokens: list[list[dict[str, float | str]]] = field(default_factory=list)  # text models only


def attribute(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, *,
              baseline: torch.Tensor | None = None, steps: int = 64, chunk: int = 16,
              noise_samples: int = 16, tolerance: float = 0.01,
              max_steps: int = 4096) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attributions of ``model``'s ``target`` logit for prepared inputs ``x`` ``(B, *input_shape)``.

    Returns ``(attributions, completeness_error)``: attributions ``(B, *input_shape)`` (gradcam:
    ``(B, 1, H, W)`` upsampled to the input); for integrated gradients the completeness error
    ``(B,)``, ``|sum(attributions) - (f(x) - f(baseline))| / |f(x) - f(baseline)|``, else None.
    Integrated gradients starts with ``steps`` trapezoid steps and doubles them for the examples
    whose error exceeds ``tolerance``, up to ``max_steps`` (Sundararajan et al. 2017, section 4:
    check completeness, add steps until it holds). ``baseline`` defaults to zeros. ``chunk``
    bounds the examples (times integration steps or noise samples) in one forward pass.
    """
    from captum.attr import (IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion,
                             Saliency)

    _check_method(method)
    baseline = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    x = x.detach().clone().requires_grad_(method != "occlusion")
    if method == "saliency":
        return Saliency(model).attribute(x, target=target, abs=True), None
    if method == "integrated-gradients":
        def integrate(rows: torch.Tensor, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
            return IntegratedGradients(model).attribute(
                x[rows], baselines=baseline[rows], target=target[rows], n_steps=n_steps, method="riemann_trapezoid",
                internal_batch_size=max(chunk, 1) * 8, return_convergence_delta=True)

        return refine_until_complete(integrate, output_difference(model, x.detach(), baseline, target),
                                     steps, tolerance, max_steps)
    if method == "smoothgrad":
        spread = float(x.detach().amax() - x.detach().amin()) or 1.0
        tunnel = NoiseTunnel(Saliency(model))
        return tunnel.attribute(x, nt_type="smoothgrad", nt_samples=noise_samples, nt_samples_batch_size=max(chunk, 1),
                                stdevs=0.15 * spread, target=target, abs=True), None
    if method == "gradcam":
        layer = last_spatial_layer(model, x[:1].detach())
        maps = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(maps, tuple(x.shape[-2:]), interpolate_mode="bilinear"), None
    window = _occlusion_window(tuple(x.shape[1:]))
    return Occlusion(model).attribute(x, target=target, sliding_window_shapes=window,
                                      strides=tuple(max(w // 2, 1) for w in window), baselines=baseline,
                                      perturbations_per_eval=max(chunk, 1)), None


def refine_until_complete(integrate: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
                          difference: torch.Tensor, steps: int, tolerance: float,
                          max_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``integrate(rows, steps)`` (→ attributions, convergence delta) on every example, then
    again with twice the steps on those whose relative completeness error is above ``tolerance``."""
    rows = torch.arange(len(difference), device=difference.device)
    attributions, delta = integrate(rows, steps)
    attributions = attributions.detach()
    error = delta.detach().abs() / difference.abs().clamp_min(1e-12)
    while steps < max_steps and bool((error > tolerance).any()):
        steps *= 2
        redo = rows[error > tolerance]
        refined, delta = integrate(redo, steps)
        attributions[redo] = refined.detach()
        error[redo] = delta.detach().abs() / difference[redo].abs().clamp_min(1e-12)
    return attributions, error.float().cpu()


def _check_method(method: str) -> None:
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown explanation method {method!r}; expected one of {', '.join(METHODS)}.{hint}")


def _occlusion_window(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A patch of about 1/7 of each side (4x4 on 28x28 MNIST), across all channels."""
    if len(shape) == 3:
        side = max(shape[1] // 7, 1), max(shape[2] // 7, 1)
        return (shape[0], *side)
    return tuple(1 for _ in shape)  # feature vectors: one feature at a time


def last_spatial_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The last leaf module whose output is a ``(B, C, H, W)`` map: where Grad-CAM reads."""
    found: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda module, _inp, out: found.append(module)
                                     if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] > 1 else None)
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    if not found:
        raise ValueError(f"gradcam reads the last convolutional feature map, but {type(model).__name__} has no layer "
                         "with a (C, H, W) output. Use --method integrated-gradients or saliency.")
    return found[-1]


def explain(directory: str | os.PathLike, method: str = "integrated-gradients", *, samples: int = 16,
            target: str = "predicted", chunk: int = 8, steps: int = 64, device: str | None = None) -> Explanation:
    """Explain the first ``samples`` test examples of a classification run with ``method``; writes
    ``explanations/<method>.png`` (and ``<method>.json``) in the run. ``target``: ``predicted``
    (the model's class), ``true`` (the label) or a class index / name."""
    _check_method(method)
    if samples < 1:
        raise ValueError(f"Received an invalid value for `samples`: expected at least 1. Received: samples={samples}.")
    out = Path(directory)
    run = load_run(out, device=device)
    spec = run.model_spec
    if spec.get("task", "classification") != "classification" or spec.get("input_kind") not in ("image", "vector", "tokens"):
        raise ValueError(f"{out} holds a {spec.get('task')} model of {spec.get('input_kind')} inputs; explain "
                         "attributes the predictions of classifiers of images, feature vectors or text.")
    class_names = spec.get("class_names") or []
    data = load_experiment_data(run.config)
    test = data.test
    n = min(samples, len(test))
    indices = list(range(n))
    model = run.model.eval()
    device_ = next(model.parameters()).device
    with torch.no_grad():
        predicted = torch.cat([model(test.x[i : min(i + chunk, n)].to(device_)).argmax(-1).cpu()
                               for i in range(0, n, chunk)])
    targets = resolve_targets(target, predicted, test.y[:n], class_names)
    tokens = spec.get("input_kind") == "tokens"
    if tokens and method not in TOKEN_METHODS:
        raise ValueError(f"{method} works on images; for a text model use one of {', '.join(TOKEN_METHODS)}.")
    attributions, errors = [], []
    for start in range(0, n, chunk):
        x = test.x[start : min(start + chunk, n)].to(device_)
        t = targets[start : start + chunk].to(device_)
        if tokens:
            a, error = _token_attributions(model, x, t, method, steps=steps, chunk=chunk)
        else:
            a, error = attribute(model, x, t, method, baseline=_baseline(run, x), steps=steps, chunk=chunk)
        attributions.append(a.detach().cpu())
        if error is not None:
            errors.append(error)
    attribution = torch.cat(attributions)
    folder = out / "explanations"
    folder.mkdir(exist_ok=True)
    image = folder / f"{method}.png"

    def name(i: int) -> str:
        return class_names[i] if i < len(class_names) else str(i)

    result = Explanation(method=method, target=target, indices=indices, targets=targets.tolist(),
                         predicted=predicted.tolist(), image=image,
                         completeness_error=torch.cat(errors).tolist() if errors else [])
    if tokens:
        words = spec["preprocessing"]["tokens"]
        for row, ids in zip(attribution, test.x[:n]):
            keep = ids != 0
            result.tokens.append([{"token": words[int(i)], "attribution": float(a)} for i, a in zip(ids[keep], row[keep])])
        _plot_tokens(result, [name(int(t)) for t in targets], [name(int(p)) for p in predicted], image)
    else:
        from deepnet.train.plots import as_raw, plot_image_grid

        maps = attribution.sum(dim=1) if attribution.dim() == 4 else attribution
        if test.x.dim() == 4:
            titles = [f"#{i} {name(int(p))}" + (f" (target {name(int(t))})" if int(t) != int(p) else "")
                      for i, t, p in zip(indices, targets, predicted)]
            plot_image_grid(list(as_raw(test.x[:n], spec.get("preprocessing", {}))), titles, image,
                            overlays=[m.numpy() for m in maps],
                            suptitle=f"{method}: red raises the target class's score, blue lowers it (target: {target})")
        else:
            _plot_vectors(attribution, [name(int(t)) for t in targets], method, image)
    record = asdict(result) | {"image": image.name}
    atomic_write(folder / f"{method}.json", lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    return result


def resolve_targets(target: str, predicted: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> torch.Tensor:
    """``predicted`` | ``true`` | a class index or name → one class index per example."""
    if target == "predicted":
        return predicted.clone()
    if target == "true":
        return labels.clone()
    if target in class_names:
        return torch.full_like(predicted, class_names.index(target))
    try:
        k = int(target)
    except ValueError:
        k = -1
    if not 0 <= k < max(len(class_names), 1):
        raise ValueError(f"Received an invalid value for `--target`: expected predicted, true, a class index "
                         f"0..{len(class_names) - 1} or a class name ({', '.join(class_names[:10])}). "
                         f"Received: target={target!r}.")
    return torch.full_like(predicted, k)


def _baseline(run: Run, x: torch.Tensor) -> torch.Tensor:
    """The input with nothing in it, as the model sees it: a black image (raw 0 after the run's
    normalisation) for images, the training mean (0 after standardisation) for features."""
    prep = run.model_spec.get("preprocessing", {})
    if prep.get("kind") == "normalize" and x.dim() == 4:
        mean = torch.tensor(prep["mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(prep["std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return ((0 - mean) / std).expand_as(x)
    return torch.zeros_like(x)


def _token_baseline(ids: torch.Tensor) -> torch.Tensor:
    """Every word replaced by ``<unk>`` (id 1); padding (id 0) stays, so lengths do not change."""
    return torch.where(ids != 0, torch.ones_like(ids), ids)


def _embedding(model: nn.Module) -> nn.Embedding:
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise ValueError(f"{type(model).__name__} takes token ids but has no nn.Embedding to attribute at.")


def _token_attributions(model: nn.Module, ids: torch.Tensor, target: torch.Tensor, method: str, *, steps: int,
                        chunk: int, tolerance: float = 0.01,
                        max_steps: int = 4096) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token attributions ``(B, T)``: integrated gradients and saliency at the embedding
    layer (summed / normed over the embedding dimension), occlusion by replacing one word at a
    time with ``<unk>``."""
    from captum.attr import FeatureAblation, LayerGradientXActivation, LayerIntegratedGradients

    embedding = _embedding(model)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN RNNs have no backward in eval mode
        if method == "integrated-gradients":
            baseline = _token_baseline(ids)

            def integrate(rows: torch.Tensor, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
                return LayerIntegratedGradients(model, embedding).attribute(
                    ids[rows], baselines=baseline[rows], target=target[rows], n_steps=n_steps,
                    method="riemann_trapezoid", internal_batch_size=max(chunk, 1) * 8, return_convergence_delta=True)

            attributions, error = refine_until_complete(integrate, output_difference(model, ids, baseline, target),
                                                        steps, tolerance, max_steps)
            return attributions.sum(dim=-1), error
        if method == "saliency":
            gradients = LayerGradientXActivation(model, embedding, multiply_by_inputs=False).attribute(ids, target=target)
            return gradients.norm(dim=-1), None
        return FeatureAblation(model).attribute(ids, baselines=_token_baseline(ids), target=target,
                                                perturbations_per_eval=max(chunk, 1)), None


def output_difference(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``f(x) - f(baseline)`` of the target logit, per example ``(B,)``: the sum completeness asks for."""
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
        rows = torch.arange(len(x), device=x.device)
        return (model(x)[rows, target] - model(baseline)[rows, target]).double()


def _plot_vectors(attribution: torch.Tensor, targets: list[str], method: str, path: Path) -> None:
    from deepnet.train.plots import plt

    fig, ax = plt.subplots(figsize=(min(2 + 0.3 * attribution.shape[1], 14), 0.6 + 0.3 * len(attribution)))
    bound = float(attribution.abs().max()) or 1.0
    ax.imshow(attribution.numpy(), cmap="bwr", vmin=-bound, vmax=bound, aspect="auto")
    ax.set(xlabel="feature", ylabel="example (target)", yticks=range(len(targets)), yticklabels=targets,
           title=f"{method}: attribution of each feature")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_tokens(result: Explanation, targets: list[str], predicted: list[str], path: Path) -> None:
    """Each sentence as a row of words on a red (raises the target) / blue (lowers it) background."""
    from matplotlib import colormaps

    from deepnet.train.plots import plt

    colour: Callable = colormaps["bwr"]
    rows = len(result.tokens)
    fig = plt.figure(figsize=(11, 0.5 + 0.42 * rows))
    renderer = fig.canvas.get_renderer()
    width_px = fig.get_figwidth() * fig.dpi
    y = 1.0
    for row, sentence in enumerate(result.tokens):
        y = 1 - (row + 0.7) / (rows + 0.5)
        bound = max((abs(float(w["attribution"])) for w in sentence), default=1.0) or 1.0
        x = 0.01
        label = fig.text(x, y, f"{targets[row]} (pred. {predicted[row]}):", fontsize=8, weight="bold", va="center")
        x += label.get_window_extent(renderer).width / width_px + 0.01
        for word in sentence:
            value = float(word["attribution"]) / bound
            text = fig.text(x, y, str(word["token"]), fontsize=8, va="center",
                            color="white" if abs(value) > 0.6 else "black",
                            bbox={"facecolor": colour(0.5 + 0.5 * value), "edgecolor": "none", "pad": 1.5})
            x += text.get_window_extent(renderer).width / width_px + 0.006
            if x > 0.97:
                break
    fig.suptitle(f"{result.method}: red words raise the target class's score, blue lower it", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
