"""deepnet compress: pruning holds its masks, weight sharing leaves 2**bits values, the
compressed file round-trips exactly and evaluates like any run, int8 runs in ONNX Runtime,
structured pruning rebuilds the MLP smaller, and bad input fails in one line with exit 2."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from deepnet.cli import main
from deepnet.compress import (CompressionSettings, GradualPruning, HoldMasks, compress_run, gradual_sparsity,
                              kmeans_1d, magnitude_masks, share_weights, sparsity_schedule, structured_prune,
                              structured_prune_mlp)
from deepnet.compress.sharing import release_sharing
from deepnet.models import create_model
from deepnet.train import Callback, fit
from deepnet.train.compressed import (CompressedFileError, decode_state, encode_state, huffman_decode,
                                      huffman_encode, huffman_lengths)
from deepnet.train.inference import inference_model
from deepnet.train.run import RunError, load_run

from tests.conftest import blobs

FAST = {"timing_repeats": 3, "timing_seconds": 0.0}  # speed is measured in benchmarks, not here


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err), err
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small MLP trained on the embedded 8x8 digits for two epochs."""
    out = tmp_path_factory.mktemp("runs") / "digits-mlp"
    config = out.parent / "c.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp, args: {width: 64}}\n"
                      "train: {epochs: 3, batch_size: 64, threads: 1, lr: 0.003}\n")
    assert main(["train", "-c", str(config), "--out", str(out), "--quiet"]) == 0
    return out


# ------------------------------------------------------------------------ the file format


def test_huffman_round_trip_and_optimal_lengths():
    rng = np.random.default_rng(0)
    symbols = rng.geometric(0.3, 5000).clip(max=40) - 1
    lengths = huffman_lengths(np.bincount(symbols, minlength=40))
    assert lengths.max() <= 15
    assert sum(2.0 ** -lengths[lengths > 0]) <= 1.0 + 1e-12  # Kraft: a prefix code
    data = huffman_encode(symbols, lengths)
    assert np.array_equal(huffman_decode(data, lengths, len(symbols)), symbols)
    counts = np.bincount(symbols)
    p = counts[counts > 0] / len(symbols)
    entropy_bits = -(p * np.log2(p)).sum() * len(symbols)
    assert len(data) * 8 < entropy_bits * 1.03 + 8  # Huffman is within a few % of the entropy here


def test_huffman_lengths_are_capped_at_15_bits():
    counts = np.array([2**i for i in range(30)])  # a Fibonacci-like skew would need 29-bit codes
    assert huffman_lengths(counts).max() == 15


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95, 1.0])
def test_state_round_trips_exactly(sparsity):
    torch.manual_seed(0)
    weight = torch.randn(40, 30)
    weight[torch.rand(40, 30) < sparsity] = 0
    shared = torch.linspace(-1, 1, 16).half().float()[torch.randint(0, 16, (40, 30))] * (weight != 0)
    state = {"raw": weight, "shared": shared, "bias": torch.randn(7), "count": torch.tensor(3), "empty": torch.zeros(0)}
    back = decode_state(encode_state(state), state)
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor), name
        assert back[name].dtype == tensor.dtype


def test_sparse_shared_weights_take_a_fraction_of_fp32():
    torch.manual_seed(0)
    weight = torch.linspace(-1, 1, 32).half().float()[torch.randint(0, 32, (300, 784))]
    weight[torch.rand(300, 784) < 0.92] = 0
    size = len(encode_state({"w": weight}))
    # 8% of the entries at ~5 bits (uniform indices) + ~5 bits (gaps): about 40x below fp32
    assert size < weight.numel() * 4 / 38


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_corrupt_file_is_refused(damage):
    state = {"w": torch.randn(20, 20)}
    data = bytearray(encode_state(state))
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[:4] = b"PK\x03\x04"
    with pytest.raises(CompressedFileError):
        decode_state(bytes(data), state)


# ---------------------------------------------------------------------------- pruning


def test_global_pruning_removes_the_fraction_of_all_parameters():
    model = create_model("mlp", input_shape=(20,), num_classes=3, width=16)
    total = sum(p.numel() for p in model.parameters())
    masks = magnitude_masks(model, 0.8, "global")
    removed = sum(int((~m).sum()) for m in masks.values())
    assert removed == round(0.8 * total)
    params = dict(model.named_parameters())
    kept = torch.cat([params[name].detach().abs()[m] for name, m in masks.items()])
    pruned = torch.cat([params[name].detach().abs()[~m] for name, m in masks.items()])
    assert pruned.max() <= kept.min()  # by magnitude, over all layers at once


