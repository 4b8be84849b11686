"""Adversarial robustness: attacks, the robustness report, defences (issue 13).

Tiny models on scikit-learn's bundled 8x8 digits; nothing here reads the shared datasets.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepnet.cli import main
from deepnet.models import create_model
from deepnet.robust import PixelModel, deepfool, fgsm, least_likely, perturbation_norm, pgd, project
from deepnet.robust.attacks import fooled
from deepnet.robust.report import masking_flags, parse_eps
from deepnet.train import fit, load_run

from conftest import blobs

TRAIN = ["train.threads=1", "train.optimizer=adam", "train.lr=0.01", "train.checkpoint_every=0"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "digits-cnn"
    assert main(["train", "--model", "small-cnn", "--data", "digits", "--epochs", "8", "--out", str(out), "--quiet",
                 *TRAIN]) == 0
    return out


def _pixels(run_dir, n=64):
    run = load_run(run_dir)
    from deepnet.train.experiment import load_experiment_data

    prep = run.model_spec["preprocessing"]
    model = PixelModel(run.model, prep["mean"], prep["std"])
    test = load_experiment_data(run.config).test
    x = model.to_pixels(test.x[:n].float())
    return model, x, test.y[:n]


def _bn_dropout_model() -> PixelModel:
    torch.manual_seed(0)
    net = create_model("convnet", input_shape=(1, 8, 8), num_classes=10, widths=(4, 8), dropout=0.5)
    return PixelModel(net, [0.3], [0.4])


ATTACKS = {
    "fgsm": lambda m, x, y, eps, norm: fgsm(m, x, y, eps, norm=norm),
    "pgd": lambda m, x, y, eps, norm: pgd(m, x, y, eps, norm=norm, steps=5, restarts=2, step_size=eps / 2),
    "pgd-margin": lambda m, x, y, eps, norm: pgd(m, x, y, eps, norm=norm, steps=5, objective="margin"),
    "pgd-targeted": lambda m, x, y, eps, norm: pgd(m, x, y, eps, norm=norm, steps=5, target=(y + 1) % 10),
    "pgd-every-step": lambda m, x, y, eps, norm: pgd(m, x, y, eps, norm=norm, steps=5, restarts=2, early_stop=False),
    "deepfool": lambda m, x, y, eps, norm: deepfool(m, x, y, eps, norm=norm, steps=5),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_leave_the_weights_and_every_module_mode_unchanged(attack):
    model = _bn_dropout_model()
    model.train()
    model.model.classifier.eval()  # a mixed state must come back as it was, module by module
    modes = {name: m.training for name, m in model.named_modules()}
    weights = {k: v.clone() for k, v in model.state_dict().items()}  # batch-norm running stats included
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    ATTACKS[attack](model, x, y, 0.2, "linf")
    assert {name: m.training for name, m in model.named_modules()} == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.3), ("l2", 0.5), ("l2", 2.0)])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_perturbations_stay_in_the_eps_ball_and_the_pixel_range(attack, norm, eps):
    model = _bn_dropout_model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 1, 8, 8, generator=g)
    x[:4] = (x[:4] > 0.5).float()  # saturated pixels: the box binds at 0 and 1
    y = torch.randint(0, 10, (12,), generator=g)
    x_adv = ATTACKS[attack](model, x, y, eps, norm)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert perturbation_norm(x_adv, x, norm).max() <= eps * (1 + 1e-5) + 1e-6


def test_pixel_model_equals_the_model_on_normalised_inputs(digits_run):
    run = load_run(digits_run)
    from deepnet.train.experiment import load_experiment_data

    prep = run.model_spec["preprocessing"]
    test = load_experiment_data(run.config).test
    model = PixelModel(run.model, prep["mean"], prep["std"])
    pixels = model.to_pixels(test.x[:32])
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), run.model(test.x[:32]), atol=1e-4, rtol=1e-4)


def test_pgd_is_at_least_as_strong_as_fgsm_and_breaks_an_undefended_model(digits_run):
    model, x, y = _pixels(digits_run, 128)
    with torch.no_grad():
        clean = (model(x).argmax(-1) == y).float().mean()
    assert clean > 0.8
    at_fgsm = (model(fgsm(model, x, y, 0.2)).argmax(-1) == y).float().mean()
    at_pgd = (model(pgd(model, x, y, 0.2, steps=20)).argmax(-1) == y).float().mean()
    assert at_pgd <= at_fgsm < clean
    assert (model(pgd(model, x, y, 0.5, steps=20)).argmax(-1) == y).float().mean() <= 0.02


def test_more_restarts_never_help_the_model(digits_run):
    model, x, y = _pixels(digits_run, 128)
    accuracies = []
    for restarts in (1, 4):
        x_adv = pgd(model, x, y, 0.08, steps=3, restarts=restarts, generator=torch.Generator().manual_seed(0))
        accuracies.append((model(x_adv).argmax(-1) == y).float().mean().item())
    assert accuracies[1] <= accuracies[0]


def test_targeted_pgd_reaches_the_least_likely_class(digits_run):
    model, x, y = _pixels(digits_run, 64)
    target = least_likely(model, x)
    assert (target != y).all()
    x_adv = pgd(model, x, y, 0.5, steps=40, target=target)
    assert fooled(model(x_adv), y, target).float().mean() >= 0.95


def test_margin_loss_attacks_a_saturated_softmax():
    """A model whose logits are scaled by 1000 (what defensive distillation amounts to at
    test time): the cross-entropy gradient vanishes, the margin on the logits does not."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.mul_(10_000)
    model = PixelModel(net, [0.0], [1.0])
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        top2 = model(x).topk(2).values
    x = x[top2[:, 0] - top2[:, 1] > 200]  # softmax saturated in float32
    assert len(x) >= 16
    with torch.no_grad():
        y = model(x).argmax(-1)
    assert (model(fgsm(model, x, y, 0.3)).argmax(-1) == y).all()  # no gradient: FGSM stands still
    assert (model(pgd(model, x, y, 0.3, objective="margin", steps=10)).argmax(-1) != y).float().mean() > 0.9


