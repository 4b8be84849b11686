"""The variational autoencoder (Kingma & Welling 2014).

An encoder gives the mean and log-variance of a Gaussian ``q(z|x)``; a code is drawn with
the reparameterisation ``z = mu + sigma * eps`` so that gradients pass through the draw; a
decoder gives the Bernoulli means of the pixels. ``vae`` uses MLPs; ``conv_vae`` halves the
side twice with strided convolutions before its dense layers, and its decoder mirrors that
with transposed convolutions. The loss is the negative evidence lower
bound per image, in nats: the reconstruction term ``-log p(x|z)`` (binary cross-entropy
summed over pixels) plus ``KL(q(z|x) || N(0, I))`` in closed form; both terms are logged.

Prior samples are poor where the aggregate posterior ``q(z) = E_x q(z|x)`` leaves holes in
``N(0, I)``: decoded test posteriors can look like digits while prior draws do not. With
``mmd_weight > 0`` training adds the InfoVAE term (Zhao, Song & Ermon 2019) ``mmd_weight *
MMD^2(q(z), N(0, I))``, estimated on each batch's codes against as many prior draws with the
inverse multiquadric kernels of Tolstikhin et al. (2018), which pulls the aggregate posterior
onto the prior. The model, its prior and its sampler are unchanged; the reported (validation
and test) loss stays the negative ELBO.

``prior="vamp"`` learns the prior instead: the VampPrior (Tomczak & Welling 2018) ``p(z) =
(1/K) sum_k q(z|u_k)``, the mean of the posteriors of ``K = prior_components`` pseudo-inputs
``u_k``, image-shaped parameters (pixels ``sigmoid(logits)``, the logits drawn from N(0, 1))
trained with the rest. The prior then follows the aggregate posterior rather than the other
way round. Its KL term has no closed form: it is the one-draw estimate ``log q(z|x) - log
p(z)`` at the code the reconstruction used, so the reported ELBO stays an unbiased estimate.
Samples pick a pseudo-input uniformly and decode a draw from its posterior. MMD against
N(0, I) would pull the codes away from a learned prior, so ``mmd_weight`` must stay 0 with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._layers import check_image_shape
from deepnet.models._pixels import PixelScale
from deepnet.models._registry import register_model

__all__ = ["VAE", "VAEConfig"]


@dataclass(frozen=True)
class VAEConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)  # dense widths of the encoder (the decoder mirrors them)
    kind: str = "mlp"  # mlp | conv
    widths: tuple[int, ...] = (32, 64)  # conv: channels of the two stride-2 stages
    mmd_weight: float = 0.0  # InfoVAE: weight of MMD^2(aggregate posterior, prior) in the training loss
    prior: str = "standard"  # standard: N(0, I) | vamp: the mean of the posteriors of learned pseudo-inputs
    prior_components: int = 500  # vamp: the number of pseudo-inputs K
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(log_variance))), summed over the last dimension (broadcasting)."""
    return -0.5 * (math.log(2 * math.pi) + log_variance + (z - mean).pow(2) / log_variance.exp()).sum(-1)


def mmd_squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between the distributions of the rows of ``a`` ``(n, d)`` and
    ``b`` ``(m, d)``, with a sum of inverse multiquadric kernels ``C / (C + |x - y|^2)``,
    ``C = 2 d s`` for scales ``s`` around 1 (WAE's kernel for a N(0, I) prior). Gradients
    flow to ``a`` only: ``b`` is the prior's sample."""
    d = a.shape[1]

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (len(x), len(y))
        squared = (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * x @ y.t()).clamp(min=0)  # cdist's gradient is NaN at 0
        return sum(2 * d * s / (2 * d * s + squared) for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))

    def within(x: torch.Tensor) -> torch.Tensor:  # the mean over pairs i != j
        k = kernel(x, x)
        return (k.sum() - k.diagonal().sum()) / (len(x) * (len(x) - 1))

    b = b.detach()
    with torch.no_grad():
        within_b = within(b)
    return within(a) + within_b - 2 * kernel(a, b).mean()


