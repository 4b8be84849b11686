"""Contract tests for the convolutional families (AlexNet, VGG, GoogLeNet, ResNet,
EfficientNet): published sizes and depths, map sizes at 224x224, shapes on small images,
classifier reset, config round trip, gradients, error texts.

Full-size models are only ever built on the meta device (no weights allocated); everything
that runs a forward pass uses the registry's ``tiny`` overrides.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from deepnet.models import count_parameters, create_model, model_info
from deepnet.models.efficientnet import StochasticDepth
from deepnet.models.resnet import ZeroPadShortcut

CNN_MODELS = [
    "alexnet",
    "vgg11", "vgg13", "vgg16", "vgg19",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "googlenet",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet20",
    "efficientnet_b0",
]  # fmt: skip

# One model per block type, for the slower contract tests.
REPRESENTATIVES = ["alexnet", "vgg11_bn", "googlenet", "resnet50", "resnet20", "efficientnet_b0"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models gain nothing from a second thread, and on a shared 2-core machine the
    # threads of each small op wait on each other at every barrier (10x slower under load).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(name: str, **overrides: object) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**model_info(name).tiny, **overrides})


def paper_depth(model: nn.Module) -> int:
    """Layers with weights (Conv2d, Linear) on the longest input-to-output path.

    This is how the papers count depth: Inception's parallel branches and ResNet's
    projection shortcuts are beside the path, not on it.
    """
    modules = dict(model.named_modules())
    graph = fx.symbolic_trace(model.eval()).graph
    depth: dict[fx.Node, int] = {}
    for node in graph.nodes:
        weighted = node.op == "call_module" and isinstance(
            modules[node.target], (nn.Conv2d, nn.Linear)
        )
        depth[node] = max((depth[n] for n in node.all_input_nodes), default=0) + int(weighted)
        if node.op == "output":
            return depth[node]
    raise AssertionError("the traced graph has no output node")


# ---------------------------------------------------------------------------- published size


@pytest.mark.parametrize("name", CNN_MODELS)
def test_parameter_count_is_within_two_percent_of_the_paper(name: str) -> None:
    published = model_info(name).published_parameters
    assert published is not None
    assert count_parameters(name) == pytest.approx(published, rel=0.02)


@pytest.mark.parametrize("name", [n for n in CNN_MODELS if n != "efficientnet_b0"])
def test_depth_matches_the_paper(name: str) -> None:
    model = create_model(name, device="meta")
    assert paper_depth(model) == model_info(name).published_layers


def test_efficientnet_depth_counts_stages_as_table_1_does() -> None:
    # Table 1 counts the stem, each MBConv block and the head stage (conv1x1 & pooling & FC)
    # as one layer each.
    model = create_model("efficientnet_b0", device="meta")
    assert 1 + len(model.blocks) + 1 == model_info("efficientnet_b0").published_layers


def test_exact_counts_of_reference_layouts() -> None:
    # torchvision's counts for the same layouts, and the paper's grouped AlexNet.
    assert count_parameters("alexnet") == 60_965_224
    assert count_parameters("vgg16") == 138_357_544
    assert count_parameters("resnet50") == 25_557_032
    assert count_parameters("resnet152") == 60_192_808
    assert count_parameters("efficientnet_b0") == 5_288_548
    assert count_parameters("resnet20") == 269_722  # option A shortcuts have no parameters


@pytest.mark.parametrize(
    ("name", "feature_shape"),
    [
        ("alexnet", (256, 6, 6)),
        ("vgg16", (512, 7, 7)),
        ("googlenet", (1024, 7, 7)),
        ("resnet18", (512, 7, 7)),
        ("resnet50", (2048, 7, 7)),
        ("efficientnet_b0", (1280, 7, 7)),
        ("resnet20", (64, 8, 8)),  # at its default 3x32x32
    ],
)
def test_feature_map_sizes_at_the_default_resolution(
    name: str, feature_shape: tuple[int, int, int]
) -> None:
    model = create_model(name, device="meta")
    x = torch.empty(2, *model.config.input_shape, device="meta")
    assert model.forward_features(x).shape == (2, *feature_shape)


def test_alexnet_keeps_small_images_at_full_resolution_in_conv1() -> None:
    assert create_model("alexnet", device="meta").features[0].stride == (4, 4)
    small = create_model("alexnet", device="meta", input_shape=(1, 28, 28))
    assert small.features[0].stride == (1, 1)
    assert count_parameters(small) == count_parameters("alexnet") - 2 * 96 * 11 * 11


# ---------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", CNN_MODELS)
def test_forward_shapes_on_small_images(name: str, input_shape: tuple[int, int, int]) -> None:
    model = tiny_model(name, input_shape=input_shape, num_classes=7)
    x = torch.randn(2, *input_shape)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[:2] == (2, model.num_features)
    assert model.forward_head(features).shape == (2, 7)
    assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_runs_on_8x8_digits(name: str) -> None:
    model = tiny_model(name, input_shape=(1, 8, 8)).eval()
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("name", CNN_MODELS)
def test_reset_classifier(name: str) -> None:
    model = tiny_model(name).eval()
    x = torch.randn(2, *model.config.input_shape)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    assert model.config.num_classes == 5
    model.reset_classifier(0)  # no classifier: the pooled features
    assert model(x).shape[0] == 2 and model(x).ndim == 2
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


# ---------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_config_rebuilds_the_model_and_its_state_dict(name: str) -> None:
    model = tiny_model(name).eval()
    rebuilt = type(model)(model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, *model.config.input_shape)
    torch.testing.assert_close(rebuilt(x), model(x))


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_one_training_step_reaches_every_parameter(name: str) -> None:
    overrides = {"aux_logits": True} if name == "googlenet" else {}
    model = tiny_model(name, **overrides).train()
    x, y = torch.randn(4, *model.config.input_shape), torch.randint(0, 10, (4,))
    loss = F.cross_entropy(model(x), y)
    loss = loss + 0.3 * sum((F.cross_entropy(a, y) for a in getattr(model, "aux_outputs", ())), 0.0)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_googlenet_auxiliary_heads() -> None:
    model = tiny_model("googlenet", aux_logits=True, num_classes=6)
    x = torch.randn(2, 3, 32, 32)
    assert model.train()(x).shape == (2, 6)
    assert [a.shape for a in model.aux_outputs] == [(2, 6), (2, 6)]
    assert copy.deepcopy(model).aux_outputs == ()  # the autograd graph is not copied
    model.reset_classifier(4)
    model(x)
    assert [a.shape for a in model.aux_outputs] == [(2, 4), (2, 4)]
    model.eval()(x)
    assert model.aux_outputs == ()
    assert count_parameters("googlenet", aux_logits=True) > count_parameters("googlenet")


def test_zero_pad_shortcut_subsamples_and_pads_channels() -> None:
    x = torch.randn(2, 16, 7, 7)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


def test_stochastic_depth_drops_whole_samples_in_training_only() -> None:
    layer = StochasticDepth(0.5)
    x = torch.ones(1000, 3, 2, 2)
    torch.manual_seed(0)
    out = layer.train()(x)
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped whole
    assert out.mean().item() == pytest.approx(1.0, abs=0.1)
    assert torch.equal(layer.eval()(x), x)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_invalid_input_shape_is_explained(name: str) -> None:
    with pytest.raises(ValueError, match=r"input_shape.*\(channels, height, width\).*Received"):
        create_model(name, device="meta", input_shape=(28, 28))


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_invalid_num_classes_is_explained(name: str) -> None:
    with pytest.raises(ValueError, match="num_classes.*Received: num_classes=-3"):
        create_model(name, device="meta", num_classes=-3)


def test_invalid_family_options_are_explained() -> None:
    with pytest.raises(ValueError, match="width_multiplier"):
        create_model("resnet18", device="meta", width_multiplier=0.0)
    with pytest.raises(ValueError, match="stochastic_depth"):
        create_model("efficientnet_b0", device="meta", stochastic_depth=1.0)
    with pytest.raises(ValueError, match="classifier_width"):
        create_model("vgg16", device="meta", classifier_width=0)
