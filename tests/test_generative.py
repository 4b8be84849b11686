"""The generative families and the deep belief net: each trains through the one training loop
at a tiny size, resumes exactly, and is sampled, scored and encoded from the CLI."""

from __future__ import annotations

import json
import math
import signal
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import deepnet as dn
from deepnet.cli import main
from deepnet.generate import frechet_distance
from deepnet.models import create_model, list_models, model_info
from deepnet.models.dbn import RBM
from deepnet.train import Callback

GENERATIVE = [n for n in list_models() if model_info(n).input_kind == "generative"]
# Options whose state the registry's tiny configs do not cover: "name/variant" -> (family, changed arguments)
VARIANTS = {"dcgan/clusters": ("dcgan", {"categories": 0, "clusters": 4}),
            "ddpm/clusters": ("ddpm", {"clusters": 3, "guidance": 1.0}),
            "ddpm/v": ("ddpm", {"prediction": "v", "noise_levels": "lognormal"})}
FAMILIES = [*GENERATIVE, "dbn", *VARIANTS]
OPTIONS = dict(epochs=3, batch_size=32, max_steps_per_epoch=4, seed=1, deterministic=True, threads=1, quiet=True,
               checkpoint_steps=3, lr=1e-3, optimizer="adam", warmup_epochs=0.5)


@pytest.fixture(scope="module")
def digits():
    return dn.load_dataset("digits")  # 8x8 images, bundled with scikit-learn


def _tiny(name: str, data=None) -> torch.nn.Module:
    torch.manual_seed(0)
    name, changes = VARIANTS.get(name, (name, {}))
    args = {**model_info(name).tiny, **changes}
    if data is not None:
        args.update({k: v for k, v in data.model_arguments().items() if k in model_info(name).accepted_arguments()})
        args.pop("num_classes", None) if name != "dbn" else None
    model = create_model(name, **args)
    model.deepnet_spec = {"name": name, "args": args}
    return model


def test_every_family_is_registered():
    assert {"autoencoder", "conv_autoencoder", "vae", "conv_vae", "dcgan", "cgan", "ddpm", "dbn"} <= set(list_models())


@pytest.mark.parametrize("name", FAMILIES)
def test_family_smoke(name, tmp_path):
    """Each part's loss reaches each of its parameters; weights round-trip through safetensors."""
    model = _tiny(name)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    for part in model.parts:
        model.zero_grad()
        losses = model.training_losses(x, y, part)
        assert torch.isfinite(losses["loss"]) and losses["loss"].dim() == 0
        losses["loss"].backward()
        unreached = [i for i, p in enumerate(model.part_parameters(part)) if p.grad is None]
        assert not unreached, f"{name}/{part}: no gradient for parameters {unreached}"
    model.eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    rebuilt = _tiny(name)
    rebuilt.load_state_dict(load_file(str(path)))
    rebuilt.eval()
    if hasattr(model, "sample"):
        labels = torch.tensor([1, 2, 0]) if model.conditional_classes else None
        images = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(0))
        assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
        again = rebuilt.sample(3, labels=labels, generator=torch.Generator().manual_seed(0))
        assert torch.equal(images, again)
    else:
        with torch.no_grad():
            assert torch.equal(model(x), rebuilt(x))


class _StopAt(Callback):
    """Asks the trainer to stop after ``step`` (as SIGTERM would): a checkpoint is written there."""

    def __init__(self, step: int) -> None:
        self.step, self.trainer = step, None

    def on_train_begin(self, logs=None):
        self.trainer = logs["trainer"]

    def on_batch_end(self, batch, logs=None):
        if self.trainer.step == self.step:
            self.trainer.pending_signal = signal.SIGTERM


@pytest.mark.parametrize("name", FAMILIES)
def test_resumed_run_equals_uninterrupted(name, digits, tmp_path):
    """Interrupted mid-epoch (step 6 of 12; checkpoints every 3 steps), then resumed: the same
    weights bit for bit (both GAN optimizers, the EMA of diffusion, the RBM phases)."""
    options = {**OPTIONS, "epochs": 4} if name == "dbn" else OPTIONS  # 2 RBMs x 1 epoch, then fine-tuning
    whole = dn.fit(_tiny(name, digits), digits, out=tmp_path / "whole", **options)
    with pytest.raises(dn.TrainingInterrupted):
        dn.fit(_tiny(name, digits), digits, out=tmp_path / "cut", callbacks=[_StopAt(6)], **options)
    resumed = dn.fit(_tiny(name, digits), digits, out=tmp_path / "cut", resume=True, **options)
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), name
    timing = ("seconds", "samples_per_second")
    for r, w in zip(resumed.history, whole.history, strict=True):
        assert {k: v for k, v in r.items() if k not in timing} == pytest.approx(
            {k: v for k, v in w.items() if k not in timing}, rel=0, abs=0, nan_ok=True)
    if name != "dbn":
        assert "test_accuracy" not in whole.metrics
        assert json.loads((tmp_path / "whole" / "model.json").read_text())["task"] == "generation"


