"""Every registered model, at its tiny configuration: the registry tests a new entry for free."""

import inspect

import pytest
import torch
from safetensors.torch import load_file, save_file

from deepnet.models import create_model, list_models, model_info

BATCH, SEQ = 2, 8


def _arguments(name: str) -> dict:
    info = model_info(name)
    defaults = {p.name: p.default for p in inspect.signature(info.factory).parameters.values()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **info.tiny}


def _example_input(name: str, args: dict):
    kind = model_info(name).input_kind
    g = torch.Generator().manual_seed(0)
    if kind in ("image", "vector"):
        return (torch.randn(BATCH, *args["input_shape"], generator=g),)
    vocab = args.get("vocab_size", 64)
    tokens = torch.randint(1, vocab, (BATCH, SEQ), generator=g)
    if kind == "seq2seq":
        return tokens, torch.randint(1, vocab, (BATCH, SEQ - 2), generator=g)
    return (tokens,)


def _expected_shape(name: str, args: dict, inputs) -> tuple[int, ...]:
    kind = model_info(name).input_kind
    if kind in ("lm", "seq2seq"):
        return (BATCH, inputs[-1].shape[1], args["vocab_size"])
    return (BATCH, args["num_classes"])


# The generative families (autoencoders, VAE, GAN, diffusion) have no logits; tests/test_generative.py
# covers them with their own objective.
@pytest.mark.parametrize("name", [n for n in list_models() if model_info(n).input_kind != "generative"])
def test_registered_model_smoke(name, tmp_path):
    torch.manual_seed(0)
    args = _arguments(name)
    model = create_model(name, **model_info(name).tiny)
    inputs = _example_input(name, args)
    model.train()
    out = model(*inputs)
    assert out.shape == _expected_shape(name, args, inputs)
    assert torch.isfinite(out).all()
    loss = out.float().pow(2).mean()
    aux = getattr(model, "aux_loss", None)
    if isinstance(aux, torch.Tensor):
        loss = loss + aux
    loss.backward()
    # An RBM's visible biases serve its pre-training only (the deep belief net's CD-k step).
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None
                 and not n.endswith("visible_bias")]
    assert not unreached, f"backward does not reach {unreached[:5]}"

    path = tmp_path / "w.safetensors"
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    rebuilt = create_model(name, **model_info(name).tiny)
    rebuilt.load_state_dict(load_file(str(path)))
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.allclose(model(*inputs), rebuilt(*inputs), atol=1e-6)


def test_every_entry_documents_itself():
    for name in list_models():
        info = model_info(name)
        assert info.family and info.paper and 1940 < info.year < 2030, name


def test_unknown_model_suggests_closest():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet51'. Did you mean 'resnet50'"):
        create_model("resnet51")


def test_unknown_argument_suggests_closest():
    with pytest.raises(ValueError, match=r"no argument 'widht'. Did you mean 'width'"):
        create_model("mlp", widht=3)
