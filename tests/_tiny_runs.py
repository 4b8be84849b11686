"""Tiny trained runs for the explain / calibrate / report / audit tests (seconds each)."""

from pathlib import Path

from deepnet.cli import main


def make_digits_cnn_run(folder: Path) -> Path:
    """A small CNN trained 2 epochs on digits (inputs (1, 8, 8), pixels 0..16): an image
    classifier with convolutions, so every explanation method applies."""
    config = folder / "cnn.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: convnet}\n"
                      "train: {epochs: 2, batch_size: 64, threads: 1, checkpoint_every: 0}\n")
    out = folder / "digits-cnn"
    assert main(["train", "-c", str(config), "--out", str(out), "--quiet"]) == 0
    return out