def test_named_terms_are_logged_and_measured(digits, tmp_path):
    run = dn.fit(_tiny("dcgan", digits), digits, out=tmp_path / "gan", **{**OPTIONS, "epochs": 1})
    header = (tmp_path / "gan" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"train_d_loss", "train_g_loss", "val_d_loss", "val_g_loss"} <= set(header)
    assert (tmp_path / "gan" / "plots" / "loss_terms.png").is_file()
    assert (tmp_path / "gan" / "plots" / "samples.png").is_file()
    assert {"test_d_loss", "test_g_loss"} <= set(run.metrics)
    vae = dn.fit(_tiny("vae", digits), digits, out=tmp_path / "vae", **{**OPTIONS, "epochs": 1})
    assert vae.metrics["test_elbo_nats"] == pytest.approx(-vae.metrics["test_loss"])
    assert vae.metrics["test_kl_nats"] >= 0
    assert (tmp_path / "vae" / "plots" / "interpolations.png").is_file()
    ae = dn.fit(_tiny("autoencoder", digits), digits, out=tmp_path / "ae", **{**OPTIONS, "epochs": 1})
    assert 0 < ae.metrics["test_reconstruction_mse"] < 1


def test_dbn_pretrains_one_rbm_after_another_then_fine_tunes():
    model = create_model("dbn", input_shape=(1, 8, 8), hidden=(16, 8), pretrain_epochs=2)
    assert [model.active_parts(e) for e in range(5)] == [("rbm0",), ("rbm0",), ("rbm1",), ("rbm1",), ("classifier",)]
    assert create_model("dbn", input_shape=(1, 8, 8), hidden=(16,), pretrain_epochs=0).active_parts(0) == ("classifier",)


