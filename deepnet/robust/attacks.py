"""Adversarial attacks in the input space the user sees: pixels in [0, 1].

Every attack takes a ``model`` that maps pixels ``(B, C, H, W)`` in [0, 1] to logits
``(B, num_classes)`` — :class:`PixelModel` puts a run's normalisation inside it, so
nobody attacks a normalised input by mistake — and returns adversarial pixels of the
shape of ``x`` that lie in the ε-ball around ``x`` and in [0, 1]. Attacks put the model in
eval mode and restore its mode afterwards; they never touch its weights.

Objectives: ``ce`` (cross-entropy of the softmax: what FGSM and PGD use) or ``margin``
(Carlini & Wagner 2017's f6 on the logits: the best other logit minus the true one; it
does not saturate when the softmax does, which is how defensive distillation is broken).
A targeted attack (``target`` given) descends toward the target class instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORMS", "OBJECTIVES", "PixelModel", "deepfool", "fgsm", "fooled", "least_likely", "perturbation_norm",
           "pgd", "project"]

NORMS = ("linf", "l2")
OBJECTIVES = ("ce", "margin")
Norm = Literal["linf", "l2"]
Objective = Literal["ce", "margin"]


class PixelModel(nn.Module):
    """``model`` behind its input normalisation: input pixels ``(B, C, H, W)`` in [0, 1],
    output the model's logits ``(B, num_classes)``."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        device = next(model.parameters()).device
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std).float()

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised model inputs back to pixels in [0, 1]."""
        return (x * self.std + self.mean).clamp(0.0, 1.0)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode inside the block, every submodule's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.train(training)


def fooled(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Bool ``(B,)``: the attack has succeeded (untargeted: not ``y``; targeted: ``target``)."""
    predicted = logits.argmax(-1)
    return predicted == target if target is not None else predicted != y


