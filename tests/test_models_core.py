"""Dense and LeNet families: published sizes and the faithful sparse C3 layer."""

import pytest
import torch
import torch.nn.functional as F

from deepnet.models import count_parameters, create_model, initialize
from deepnet.models.lenet import C3_TABLE, SparseConv


def test_lenet5_has_the_papers_parameter_count():
    # C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 + F6 10,164 + output 850 = 60,850
    assert count_parameters("lenet5") == 60_850
    assert abs(count_parameters("lenet5") - 60e3) / 60e3 < 0.02


def test_sparse_c3_equals_a_masked_dense_convolution():
    torch.manual_seed(0)
    layer = SparseConv(C3_TABLE, 6, 5)
    assert sum(p.numel() for p in layer.parameters()) == 1516
    weight = torch.zeros(16, 6, 5, 5)
    bias = torch.zeros(16)
    out_maps = [o for size in (3, 4, 6) for o, inputs in enumerate(C3_TABLE) if len(inputs) == size]
    row = 0
    for conv in layer.groups:
        k = conv.weight.shape[1]
        for g in range(conv.weight.shape[0]):
            o = out_maps[row]
            weight[o, list(C3_TABLE[o])] = conv.weight[g].detach()
            bias[o] = conv.bias[g].detach()
            assert len(C3_TABLE[o]) == k
            row += 1
    x = torch.randn(2, 6, 14, 14)
    assert torch.allclose(layer(x), F.conv2d(x, weight, bias), atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 32, 32), (3, 8, 8)])
def test_lenets_on_small_images(shape):
    for name in ("lenet5", "lenet_modern"):
        assert create_model(name, input_shape=shape, num_classes=4)(torch.randn(2, *shape)).shape == (2, 4)


def test_lenet5_rejects_large_images():
    with pytest.raises(ValueError, match="at most 32x32"):
        create_model("lenet5", input_shape=(1, 64, 64))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "prelu", "gelu"])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_mlp_options(activation, norm):
    model = create_model("mlp", input_shape=(5,), num_classes=3, depth=3, width=16, activation=activation,
                         norm=norm, dropout=0.1)
    assert model(torch.randn(4, 5)).shape == (4, 3)
    assert count_parameters(model) >= 5 * 16 + 16 * 16 * 2 + 16 * 3


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match=r"Unknown activation 'rellu'. Did you mean 'relu'"):
        create_model("mlp", activation="rellu")
    with pytest.raises(ValueError, match=r"Received: width=0"):
        create_model("mlp", width=0)


@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal"])
def test_initialisation_scales(scheme):
    torch.manual_seed(0)
    model = initialize(torch.nn.Sequential(torch.nn.Linear(1000, 1000)), scheme, "relu")
    std = model[0].weight.std().item()
    expected = (2 / 2000) ** 0.5 if scheme.startswith("xavier") else (2 / 1000) ** 0.5
    if scheme.startswith("xavier"):
        expected *= 2 ** 0.5  # relu gain
    assert std == pytest.approx(expected, rel=0.05)
    assert torch.all(model[0].bias == 0)


def test_convnet_shapes():
    model = create_model("convnet", input_shape=(1, 28, 28), num_classes=10, widths=(8, 16, 32))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    model.reset_classifier(5)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