def test_mmd_matches_its_definition_and_enters_only_the_training_loss():
    from deepnet.models.vae import mmd_squared
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 3) + 1

    def k(x, y):
        return sum(6 * s / (6 * s + float(((x - y) ** 2).sum())) for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    expected = (sum(k(a[i], a[j]) + k(b[i], b[j]) for i, j in pairs) / 20
                - 2 * sum(k(a[i], b[j]) for i in range(5) for j in range(5)) / 25)
    assert float(mmd_squared(a, b)) == pytest.approx(expected, rel=1e-5)
    assert abs(float(mmd_squared(torch.randn(400, 3), torch.randn(400, 3)))) < 0.05 < float(mmd_squared(a, b))
    model = create_model("conv_vae", input_shape=(1, 8, 8), latent_dim=2, hidden=(16,), widths=(4, 8), mmd_weight=10.0)
    x, y = torch.randn(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)
    train = model.training_losses(x, y)
    assert float(train["loss"].detach()) == pytest.approx(float(-train["elbo_nats"].detach() + 10 * train["mmd"]), rel=1e-5)
    train["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    evaluation = model.evaluation_losses(x, y)
    assert torch.equal(evaluation["loss"], -evaluation["elbo_nats"])  # reported: the negative ELBO, unchanged
    with pytest.raises(ValueError, match="mmd_weight"):
        create_model("vae", mmd_weight=-1.0)


def test_vamp_prior_is_the_mean_of_the_pseudo_inputs_posteriors():
    torch.manual_seed(0)
    model = create_model("conv_vae", input_shape=(1, 8, 8), latent_dim=3, hidden=(16,), widths=(4, 8), prior="vamp",
                         prior_components=4, pixel_mean=(0.3,), pixel_std=(0.2,))
    z = torch.randn(5, 3)
    mean, log_variance = model.posterior(model.pseudo_inputs())
    components = torch.distributions.Normal(mean, torch.exp(0.5 * log_variance))  # the reference: torch's densities
    expected = torch.stack([components.log_prob(code).sum(1).exp().mean().log() for code in z])
    torch.testing.assert_close(model.log_prior(z), expected)
    assert torch.allclose(model.pseudo_inputs() * 0.2 + 0.3, torch.sigmoid(model.pseudo_input_logits))

    standard = create_model("vae", input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
    torch.testing.assert_close(standard.log_prior(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1))

    # K = 1 and the image is the pseudo-input: the prior is the posterior itself, so every draw's KL is 0
    single = create_model("vae", input_shape=(1, 8, 8), latent_dim=3, hidden=(16,), prior="vamp", prior_components=1)
    with torch.no_grad():
        losses = single.training_losses(single.pseudo_inputs(), torch.zeros(1, dtype=torch.long))
    assert float(losses["kl_nats"]) == pytest.approx(0.0, abs=1e-5)
    assert float(losses["loss"]) == pytest.approx(float(losses["reconstruction_nats"]), abs=1e-5)

    generator = torch.Generator().manual_seed(3)
    samples = model.sample(6, generator=generator)
    assert samples.shape == (6, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert torch.equal(samples, model.sample(6, generator=torch.Generator().manual_seed(3)))


def test_vamp_prior_arguments_are_checked():
    with pytest.raises(ValueError, match=r"`prior`.*Received: prior='vampprior'"):
        create_model("vae", prior="vampprior")
    with pytest.raises(ValueError, match=r"`prior_components`.*Received: prior_components=0"):
        create_model("conv_vae", prior="vamp", prior_components=0)
    with pytest.raises(ValueError, match=r"mmd_weight=0\. Received: prior='vamp', mmd_weight=10"):
        create_model("conv_vae", prior="vamp", mmd_weight=10.0)
    assert not any("pseudo" in key for key in create_model("conv_vae").state_dict())  # old runs load unchanged


def test_dbn_dropout_acts_only_on_the_fine_tuning_pass():
    torch.manual_seed(0)
    model = create_model("dbn", input_shape=(1, 8, 8), hidden=(16, 8), dropout=0.5, input_dropout=0.2)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    model.train()
    assert not torch.equal(model(x), model(x))  # fine-tuning: a fresh dropout mask per pass
    torch.manual_seed(1)
    cd = model.training_losses(x, y, "rbm1")["reconstruction_mse"]
    plain = create_model("dbn", input_shape=(1, 8, 8), hidden=(16, 8))
    plain.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    assert torch.equal(cd, plain.training_losses(x, y, "rbm1")["reconstruction_mse"])  # CD-k sees no dropout
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="dropout"):
        create_model("dbn", dropout=1.0)


def test_cd_surrogate_gradient_is_the_contrastive_divergence_update():
    """d/dW [F(v0) - F(v1)] = -(<v0 p(h|v0)> - <v1 p(h|v1)>) / B: Hinton's CD update, negated."""
    torch.manual_seed(0)
    rbm = RBM(6, 4)
    v0 = torch.rand(5, 6)
    v1 = torch.rand(5, 6)
    (rbm.free_energy(v0).mean() - rbm.free_energy(v1).mean()).backward()
    h0, h1 = rbm.hidden_probabilities(v0).detach(), rbm.hidden_probabilities(v1).detach()
    expected = -(v0.t() @ h0 - v1.t() @ h1) / 5
    assert torch.allclose(rbm.weight.grad, expected, atol=1e-6)
    assert torch.allclose(rbm.visible_bias.grad, -(v0 - v1).mean(0), atol=1e-6)


def test_ddim_with_every_step_and_ddpm_both_denoise_from_the_same_noise():
    model = _tiny("ddpm").eval()
    ddim = model.sample(2, generator=torch.Generator().manual_seed(0), method="ddim", steps=20)
    ddpm = model.sample(2, generator=torch.Generator().manual_seed(0), method="ddpm")
    assert ddim.shape == ddpm.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="DDIM takes between 1 and 20 steps"):
        model.sample(1, method="ddim", steps=21)


def _gaussian_denoiser(model, mu, s):
    """The optimal prediction (of the noise, or of v) for pixels drawn from N(mu, s^2) (the
    model's [-1, 1] scale)."""
    def optimal_denoiser(x, t):
        abar = model.alpha_bar[t].view(-1, 1, 1, 1)
        scaled = (x - abar.sqrt() * mu) / (abar * s * s + 1 - abar)  # (x_t - E[x_t]) / Var[x_t]
        noise = (1 - abar).sqrt() * scaled
        if model.config.prediction == "eps":
            return noise
        x0 = mu + abar.sqrt() * s * s * scaled
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    return optimal_denoiser


def test_ddim_visits_trailing_steps_and_clips_x0_only_where_noise_dominates():
    """DDIM's steps count down from T - 1 with stride T/S (Lin et al.'s "trailing" spacing), and
    its estimate of x0 is clipped to [-1, 1] only at steps whose SNR is below DDIM_CLIP_SNR."""
    from deepnet.models.ddpm import DDIM_CLIP_SNR, ddim_steps

    assert ddim_steps(250, 50)[:2] == [249, 244] and ddim_steps(250, 50)[-1] == 4
    assert ddim_steps(20, 5) == [19, 15, 11, 7, 3] and ddim_steps(20, 20) == list(range(19, -1, -1))
    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, timesteps=20, schedule="cosine").eval()
    visited = []

    def record(x, t):
        visited.append(int(t[0]))
        return torch.zeros_like(x)

    model.denoiser = record
    model.sample(2, generator=torch.Generator().manual_seed(0), method="ddim", steps=5)
    assert visited == [19, 15, 11, 7, 3]
    snr = model.alpha_bar / (1 - model.alpha_bar)
    noisy, clean = int((snr < DDIM_CLIP_SNR).nonzero().min()), int((snr >= DDIM_CLIP_SNR).nonzero().max())
    x, eps = torch.full((1, 1, 2, 2), -2.0), torch.full((1, 1, 2, 2), 3.0)  # x0 estimates below -1 at both steps
    for i, clipped in ((noisy, True), (clean, False)):
        abar = model.alpha_bar[i]
        x0, consistent = model._ddim_estimate(x, i, eps)
        raw = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        assert bool((raw < -1).all())
        assert torch.allclose(x0, torch.full_like(x, -1.0) if clipped else raw)
        assert torch.allclose(abar.sqrt() * x0 + (1 - abar).sqrt() * consistent, x)  # the step stays on x_t


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("method, steps, tolerance", [("ddpm", None, 0.06), ("ddim", 100, 0.04), ("ddim", 50, 0.06)])
def test_samplers_with_the_optimal_denoiser_recover_gaussian_data(method, steps, tolerance, prediction):
    """Pixels drawn from N(mu, s^2) have a closed-form optimal prediction; with it, each
    sampler must return the data's mean and spread. (Both fall a little short of s: ancestral
    sampling with the posterior variance, and DDIM, whose every finite step shrinks the spread.)"""
    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, timesteps=100, schedule="cosine",
                         prediction=prediction).eval()
    mu, s = 0.2, 0.3  # on the model's [-1, 1] scale
    model.denoiser = _gaussian_denoiser(model, mu, s)
    x = model.sample(1000, generator=torch.Generator().manual_seed(0), method=method, steps=steps) * 2 - 1
    assert float(x.mean()) == pytest.approx(mu, abs=0.01)
    assert float(x.std()) == pytest.approx(s, rel=tolerance)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noise_schedules_stay_valid_for_few_steps(schedule):
    from deepnet.models.ddpm import noise_schedule

    for timesteps in (2, 10, 20, 1000):
        betas = noise_schedule(schedule, timesteps)
        alpha_bar = torch.cumprod(1 - betas, 0)
        assert (betas > 0).all() and (betas < 1).all() and (alpha_bar > 0).all() and (alpha_bar[1:] < alpha_bar[:-1]).all()


