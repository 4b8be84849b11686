"""Denoising diffusion (Ho, Jain & Abbeel 2020) with a small U-Net, and DDIM sampling
(Song, Meng & Ermon 2021).

Training: an image ``x0`` (pixels scaled to [-1, 1]), a step ``t`` drawn uniformly from
1..T, noise ``eps``; the network sees ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` and
``t`` and predicts ``eps`` (mean squared error: the "simple" loss) or, with ``prediction="v"``,
the velocity ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022), from which
both ``x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`` and ``eps`` follow without a division: at
the noisiest steps, where ``abar_t`` is nearly 0, an estimate of x0 from predicted noise divides
the network's error by ``sqrt(abar_t)``, and the deterministic DDIM path starts from that
estimate (Lin et al. 2024 make the same case for zero terminal SNR). The noise schedule is
linear (beta from 1e-4 to 0.02, the paper's) or cosine (Nichol & Dhariwal 2021). With
``min_snr_gamma > 0`` each sample's error is weighted by ``min(SNR_t, gamma) / SNR_t``
(Min-SNR, Hang et al. 2023; ``SNR_t = abar_t / (1 - abar_t)``; ``min(SNR_t, gamma) / (SNR_t + 1)``
for v, the same weight on the error of x0): the nearly clean steps, whose noise is the hardest
to predict and matters least to what the image shows, stop dominating the gradient.
With ``noise_levels="lognormal"`` the steps are drawn instead so that the noise level
``sigma_t = sqrt((1 - abar_t) / abar_t)`` (the noise-to-signal ratio of x_t) is log-normal,
``ln sigma ~ N(-1.2, 1.2^2)`` (Karras et al. 2022, whose sigma is this one for pixels in
[-1, 1]): each step takes the probability of the log-sigma interval nearest it, so training
spends its effort on the middle noise levels, where the image's content is decided, rather than
spreading it evenly over the steps.
Sampling: ancestral, T steps from pure noise with the posterior variance; or DDIM
(deterministic, eta = 0) on a subset of the steps, e.g. 50 instead of 1000, spaced evenly from
the last step down ("trailing": T-1, T-1-T/S, ..., T/S-1; Lin et al. 2024), so that the last DDIM
step starts from a little noise rather than from the nearly clean steps, whose noise the Min-SNR
weighting hardly trains. Ancestral sampling clips its estimate of x0 to [-1, 1] at every step (Ho
et al.); DDIM only at the steps whose signal-to-noise ratio is below ``DDIM_CLIP_SNR``, where the
estimate divides the network's error by sqrt(abar) (by 5,000 at the last of 250 cosine steps):
clipping the later, clean steps too bends the deterministic path and costs a little quality
(docs/generative.md).

The U-Net: residual blocks (group norm, SiLU, 3x3 convolutions, the step's sinusoidal
embedding added in between) at three resolutions with widths w, 2w and 4w (with ``patch=2``
the first level sits at half the image size), stride-2 convolutions down, nearest upsampling
and convolutions up, skip connections concatenated. With ``attention >= 1`` the lowest
resolution holds a residual block, multi-head self-attention over its positions and a second
residual block, as the middle of Ho et al.'s U-Net: at 7x7 for MNIST that costs ~7% more
compute and lets every position see the whole digit; ``attention=2`` also attends after the
up-path block of the level above (14x14), as Ho et al. do at 16x16.

With ``clusters=k`` the model guides itself with clusters of the data that it finds without
labels (self-guidance, Hu et al. 2023, who cluster self-supervised features; here the pixels,
kept by mini-batch k-means, ``_clusters.OnlineKMeans``): the U-Net also reads the cluster of
each training image, replaced by a null cluster for a tenth of them, so that one network learns
both the conditional and the unconditional noise; sampling draws a cluster in proportion to the
images it has taken and combines the two predictions with classifier-free guidance (Ho &
Salimans 2021), ``eps = eps(x, c) + w (eps(x, c) - eps(x, null))`` with ``w = guidance``: at
w = 0 the plain conditional model, larger w pushes each sample towards what its cluster shares,
at the cost of a second noise prediction per step. No labels are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._clusters import OnlineKMeans
from deepnet.models._layers import check_image_shape
from deepnet.models._pixels import PixelScale
from deepnet.models._registry import register_model

__all__ = ["DDPM", "DDPMConfig", "UNet", "noise_schedule"]

UNCONDITIONAL_FRACTION = 0.1  # training images whose cluster is hidden (Ho & Salimans use 0.1-0.2)


@dataclass(frozen=True)
class DDPMConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    width: int = 32  # channels at the first level; 2x at the second, 4x at the third
    patch: int = 1  # 2: the first level at half resolution
    timesteps: int = 1000
    schedule: str = "linear"  # linear | cosine
    ema_decay: float = 0.999  # sampling uses an exponential moving average of the weights; 0 = the weights
    min_snr_gamma: float = 0.0  # > 0: Min-SNR loss weighting, min(SNR, gamma) / SNR; 0 = the plain noise MSE
    prediction: str = "eps"  # what the U-Net predicts: eps (the noise) | v (sqrt(abar) eps - sqrt(1 - abar) x0)
    noise_levels: str = "uniform"  # how training draws the steps: uniform | lognormal (Karras et al.'s ln sigma)
    attention: int = 0  # levels that attend, from the lowest: 0 none, 1 the middle, 2 also the level above
    clusters: int = 0  # > 0: self-guidance with this many k-means clusters of the data; 0: unconditional
    guidance: float = 0.0  # the guidance weight w sampling uses by default (with clusters)
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None


LOGNORMAL_MEAN, LOGNORMAL_STD = -1.2, 1.2  # ln sigma's mean and spread (Karras et al. 2022, Table 1)
DDIM_CLIP_SNR = 0.05  # DDIM clips its x0 estimate at steps with abar / (1 - abar) below this (see the docstring)


def noise_schedule(name: str, timesteps: int) -> torch.Tensor:
    """``beta_t`` for t = 1..T, shape ``(T,)``, float64."""
    if name == "linear":
        # rescaled to keep the schedule's end point for T != 1000; below T = 50 the late betas
        # would pass 1 (a negative abar, NaN at the first step), so they stop at 0.999 as cosine's do
        return (torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64) * (1000 / timesteps)).clamp(max=0.999)
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def step_probabilities(alpha_bar: torch.Tensor, noise_levels: str) -> torch.Tensor:
    """The probability with which training draws each step, shape ``(T,)``: uniform, or, for
    ``lognormal``, the log-normal mass of the interval of ln sigma nearest each step's."""
    if noise_levels == "uniform":
        return torch.full_like(alpha_bar, 1 / len(alpha_bar))
    log_sigma = 0.5 * (torch.log1p(-alpha_bar) - torch.log(alpha_bar))  # increasing with t
    edges = torch.cat([log_sigma.new_tensor([-math.inf]), (log_sigma[1:] + log_sigma[:-1]) / 2,
                       log_sigma.new_tensor([math.inf])])
    cumulative = torch.special.ndtr((edges - LOGNORMAL_MEAN) / LOGNORMAL_STD)
    return cumulative.diff()