def test_deepfool_once_projected_equals_deepfool_at_each_eps():
    model = _bn_dropout_model()
    x, y = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.arange(8)
    unbounded = deepfool(model, x, y, float("inf"), steps=5)
    for eps in (0.2, 1.0):
        torch.testing.assert_close(x + project(unbounded - x, x, eps, "l2"), deepfool(model, x, y, eps, steps=5))


def test_parse_eps():
    assert parse_eps("0.3,0.05,0.1") == [0.05, 0.1, 0.3]
    for bad in ("", "0.1,abc", "-0.1", "0", "nan"):
        with pytest.raises(ValueError, match="--eps"):
            parse_eps(bad)
    with pytest.raises(ValueError, match="pixels lie in"):
        parse_eps("8", "linf")
    assert parse_eps("2.0", "l2") == [2.0]


def test_masking_flags_name_each_sign():
    def row(method, eps, accuracy, objective="ce", source=None):
        return {"method": method, "norm": "linf", "eps": eps, "targeted": False, "n": 100, "accuracy": accuracy,
                "objective": objective, "source": source, "steps": 40}

    rows = [row("fgsm", 0.3, 0.40), row("pgd", 0.3, 0.90), row("transfer", 0.3, 0.20, source="other"),
            row("pgd", 0.3, 0.01, objective="margin"), row("fgsm", 0.1, 0.95), row("pgd", 0.1, 0.95)]
    checks = {"zero_gradient_fraction": 0.9, "unbounded": {"accuracy": 0.8}}
    names = [flag["check"] for flag in masking_flags(rows, checks, distilled=True)]
    assert sorted(names) == ["margin_stronger", "single_step_stronger", "transfer_stronger", "unbounded", "zero_gradients"]
    assert masking_flags(rows[4:], {"zero_gradient_fraction": 0.0, "unbounded": {"accuracy": 0.0}}) == []


def test_attack_cli_writes_the_report_and_figures(digits_run, capsys):
    assert main(["attack", str(digits_run), "--method", "fgsm,pgd", "--eps", "0.1,0.3", "--steps", "10", "--n", "64",
                 "--threads", "1"]) == 0
    assert main(["attack", str(digits_run), "--method", "pgd", "--eps", "0.5", "--steps", "20", "--n", "64",
                 "--targeted"]) == 0
    report = json.loads((digits_run / "robustness.json").read_text())
    assert 0.8 < report["clean_accuracy"] <= 1.0
    assert len(report["attacks"]) == 5  # the second call added its row to the first call's four
    for row in report["attacks"]:
        assert {"method", "norm", "eps", "clean_accuracy", "steps", "restarts", "targeted", "accuracy", "success_rate",
                "mean_perturbation"} <= set(row)
        assert row["mean_perturbation"] is None or row["mean_perturbation"] <= row["eps"] + 1e-6
    targeted = [r for r in report["attacks"] if r["targeted"]]
    assert targeted[0]["target"] == "least-likely" and targeted[0]["success_rate"] > 0.9
    assert isinstance(report["masking"], list) and "zero_gradient_fraction" in report["checks"]
    assert (digits_run / "plots" / "robustness_curve.png").stat().st_size > 0
    assert (digits_run / "plots" / "adversarial_examples.png").stat().st_size > 0
    assert "clean accuracy" in capsys.readouterr().out


def test_transfer_attack_from_a_second_model(digits_run, tmp_path):
    second = tmp_path / "second"
    assert main(["train", "--model", "small-cnn", "--data", "digits", "--epochs", "8", "--seed", "1", "--out", str(second),
                 "--quiet", *TRAIN]) == 0
    assert main(["attack", str(digits_run), "--method", "transfer", "--source", str(second), "--eps", "0.3",
                 "--steps", "10", "--n", "64"]) == 0
    report = json.loads((digits_run / "robustness.json").read_text())
    row = next(r for r in report["attacks"] if r["method"] == "transfer")
    assert row["source"] == str(second) and row["accuracy"] < report["clean_accuracy"]