def test_ddim_with_eta_1_over_every_step_is_ancestral_sampling():
    """Song et al.'s sigma_t at eta = 1 is the posterior's standard deviation: over all T steps
    the generalised DDIM step is the ancestral one, draw for draw. (The two clip their estimate
    of x0 at different steps; the optimal denoiser of narrow data keeps it inside [-1, 1], so
    that only the steps themselves are compared.)"""
    torch.manual_seed(0)
    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, timesteps=20, schedule="cosine").eval()
    model.denoiser = _gaussian_denoiser(model, 0.0, 0.2)
    ancestral = model.sample(4, generator=torch.Generator().manual_seed(3), method="ddpm")
    generalised = model.sample(4, generator=torch.Generator().manual_seed(3), method="ddim", steps=20, eta=1.0)
    assert torch.allclose(generalised, ancestral, atol=1e-5)
    with pytest.raises(ValueError, match="eta"):
        model.sample(1, method="ddim", eta=1.5)


def test_packed_discriminator_judges_consecutive_images_together():
    torch.manual_seed(0)
    model = create_model("dcgan", input_shape=(1, 8, 8), latent_dim=4, width=4, pack=2).eval()
    images = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        logits = model.discriminator(images)  # packs (0, 1) and (2, 3); image 4 is left out
        assert logits.shape == (2,)
        assert torch.allclose(logits[1:], model.discriminator(images[2:4]), atol=1e-6)
        stacked = torch.cat([images[0:1], images[1:2]], dim=1)  # (1, 2, 8, 8): the pair as channels
        discriminator = model.discriminator
        assert torch.allclose(logits[:1], discriminator.head(discriminator.features(stacked)).squeeze(1), atol=1e-6)
    with pytest.raises(ValueError, match="pack"):
        create_model("dcgan", pack=0)


