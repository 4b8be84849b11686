"""The acceptance figures of the generative families on real MNIST (docs/generative.md).

    DEEPNET_DATA=../shared/data PYTHONPATH=. .venv/bin/python benchmarks/generative_mnist.py \
        --runs RUNS --threads 1

RUNS holds the run directories trained from the example configs (the commands are in
docs/generative.md): classifier (examples/mnist-cnn.yaml, the scorer), autoencoder, vae,
dcgan, cgan, ddpm, dbn and dbn-random. A family whose run is missing is skipped. Prints and
writes RUNS/generative_mnist.json:
  1. autoencoder: test reconstruction MSE (pixels in [0, 1]) against scikit-learn's PCA with
     30 components fitted on the same training pixels (acceptance: at most half of PCA's);
  2. vae: test ELBO in nats; 1,000 samples scored (acceptance: >= 80% confident);
  3. dcgan, ddpm (ancestral) and ddpm with 50 DDIM steps: 1,000 samples scored (acceptance:
     >= 90% confident, every class 5-15%, Fréchet distance; DDIM within 10% of DDPM's, their
     means over --draws sampling seeds); real-1000: the Fréchet distance of 1,000 real training
     images, what a perfect generator scores at that size;
     cgan: 100 samples per requested class (acceptance: >= 95% of the requested class);
     training time of each (acceptance: < 30 minutes);
  4. dbn: test error, pre-trained and randomly initialised on the same fine-tuning budget
     (acceptance: <= 1.5%).
"Confident" means the classifier gives its class a probability >= 0.9, after the temperature
of its calibration.json when it has one (`deepnet calibrate RUNS/classifier`); the same score of
the 10,000 real test images is printed as the reference ("real").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

N_SAMPLES = 1000    # images scored per model
PER_CLASS = 100     # conditional GAN: images per requested class
PCA_COMPONENTS = 30
SEED = 0


def autoencoder_vs_pca(run_dir: Path) -> dict:
    from sklearn.decomposition import PCA

    from deepnet.data import load_dataset
    from deepnet.train.plots import as_raw
    from deepnet.train.run import load_run

    data = load_dataset("mnist")
    train = as_raw(data.train.x.numpy(), data.preprocessing).reshape(len(data.train), -1)  # pixels in [0, 1]
    test = as_raw(data.test.x.numpy(), data.preprocessing).reshape(len(data.test), -1)
    pca = PCA(n_components=PCA_COMPONENTS, random_state=SEED).fit(train)
    pca_mse = float(((pca.inverse_transform(pca.transform(test)) - test) ** 2).mean())
    run = load_run(run_dir)
    with torch.no_grad():
        rebuilt = torch.cat([run.model(data.test.x[i:i + 1000]) for i in range(0, len(data.test), 1000)])
    ae_mse = float(((rebuilt.flatten(1).numpy() - test) ** 2).mean())
    return {"autoencoder_test_mse": ae_mse, "pca30_test_mse": pca_mse, "ratio": ae_mse / pca_mse,
            "passes": ae_mse <= pca_mse / 2, "train_seconds": run.metrics.get("train_seconds")}


def real_floor(classifier: Path, subsets: int = 8) -> dict:
    """The Fréchet distance of N_SAMPLES real training images (never in the reference) to the
    test images, over random subsets: what a perfect generator scores at this sample size. The
    estimate is biased upwards by an amount that shrinks as 1/N (Chong & Forsyth 2020), so a
    distance from 1,000 samples reads against this floor, not against 0."""
    from deepnet.data import load_dataset
    from deepnet.generate import score_samples
    from deepnet.train.plots import as_raw
    from deepnet.train.run import load_run

    judge, data = load_run(classifier), load_dataset("mnist")
    test, train = (torch.from_numpy(as_raw(split.x.numpy(), data.preprocessing)).clamp(0, 1)
                   for split in (data.test, data.train))
    rng = np.random.default_rng(SEED)
    subsets_drawn = (train[torch.from_numpy(rng.choice(len(train), N_SAMPLES, replace=False))] for _ in range(subsets))
    values = [score_samples(images, judge, reference=test)["frechet_distance"] for images in subsets_drawn]
    return {"n": N_SAMPLES, "frechet_distances": values, "frechet_mean": float(np.mean(values)),
            "frechet_sd": float(np.std(values, ddof=1)), "frechet_reference": f"{len(test)} test images"}


def scored(run_dir: Path, classifier: Path, seed: int = SEED, **options) -> dict:
    from deepnet.generate import sample_run

    start = time.perf_counter()
    result = sample_run(run_dir, N_SAMPLES, seed=seed, score=True, classifier=classifier,
                        out=run_dir / f"samples-{options.get('method') or 'default'}.png", **options)
    result["sampling_seconds"] = time.perf_counter() - start
    shares = result["class_histogram"].values()
    result["every_class_5_to_15"] = all(0.05 <= s <= 0.15 for s in shares)
    result["train_seconds"] = json.loads((run_dir / "metrics.json").read_text()).get("train_seconds")
    return result


def real_images(classifier: Path) -> dict:
    """The scorer on the real test images: what a perfect generator would get."""
    from deepnet.data import load_dataset
    from deepnet.generate import score_samples
    from deepnet.train.plots import as_raw
    from deepnet.train.run import load_run

    data = load_dataset("mnist")
    test = torch.from_numpy(as_raw(data.test.x.numpy(), data.preprocessing)).clamp(0, 1)
    half = len(test) // 2  # the Fréchet distance of one half of the test set to the other
    scores = score_samples(test[:half], load_run(classifier), reference=test[half:])
    return {k: v for k, v in scores.items() if k != "frechet_reference"} | {"frechet_reference": "the other 5,000 test images"}


def drawn(run_dir: Path, classifier: Path, draws: int, **options) -> dict:
    """``scored`` for sampling seeds SEED .. SEED + draws - 1: the first draw's scores, with every
    draw's Fréchet distance and their mean. One draw's distance moves by 10-30% from seed to
    seed, more than the DDIM bar, so the bar compares means."""
    rows = [scored(run_dir, classifier, seed=SEED + k, **options) for k in range(draws)]
    distances = [row["frechet_distance"] for row in rows]
    return rows[0] | {"frechet_distances": distances, "frechet_mean": float(np.mean(distances)),
                      "confident_fractions": [row["confident_fraction"] for row in rows]}


def conditional(run_dir: Path, classifier: Path) -> dict:
    from deepnet.generate import draw_samples, score_samples
    from deepnet.train.run import load_run

    run, judge = load_run(run_dir), load_run(classifier)
    per_class = {}
    for label in range(run.model.conditional_classes):
        images = draw_samples(run, PER_CLASS, label=label, seed=SEED + label)
        per_class[label] = score_samples(images, judge, label=label)["label_fraction"]
    overall = float(np.mean(list(per_class.values())))
    return {"requested_class_fraction": overall, "per_class": per_class, "passes": overall >= 0.95,
            "train_seconds": run.metrics.get("train_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="families to measure (default: every run present)")
    parser.add_argument("--ddpm-runs", nargs="*", default=["ddpm"], help="diffusion run directories in RUNS to score")
    parser.add_argument("--draws", type=int, default=1,
                        help="diffusion: sampling seeds scored per sampler; DDIM's gap is between the means")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs, classifier = args.runs, args.runs / "classifier"
    wanted = set(args.only or ["autoencoder", "vae", "dcgan", "cgan", "ddpm", "dbn"])
    out = runs / "generative_mnist.json"
    figures = json.loads(out.read_text()) if out.is_file() else {}
    if "real" in wanted or not figures.get("real"):
        figures["real"] = real_images(classifier)
    if "real" in wanted or not figures.get("real-1000"):
        figures["real-1000"] = real_floor(classifier)
    present = lambda name: name.split("-")[0] in wanted and (runs / name / "metrics.json").is_file()  # noqa: E731
    if present("autoencoder"):
        figures["autoencoder"] = autoencoder_vs_pca(runs / "autoencoder")
    if present("vae"):
        metrics = json.loads((runs / "vae" / "metrics.json").read_text())
        figures["vae"] = {"test_elbo_nats": metrics["test_elbo_nats"], **scored(runs / "vae", classifier)}
    if present("dcgan"):
        figures["dcgan"] = scored(runs / "dcgan", classifier)
    if present("cgan"):
        figures["cgan"] = conditional(runs / "cgan", classifier)
    for name in args.ddpm_runs:
        if "ddpm" in wanted and (runs / name / "metrics.json").is_file():
            ancestral = drawn(runs / name, classifier, args.draws, method="ddpm")
            ddim = drawn(runs / name, classifier, args.draws, method="ddim", steps=50)
            ddim["frechet_vs_ddpm"] = ddim["frechet_mean"] / ancestral["frechet_mean"] - 1
            figures[name], figures[f"{name}-ddim50"] = ancestral, ddim
    for name in ("dbn", "dbn-random"):
        if present(name):
            metrics = json.loads((runs / name / "metrics.json").read_text())
            figures[name] = {"test_error": 1 - metrics["test_accuracy"], "train_seconds": metrics["train_seconds"],
                             "epochs": metrics["epochs"]}
    out.write_text(json.dumps(figures, indent=2))
    for name, row in figures.items():
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                 if k not in ("class_histogram", "per_class", "run", "classifier", "grid")}
        print(f"{name}: {shown}")
        if "class_histogram" in row:
            print("   classes " + " ".join(f"{k}:{100 * v:.1f}%" for k, v in row["class_histogram"].items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