def test_global_pruning_keeps_a_minimum_density_per_layer():
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(20,), num_classes=3, width=16)
    with torch.no_grad():
        model.classifier.weight.mul_(1e-3)  # a global threshold alone would strip this layer bare
    assert not magnitude_masks(model, 0.6)["classifier.weight"].any()
    assert magnitude_masks(model, 0.6, min_density=0.2)["classifier.weight"].float().mean() >= 0.2
    with pytest.raises(ValueError, match="--prune-min-density"):
        magnitude_masks(model, 0.9, min_density=0.5)


def test_layer_pruning_prunes_each_layer_alike():
    model = create_model("lenet5")
    for name, mask in magnitude_masks(model, 0.75, "layer").items():
        assert abs((~mask).float().mean().item() - 0.75) < 0.02, name


def test_iterative_schedule_ends_at_the_target():
    schedule = sparsity_schedule(0.92, 3)
    assert len(schedule) == 3 and schedule == sorted(schedule) and abs(schedule[-1] - 0.92) < 1e-12
    assert sparsity_schedule(0.5, 1) == [0.5]


def test_masks_hold_while_the_trainer_retrains(blob_data):
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(8,), num_classes=3, width=16)
    masks = magnitude_masks(model, 0.7)
    fit(model, blob_data, epochs=2, lr=0.05, weight_decay=0.1, quiet=True, threads=1,
        callbacks=[HoldMasks(model, masks)])
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name].detach()[~mask] == 0).all(), name
        assert (params[name].detach()[mask] != 0).float().mean() > 0.9  # the kept ones learned


def test_gradual_schedule_rises_fast_then_slowly_to_the_target():
    points = [gradual_sparsity(0.9, t / 10) for t in range(11)]
    assert points[0] == 0 and abs(points[-1] - 0.9) < 1e-12 and points == sorted(points)
    steps = [b - a for a, b in zip(points, points[1:])]
    assert steps == sorted(steps, reverse=True)  # most of the pruning early, little near the end
    assert gradual_sparsity(0.9, 1.5) == gradual_sparsity(0.9, 1.0)


def test_gradual_pruning_reaches_the_target_while_training(blob_data):
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(8,), num_classes=3, width=16)
    total = sum(p.numel() for p in model.parameters())
    pruning = GradualPruning(model, 0.7, ramp=0.5, updates=10)
    seen: list[float] = []

    class Watch(Callback):  # the sparsity after each epoch
        def on_epoch_end(self, epoch, logs):
            seen.append(sum(int((p == 0).sum()) for p in model.parameters()) / total)

    fit(model, blob_data, epochs=4, lr=0.05, weight_decay=0.1, quiet=True, threads=1, callbacks=[pruning, Watch()])
    assert seen == sorted(seen) and seen[0] > 0  # rising while it trains
    assert abs(seen[1] - 0.7) < 0.01 and abs(seen[-1] - 0.7) < 0.01  # the ramp ends halfway at the target
    params = dict(model.named_parameters())
    for name, mask in pruning.masks.items():
        assert (params[name].detach()[~mask] == 0).all(), name


# ----------------------------------------------------------------------- weight sharing


def test_kmeans_matches_a_brute_force_assignment():
    values = torch.randn(2000)
    centroids, assignment = kmeans_1d(values, 8, iterations=1000)
    nearest = (values[:, None] - centroids[None]).abs().argmin(1)
    assert torch.equal(assignment, nearest)
    for k in range(8):  # Lloyd's fixed point: each centroid is its cluster's mean
        assert torch.isclose(centroids[k], values[assignment == k].mean(), atol=1e-5)


def test_pruned_tensors_too_small_to_share_stay_pruned(trained, tmp_path):
    settings = CompressionSettings(prune=0.97, share_bits=5, finetune_epochs=1, **FAST)
    pruned, shared = compress_run(trained, settings, tmp_path / "s", quiet=True)["stages"][1:]
    run = load_run(tmp_path / "s")
    small = [name for name, p in run.model.named_parameters() if p.dim() > 1 and 0 < int((p != 0).sum()) <= 32]
    assert small  # some pruned tensors hold too few values to share: they must not regrow either
    assert shared["nonzero_parameters"] <= pruned["nonzero_parameters"]
    assert shared["sparsity"] >= 0.97 - 1e-3