def _losses_and_their_inputs(prediction):
    """A tiny DDPM's (min_snr_gamma 2) evaluation losses on six images, and the steps' x0, noise,
    abar, x_t and the U-Net's prediction, drawn again by hand with the same seed."""
    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, timesteps=20, min_snr_gamma=2.0, prediction=prediction)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(3)
    with torch.no_grad():
        losses = model.evaluation_losses(x, None)
        torch.manual_seed(3)  # the same steps and noise, by hand
        x0 = x * 2 - 1
        t = torch.randint(0, 20, (6,))
        noise = torch.randn_like(x0)
        abar = model.alpha_bar[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        return losses, x0, noise, abar, x_t, model.unet(x_t, t)


def test_min_snr_weights_each_error_by_min_snr_gamma_over_snr():
    losses, _, noise, abar, _, predicted = _losses_and_their_inputs("eps")
    errors = (predicted - noise).pow(2).mean((1, 2, 3))
    snr = abar.view(-1) / (1 - abar.view(-1))
    assert losses["loss"] == pytest.approx(float((torch.minimum(snr, torch.tensor(2.0)) / snr * errors).mean()), rel=1e-5)
    assert losses["noise_mse"] == pytest.approx(float(errors.mean()), rel=1e-5)
    assert losses["loss"] < losses["noise_mse"]  # the weights are at most 1
    with pytest.raises(ValueError, match="min_snr_gamma"):
        create_model("ddpm", min_snr_gamma=-1)


def test_v_prediction_learns_the_velocity_with_min_snr_weights_over_snr_plus_one():
    """With prediction="v" the target is sqrt(abar) eps - sqrt(1 - abar) x0, weighted by
    min(SNR, gamma) / (SNR + 1); the logged noise error is the one the prediction implies."""
    losses, x0, noise, abar, x_t, predicted = _losses_and_their_inputs("v")
    errors = (predicted - (abar.sqrt() * noise - (1 - abar).sqrt() * x0)).pow(2).mean((1, 2, 3))
    implied_noise = (1 - abar).sqrt() * x_t + abar.sqrt() * predicted
    snr = abar.view(-1) / (1 - abar.view(-1))
    assert losses["loss"] == pytest.approx(float((torch.minimum(snr, torch.tensor(2.0)) / (snr + 1) * errors).mean()), rel=1e-5)
    assert losses["noise_mse"] == pytest.approx(float((implied_noise - noise).pow(2).mean()), rel=1e-4)
    with pytest.raises(ValueError, match="prediction"):
        create_model("ddpm", prediction="x0")


def test_lognormal_noise_levels_draw_each_step_with_the_log_normal_mass_of_its_sigma():
    """noise_levels="lognormal" draws the steps so that ln sigma_t ~ N(-1.2, 1.2^2) (Karras et
    al. 2022), discretised to the nearest step; "uniform" draws every step alike."""
    from deepnet.models.ddpm import step_probabilities

    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, timesteps=250, schedule="cosine", noise_levels="lognormal")
    p = model.step_probabilities.double()
    log_sigma = 0.5 * (torch.log1p(-model.alpha_bar.double()) - torch.log(model.alpha_bar.double()))
    assert float(p.sum()) == pytest.approx(1.0) and bool((p >= 0).all())
    assert float((p * log_sigma).sum()) == pytest.approx(-1.2, abs=0.02)  # the mean and spread of ln sigma
    assert float((p * (log_sigma + 1.2) ** 2).sum()) ** 0.5 == pytest.approx(1.2, abs=0.02)
    assert float(p[log_sigma > math.log(10)].sum()) < 0.003  # the noisiest steps are rarely trained
    assert torch.equal(step_probabilities(model.alpha_bar, "uniform"), torch.full((250,), 1 / 250))
    torch.manual_seed(0)  # training draws its steps from these probabilities
    drawn = []
    with torch.no_grad(), mock.patch.object(model.unet, "forward", side_effect=lambda x, t, c=None: drawn.append(t) or x):
        for _ in range(40):
            model.evaluation_losses(torch.rand(256, 1, 8, 8), None)
    drawn = log_sigma[torch.cat(drawn)]  # 10,240 draws: their mean's standard error is 0.012
    assert float(drawn.mean()) == pytest.approx(-1.2, abs=0.05) and float(drawn.std()) == pytest.approx(1.2, abs=0.05)
    with pytest.raises(ValueError, match="noise_levels"):
        create_model("ddpm", noise_levels="edm")


def test_v_prediction_estimates_x0_and_noise_without_dividing_by_sqrt_abar():
    """From the true velocity, the estimates are the true x0 and noise, even at the last step,
    where abar is 6e-6 and an estimate from predicted noise would multiply its error by 400."""
    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, timesteps=20, schedule="cosine", prediction="v")
    x0, noise = torch.rand(3, 1, 8, 8) * 2 - 1, torch.randn(3, 1, 8, 8)
    for i in (0, 10, 19):
        abar = model.alpha_bar[i]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        estimated_x0, estimated_noise = model._estimates(x_t, i, abar.sqrt() * noise - (1 - abar).sqrt() * x0)
        torch.testing.assert_close(estimated_x0, x0, atol=1e-5, rtol=0)
        torch.testing.assert_close(estimated_noise, noise, atol=1e-5, rtol=0)


def test_dcgan_average_trails_the_generator_and_is_what_sampling_reads():
    torch.manual_seed(0)
    model = create_model("dcgan", input_shape=(1, 8, 8), latent_dim=4, width=4, ema_decay=0.75)
    plain = create_model("dcgan", input_shape=(1, 8, 8), latent_dim=4, width=4)
    start = {name: p.detach().clone() for name, p in model.generator.named_parameters()}
    x, y = torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.int64)
    model.training_losses(x, y, "discriminator")
    model.training_losses(x, y, "generator")  # the average is updated first: still the start
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(0.1)  # stands for the generator's optimizer step
    model.training_losses(x, y, "generator")
    for name, p in model.generator.named_parameters():
        assert torch.allclose(getattr(model, "ema_generator_" + name.replace(".", "_")),
                              0.75 * start[name] + 0.25 * p.detach())
    assert not hasattr(plain, "ema_generator_project_0_weight")  # no average: the state dict as before
    model.eval()
    averaged = model.averaged_generator()
    assert averaged is not model.generator and not averaged.training
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = (averaged(z) + 1) / 2
    assert torch.equal(model.sample(5, generator=torch.Generator().manual_seed(1)), expected)
    with pytest.raises(ValueError, match="ema_decay"):
        create_model("dcgan", ema_decay=1.0)


