"""deepnet export: every image and sequence classifier of the zoo round-trips through ONNX
Runtime within 1e-4 of PyTorch, with preprocessing and metadata inside the file."""

import inspect
import json

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from deepnet.cli import main
from deepnet.config import ExperimentConfig
from deepnet.export import ExportError, export_model, export_run, read_onnx_metadata
from deepnet.export.exporter import sample_inputs
from deepnet.models import create_model, efficientnet, list_models, model_info, resnet
from deepnet.train.inference import inference_metadata, inference_model
from deepnet.train.run import Run

CLASSIFIERS = [name for name in list_models() if model_info(name).input_kind in ("image", "vector", "tokens")]
TOLERANCE = 1e-4  # the bar: ONNX Runtime within 1e-4 of PyTorch
SEQUENCE_LENGTH = 8  # the recurrent stacks are unrolled over time in the graph: short keeps export fast


def _tiny_run(name: str) -> Run:
    """A tiny untrained classifier as a run, with batch norm statistics taken from data (as
    training leaves them: untrained deep ResNets otherwise blow logits up to ~1e4)."""
    info = model_info(name)
    defaults = {p.name: p.default for p in inspect.signature(info.factory).parameters.values()
                if p.default is not inspect.Parameter.empty}
    args = {**defaults, **info.tiny}
    torch.manual_seed(0)
    model = create_model(name, **info.tiny)
    if info.input_kind == "tokens":
        shape, prep = [SEQUENCE_LENGTH], {"kind": "vocab"}
    else:
        channels = args["input_shape"][0]
        shape = list(args["input_shape"])
        prep = {"kind": "normalize", "scale": 255.0, "mean": [0.4] * channels, "std": [0.3] * channels}
    spec = {"name": name, "args": info.tiny, "input_shape": shape, "input_kind": info.input_kind,
            "task": "classification", "num_classes": args["num_classes"], "class_names": None,
            "vocab_size": args.get("vocab_size"), "preprocessing": prep}
    _stabilize_residual_branches(model)
    run = Run(model=model, config=ExperimentConfig(), model_spec=spec)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for norm in norms:
            norm.momentum = None  # a cumulative average: one pass sets the statistics
            norm.reset_running_stats()
        graph = inference_model(run).train()
        with torch.no_grad():
            graph(sample_inputs(inference_metadata(run), 16, seed=99))
    model.eval()
    return run


def _residual_branch_norms(model: nn.Module) -> list[nn.Module]:
    """The batch norm that ends each residual branch (ResNet blocks, EfficientNet's MBConv)."""
    norms = []
    for block in model.modules():
        if isinstance(block, resnet.Bottleneck):
            norms.append(block.bn3)
        elif isinstance(block, resnet.BasicBlock):
            norms.append(block.bn2)
        elif isinstance(block, efficientnet.MBConv) and block.residual:
            norms.append(next(m for m in block.project.modules() if isinstance(m, nn.BatchNorm2d)))
    return norms


def _stabilize_residual_branches(model: nn.Module) -> None:
    """Scale each residual branch's last batch norm by 1/sqrt(branches) (Hayou et al. 2021,
    "Stable ResNet"). With He-initialised random weights a deep ResNet or EfficientNet is
    chaotic: every block amplifies fp32 rounding, and PyTorch's own fp32 logits land up to
    ~1e-3 from the float64 answer, so no two fp32 runtimes can agree to 1e-4. Trained networks
    are not in that regime (their last-BN scales are small); this puts the random ones beside
    them, and the round trip then checks the exporter, not the chaos of random weights."""
    norms = _residual_branch_norms(model)
    for norm in norms:
        nn.init.constant_(norm.weight, len(norms) ** -0.5)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_onnx_round_trip_matches_pytorch(name, tmp_path):
    run = _tiny_run(name)
    metadata = inference_metadata(run)
    path = tmp_path / "model.onnx"
    result = export_model(inference_model(run), metadata, path)  # checks batch 1 and 64 itself
    assert result.checked_batch_sizes == (1, 64)
    print(f"{name}: ONNX Runtime vs PyTorch {result.max_difference:.2g}, PyTorch fp32 vs fp64 {result.pytorch_fp32_error:.2g}")
    assert result.max_difference <= TOLERANCE

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = inference_model(run)
    for batch in (1, 64):
        x = sample_inputs(metadata, batch, seed=1000 + batch)
        logits, probabilities = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            want_logits, want_probabilities = graph(x)
        # Probabilities, what callers get: 1e-4 absolute. Logits: 1e-4 of the largest |logit| once
        # that passes 1 (EfficientNet's published head init gives random logits up to ~90, where
        # 1e-4 absolute would be 1e-6 relative, within a few float32 ulps of summation order).
        np.testing.assert_allclose(probabilities, want_probabilities.numpy(), rtol=0, atol=TOLERANCE)
        scale = max(1.0, float(want_logits.abs().max()))
        np.testing.assert_allclose(logits, want_logits.numpy(), rtol=0, atol=TOLERANCE * scale)
    assert read_onnx_metadata(path)["input_kind"] == model_info(name).input_kind