def test_shared_weights_train_their_centroids(blob_data):
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(8,), num_classes=3, width=32)
    masks = magnitude_masks(model, 0.5)
    HoldMasks(model, masks).on_train_end({})
    shared = share_weights(model, 3)
    before = [module.parametrizations[name][0].codebook.detach().clone() for module, name in shared]
    fit(model, blob_data, epochs=1, lr=0.01, quiet=True, threads=1)
    after = [module.parametrizations[name][0].codebook.detach() for module, name in shared]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    release_sharing(shared)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        weight = params[name].detach()
        assert (weight[~mask] == 0).all()
        assert len(torch.unique(weight[mask])) <= 8
        assert torch.equal(weight, weight.half().float())


def test_share_bits_out_of_range():
    with pytest.raises(ValueError, match="--share-bits"):
        share_weights(nn.Linear(4, 4), 12)


# ---------------------------------------------------------------------- structured


def test_structured_pruning_rebuilds_a_smaller_equivalent_mlp():
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(10,), num_classes=3, hidden_layers=(8, 6)).eval()
    with torch.no_grad():  # two units that carry nothing: the ones pruning must remove first
        model.features[1].weight[[2, 5]] = 0
        model.features[1].bias[[2, 5]] = -1.0  # ReLU(-1) = 0: dead
        model.features[3].weight[[1]] = 0
        model.features[3].bias[[1]] = -1.0
    spec = {"name": "mlp", "args": {}}
    smaller, new_spec = structured_prune_mlp(model, 0.25, spec)
    assert new_spec["args"]["hidden_layers"] == [6, 5]
    x = torch.randn(5, 10)
    torch.testing.assert_close(smaller.eval()(x), model(x))  # only dead units went


def test_channel_pruning_rebuilds_a_smaller_equivalent_convnet():
    torch.manual_seed(0)
    model = create_model("convnet", input_shape=(1, 12, 12), num_classes=3, widths=(4, 8), convs_per_stage=2)
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]
    with torch.no_grad():  # a channel with gamma = beta = 0 outputs ReLU(0) = 0: pruning must take those first
        for block, dead in zip(blocks, ([1], [3], [0, 5], [2, 7])):
            block[1].weight[dead] = 0
            block[1].bias[dead] = 0
            block[1].running_mean.uniform_(-1, 1)
            block[1].running_var.uniform_(0.5, 2)
    model.eval()
    smaller, spec = structured_prune(model, 0.25, {"name": "convnet", "args": {}})
    assert spec["args"]["widths"] == [3, 6] and smaller.config.convs_per_stage == 2
    x = torch.randn(5, 1, 12, 12)
    torch.testing.assert_close(smaller.eval()(x), model(x))


def test_channel_pruning_of_a_flattening_convnet_keeps_the_classifier_columns():
    torch.manual_seed(0)
    model = create_model("convnet", input_shape=(1, 8, 8), num_classes=3, widths=(4, 6), convs_per_stage=1,
                         global_pool=False)
    last = [m for m in model.features if isinstance(m, nn.Sequential)][-1]
    with torch.no_grad():
        last[1].weight[[1, 4]] = 0
        last[1].bias[[1, 4]] = 0
        model.features[0][1].weight[2] = 0
        model.features[0][1].bias[2] = 0
    model.eval()
    smaller, spec = structured_prune(model, 0.34, {"name": "convnet", "args": {}})
    assert spec["args"]["widths"] == [3, 4] and smaller.num_features == 4 * 4 * 4
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(smaller.eval()(x), model(x))


def test_structured_pruning_refuses_other_families():
    with pytest.raises(ValueError, match=r"lenet5 \(LeNet5\) is not supported"):
        structured_prune_mlp(create_model("lenet5"), 0.5, {"name": "lenet5"})


# --------------------------------------------------------------------- the whole verb