def test_dcgan_hinge_loss_and_spectral_norm():
    torch.manual_seed(0)
    model = create_model("dcgan", input_shape=(1, 8, 8), latent_dim=4, width=4, loss="hinge", spectral_norm=True,
                         layers_per_level=2)
    for _ in range(30):  # power iterations, one a forward pass in training mode
        model.discriminator(torch.randn(4, 1, 8, 8))
    for module in model.discriminator.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            matrix = module.weight.detach().flatten(1)  # the normalised weight, as Miyato et al. reshape it
            assert torch.linalg.matrix_norm(matrix, ord=2) == pytest.approx(1.0, abs=0.02)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    x, y = torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)
    model.eval()  # no power iteration: the same discriminator for both computations
    fake, labels = model._fake(6, y)
    assert labels is None
    real_logits, fake_logits = model._judge(model._real(x), y), model._judge(fake.detach(), y)
    expected = torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean()
    assert model._discriminator_loss(x, y, fake, labels)[0].item() == pytest.approx(expected.item())
    assert model._generator_loss(fake, labels)[0].item() == pytest.approx(-model._judge(fake, y).mean().item())
    with pytest.raises(ValueError, match="loss"):
        create_model("dcgan", loss="wasserstein")
    with pytest.raises(ValueError, match="layers_per_level"):
        create_model("cgan", layers_per_level=0)


def test_infogan_code_steers_the_generator_and_its_cross_entropy_enters_both_losses():
    torch.manual_seed(0)
    model = create_model("dcgan", input_shape=(1, 8, 8), latent_dim=4, width=4, categories=3, info_weight=0.5).eval()
    z = torch.randn(2, 4)
    assert not torch.equal(model(z, torch.tensor([0, 0])), model(z, torch.tensor([1, 1])))  # the code matters
    with pytest.raises(ValueError, match="categorical code"):
        model(z)
    x, y = torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)
    torch.manual_seed(1)
    losses = model.training_losses(x, y, "discriminator")
    fake, codes = model._fakes
    assert codes.shape == (6,) and int(codes.max()) < 3
    _, code_logits = model.discriminator(fake.detach(), None, with_codes=True)
    info = torch.nn.functional.cross_entropy(code_logits, codes)
    assert losses["loss"].item() == pytest.approx(losses["d_loss"].item() + 0.5 * info.item(), rel=1e-5)
    losses = model.training_losses(x, y, "generator")
    assert losses["code_nats"].item() == pytest.approx(info.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(losses["g_loss"].item() + 0.5 * info.item(), rel=1e-5)
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 1, 8, 8)
    with pytest.raises(ValueError, match="pack"):
        create_model("dcgan", categories=10, pack=2)
    with pytest.raises(ValueError, match="categories"):
        create_model("dcgan", categories=-1)


def test_self_conditioned_gan_clusters_real_images_and_draws_fakes_for_their_clusters():
    torch.manual_seed(0)
    model = create_model("dcgan", input_shape=(1, 8, 8), latent_dim=4, width=4, clusters=3)
    assert model.conditional_classes == 0  # no classes to ask for: the clusters are the model's own
    patterns = torch.stack([torch.full((1, 8, 8), v) for v in (0.0, 0.5, 1.0)])  # three images in [0, 1]
    x, y = torch.cat([patterns, patterns + 0.02, patterns - 0.02]), torch.zeros(9, dtype=torch.int64)
    model.training_losses(x, y, "discriminator")  # the first three images seed the centroids
    fake, clusters = model._fakes
    assert clusters.tolist() == [0, 1, 2] * 3  # the fakes are drawn for the real batch's clusters
    assert model.clusters.counts.tolist() == [3, 3, 3]
    real = model._real(x).flatten(1)
    for k in range(3):  # each centroid is the mean of the images assigned to it
        assert torch.allclose(model.clusters.centers[k], real[k::3].mean(0), atol=1e-6)
    model.training_losses(x, y, "generator")
    model.training_losses(x[:3] + 0.04, y[:3], "discriminator")  # a running mean over batches
    assert model.clusters.counts.tolist() == [4, 4, 4]
    both = torch.cat([real, model._real(x[:3] + 0.04).flatten(1)])
    assert torch.allclose(model.clusters.centers[1], both[1::3].mean(0), atol=1e-6)
    before = model.clusters.centers.clone()
    model.evaluation_losses(x, y)  # evaluation assigns without moving the centroids
    assert torch.equal(model.clusters.centers, before)
    # the discriminator reads the cluster: the same image scores differently under another one
    assert not torch.equal(model._judge(fake[:1], torch.tensor([0])), model._judge(fake[:1], torch.tensor([1])))
    model.clusters.counts.copy_(torch.tensor([0, 7, 0]))  # samples draw clusters in proportion to their images
    assert model._draw_codes(20, torch.Generator().manual_seed(0)).tolist() == [1] * 20
    assert model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 8, 8)
    for bad in ({"clusters": -1}, {"clusters": 3, "categories": 3}, {"clusters": 3, "pack": 2}):
        with pytest.raises(ValueError, match="clusters"):
            create_model("dcgan", **bad)


