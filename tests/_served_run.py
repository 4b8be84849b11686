"""A tiny trained and exported digits run, for the server tests (about 3 s to make)."""

from pathlib import Path

from deepnet.cli import main


def make_served_run(folder: Path) -> Path:
    """An MLP trained 2 epochs on digits (inputs (1, 8, 8), pixels 0..16) with model.onnx."""
    config = folder / "c.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp, args: {width: 32}}\n"
                      "train: {epochs: 2, batch_size: 64, threads: 1, checkpoint_every: 0}\n")
    out = folder / "run"
    assert main(["train", "-c", str(config), "--out", str(out), "--quiet"]) == 0
    assert main(["export", str(out)]) == 0
    return out