def test_compress_prune_and_share_then_evaluate(trained, tmp_path, capsys):
    out = tmp_path / "small"
    settings = CompressionSettings(prune=0.8, prune_steps=2, share_bits=4, finetune_epochs=1, **FAST)
    compress_run(trained, settings, out, quiet=True)
    result = json.loads((out / "compression.json").read_text())
    names = [row["name"] for row in result["stages"]]
    assert names == ["baseline", "pruned-0.8-step1", "pruned-0.8-step2", "shared-4bit"]
    for row in result["stages"]:
        assert {"name", "test_accuracy", "nonzero_parameters", "file_bytes", "latency_ms_batch1",
                "throughput_batch256", "runtime"} <= set(row)
    final = result["stages"][-1]
    assert final["sparsity"] >= 0.8 - 1e-3
    assert final["file_bytes"] == (out / "model.compressed").stat().st_size
    assert final["compression_ratio"] > 10
    assert not (out / "model.safetensors").exists() and (out / "plots" / "compression.png").is_file()
    spec = json.loads((out / "model.json").read_text())
    assert spec["parent"] == str(trained) and spec["weights"]["format"] == "deepnet-compressed"
    assert main(["evaluate", str(out)]) == 0  # reads the compressed file back, no extra step
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["test_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-9)


def test_compress_quantize_int8_runs_in_onnx_runtime(trained, tmp_path):
    result = compress_run(trained, CompressionSettings(quantize="int8-dynamic", **FAST), tmp_path / "int8", quiet=True)
    names = [row["name"] for row in result["stages"]]
    assert names == ["baseline", "fp32-onnxruntime", "int8-dynamic"]
    int8 = result["stages"][-1]
    assert int8["runtime"] == "onnxruntime" and int8["file_bytes"] < result["stages"][0]["file_bytes"] / 2
    assert abs(int8["test_accuracy"] - result["stages"][0]["test_accuracy"]) < 0.05
    run = load_run(tmp_path / "int8")
    assert run.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_int8_simulation_rounds_the_weights_and_comes_off_unchanged():
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(10,), num_classes=3, hidden_layers=(8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(16, 10)
    exact = model(x).detach()
    from deepnet.compress.quantize import simulate_int8

    simulation = simulate_int8(model)
    layer = model.features[1]
    assert torch.unique(layer.weight[0] / (2 * layer.weight[0].abs().max() / 255)).round().numel() <= 256
    rounded = model(x)
    assert not torch.equal(rounded.detach(), exact) and (rounded.detach() - exact).abs().max() < 0.05
    rounded.sum().backward()  # straight through: every weight gets a gradient
    assert layer.parametrizations.weight.original.grad.abs().sum() > 0
    simulation.remove()
    assert set(model.state_dict()) == set(before)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_compress_int8_qat_retrains_then_quantizes(trained, tmp_path, capsys):
    out = tmp_path / "qat"
    assert main(["compress", str(trained), "--quantize", "int8-qat", "--finetune-epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    rows = json.loads((out / "compression.json").read_text())["stages"]
    assert [r["name"] for r in rows] == ["baseline", "fp32-onnxruntime", "int8-qat"]
    assert rows[-1]["runtime"] == "onnxruntime" and rows[-1]["test_accuracy"] > 0.8
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert f"{100 * rows[-1]['test_accuracy']:.2f}" in capsys.readouterr().out


def test_an_int8_run_is_served_and_export_says_why_not(trained, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from deepnet.serve import ServeSettings, create_app

    compress_run(trained, CompressionSettings(quantize="int8-dynamic", **FAST), tmp_path / "int8", quiet=True)
    expected = load_run(trained)
    x = np.random.default_rng(0).uniform(0, 16, (4, 8, 8)).astype(np.float32)  # raw digits pixels
    with TestClient(create_app(ServeSettings(str(tmp_path / "int8"), max_wait_ms=0))) as client:
        assert client.get("/metadata").json()["runtime"] == "torch + onnxruntime int8"
        answer = client.post("/predict", json={"inputs": x.tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"].startswith("int8@")  # the int8 file's digest
    with torch.no_grad():
        fp32 = inference_model(expected)(torch.from_numpy(x[:, None]))[1].numpy()
    assert (np.asarray(answer.json()["probabilities"]).argmax(1) == fp32.argmax(1)).mean() >= 0.75
    assert main(["export", str(tmp_path / "int8")]) == 2
    line = _error_line(capsys)
    assert "is an int8 run of `deepnet compress`" in line and f"deepnet serve {tmp_path / 'int8'}" in line


def test_timing_a_model_in_training_mode_leaves_its_batch_norm_alone():
    from deepnet.compress.measure import time_calls

    model = create_model("convnet", input_shape=(1, 12, 12), num_classes=3, widths=(4, 8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    time_calls(model, torch.randn(1, 1, 12, 12), repeats=3, min_seconds=0.0)
    assert model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)


def test_compress_structured_writes_a_plain_smaller_run(trained, tmp_path, capsys):
    assert main(["compress", str(trained), "--structured", "0.5", "--finetune-epochs", "1", "--out",
                 str(tmp_path / "narrow"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "structured-0.5" in table and "batch-256/s" in table
    result = json.loads((tmp_path / "narrow" / "compression.json").read_text())
    row = result["stages"][-1]
    assert row["hidden_layers"] == [32, 32]
    run = load_run(tmp_path / "narrow")
    assert run.model_spec["name"] == "mlp" and (tmp_path / "narrow" / "model.safetensors").is_file()
    assert sum(p.numel() for p in run.model.parameters()) == row["parameters"]


def test_compress_channel_pruning_evaluates_as_its_table_says(tmp_path, capsys):
    parent, out = tmp_path / "cnn", tmp_path / "narrow"
    assert main(["train", "--model", "convnet", "--data", "digits", "--epochs", "1", "--out", str(parent), "--quiet",
                 "model.args.widths=[8,16]", "train.threads=1"]) == 0
    assert main(["compress", str(parent), "--structured", "0.5", "--finetune-epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    row = json.loads((out / "compression.json").read_text())["stages"][-1]
    assert row["widths"] == [4, 8] and load_run(out).model_spec["args"]["widths"] == [4, 8]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # batch norm's statistics came through the timing untouched
    assert f"test_accuracy {100 * row['test_accuracy']:.2f}%" in capsys.readouterr().out


def test_static_int8_of_a_cnn(tmp_path):
    torch.manual_seed(0)
    data = blobs(n=96, features=64, classes=3)
    data = type(data)(data.name, *[type(s)(s.x.view(-1, 1, 8, 8), s.y) for s in (data.train, data.val, data.test)],
                      input_shape=(1, 8, 8), num_classes=3, class_names=data.class_names, input_kind="image")
    model = create_model("lenet_modern", input_shape=(1, 8, 8), num_classes=3)
    run = fit(model, data, epochs=1, quiet=True, threads=1, out=tmp_path / "cnn")
    from deepnet.compress.quantize import export_onnx, quantize_onnx
    from deepnet.train.compressed import OnnxClassifier

    export_onnx(run.model, data.test.x[:1], tmp_path / "fp32.onnx")
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", "int8-static", data.train.x)
    fp32, int8 = OnnxClassifier(tmp_path / "fp32.onnx"), OnnxClassifier(tmp_path / "int8.onnx")
    x = data.test.x
    torch.testing.assert_close(fp32(x), run.model.eval()(x).detach(), atol=1e-4, rtol=1e-4)
    assert (int8(x).argmax(1) == fp32(x).argmax(1)).float().mean() > 0.9


# ------------------------------------------------------------------------- bad input


def test_nonexistent_run(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "nope"), "--prune", "0.9"]) == 2
    assert "not found" in _error_line(capsys)


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2"])
def test_sparsity_outside_zero_one(trained, value, capsys):
    assert main(["compress", str(trained), "--prune", value]) == 2
    assert "strictly between 0 and 1" in _error_line(capsys)


def test_unsupported_model_family(tmp_path, capsys):
    out = tmp_path / "lenet5"
    assert main(["train", "--model", "lenet5", "--data", "digits", "--epochs", "1", "--out", str(out), "--quiet",
                 "train.threads=1", "train.max_steps_per_epoch=2"]) == 0
    capsys.readouterr()
    assert main(["compress", str(out), "--structured", "0.5"]) == 2
    line = _error_line(capsys)
    assert "lenet5 (LeNet5)" in line and "not supported" in line


def test_corrupt_compressed_file(trained, tmp_path, capsys):
    out = tmp_path / "small"
    compress_run(trained, CompressionSettings(prune=0.5, finetune_epochs=0, **FAST), out, quiet=True)
    path = out / "model.compressed"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match="checksum"):
        load_run(out)
    assert main(["evaluate", str(out)]) == 2
    assert "model.compressed cannot be read" in _error_line(capsys)


def test_compress_gradual_pruning_then_evaluate(trained, tmp_path, capsys):
    out = tmp_path / "gradual"
    assert main(["compress", str(trained), "--prune", "0.8", "--prune-schedule", "gradual", "--finetune-epochs", "2",
                 "--out", str(out), "--quiet"]) == 0
    row = json.loads((out / "compression.json").read_text())["stages"][-1]
    assert row["name"] == "pruned-0.8-gradual" and row["sparsity"] >= 0.8 - 1e-3
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert f"{100 * row['test_accuracy']:.2f}" in capsys.readouterr().out


def test_qat_without_retraining_is_refused(trained, capsys):
    assert main(["compress", str(trained), "--quantize", "int8-qat", "--finetune-epochs", "0"]) == 2
    assert "--finetune-epochs to 1 or more" in _error_line(capsys)


def test_gradual_pruning_with_rounds_is_refused(trained, capsys):
    assert main(["compress", str(trained), "--prune", "0.8", "--prune-schedule", "gradual", "--prune-steps", "3"]) == 2
    assert "Drop --prune-steps" in _error_line(capsys)


def test_nothing_to_do_and_two_formats(trained, capsys):
    assert main(["compress", str(trained)]) == 2
    assert "Nothing to do" in _error_line(capsys)
    assert main(["compress", str(trained), "--quantize", "int8", "--share-bits", "5"]) == 2
    assert "pick one" in _error_line(capsys)