def test_self_guided_ddpm_hides_a_tenth_of_the_clusters_and_guides_sampling():
    torch.manual_seed(0)
    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, timesteps=10, clusters=3, guidance=2.0)
    seen = []
    model.unet.register_forward_hook(lambda module, args, out: seen.append(args[2].clone()))
    x = torch.rand(2000, 1, 8, 8)
    model.training_losses(x, torch.zeros(2000, dtype=torch.int64))
    hidden = (seen[-1] == 3).float().mean().item()  # the null cluster, index `clusters`
    assert hidden == pytest.approx(0.1, abs=0.02)
    assert int(model.clusters.counts.sum()) == 2000  # every training image moved the centroids
    before = model.clusters.centers.clone()
    model.evaluation_losses(x[:50], torch.zeros(50, dtype=torch.int64))
    assert torch.equal(model.clusters.centers, before)
    model.eval()
    xt, t, c = torch.randn(4, 1, 8, 8), torch.tensor([9, 5, 2, 0]), torch.tensor([0, 1, 2, 1])
    conditional, unconditional = model.denoiser(xt, t, c), model.denoiser(xt, t, torch.full_like(c, 3))
    assert not torch.allclose(conditional, unconditional)  # the cluster reaches the noise prediction
    torch.testing.assert_close(model.guided_prediction(xt, t, c, 2.0), conditional + 2.0 * (conditional - unconditional))
    assert torch.equal(model.guided_prediction(xt, t, c, 0.0), conditional)
    a = model.sample(3, generator=torch.Generator().manual_seed(0))  # the config's guidance, 2
    assert torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(0), guidance=2.0))
    assert not torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(0), guidance=0.0))
    for bad in ({"clusters": -1}, {"guidance": 1.0}, {"clusters": 3, "guidance": -1.0}):
        with pytest.raises(ValueError, match="clusters"):
            create_model("ddpm", **bad)


def test_ddpm_with_a_stride_2_stem_predicts_noise_of_the_image_shape():
    model = create_model("ddpm", input_shape=(1, 8, 8), width=8, patch=2, timesteps=10)
    assert model(torch.randn(3, 1, 8, 8), torch.tensor([0, 4, 9])).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="patch"):
        create_model("ddpm", input_shape=(1, 7, 7), patch=2)


def test_ddpm_attention_lets_every_position_see_every_other():
    from deepnet.models.ddpm import MapAttention
    torch.manual_seed(0)
    attention = MapAttention(16)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    attention(x)[0, :, 0, 0].sum().backward()
    assert x.grad[0, :, 3, 3].abs().sum() > 0  # the far corner reaches the first position in one layer
    assert x.grad[1].abs().sum() == 0  # and images of a batch stay apart
    # attention over positions: permuting them permutes the output alike
    order = torch.randperm(16)
    flat = x.detach().flatten(2)
    permuted = attention(flat[:, :, order].view(2, 16, 4, 4)).flatten(2)
    assert torch.allclose(permuted, attention(x.detach()).flatten(2)[:, :, order], atol=1e-5)
    for levels in (1, 2):
        model = create_model("ddpm", width=16, attention=levels, timesteps=10)
        assert model(torch.randn(3, 1, 28, 28), torch.tensor([0, 4, 9])).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="attention"):
        create_model("ddpm", attention=3)


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 2))
    b = rng.normal(0, 2, (20000, 2)) + np.array([3.0, 0.0])
    # |mu_a - mu_b|^2 + sum_i (s_a,i - s_b,i)^2 for diagonal covariances: 9 + 2 * (1 - 2)^2 = 11
    assert frechet_distance(a, b) == pytest.approx(11.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_bad_model_arguments_fail_with_the_fix():
    with pytest.raises(ValueError, match="divisible by 4"):
        create_model("dcgan", input_shape=(1, 10, 10))
    with pytest.raises(ValueError, match="schedule"):
        create_model("ddpm", schedule="quadratic")
    with pytest.raises(ValueError, match="corruption"):
        create_model("autoencoder", corruption=1.5)
    with pytest.raises(ValueError, match="divisible by 4"):
        create_model("conv_vae", input_shape=(1, 10, 10))
    with pytest.raises(ValueError, match="'rbm' or 'glorot'"):
        create_model("dbn", init="he")


# -- the CLI: sample, score, encode --------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs on the digits: a classifier (the default scorer: 'classifier' beside the
    others), a conditional GAN, a VAE and an autoencoder."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--data", "digits", "--epochs", "1", "--quiet", "train.threads=1", "train.max_steps_per_epoch=3"]
    assert main(["train", "--model", "mlp", "--out", str(root / "classifier"), *common]) == 0
    assert main(["train", "--model", "cgan", "--out", str(root / "cgan"), *common, "model.args.width=4",
                 "model.args.latent_dim=4"]) == 0
    assert main(["train", "--model", "vae", "--out", str(root / "vae"), *common, "model.args.hidden=[16]",
                 "model.args.latent_dim=2"]) == 0
    assert main(["train", "--model", "autoencoder", "--out", str(root / "ae"), *common, "model.args.hidden=[16]",
                 "model.args.code_dim=3"]) == 0
    assert main(["train", "--model", "ddpm", "--out", str(root / "ddpm"), *common, "model.args.width=8",
                 "model.args.timesteps=10"]) == 0
    return root