def least_likely(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The class each input is least likely to be, ``(B,)``: the hardest target (Kurakin et al. 2017)."""
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmin(-1) for i in range(0, len(x), batch_size)])


def _objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, kind: Objective) -> torch.Tensor:
    """Per-example value ``(B,)`` that the attack ascends."""
    if kind == "ce":
        return -F.cross_entropy(logits, target, reduction="none") if target is not None else \
            F.cross_entropy(logits, y, reduction="none")
    if kind == "margin":
        label = target if target is not None else y
        own = logits.gather(1, label[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(label, logits.shape[-1]).bool(), float("-inf")).amax(-1)
        return own - other if target is not None else other - own
    raise ValueError(f"Unknown attack objective {kind!r}; choose one of {', '.join(OBJECTIVES)}.")


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
              kind: Objective) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at ``x``, gradient of the objective with respect to ``x``)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(_objective(logits, y, target, kind).sum(), x)
    return logits.detach(), grad


def _flat_norm(v: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = v.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Size of each perturbation, ``(B,)``, in ``norm``."""
    return _flat_norm(x_adv - x, norm)


def project(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """``delta`` moved into the ε-ball, then into the pixel range: ``x + delta`` in [0, 1].
    Clipping to the box after the ball keeps the L∞ ball (a box too) and only shrinks an L2
    perturbation, so the result satisfies both."""
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / _flat_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale.view(-1, *[1] * (delta.dim() - 1))
    return (x + delta).clamp(0.0, 1.0) - x


def _random_start(x: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform point of the ε-ball (L∞: each pixel; L2: a direction and a radius ``eps·u^(1/d)``)."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        return (2 * noise - 1) * eps
    direction = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    direction = direction / _flat_norm(direction, "l2").view(-1, *[1] * (x.dim() - 1))
    d = x[0].numel()
    radius = eps * torch.rand(len(x), generator=generator, device="cpu").to(x.device) ** (1.0 / d)
    return direction * radius.view(-1, *[1] * (x.dim() - 1))


def _step(grad: torch.Tensor, step_size: float, norm: Norm) -> torch.Tensor:
    if norm == "linf":
        return step_size * grad.sign()
    g_norm = _flat_norm(grad, "l2").clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
    return step_size * grad / g_norm


def _check(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; choose one of {', '.join(NORMS)}.")
    if not eps > 0 or eps != eps:
        raise ValueError(f"Received an invalid value for `eps`: expected a positive radius. Received: eps={eps!r}")


def _batched(attack: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             batch_size: int, **kwargs) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch_size):
        t = target[i:i + batch_size] if target is not None else None
        out.append(attack(x[i:i + batch_size], y[i:i + batch_size], t, **kwargs))
    return torch.cat(out) if out else x.clone()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: Norm = "linf",
         target: torch.Tensor | None = None, objective: Objective = "ce", batch_size: int = 512) -> torch.Tensor:
    """The fast gradient (sign) method of Goodfellow et al. (2015): one step of size ``eps``
    (L∞: the gradient's sign; L2: its direction). ``x`` pixels ``(B, ...)``, ``y`` ``(B,)``."""
    _check(eps, norm)

    def one_batch(xb, yb, tb):
        _, grad = _gradient(model, xb, yb, tb, objective)
        return xb + project(_step(grad, eps, norm), xb, eps, norm)

    with eval_mode(model):
        return _batched(one_batch, x, y, target, batch_size)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: Norm = "linf", steps: int = 40,
        step_size: float | None = None, restarts: int = 1, random_start: bool = True,
        target: torch.Tensor | None = None, objective: Objective = "ce", batch_size: int = 512,
        generator: torch.Generator | None = None, early_stop: bool = True) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018): ``steps`` steps of ``step_size``
    (default ``2.5·eps/steps``) from a random point of the ε-ball, each projected back.

    Every restart attacks only the inputs that no earlier restart or step has fooled yet,
    and an input is kept at the first point that fools the model: accuracy under attack
    counts an input as robust only when every restart failed. ``x`` pixels ``(B, ...)``.

    ``early_stop=False`` runs every step for every input and keeps, over the restarts, the
    point of highest objective: what a transfer attack needs, since examples that only just
    fool the model they were crafted on rarely fool another."""
    _check(eps, norm)
    if steps < 1 or restarts < 1:
        raise ValueError(f"PGD needs steps >= 1 and restarts >= 1. Received: steps={steps}, restarts={restarts}")
    alpha = step_size if step_size is not None else 2.5 * eps / steps

    def full_steps(xb, yb, tb):
        best, best_value = xb.clone(), torch.full((len(xb),), float("-inf"), device=xb.device)
        for _ in range(restarts):
            delta = project(_random_start(xb, eps, norm, generator), xb, eps, norm) if random_start else torch.zeros_like(xb)
            for _ in range(steps):
                _, grad = _gradient(model, xb + delta, yb, tb, objective)
                delta = project(delta + _step(grad, alpha, norm), xb, eps, norm)
            with torch.no_grad():
                value = _objective(model(xb + delta), yb, tb, objective)
            better = value > best_value
            best[better], best_value[better] = (xb + delta)[better], value[better]
        return best

    def one_batch(xb, yb, tb):
        best = xb.clone()
        pending = torch.arange(len(xb), device=xb.device)  # inputs not fooled yet
        for _ in range(restarts):
            if len(pending) == 0:
                break
            xs, ys = xb[pending], yb[pending]
            ts = tb[pending] if tb is not None else None
            delta = project(_random_start(xs, eps, norm, generator), xs, eps, norm) if random_start else torch.zeros_like(xs)
            live = torch.arange(len(xs), device=xb.device)  # rows of xs still attacked in this restart
            for step in range(steps + 1):
                if step < steps:
                    logits, grad = _gradient(model, xs[live] + delta[live], ys[live], None if ts is None else ts[live], objective)
                else:
                    with torch.no_grad():
                        logits = model(xs[live] + delta[live])
                done = fooled(logits, ys[live], None if ts is None else ts[live])
                best[pending[live[done]]] = (xs[live[done]] + delta[live[done]]).detach()
                if step == steps:
                    best[pending[live[~done]]] = (xs[live[~done]] + delta[live[~done]]).detach()
                    break
                grad, live = grad[~done], live[~done]
                if len(live) == 0:
                    break
                delta[live] = project(delta[live] + _step(grad, alpha, norm), xs[live], eps, norm)
            with torch.no_grad():
                pending = pending[~fooled(model(best[pending]), ys, ts)]
        return best

    with eval_mode(model):
        return _batched(one_batch if early_stop else full_steps, x, y, target, batch_size)


def deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: Norm = "l2", steps: int = 50,
             overshoot: float = 0.02, batch_size: int = 256) -> torch.Tensor:
    """DeepFool (Moosavi-Dezfooli et al. 2016): step to the nearest decision boundary of the
    model linearised at the current point until the label flips; untargeted only.

    DeepFool looks for the smallest perturbation; the result is projected into the ε-ball,
    so an input counts as fooled at ``eps`` only when DeepFool fooled it within ``eps``
    (``eps=inf``: the unprojected result, to be projected for several radii)."""
    _check(eps, norm)

    def one_batch(xb, yb, tb):
        num_classes = None
        x_adv = xb.clone()
        live = torch.arange(len(xb), device=xb.device)
        r_total = torch.zeros_like(xb)
        for _ in range(steps):
            xs = (xb[live] + (1 + overshoot) * r_total[live]).clamp(0.0, 1.0).requires_grad_(True)
            logits = model(xs)
            num_classes = logits.shape[-1]
            still = logits.argmax(-1) == yb[live]
            x_adv[live] = xs.detach()
            if not still.any():
                break
            grads = torch.stack([torch.autograd.grad(logits[:, k].sum(), xs, retain_graph=k < num_classes - 1)[0]
                                 for k in range(num_classes)], dim=1)  # (B, K, C, H, W)
            own = yb[live]
            f = (logits - logits.gather(1, own[:, None])).detach()  # (B, K): boundary value per class
            w = grads - grads[torch.arange(len(own)), own][:, None]  # (B, K, C, H, W)
            w_norm = w.flatten(2).norm(dim=2) if norm == "l2" else w.flatten(2).abs().sum(dim=2)  # dual norm
            distance = f.abs() / w_norm.clamp_min(1e-12)
            distance[torch.arange(len(own)), own] = float("inf")
            nearest = distance.argmin(1)
            rows = torch.arange(len(own))
            w_k, d_k = w[rows, nearest], distance[rows, nearest] + 1e-4
            if norm == "l2":
                r = d_k.view(-1, *[1] * (xb.dim() - 1)) * w_k / w_norm[rows, nearest].clamp_min(1e-12).view(-1, *[1] * (xb.dim() - 1))
            else:
                r = d_k.view(-1, *[1] * (xb.dim() - 1)) * w_k.sign()
            keep = still.nonzero().squeeze(1)
            r_total[live[keep]] += r[keep]
            live = live[keep]
        return xb + project(x_adv - xb, xb, eps, norm)

    with eval_mode(model):
        return _batched(one_batch, x, y, None, batch_size)