def test_exported_program_round_trip(tmp_path):
    run = _tiny_run("lenet5")
    result = export_model(inference_model(run), inference_metadata(run), tmp_path / "m.pt2", "exported-program")
    assert result.max_difference < 1e-4
    extra = {"deepnet.json": ""}
    loaded = torch.export.load(tmp_path / "m.pt2", extra_files=extra).module()
    assert json.loads(extra["deepnet.json"])["input_shape"] == [1, 28, 28]
    x = sample_inputs(inference_metadata(run), 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[1], inference_model(run)(x)[1], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    config = out.parent / "c.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp, args: {width: 32}}\ntrain: {epochs: 2, batch_size: 64, threads: 1}\n")
    assert main(["train", "-c", str(config), "--out", str(out), "--quiet"]) == 0
    return out


def test_cli_export_writes_model_onnx_with_preprocessing_inside(digits_run, capsys):
    assert main(["export", str(digits_run)]) == 0
    assert "model.onnx" in capsys.readouterr().out
    path = digits_run / "model.onnx"
    metadata = read_onnx_metadata(path)
    assert metadata["class_names"] == [str(d) for d in range(10)]
    assert metadata["input_shape"] == [1, 8, 8] and metadata["value_range"] == [0.0, 16.0]
    assert metadata["preprocessing"]["kind"] == "normalize" and metadata["deepnet_version"]

    from sklearn.datasets import load_digits

    from deepnet.evaluate import predict, prepare_inputs
    from deepnet.train.run import load_run

    raw = load_digits().images[:7].astype(np.float32)[:, None]  # (7, 1, 8, 8), pixels 0..16
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {"input": raw})
    run = load_run(digits_run)
    expected = [row["index"] for row in predict(run, prepare_inputs(raw, run.model_spec))]
    assert probabilities.argmax(1).tolist() == expected


def test_cli_export_exported_program_to_a_chosen_file(digits_run, tmp_path, capsys):
    assert main(["export", str(digits_run), "--format", "exported-program", "--out", str(tmp_path / "x.pt2")]) == 0
    assert (tmp_path / "x.pt2").is_file()


def test_unknown_format(digits_run):
    with pytest.raises(ValueError, match=r"Unknown export format 'tflite'; expected one of onnx, exported-program"):
        export_run(digits_run, "tflite")


def test_cli_unknown_format_is_an_argparse_error(digits_run, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(digits_run), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_language_model_is_refused(tmp_path):
    run = Run(model=create_model("gpt-char", **model_info("gpt-char").tiny), config=ExperimentConfig(),
              model_spec={"name": "gpt-char", "task": "language_modeling", "input_kind": "lm", "input_shape": [32]},
              directory=tmp_path)
    with pytest.raises(ValueError, match=r"Only classifiers .* holds a language_modeling model of lm inputs"):
        inference_model(run)


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 3)

    def forward(self, x):
        h = self.first(x)
        return self.second(h if float(h.sum()) > 0 else -h)  # a Python branch on a value


class _Network(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _DataDependent()

    def forward(self, x):
        return self.body(x)


def test_a_layer_that_cannot_export_is_named(tmp_path):
    run = Run(model=_Network(), config=ExperimentConfig(),
              model_spec={"name": None, "task": "classification", "input_kind": "vector", "input_shape": [4],
                          "num_classes": 3, "preprocessing": {"kind": "none"}})
    with pytest.raises(ExportError, match=r"Cannot export to exported-program: layer model.body \(_DataDependent\) fails"):
        export_model(inference_model(run), inference_metadata(run), tmp_path / "m.pt2", "exported-program")


def test_disagreement_fails_loudly(tmp_path, monkeypatch):
    run = _tiny_run("mlp")
    import deepnet.export.exporter as exporter

    real = exporter._write_onnx

    def write_then_perturb(graph, example, metadata, path):
        real(graph, example, metadata, path)
        with torch.no_grad():
            graph.model.classifier.bias += 0.01  # PyTorch's model now differs from the file

    monkeypatch.setattr(exporter, "_write_onnx", write_then_perturb)
    with pytest.raises(ExportError, match=r"ONNX Runtime disagrees with PyTorch on logits at batch 1: max \|difference\| 0.01 \(tolerance 0.0001\)"):
        export_model(inference_model(run), inference_metadata(run), tmp_path / "m.onnx")


def test_tabular_run_takes_unscaled_features(tmp_path):
    from deepnet.data import from_arrays
    from deepnet.evaluate import predict, prepare_inputs
    from deepnet.train import fit, load_run

    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, (120, 5)).astype(np.float32)  # far from standardised
    y = (x[:, 0] > 50).astype(np.int64)
    data = from_arrays(x, y)
    model = create_model("mlp", input_shape=(5,), num_classes=2, width=8)
    fit(model, data, epochs=1, quiet=True, out=tmp_path / "run", threads=1, checkpoint_every=0)
    result = export_run(tmp_path / "run")
    assert result.metadata["value_range"] is None and result.metadata["preprocessing"]["kind"] == "standardize"
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    run = load_run(tmp_path / "run")
    _, probabilities = session.run(None, {"input": x[:10]})
    expected = [row["probability"] for row in predict(run, prepare_inputs(x[:10], run.model_spec))]
    np.testing.assert_allclose(probabilities.max(1), expected, atol=1e-5)