def ddim_steps(timesteps: int, count: int) -> list[int]:
    """The ``count`` steps DDIM visits, from the noisiest down, evenly spaced and "trailing"
    (Lin et al. 2024): ``T-1, T-1-T/S, ...``; with every step, ``T-1, ..., 0``."""
    stride = timesteps / count
    return [round(timesteps - j * stride) - 1 for j in range(count)]


def step_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps ``(B,)`` -> ``(B, dim)`` (as in the Transformer)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float().unsqueeze(1) * frequencies.unsqueeze(0)  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.step = nn.Linear(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.step(embedding)[:, :, None, None]  # (B, out, 1, 1) broadcast over the map
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class MapAttention(nn.Module):
    """Residual multi-head self-attention over the positions of a feature map ``(B, C, H, W)``."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Noisy images ``(B, C, H, W)`` and steps ``(B,)`` -> predicted noise ``(B, C, H, W)``."""

    def __init__(self, channels: int, width: int, patch: int = 1, attention: int = 0, conditions: int = 0) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.embed_dim = 4 * width
        self.embed = nn.Sequential(nn.Linear(width, self.embed_dim), nn.SiLU(), nn.Linear(self.embed_dim, self.embed_dim))
        # conditions: an embedding per condition, plus the null one (index `conditions`), added to the step's
        self.condition = nn.Embedding(conditions + 1, self.embed_dim) if conditions else None
        # patch=2: the levels sit at H/2, H/4, H/8, entered by a stride-2 convolution and left
        # by a transposed one; for the same compute, twice the width at every level.
        self.stem = nn.Conv2d(channels, w1, 3, padding=1) if patch == 1 else nn.Conv2d(channels, w1, 4, stride=2, padding=1)
        self.down1 = ResBlock(w1, w1, self.embed_dim)  # H
        self.pool1 = nn.Conv2d(w1, w1, 3, stride=2, padding=1)
        self.down2 = ResBlock(w1, w2, self.embed_dim)  # H/2
        self.pool2 = nn.Conv2d(w2, w2, 3, stride=2, padding=1)
        self.middle = ResBlock(w2, w3, self.embed_dim)  # H/4: wide, since a map of H/4 x W/4 is cheap
        self.attention = MapAttention(w3) if attention >= 1 else None
        self.middle2 = ResBlock(w3, w3, self.embed_dim) if attention >= 1 else None
        self.up2 = ResBlock(w3 + w2, w2, self.embed_dim)  # H/2, after concatenating down2's output
        # one head, as Ho et al.'s: at 14x14 four heads of 8 channels took 4.7x as long on a CPU
        self.up2_attention = MapAttention(w2, heads=1) if attention >= 2 else None
        self.up1 = ResBlock(w2 + w1, w1, self.embed_dim)  # H
        self.head = nn.Sequential(nn.GroupNorm(min(8, w1), w1), nn.SiLU(),
                                  nn.Conv2d(w1, channels, 3, padding=1) if patch == 1
                                  else nn.ConvTranspose2d(w1, channels, 4, stride=2, padding=1))
        self.width = width

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``c``: conditions ``(B,)`` (the null one is ``conditions``); None: the null one for all."""
        e = self.embed(step_embedding(t, self.width))  # (B, embed_dim)
        if self.condition is not None:
            e = e + self.condition(c if c is not None else torch.full_like(t, self.condition.num_embeddings - 1))
        h1 = self.down1(self.stem(x), e)  # (B, w1, H/p, W/p), p = patch
        h2 = self.down2(self.pool1(h1), e)  # (B, w2, H/2p, W/2p)
        h = self.middle(self.pool2(h2), e)  # (B, w3, H/4p, W/4p)
        if self.attention is not None:
            h = self.middle2(self.attention(h), e)
        h = F.interpolate(h, size=h2.shape[-2:], mode="nearest")
        h = self.up2(torch.cat([h, h2], dim=1), e)  # (B, w2, H/2p, W/2p)
        if self.up2_attention is not None:
            h = self.up2_attention(h)
        h = F.interpolate(h, size=h1.shape[-2:], mode="nearest")
        h = self.up1(torch.cat([h, h1], dim=1), e)  # (B, w1, H/p, W/p)
        return self.head(h)  # (B, C, H, W)


class DDPM(nn.Module):
    """``forward(x_t, t)``: the U-Net's prediction (the noise, or v); ``sample`` draws images in [0, 1]."""

    parts = ("model",)
    conditional_classes = 0
    preview_sampling = {"method": "ddim"}  # the grid written at the end of training: DDIM, 50 steps

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__()
        self.config = config
        self.pixels = PixelScale(config.input_shape[0], config.pixel_mean, config.pixel_std)
        self.unet = UNet(config.input_shape[0], config.width, config.patch, config.attention, config.clusters)
        self.clusters = OnlineKMeans(config.clusters, math.prod(config.input_shape)) if config.clusters else None
        betas = noise_schedule(config.schedule, config.timesteps)
        alpha_bar = torch.cumprod(1 - betas, 0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)
        self.register_buffer("step_probabilities", step_probabilities(alpha_bar, config.noise_levels).float(),
                             persistent=False)
        # The average is kept as buffers (saved with the weights, not trained); it is updated
        # at the start of each training step, so it trails the weights by one update.
        self.ema_names = [name for name, _ in self.unet.named_parameters()]
        for name, p in self.unet.named_parameters():
            self.register_buffer("ema_" + name.replace(".", "_"), p.detach().clone())

    def _update_average(self) -> None:
        decay = self.config.ema_decay
        with torch.no_grad():
            for name, p in self.unet.named_parameters():
                getattr(self, "ema_" + name.replace(".", "_")).lerp_(p, 1 - decay)

    def denoiser(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction (eps or v) used for sampling: with the averaged weights when ``ema_decay > 0``."""
        if not self.config.ema_decay:
            return self.unet(x_t, t, c)
        averaged = {name: getattr(self, "ema_" + name.replace(".", "_")) for name in self.ema_names}
        return torch.func.functional_call(self.unet, averaged, (x_t, t, c))

    def guided_prediction(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The sampler's prediction: with clusters ``c`` and ``guidance`` w > 0, classifier-free
        guidance ``eps(x, c) + w (eps(x, c) - eps(x, null))``, both in one batch (for v the same
        combination: at a given x_t, eps is an affine function of v)."""
        if c is None:
            return self.denoiser(x_t, t)
        if not guidance:
            return self.denoiser(x_t, t, c)
        null = torch.full_like(c, self.config.clusters)
        conditional, unconditional = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([c, null])).chunk(2)
        return conditional + guidance * (conditional - unconditional)

    def part_parameters(self, part: str) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t)

    def _losses(self, x: torch.Tensor, update: bool) -> dict[str, torch.Tensor]:
        """``update``: a training step, which also moves the clusters' centroids."""
        x0 = self.pixels.to_pixels(x) * 2 - 1
        if self.config.noise_levels == "uniform":
            t = torch.randint(0, self.config.timesteps, (len(x),), device=x.device)  # index 0 is step 1
        else:
            t = torch.multinomial(self.step_probabilities, len(x), replacement=True)
        noise = torch.randn_like(x0)
        abar = self.alpha_bar[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        c = None
        if self.clusters is not None:
            hidden = torch.rand(len(x), device=x.device) < UNCONDITIONAL_FRACTION
            c = self.clusters.assign(x0, update).masked_fill(hidden, self.config.clusters)
        predicted = self.unet(x_t, t, c).float()  # float: the error in fp32 under bf16 autocast
        snr = abar.view(-1) / (1 - abar.view(-1))
        if self.config.prediction == "v":
            velocity = abar.sqrt() * noise - (1 - abar).sqrt() * x0
            errors = (predicted - velocity).pow(2).mean(dim=(1, 2, 3))
            weights = snr.clamp(max=self.config.min_snr_gamma) / (snr + 1) if self.config.min_snr_gamma else 1.0
            # the noise this prediction implies errs by sqrt(abar) times v's error: the same figure as eps models log
            return {"loss": (weights * errors).mean(), "noise_mse": (abar.view(-1) * errors).mean()}
        if not self.config.min_snr_gamma:
            noise_mse = F.mse_loss(predicted, noise)
            return {"loss": noise_mse, "noise_mse": noise_mse}
        errors = (predicted - noise).pow(2).mean(dim=(1, 2, 3))  # (B,): each image's error, computed once
        weights = (self.config.min_snr_gamma / snr).clamp(max=1)  # = min(SNR, gamma) / SNR, and 1 where SNR = 0
        return {"loss": (weights * errors).mean(), "noise_mse": errors.mean()}

    def training_losses(self, x: torch.Tensor, y: torch.Tensor, part: str = "model") -> dict[str, torch.Tensor]:
        if self.config.ema_decay:
            self._update_average()
        return self._losses(x, update=True)

    def evaluation_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._losses(x, update=False)

    def _estimates(self, x: torch.Tensor, i: int, predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The estimates of x0 and of the noise at step ``i`` from the network's prediction."""
        abar = self.alpha_bar[i]
        if self.config.prediction == "v":
            return abar.sqrt() * x - (1 - abar).sqrt() * predicted, (1 - abar).sqrt() * x + abar.sqrt() * predicted
        return (x - (1 - abar).sqrt() * predicted) / abar.sqrt(), predicted

    def _ddim_estimate(self, x: torch.Tensor, i: int, predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM's estimate of x0 at step ``i`` from the prediction, and the noise consistent
        with it: clipped to [-1, 1] only where the step's SNR is below ``DDIM_CLIP_SNR``."""
        abar = self.alpha_bar[i]
        x0, eps = self._estimates(x, i, predicted)
        if abar / (1 - abar) >= DDIM_CLIP_SNR:
            return x0, eps
        x0 = x0.clamp(-1, 1)
        return x0, (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               method: str = "ddpm", steps: int | None = None, eta: float = 0.0,
               guidance: float | None = None) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` in [0, 1]. ``method="ddpm"``: ancestral sampling over
        all T steps; ``"ddim"``: DDIM over ``steps`` steps (default 50, ``ddim_steps``), deterministic
        with ``eta=0``; ``eta=1`` adds the noise of ancestral sampling over those steps (Song et
        al.'s sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)).
        With clusters, each sample's cluster is drawn in proportion to its images and ``guidance``
        (default: the config's) weighs classifier-free guidance."""
        if method not in ("ddpm", "ddim"):
            raise ValueError(f"Unknown sampling method {method!r}; choose ddpm or ddim.")
        if not 0 <= eta <= 1:
            raise ValueError(f"Received an invalid value for `eta`: expected 0 <= eta <= 1 (0: deterministic DDIM). "
                             f"Received: eta={eta}.")
        device = self.betas.device
        shape = (n, *self.config.input_shape)
        x = torch.randn(shape, generator=generator).to(device)
        c = self.clusters.draw(n, generator).to(device) if self.clusters is not None else None
        guidance = self.config.guidance if guidance is None else guidance
        if guidance < 0:
            raise ValueError(f"Received an invalid value for `guidance`: expected >= 0 (0: no guidance). Received: {guidance}.")
        T = self.config.timesteps
        if method == "ddpm":
            for i in reversed(range(T)):
                t = torch.full((n,), i, device=device, dtype=torch.int64)
                predicted = self.guided_prediction(x, t, c, guidance)
                abar, beta = self.alpha_bar[i], self.betas[i]
                abar_prev = self.alpha_bar[i - 1] if i > 0 else torch.ones((), device=device)
                x0 = self._estimates(x, i, predicted)[0].clamp(-1, 1)
                # the mean of q(x_{t-1} | x_t, x0), and its variance beta~ (Ho et al. eq. 6-7)
                mean = (abar_prev.sqrt() * beta / (1 - abar)) * x0 + ((1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)) * x
                if i > 0:
                    variance = beta * (1 - abar_prev) / (1 - abar)
                    x = mean + variance.sqrt() * torch.randn(shape, generator=generator).to(device)
                else:
                    x = mean
        else:
            count = steps or min(50, T)
            if not 1 <= count <= T:
                raise ValueError(f"DDIM takes between 1 and {T} steps; received {count}.")
            times = ddim_steps(T, count)
            for j, i in enumerate(times):
                t = torch.full((n,), i, device=device, dtype=torch.int64)
                predicted = self.guided_prediction(x, t, c, guidance)
                abar = self.alpha_bar[i]
                abar_prev = self.alpha_bar[times[j + 1]] if j + 1 < count else torch.ones((), device=device)
                x0, eps = self._ddim_estimate(x, i, predicted)
                sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
                x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
                if eta and j + 1 < count:
                    x = x + sigma * torch.randn(shape, generator=generator).to(device)
        return ((x + 1) / 2).clamp(0, 1)


@register_model(family="diffusion", year=2020, input_kind="generative",
                paper="Ho, Jain & Abbeel, Denoising Diffusion Probabilistic Models, NeurIPS 2020; "
                      "Song, Meng & Ermon, Denoising Diffusion Implicit Models, ICLR 2021",
                tiny={"input_shape": (1, 8, 8), "width": 8, "timesteps": 20, "min_snr_gamma": 5.0, "attention": 2})
def ddpm(input_shape: tuple[int, int, int] = (1, 28, 28), width: int = 32, patch: int = 1, timesteps: int = 1000,
         schedule: str = "linear", ema_decay: float = 0.999, min_snr_gamma: float = 0.0, prediction: str = "eps",
         noise_levels: str = "uniform", attention: int = 0, clusters: int = 0, guidance: float = 0.0, pixel_mean: tuple[float, ...] | None = None,
         pixel_std: tuple[float, ...] | None = None) -> DDPM:
    """DDPM with a small U-Net; ancestral and DDIM sampling."""
    input_shape = tuple(input_shape)
    check_image_shape("ddpm", input_shape)
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"Received an invalid value for `schedule`: expected 'linear' or 'cosine'. Received: schedule={schedule!r}.")
    if timesteps < 2 or width < 8 or width % 2:
        raise ValueError(f"Received an invalid value for `timesteps`/`width`: expected timesteps >= 2 and an even "
                         f"width >= 8. Received: timesteps={timesteps}, width={width}.")
    if patch not in (1, 2) or (patch == 2 and (input_shape[1] % 2 or input_shape[2] % 2)):
        raise ValueError(f"Received an invalid value for `patch`: 1, or 2 for even heights and widths. "
                         f"Received: patch={patch}, input_shape={input_shape}.")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"Received an invalid value for `ema_decay`: expected 0 <= ema_decay < 1. Received: ema_decay={ema_decay}.")
    if prediction not in ("eps", "v"):
        raise ValueError(f"Received an invalid value for `prediction`: expected 'eps' (the noise) or 'v' (Salimans & Ho's "
                         f"velocity). Received: prediction={prediction!r}.")
    if noise_levels not in ("uniform", "lognormal"):
        raise ValueError(f"Received an invalid value for `noise_levels`: expected 'uniform' (every step alike) or "
                         f"'lognormal' (Karras et al.'s ln sigma ~ N(-1.2, 1.2^2)). Received: noise_levels={noise_levels!r}.")
    if attention not in (0, 1, 2):
        raise ValueError(f"Received an invalid value for `attention`: expected 0 (none), 1 (the lowest level) or 2 (also "
                         f"the level above). Received: attention={attention!r}.")
    if min_snr_gamma < 0:
        raise ValueError(f"Received an invalid value for `min_snr_gamma`: expected >= 0 (0: no weighting; Hang et al. "
                         f"use 5). Received: min_snr_gamma={min_snr_gamma}.")
    if clusters < 0 or guidance < 0 or (guidance and not clusters):
        raise ValueError(f"Received an invalid value for `clusters`/`guidance`: expected clusters >= 0 (0: unconditional) "
                         f"and guidance >= 0, guidance only with clusters. Received: clusters={clusters}, guidance={guidance}.")
    return DDPM(DDPMConfig(input_shape=input_shape, width=width, patch=patch, timesteps=timesteps, schedule=schedule, ema_decay=ema_decay,
                           min_snr_gamma=min_snr_gamma, prediction=prediction, noise_levels=noise_levels, attention=int(attention), clusters=int(clusters),
                           guidance=float(guidance), pixel_mean=tuple(pixel_mean) if pixel_mean is not None else None,
                           pixel_std=tuple(pixel_std) if pixel_std is not None else None))
