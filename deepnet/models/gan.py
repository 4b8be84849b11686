"""Generative adversarial networks: DCGAN (Radford et al. 2016) for small images, and its
class-conditional variant.

The generator maps a Gaussian code through a linear layer to a ``(2w, H/4, W/4)`` map and two
stride-2 transposed convolutions to the image; the discriminator mirrors it with stride-2
convolutions. The DCGAN stabilisers: batch norm in the generator (not on its output) and in
the discriminator (not on its input layer), LeakyReLU(0.2) in the discriminator, weights from
N(0, 0.02), Adam with beta1 = 0.5 (set in the config), the non-saturating generator loss, and
one-sided label smoothing (real targets 0.9, Salimans et al. 2016).
With ``ema_decay > 0`` sampling reads an exponential moving average of the generator's weights
(Yazıcı et al. 2019), kept as buffers so that it is saved and resumed with the weights; the
averaged generator's batch-norm statistics are measured afresh on a fixed batch of codes
before sampling ("standing statistics", Brock et al. 2019), since the running statistics
belong to the trained weights, not to their average.
With ``pack > 1`` the (unconditional) discriminator judges ``pack`` images at a time, stacked
as channels (PacGAN, Lin et al. 2018): a generator that favours some modes makes packs unlike
the data's, which the discriminator can see; it counters mode dropping and an uneven mix of
classes.
Two later stabilisers, both off by default: ``loss="hinge"`` trains with the hinge loss
(discriminator ``relu(1 - D(real)) + relu(1 + D(fake))``, generator ``-D(fake)``; Lim & Ye
2017, Miyato et al. 2018), and ``spectral_norm=True`` divides every discriminator weight by
its largest singular value (one power iteration a forward pass, Miyato et al. 2018) in place
of the discriminator's batch norm, which bounds its Lipschitz constant. ``layers_per_level=2``
adds a 3x3 stride-1 convolution at each resolution of both networks, as the "standard CNN"
of Miyato et al.'s experiments does.
With ``categories=k`` (InfoGAN, Chen et al. 2016) the generator also reads a categorical
code, one of ``k`` values drawn uniformly and fed as a one-hot vector, and a head on the
discriminator's features predicts that code from each fake; both networks add ``info_weight``
times the head's cross-entropy, a lower bound on the mutual information between the code and
the image. No labels are used. Chen et al. found that on MNIST the code comes to pick the digit
(5% error), so that a sample is drawn from one class's region instead of from between two;
docs/generative.md says what it did here.
With ``clusters=k`` the unconditional GAN conditions itself on clusters of the data that it finds
without labels (self-conditioning, Liu et al. 2020, who cluster the discriminator's features;
here the pixels, which suffices for digits): each real image is assigned to the nearest of ``k``
centroids, kept by mini-batch k-means (``_clusters.OnlineKMeans``); the networks are the
conditional variant's, given the cluster in place of a class, and the fakes are drawn for the
clusters of the real batch. Samples draw a cluster in proportion to the images it has taken. A
generator that only has to draw within one cluster of similar images makes fewer shapes that
fall between two digits. No labels are used.
The conditional variant feeds a label embedding to the generator beside the code and gives
the discriminator a projection term, ``<embed(y), features>`` (Miyato & Koyama 2018).

Training alternates two parts with an optimizer each: ``discriminator`` then ``generator``.
The generator step reuses the batch of fakes drawn in the discriminator step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepnet.models._clusters import OnlineKMeans
from deepnet.models._layers import check_image_shape
from deepnet.models._pixels import PixelScale
from deepnet.models._registry import register_model

__all__ = ["DCGAN", "DCGANConfig"]

REAL_TARGET = 0.9  # one-sided label smoothing
STANDING_CODES = 1024  # codes that measure the averaged generator's batch-norm statistics
STANDING_SEED = 0  # their own random stream: sampling's generator is left untouched


@dataclass(frozen=True)
class DCGANConfig:
    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 64
    width: int = 64  # channels of the widest-resolution feature map; the other stage has 2x
    num_classes: int = 10
    conditional: bool = False
    ema_decay: float = 0.0  # > 0: sampling reads a moving average of the generator's weights
    pack: int = 1  # images the discriminator judges together (PacGAN); 1: one at a time
    loss: str = "bce"  # bce: the non-saturating loss with one-sided label smoothing; hinge
    spectral_norm: bool = False  # spectral normalisation of the discriminator (instead of its batch norm)
    layers_per_level: int = 1  # 2: a 3x3 stride-1 convolution at each resolution of both networks
    categories: int = 0  # > 0: InfoGAN's categorical code with this many values; 0: none
    info_weight: float = 1.0  # InfoGAN's lambda: the weight of the code's cross-entropy
    clusters: int = 0  # > 0: condition on this many k-means clusters of the data (self-conditioning); 0: none
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None


def _refine(channels: int, count: int, norm, activation) -> list[nn.Module]:
    """``count`` 3x3 stride-1 convolutions keeping the channels, each with its norm and activation."""
    layers: list[nn.Module] = []
    for _ in range(max(count, 0)):
        normalise = norm(channels)
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=isinstance(normalise, nn.Identity)), normalise, activation()]
    return layers


class Generator(nn.Module):
    """Codes ``(B, latent_dim)`` (and labels ``(B,)``) -> images ``(B, C, H, W)`` in [-1, 1]."""

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        channels, height, width = config.input_shape
        w = config.width
        self.start = (2 * w, height // 4, width // 4)
        conditions = _conditions(config)
        self.embed = nn.Embedding(conditions, config.latent_dim) if conditions else None
        self.categories = config.categories
        inputs = config.latent_dim * (2 if conditions else 1) + config.categories
        self.project = nn.Sequential(nn.Linear(inputs, 2 * w * (height // 4) * (width // 4), bias=False),
                                     nn.BatchNorm1d(2 * w * (height // 4) * (width // 4)), nn.ReLU(inplace=True))
        extra = config.layers_per_level - 1
        self.upsample = nn.Sequential(
            *_refine(2 * w, extra, nn.BatchNorm2d, nn.ReLU),  # (B, 2w, H/4, W/4)
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            *_refine(w, extra, nn.BatchNorm2d, nn.ReLU),  # (B, w, H/2, W/2)
            nn.ConvTranspose2d(w, channels, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)  # (B, 2 * latent_dim)
        elif self.categories:  # labels: the categorical codes
            z = torch.cat([z, F.one_hot(labels, self.categories).to(z.dtype)], dim=1)  # (B, latent_dim + categories)
        return self.upsample(self.project(z).view(len(z), *self.start))  # (B, 2w, H/4, W/4) -> (B, C, H, W)


class Discriminator(nn.Module):
    """Images ``(B, C, H, W)`` in [-1, 1] (and labels) -> real/fake logits ``(B // pack,)``, one
    per pack of consecutive images (a remainder of fewer than ``pack`` images is not judged)."""

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        channels, height, width = config.input_shape
        w = config.width
        self.pack = config.pack
        features = 2 * w * (height // 4) * (width // 4)
        extra = config.layers_per_level - 1
        norm = (lambda n: nn.Identity()) if config.spectral_norm else nn.BatchNorm2d
        first = [nn.Conv2d(channels * config.pack, w, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)] if extra else []
        self.features = nn.Sequential(
            *first, *_refine(w, extra - 1, norm, lambda: nn.LeakyReLU(0.2)),
            nn.Conv2d(w if extra else channels * config.pack, w, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),  # (B, w, H/2, W/2)
            *_refine(w, extra, norm, lambda: nn.LeakyReLU(0.2)),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=config.spectral_norm), norm(2 * w),
            nn.LeakyReLU(0.2, inplace=True), nn.Flatten())  # (B, 2w * H/4 * W/4)
        self.head = nn.Linear(features, 1)
        conditions = _conditions(config)
        self.embed = nn.Embedding(conditions, features) if conditions else None
        self.code_head = nn.Linear(features, config.categories) if config.categories else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                with_codes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``with_codes``: also the logits ``(B, categories)`` of the categorical code (InfoGAN)."""
        if self.pack > 1:
            packs = len(images) // self.pack
            images = images[:packs * self.pack].reshape(packs, -1, *images.shape[2:])  # (B/pack, pack*C, H, W)
        h = self.features(images)
        logits = self.head(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * h).sum(1)  # the projection term
        return (logits, self.code_head(h)) if with_codes else logits


class DCGAN(nn.Module):
    """``forward(z, labels)``: codes ``(B, latent_dim)`` -> images ``(B, C, H, W)`` in [0, 1]."""

    parts = ("discriminator", "generator")

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        self.conditional_classes = config.num_classes if config.conditional else 0
        self.code_values = self.conditional_classes or config.categories or config.clusters  # what the generator's labels range over
        self.condition_values = _conditions(config)  # what both networks read beside the image or code (0: nothing)
        self.pixels = PixelScale(config.input_shape[0], config.pixel_mean, config.pixel_std)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)
        if config.spectral_norm:  # after the initialisation, which writes the raw weights
            for module in list(self.discriminator.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(module)
        self.clusters = OnlineKMeans(config.clusters, math.prod(config.input_shape)) if config.clusters else None
        self._fakes: tuple[torch.Tensor, torch.Tensor | None] | None = None  # from the discriminator step: fakes, their labels
        # The average is kept as buffers (saved with the weights, not trained); it is updated at
        # the start of each generator step, so it trails the generator by one update.
        for name, p in self.generator.named_parameters() if config.ema_decay else ():
            self.register_buffer(_ema_buffer(name), p.detach().clone())

    def _update_average(self) -> None:
        with torch.no_grad():
            for name, p in self.generator.named_parameters():
                getattr(self, _ema_buffer(name)).lerp_(p, 1 - self.config.ema_decay)

    def averaged_generator(self) -> Generator:
        """A copy of the generator with the averaged weights (the generator itself when
        ``ema_decay`` is 0), in eval mode, its batch-norm statistics measured on fixed codes."""
        if not self.config.ema_decay:
            return self.generator
        averaged = copy.deepcopy(self.generator)
        device = next(averaged.parameters()).device
        codes = torch.Generator().manual_seed(STANDING_SEED)
        z = torch.randn(STANDING_CODES, self.config.latent_dim, generator=codes).to(device)
        labels = self._draw_codes(STANDING_CODES, codes).to(device)
        with torch.no_grad():
            for name, p in averaged.named_parameters():
                p.copy_(getattr(self, _ema_buffer(name)))
            for module in averaged.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.reset_running_stats()
                    module.momentum = None  # a plain mean over the one batch
            averaged.train()(z, labels if self.code_values else None)
        return averaged.eval()

    def part_parameters(self, part: str) -> list[nn.Parameter]:
        return list(getattr(self, part).parameters())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: the classes of a conditional model, the categorical codes of an InfoGAN."""
        if self.code_values and labels is None:
            raise ValueError(f"This generator also reads a class or categorical code: pass labels, integers in "
                             f"[0, {self.code_values}), one per code.")
        return (self.generator(z, labels if self.code_values else None) + 1) / 2

    def _fake(self, n: int, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fakes ``(n, C, H, W)`` in [-1, 1] and what the generator read beside the noise: the
        real batch's labels (conditional) or clusters, fresh uniform codes (InfoGAN), or None."""
        z = torch.randn(n, self.config.latent_dim, device=labels.device)
        if self.condition_values:
            used = labels
        elif self.config.categories:
            used = torch.randint(0, self.config.categories, (n,), device=labels.device)
        else:
            used = None
        return self.generator(z, used), used

    def _draw_codes(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """What an unprompted sample reads beside its noise: a cluster in proportion to the images
        it has taken (uniform before training), else a uniform class or categorical code."""
        if self.clusters is not None:
            return self.clusters.draw(n, generator)
        return torch.randint(0, max(self.code_values, 1), (n,), generator=generator)

    def _conditions(self, x: torch.Tensor, y: torch.Tensor, update: bool) -> torch.Tensor:
        """What the discriminator reads beside a real batch: its labels, or with ``clusters`` its clusters."""
        return self.clusters.assign(self._real(x), update) if self.clusters is not None else y

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixels.to_pixels(x) * 2 - 1

    def _judge(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.discriminator(images, labels if self.condition_values else None)

    def _judge_fake(self, fake: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of fakes, and the cross-entropy of their categorical codes (0 without)."""
        if not self.config.categories:
            return self._judge(fake, labels), torch.zeros((), device=fake.device)
        logits, code_logits = self.discriminator(fake, None, with_codes=True)
        return logits, F.cross_entropy(code_logits.float(), labels)

    def _discriminator_loss(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor,
                            labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The adversarial loss and the code's cross-entropy; ``labels``: what the fakes were made from."""
        real_logits = self._judge(self._real(x), y)
        fake_logits, info = self._judge_fake(fake.detach(), labels)
        if self.config.loss == "hinge":
            return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean(), info
        return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, REAL_TARGET))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))), info

    def _generator_loss(self, fake: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        fake_logits, info = self._judge_fake(fake, labels)
        if self.config.loss == "hinge":
            return -fake_logits.mean(), info
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits)), info  # non-saturating

    def training_losses(self, x: torch.Tensor, y: torch.Tensor, part: str) -> dict[str, torch.Tensor]:
        """The fakes of a conditional model are labelled like the real batch, so the class mix
        follows the data (with ``clusters``, like the real batch's clusters). The code's
        cross-entropy is logged once, from the generator step."""
        weight = self.config.info_weight
        if part == "discriminator":
            y = self._conditions(x, y, update=True)
            fake, labels = self._fake(len(x), y)
            self._fakes = (fake, labels)
            loss, info = self._discriminator_loss(x, y, fake, labels)
            return {"loss": loss + weight * info, "d_loss": loss}
        if self.config.ema_decay:
            self._update_average()
        fake, labels = self._fakes if self._fakes is not None else self._fake(len(x), self._conditions(x, y, update=False))
        self._fakes = None
        loss, info = self._generator_loss(fake, labels)
        terms = {"loss": loss + weight * info, "g_loss": loss}
        if self.config.categories:
            terms["code_nats"] = info.detach()
        return terms

    def evaluation_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self._conditions(x, y, update=False)
        fake, labels = self._fake(len(x), y)
        (d_loss, _), (g_loss, info) = self._discriminator_loss(x, y, fake, labels), self._generator_loss(fake, labels)
        terms = {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}
        if self.config.categories:
            terms["code_nats"] = info
        return terms

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` in [0, 1]; a conditional model draws ``labels`` (default:
        uniform), an InfoGAN uniform categorical codes, a self-conditioned one clusters in
        proportion to their images. Reads the averaged generator when
        ``ema_decay > 0``."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(device)
        if self.config.categories or self.config.clusters:
            labels = self._draw_codes(n, generator)
        elif self.conditional_classes and labels is None:
            labels = torch.randint(0, self.conditional_classes, (n,), generator=generator)
        labels = labels.to(device) if labels is not None and self.code_values else None
        return (self.averaged_generator()(z, labels) + 1) / 2


def _conditions(config: DCGANConfig) -> int:
    """The values of what both networks read beside the image or code: classes, clusters, or 0."""
    return config.num_classes if config.conditional else config.clusters


def _ema_buffer(name: str) -> str:
    return "ema_generator_" + name.replace(".", "_")


def _create_dcgan(conditional: bool, **kwargs) -> DCGAN:
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    check_image_shape("dcgan", kwargs["input_shape"])
    _, height, width = kwargs["input_shape"]
    if height % 4 or width % 4:
        raise ValueError("DCGAN halves the side twice: height and width must be divisible by 4. "
                         f"Received: input_shape={kwargs['input_shape']}.")
    if kwargs.get("pack", 1) < 1:  # cgan has no `pack`: its discriminator judges each image with its label
        raise ValueError(f"Received an invalid value for `pack`: expected an integer >= 1 (1: one image at a time). "
                         f"Received: pack={kwargs['pack']}.")
    if kwargs.get("loss", "bce") not in ("bce", "hinge"):
        raise ValueError(f"Received an invalid value for `loss`: expected 'bce' (non-saturating) or 'hinge'. "
                         f"Received: loss={kwargs['loss']!r}.")
    if kwargs.get("categories", 0) < 0 or kwargs.get("info_weight", 1.0) < 0:
        raise ValueError(f"Received an invalid value for `categories`/`info_weight`: expected categories >= 0 (0: no code) "
                         f"and info_weight >= 0. Received: categories={kwargs.get('categories')}, "
                         f"info_weight={kwargs.get('info_weight')}.")
    if kwargs.get("categories", 0) and kwargs.get("pack", 1) > 1:
        raise ValueError("Received `categories` with `pack` > 1: the code head judges one image at a time; "
                         "set pack=1 or categories=0.")
    if kwargs.get("clusters", 0) < 0 or (kwargs.get("clusters", 0) and (kwargs.get("categories", 0) or kwargs.get("pack", 1) > 1)):
        raise ValueError(f"Received an invalid value for `clusters`: expected an integer >= 0 (0: none), without "
                         f"`categories` or `pack` > 1 (the discriminator reads each image's cluster). Received: "
                         f"clusters={kwargs.get('clusters')}, categories={kwargs.get('categories', 0)}, pack={kwargs.get('pack', 1)}.")
    if kwargs.get("layers_per_level", 1) < 1:
        raise ValueError(f"Received an invalid value for `layers_per_level`: expected an integer >= 1 (1: Radford et al.'s "
                         f"DCGAN). Received: layers_per_level={kwargs['layers_per_level']}.")
    if not 0 <= kwargs.get("ema_decay", 0.0) < 1:
        raise ValueError(f"Received an invalid value for `ema_decay`: expected 0 <= ema_decay < 1 (0: no average). "
                         f"Received: ema_decay={kwargs['ema_decay']}.")
    for key in ("pixel_mean", "pixel_std"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    return DCGAN(DCGANConfig(conditional=conditional, **kwargs))


_PAPER = ("Radford, Metz & Chintala, Unsupervised Representation Learning with Deep Convolutional Generative "
          "Adversarial Networks, ICLR 2016")


@register_model(family="gan", year=2016, input_kind="generative", paper=_PAPER,
                tiny={"input_shape": (1, 8, 8), "latent_dim": 4, "width": 4, "ema_decay": 0.9, "categories": 3,
                      "loss": "hinge", "spectral_norm": True, "layers_per_level": 2})
def dcgan(input_shape: tuple[int, int, int] = (1, 28, 28), latent_dim: int = 64, width: int = 64, ema_decay: float = 0.0,
          pack: int = 1, loss: str = "bce", spectral_norm: bool = False, layers_per_level: int = 1, categories: int = 0,
          info_weight: float = 1.0, clusters: int = 0, pixel_mean: tuple[float, ...] | None = None,
          pixel_std: tuple[float, ...] | None = None) -> DCGAN:
    """DCGAN generator and discriminator for small images."""
    return _create_dcgan(False, input_shape=input_shape, latent_dim=latent_dim, width=width, ema_decay=ema_decay,
                         pack=pack, loss=loss, spectral_norm=bool(spectral_norm), layers_per_level=layers_per_level,
                         categories=categories, info_weight=info_weight, clusters=clusters, pixel_mean=pixel_mean,
                         pixel_std=pixel_std)


@register_model(family="gan", year=2018, input_kind="generative",
                paper=_PAPER + "; Miyato & Koyama, cGANs with Projection Discriminator, ICLR 2018",
                tiny={"input_shape": (1, 8, 8), "num_classes": 3, "latent_dim": 4, "width": 4})
def cgan(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, latent_dim: int = 64, width: int = 64,
         ema_decay: float = 0.0, loss: str = "bce", spectral_norm: bool = False, layers_per_level: int = 1,
         pixel_mean: tuple[float, ...] | None = None, pixel_std: tuple[float, ...] | None = None) -> DCGAN:
    """Class-conditional DCGAN: label embedding in the generator, projection discriminator."""
    if num_classes < 2:
        raise ValueError(f"Received an invalid value for `num_classes`: a conditional GAN needs >= 2 classes. "
                         f"Received: num_classes={num_classes}.")
    return _create_dcgan(True, input_shape=input_shape, num_classes=num_classes, latent_dim=latent_dim, width=width,
                         ema_decay=ema_decay, loss=loss, spectral_norm=bool(spectral_norm), layers_per_level=layers_per_level,
                         pixel_mean=pixel_mean, pixel_std=pixel_std)