class VAE(nn.Module):
    """``encode``: normalised images ``(B, C, H, W)`` -> posterior means ``(B, latent_dim)``;
    ``decode``: codes -> pixel logits ``(B, C, H, W)``; ``forward``: images -> reconstructed
    pixels in [0, 1] (decoded from the posterior mean)."""

    parts = ("model",)
    conditional_classes = 0

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, width = config.input_shape
        pixels = channels * height * width
        self.pixels = PixelScale(channels, config.pixel_mean, config.pixel_std)
        if config.kind == "mlp":
            self.encoder = nn.Sequential(nn.Flatten(), _mlp([pixels, *config.hidden]))
            self.decoder = nn.Sequential(_mlp([config.latent_dim, *config.hidden[::-1]]),
                                         nn.Linear(config.hidden[0], pixels), nn.Unflatten(1, config.input_shape))
        else:
            c1, c2 = config.widths
            features = (c2, height // 4, width // 4)
            self.encoder = nn.Sequential(
                nn.Conv2d(channels, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # (B, c1, H/2, W/2)
                nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # (B, c2, H/4, W/4)
                nn.Flatten(), _mlp([c2 * features[1] * features[2], *config.hidden]))  # (B, hidden[-1])
            self.decoder = nn.Sequential(
                _mlp([config.latent_dim, *config.hidden[::-1], c2 * features[1] * features[2]]),
                nn.Unflatten(1, features),  # (B, c2, H/4, W/4)
                nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # (B, c1, H/2, W/2)
                nn.ConvTranspose2d(c1, channels, 4, stride=2, padding=1))  # (B, C, H, W) logits
        self.to_mean = nn.Linear(config.hidden[-1], config.latent_dim)
        self.to_log_variance = nn.Linear(config.hidden[-1], config.latent_dim)
        if config.prior == "vamp":  # drawn last, so the networks start as they would with the standard prior
            self.pseudo_input_logits = nn.Parameter(torch.randn(config.prior_components, *config.input_shape))

    def part_parameters(self, part: str) -> list[nn.Parameter]:
        return list(self.parameters())

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, hidden[-1])
        return self.to_mean(h), self.to_log_variance(h)  # (B, latent_dim) each

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def pseudo_inputs(self) -> torch.Tensor:
        """The VampPrior's pseudo-inputs ``(K, C, H, W)``, normalised as the encoder's inputs are."""
        return self.pixels.from_pixels(torch.sigmoid(self.pseudo_input_logits))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) ``(B,)`` of codes ``(B, latent_dim)``."""
        if self.config.prior == "standard":
            return gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        mean, log_variance = self.posterior(self.pseudo_inputs())  # (K, latent_dim) each
        log_densities = gaussian_log_density(z[:, None], mean[None], log_variance[None])  # (B, K)
        return torch.logsumexp(log_densities, dim=1) - math.log(len(mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x)))

    def _losses(self, x: torch.Tensor, training: bool) -> dict[str, torch.Tensor]:
        target = self.pixels.to_pixels(x)
        mean, log_variance = self.posterior(x)
        z = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)  # the reparameterisation
        logits = self.decode(z)
        reconstruction = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
        if self.config.prior == "standard":
            kl = 0.5 * (mean.pow(2) + log_variance.exp() - 1 - log_variance).sum(1)
        else:  # no closed form: one draw, the code decoded above
            kl = gaussian_log_density(z, mean, log_variance) - self.log_prior(z)
        negative_elbo = (reconstruction + kl).mean()
        losses = {"loss": negative_elbo, "reconstruction_nats": reconstruction.mean(), "kl_nats": kl.mean(),
                  "elbo_nats": -negative_elbo, "reconstruction_mse": F.mse_loss(torch.sigmoid(logits), target)}
        if self.config.mmd_weight > 0 and len(z) > 1:
            mmd = mmd_squared(z, torch.randn_like(z))  # 4x as many draws (at mmd_weight 150) was no better
            losses["mmd"] = mmd.detach()
            if training:
                losses["loss"] = negative_elbo + self.config.mmd_weight * mmd
        return losses

    def training_losses(self, x: torch.Tensor, y: torch.Tensor, part: str = "model") -> dict[str, torch.Tensor]:
        return self._losses(x, training=True)

    def evaluation_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._losses(x, training=False)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` in [0, 1]: codes from the prior, decoded to Bernoulli means."""
        device = self.to_mean.weight.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device="cpu").to(device)
        if self.config.prior == "vamp":  # a uniformly chosen pseudo-input's posterior
            component = torch.randint(self.config.prior_components, (n,), generator=generator, device="cpu").to(device)
            mean, log_variance = self.posterior(self.pseudo_inputs())  # (K, latent_dim) each
            z = mean[component] + torch.exp(0.5 * log_variance[component]) * z
        return torch.sigmoid(self.decode(z))

    @torch.no_grad()
    def interpolate(self, x_from: torch.Tensor, x_to: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Decoded points on the straight line between two images' posterior means:
        ``(B, steps, C, H, W)`` for ``x_from`` and ``x_to`` of shape ``(B, C, H, W)``."""
        start, end = self.encode(x_from), self.encode(x_to)  # (B, latent_dim)
        weights = torch.linspace(0, 1, steps, device=start.device).view(1, steps, 1)
        z = start.unsqueeze(1) * (1 - weights) + end.unsqueeze(1) * weights  # (B, steps, latent_dim)
        return torch.sigmoid(self.decode(z.flatten(0, 1))).unflatten(0, (len(start), steps))


def _create_vae(name: str, **kwargs) -> VAE:
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    check_image_shape(name, kwargs["input_shape"])
    for key in ("hidden", "widths", "pixel_mean", "pixel_std"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    if kwargs["mmd_weight"] < 0:
        raise ValueError(f"Received an invalid value for `mmd_weight`: expected >= 0. Received: mmd_weight={kwargs['mmd_weight']}.")
    if kwargs["prior"] not in ("standard", "vamp"):
        raise ValueError(f"Received an invalid value for `prior`: expected 'standard' (N(0, I)) or 'vamp' (learned "
                         f"pseudo-inputs). Received: prior={kwargs['prior']!r}.")
    if kwargs["prior_components"] < 1:
        raise ValueError("Received an invalid value for `prior_components`: expected >= 1 pseudo-inputs. "
                         f"Received: prior_components={kwargs['prior_components']}.")
    if kwargs["prior"] == "vamp" and kwargs["mmd_weight"] > 0:
        raise ValueError("`mmd_weight` pulls the codes onto N(0, I), which a learned prior does not follow: use "
                         f"prior='vamp' with mmd_weight=0. Received: prior='vamp', mmd_weight={kwargs['mmd_weight']}.")
    if kwargs["latent_dim"] < 1 or not kwargs["hidden"]:
        raise ValueError(f"Received an invalid value for `latent_dim`/`hidden`: expected latent_dim >= 1 and at least "
                         f"one hidden width. Received: latent_dim={kwargs['latent_dim']}, hidden={kwargs['hidden']!r}.")
    _, height, width = kwargs["input_shape"]
    if kwargs["kind"] == "conv" and (height % 4 or width % 4 or len(kwargs["widths"]) != 2):
        raise ValueError("The convolutional VAE halves the side twice: it needs height and width divisible by 4 and "
                         f"two `widths`. Received: input_shape={kwargs['input_shape']}, widths={kwargs['widths']}.")
    return VAE(VAEConfig(**kwargs))


_PAPER = "Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014"


@register_model(family="vae", year=2014, input_kind="generative", paper=_PAPER,
                tiny={"input_shape": (1, 8, 8), "latent_dim": 2, "hidden": (16,)})
def vae(input_shape: tuple[int, int, int] = (1, 28, 28), latent_dim: int = 16, hidden: tuple[int, ...] = (512, 256),
        mmd_weight: float = 0.0, prior: str = "standard", prior_components: int = 500,
        pixel_mean: tuple[float, ...] | None = None, pixel_std: tuple[float, ...] | None = None) -> VAE:
    """Variational autoencoder with a Gaussian latent and Bernoulli pixels (MLP)."""
    return _create_vae("vae", input_shape=input_shape, latent_dim=latent_dim, hidden=hidden, kind="mlp",
                       widths=(32, 64), mmd_weight=mmd_weight, prior=prior, prior_components=prior_components,
                       pixel_mean=pixel_mean, pixel_std=pixel_std)


@register_model(family="vae", year=2014, input_kind="generative", paper=_PAPER,
                tiny={"input_shape": (1, 8, 8), "latent_dim": 2, "hidden": (16,), "widths": (4, 8), "prior": "vamp",
                      "prior_components": 3})
def conv_vae(input_shape: tuple[int, int, int] = (1, 28, 28), latent_dim: int = 16, widths: tuple[int, int] = (32, 64),
             hidden: tuple[int, ...] = (256,), mmd_weight: float = 0.0, prior: str = "standard",
             prior_components: int = 500, pixel_mean: tuple[float, ...] | None = None,
             pixel_std: tuple[float, ...] | None = None) -> VAE:
    """Variational autoencoder with a Gaussian latent and Bernoulli pixels: two stride-2
    convolutions and dense layers down, the mirror image up."""
    return _create_vae("conv_vae", input_shape=input_shape, latent_dim=latent_dim, hidden=hidden, kind="conv",
                       widths=widths, mmd_weight=mmd_weight, prior=prior, prior_components=prior_components,
                       pixel_mean=pixel_mean, pixel_std=pixel_std)