def test_adversarial_training_goes_through_the_trainer_hook(blob_data):
    calls = []

    def perturb(model, x, y):
        calls.append(model.training)
        return x + 0.01

    fit(create_model("mlp", input_shape=(8,), num_classes=3), blob_data, epochs=1, batch_size=16, quiet=True,
        perturb=perturb)
    assert calls and all(calls)  # every training batch, with the model in training mode


def test_harden_fast_at_writes_a_new_run_that_records_its_parent(digits_run, tmp_path, capsys):
    out = tmp_path / "fast-at"
    assert main(["harden", str(digits_run), "--method", "fast-at", "--eps", "0.2", "--eps-ramp", "2", "--epochs", "3",
                 "--out", str(out), "--quiet", "train.checkpoint_every=0"]) == 0
    assert json.loads((out / "model.json").read_text())["parent"] == str(digits_run)
    record = json.loads((out / "hardening.json").read_text())
    assert record["method"] == "fast-at" and record["step_size"] == pytest.approx(0.25) and record["hardware"]
    # the first epoch trains at eps 0.1 (the ramp) and is not a candidate; the best of the others is kept
    assert record["val_pgd_accuracy"][0] is None and len(record["val_pgd_accuracy"]) == 3
    assert record["best_epoch"] in (2, 3)
    assert main(["evaluate", str(out)]) == 0
    assert "hardened with fast-at" in capsys.readouterr().out


def test_harden_pgd_at_trains_on_pgd_examples(digits_run, tmp_path):
    out = tmp_path / "pgd-at"
    assert main(["harden", str(digits_run), "--method", "pgd-at", "--eps", "0.2", "--steps", "3", "--epochs", "2",
                 "--out", str(out), "--quiet", "train.checkpoint_every=0"]) == 0
    record = json.loads((out / "hardening.json").read_text())
    assert record["steps"] == 3 and record["step_size"] == pytest.approx(2.5 * 0.2 / 3)
    assert load_run(out).metrics["test_accuracy"] > 0.5


def test_distilled_model_is_flagged_and_broken_by_the_margin_loss(digits_run, tmp_path, capsys):
    out = tmp_path / "distilled"
    assert main(["harden", str(digits_run), "--method", "distill", "--temperature", "100", "--epochs", "8",
                 "--out", str(out), "--quiet", "train.checkpoint_every=0"]) == 0
    assert main(["attack", str(out), "--method", "pgd", "--eps", "0.3", "--steps", "20", "--n", "64"]) == 0
    report = json.loads((out / "robustness.json").read_text())
    by_loss = {r["objective"]: r for r in report["attacks"]}
    assert by_loss["margin"]["accuracy"] < by_loss["ce"]["accuracy"]  # added on its own: the run is distilled
    assert "zero_gradients" in {flag["check"] for flag in report["masking"]}
    assert "possible gradient masking" in capsys.readouterr().out


def test_ensemble_is_a_run_that_evaluate_and_attack_read(digits_run, tmp_path):
    out = tmp_path / "ensemble"
    assert main(["harden", str(digits_run), "--method", "ensemble", "--members", "2", "--epochs", "2", "--out", str(out),
                 "--quiet", "train.checkpoint_every=0"]) == 0
    run = load_run(out)
    assert run.model_spec["name"] == "ensemble" and run.model_spec["parent"] == str(digits_run)
    assert main(["evaluate", str(out)]) == 0
    assert main(["attack", str(out), "--method", "fgsm", "--eps", "0.1", "--n", "32"]) == 0


@pytest.mark.parametrize("argv,message", [
    (["attack", "{missing}", "--eps", "0.1"], "not found"),
    (["attack", "{run}", "--eps", "0.1,abc"], "--eps"),
    (["attack", "{run}", "--eps", "25"], "pixels lie in"),
    (["attack", "{run}", "--method", "cw", "--eps", "0.1"], "Unknown attack 'cw'"),
    (["attack", "{run}", "--norm", "l1", "--eps", "0.1"], "Unknown norm"),
    (["attack", "{run}", "--method", "transfer", "--eps", "0.1"], "--source"),
    (["attack", "{vector}", "--eps", "0.1"], "perturbs image pixels"),
    (["harden", "{missing}", "--method", "fast-at"], "not found"),
    (["harden", "{run}", "--method", "dropout"], "Unknown defence 'dropout'"),
    (["harden", "{vector}", "--method", "fast-at"], "perturbs image pixels"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, digits_run, tmp_path, capsys):
    vector = tmp_path / "vector"
    if "{vector}" in argv:
        from deepnet.config import load_config

        config = load_config(None, ["data.name=blobs", "model.name=mlp"])
        fit(create_model("mlp", input_shape=(8,), num_classes=3), blobs(), epochs=1, quiet=True, out=vector,
            experiment=config)
    argv = [a.format(missing=tmp_path / "nope", run=digits_run, vector=vector) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and message in err