def test_sample_writes_a_grid_and_scores(runs, capsys):
    assert main(["sample", str(runs / "cgan"), "--n", "40", "--label", "3", "--score"]) == 0
    assert (runs / "cgan" / "samples.png").is_file()
    scores = json.loads((runs / "cgan" / "samples.json").read_text())
    assert scores["n"] == 40 and scores["label"] == 3
    assert {"confident_fraction", "mean_confidence", "class_histogram", "frechet_distance", "label_fraction"} <= set(scores)
    assert sum(scores["class_histogram"].values()) == pytest.approx(1.0)
    assert scores["frechet_distance"] >= 0
    assert "Fréchet distance" in capsys.readouterr().out
    assert main(["sample", str(runs / "ddpm"), "--n", "8", "--method", "ddim", "--steps", "5", "--eta", "1",
                 "--score", "--classifier", str(runs / "classifier")]) == 0
    scores = json.loads((runs / "ddpm" / "samples.json").read_text())
    assert (scores["method"], scores["steps"], scores["eta"]) == ("ddim", 5, 1.0)
    out = runs / "vae-grid.png"
    assert main(["sample", str(runs / "vae"), "--n", "16", "--out", str(out), "--classifier", str(runs / "classifier")]) == 0
    assert out.is_file()


def test_scoring_refuses_missing_test_data_before_drawing(runs, tmp_path, monkeypatch, capsys):
    """A diffusion model takes minutes to draw 1,000 samples: the data the Fréchet distance
    needs is looked for first."""
    import deepnet.generate._sample as sample_module

    judge = tmp_path / "mnist-classifier"
    judge.mkdir()
    for name in ("config.yaml", "model.safetensors", "metrics.json"):
        (judge / name).write_bytes((runs / "classifier" / name).read_bytes())
    spec = json.loads((runs / "classifier" / "model.json").read_text())
    (judge / "model.json").write_text(json.dumps({**spec, "dataset": "mnist"}))
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(sample_module, "draw_samples", lambda *a, **k: pytest.fail("drew samples before finding the data"))
    assert main(["sample", str(runs / "vae"), "--n", "16", "--score", "--classifier", str(judge)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train-images-idx3-ubyte.gz" in err and "DEEPNET_DATA" in err


def test_evaluate_reports_the_objective_terms(runs):
    from deepnet.evaluate import evaluate_run

    result = evaluate_run(runs / "vae")
    assert {"test_loss", "test_elbo_nats", "test_kl_nats"} <= set(result) and "test_accuracy" not in result


def test_a_generative_model_refuses_non_image_data(tmp_path, capsys):
    table = tmp_path / "table.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30)))
    assert main(["train", "--model", "vae", "--data", str(table), "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "generates images" in capsys.readouterr().err


def test_encode_writes_the_codes(runs, tmp_path):
    out = tmp_path / "codes.npy"
    assert main(["encode", str(runs / "ae"), "--data", "digits", "--out", str(out)]) == 0
    codes = np.load(out)
    assert codes.shape == (len(dn.load_dataset("digits").test), 3) and np.isfinite(codes).all()


@pytest.mark.parametrize("case, message", [
    ("classifier", "holds a classification model"),
    ("label-unconditional", "unconditional model"),
    ("label-range", "--label 12 is out of range: .* knows classes 0..9"),
    ("encode-classifier", "has no encoder"),
    ("encode-gan", "has no encoder"),
    ("score-shape", r"reads inputs of shape \(1, 28, 28\)"),
    ("no-classifier", "No classifier run at"),
    ("ddim-on-gan", "diffusion sampler"),
    ("eta-without-ddim", "add --method ddim"),
    ("eta-range", "expected 0 <= eta <= 1"),
    ("guidance-unclustered", "trained with clusters"),
])
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, case, message):
    if case == "score-shape":  # a classifier made for 28x28 images cannot judge 8x8 samples
        wrong = tmp_path / "wide"
        wrong.mkdir()
        spec = json.loads((runs / "classifier" / "model.json").read_text())
        for name in ("config.yaml", "model.safetensors", "metrics.json"):
            (wrong / name).write_bytes((runs / "classifier" / name).read_bytes())
        (wrong / "model.json").write_text(json.dumps({**spec, "input_shape": [1, 28, 28]}))
    argv = {
        "classifier": ["sample", str(runs / "classifier")],
        "label-unconditional": ["sample", str(runs / "vae"), "--label", "1"],
        "label-range": ["sample", str(runs / "cgan"), "--label", "12"],
        "encode-classifier": ["encode", str(runs / "classifier"), "--data", "digits", "--out", str(tmp_path / "c.npy")],
        "encode-gan": ["encode", str(runs / "cgan"), "--data", "digits", "--out", str(tmp_path / "c.npy")],
        "score-shape": ["sample", str(runs / "vae"), "--score", "--classifier", str(tmp_path / "wide")],
        "no-classifier": ["sample", str(runs / "vae"), "--score", "--classifier", str(tmp_path / "none")],
        "ddim-on-gan": ["sample", str(runs / "cgan"), "--method", "ddim"],
        "eta-without-ddim": ["sample", str(runs / "ddpm"), "--eta", "1"],
        "eta-range": ["sample", str(runs / "ddpm"), "--method", "ddim", "--eta", "2"],
        "guidance-unclustered": ["sample", str(runs / "ddpm"), "--guidance", "2"],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err), err
