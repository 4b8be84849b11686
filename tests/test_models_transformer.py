"""Transformer families: published sizes, references (torch's own attention and encoder
layer), causality, grouped-query attention, mixture-of-experts routing, and sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepnet.models import count_parameters, create_model, model_info
from deepnet.models._attention import Block, SelfAttention, apply_rotary, rotary_cos_sin
from deepnet.models._moe import MoEFeedForward
from deepnet.models.t5 import T5
from deepnet.models.transformer import generate

PUBLISHED = [
    "bert-base", "bert-large", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt3-175b",
    "llama2-7b", "llama2-13b", "llama2-70b", "palm-540b", "t5-base", "vit-b16",
    "deepseek-v3", "deepseek-r1",
]
DECODERS = ["gpt2", "gpt-char", "llama2-70b", "palm-540b", "deepseek-v3"]


def tiny(name: str, **overrides: object) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**model_info(name).tiny, **overrides}).eval()


# ----------------------------------------------------------------------------- published sizes

@pytest.mark.parametrize("name", PUBLISHED)
def test_published_size_and_depth(name: str) -> None:
    info = model_info(name)
    model = create_model(name, device="meta")  # the full architecture, no memory
    counted = count_parameters(model)
    assert info.published_parameters is not None and info.published_layers is not None
    assert abs(counted / info.published_parameters - 1) < 0.02, (name, counted)
    if isinstance(model, T5):  # "12 blocks each in the encoder and decoder"
        assert len(model.encoder.blocks) == len(model.decoder.blocks) == info.published_layers
    else:
        assert len(model.blocks) == info.published_layers


def test_tied_embeddings_are_counted_once() -> None:
    model = tiny("gpt2")
    assert model.lm_head.weight is model.wte.weight
    stored = sum(t.numel() for t in model.state_dict().values())  # holds the tied tensor twice
    assert count_parameters(model) == stored - model.wte.weight.numel()


def test_unknown_override_names_the_closest_field() -> None:
    with pytest.raises(ValueError, match="no argument 'n_layers'.*Did you mean 'n_layer'"):
        create_model("llama2-7b", device="meta", n_layers=2)


# ----------------------------------------------------------------------------- references

def copy_multihead_weights(ours: SelfAttention, ref: nn.MultiheadAttention) -> None:
    q, k, v = ref.in_proj_weight.chunk(3)
    q_bias, k_bias, v_bias = ref.in_proj_bias.chunk(3)
    with torch.no_grad():
        pairs = ((ours.q_proj, q, q_bias), (ours.k_proj, k, k_bias), (ours.v_proj, v, v_bias))
        for linear, weight, bias in pairs:
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        ours.o_proj.weight.copy_(ref.out_proj.weight)
        ours.o_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch_multihead_attention(causal: bool) -> None:
    torch.manual_seed(0)
    B, T, C, nh = 3, 7, 32, 4
    ref = nn.MultiheadAttention(C, nh, batch_first=True).eval()
    ours = SelfAttention(C, nh, n_kv_head=nh, causal=causal).eval()  # GQA with n_kv_head == n_head
    copy_multihead_weights(ours, ref)
    x = torch.randn(B, T, C)
    future = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # True = masked
    expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)


def test_grouped_query_attention_equals_attention_with_repeated_kv_heads() -> None:
    torch.manual_seed(0)
    C, nh, nkv, hs = 32, 8, 2, 4
    grouped = SelfAttention(C, nh, n_kv_head=nkv, causal=True, rope_base=10000.0).eval()
    full = SelfAttention(C, nh, n_kv_head=nh, causal=True, rope_base=10000.0).eval()
    with torch.no_grad():
        full.q_proj.load_state_dict(grouped.q_proj.state_dict())
        full.o_proj.load_state_dict(grouped.o_proj.state_dict())
        for name in ("k_proj", "v_proj"):
            src, dst = getattr(grouped, name), getattr(full, name)
            # key/value head j serves query heads j*nh/nkv ... (j+1)*nh/nkv - 1
            weight = src.weight.view(nkv, hs, C).repeat_interleave(nh // nkv, dim=0)  # (nh, hs, C)
            dst.weight.copy_(weight.reshape(nh * hs, C))
            bias = src.bias.view(nkv, hs).repeat_interleave(nh // nkv, dim=0)  # (nh, hs)
            dst.bias.copy_(bias.reshape(nh * hs))
    x = torch.randn(2, 6, C)
    torch.testing.assert_close(grouped(x), full(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_matches_torch_transformer_encoder_layer(norm_first: bool) -> None:
    torch.manual_seed(0)
    C, nh, hidden = 32, 4, 64
    ref = nn.TransformerEncoderLayer(
        C, nh, hidden, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first
    ).eval()
    ours = Block(C, nh, hidden, activation=nn.GELU(), norm_first=norm_first).eval()
    copy_multihead_weights(ours.attn, ref.self_attn)
    ours.ln_1.load_state_dict(ref.norm1.state_dict())
    ours.ln_2.load_state_dict(ref.norm2.state_dict())
    ours.mlp.fc.load_state_dict(ref.linear1.state_dict())
    ours.mlp.proj.load_state_dict(ref.linear2.state_dict())
    x = torch.randn(3, 7, C)
    padded = torch.zeros(3, 7, dtype=torch.bool)
    padded[1, 5:] = True  # the reference's convention: True = ignore this key
    expected = ref(x, src_key_padding_mask=padded)
    got = ours(x, attn_mask=~padded[:, None, None, :])  # ours: True = attend
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    cos, sin = rotary_cos_sin(12, 8, 10000.0, torch.device("cpu"), torch.float32)

    def score(i: int, j: int) -> torch.Tensor:
        return (apply_rotary(q, cos[i], sin[i]) * apply_rotary(k, cos[j], sin[j])).sum()

    torch.testing.assert_close(score(5, 2), score(9, 6))
    torch.testing.assert_close(score(0, 0), (q * k).sum())


# ----------------------------------------------------------------------------- causality, padding

@pytest.mark.parametrize("name", DECODERS)
def test_future_tokens_do_not_change_past_logits(name: str) -> None:
    model = tiny(name)
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 64
    with torch.no_grad():
        before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :8], after[:, :8], atol=1e-5, rtol=0)
    assert not torch.allclose(before[:, 8:], after[:, 8:])


def test_t5_decoder_is_causal_and_ignores_source_padding() -> None:
    model = tiny("t5-base")
    src = torch.randint(1, 64, (2, 9))
    tgt = torch.randint(0, 64, (2, 6))
    changed = tgt.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 64
    padded_src = torch.cat((src, torch.zeros(2, 3, dtype=torch.long)), dim=1)
    with torch.no_grad():
        logits = model(src, tgt)
        torch.testing.assert_close(logits[:, :4], model(src, changed)[:, :4], atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, model(padded_src, tgt), atol=1e-5, rtol=0)
    assert logits.shape == (2, 6, 64)


@pytest.mark.parametrize("name", ["transformer-classifier", "bert-base"])
def test_classifiers_ignore_trailing_padding(name: str) -> None:
    model = tiny(name)
    x = torch.randint(1, 64, (2, 10))
    padded = torch.cat((x, torch.zeros(2, 6, dtype=torch.long)), dim=1)
    all_padding = torch.zeros(1, 16, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded), atol=1e-5, rtol=0)
        assert torch.isfinite(model(all_padding)).all()


@pytest.mark.parametrize("patch_size", [4, 7])
def test_vit_runs_on_mnist_sized_images(patch_size: int) -> None:
    model = create_model("vit-b16", input_shape=(1, 28, 28), num_classes=10, patch_size=patch_size,
                         n_layer=1, n_head=2, n_embd=32, mlp_dim=64)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert create_model("vit-mnist")(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_vit_rejects_a_patch_size_that_does_not_divide_the_image() -> None:
    with pytest.raises(ValueError, match="multiples of patch_size"):
        create_model("vit-b16", input_shape=(1, 28, 28), patch_size=16, device="meta")


def test_sequence_longer_than_block_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="longer than its block_size=32"):
        tiny("gpt-char")(torch.zeros(1, 33, dtype=torch.long))


# ----------------------------------------------------------------------------- mixture of experts

def test_moe_router_picks_top_k_and_aux_loss_is_finite() -> None:
    torch.manual_seed(0)
    moe = MoEFeedForward(16, 8, n_experts=6, top_k=2, routed_scaling=1.5)
    x = torch.randn(20, 16)
    weights, indices, balance = moe.route(x)
    expected = moe.router(x).softmax(-1).topk(2, dim=-1).indices
    assert torch.equal(indices.sort(-1).values, expected.sort(-1).values)
    torch.testing.assert_close(weights.sum(-1), torch.full((20,), 1.5))
    assert torch.isfinite(balance) and balance > 0
    y = moe(x.view(4, 5, 16))
    assert y.shape == (4, 5, 16) and torch.isfinite(moe.aux_loss)
    (y.sum() + moe.aux_loss).backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


def test_moe_output_equals_per_token_mixture_of_its_experts() -> None:
    torch.manual_seed(0)
    moe = MoEFeedForward(16, 8, n_experts=8, top_k=3, n_shared_experts=1, scoring="sigmoid",
                         n_group=4, topk_group=2, routed_scaling=2.5)
    x = torch.randn(1, 10, 16)
    weights, indices, _ = moe.route(x[0])
    # group-limited: the chosen experts of each token come from at most topk_group groups
    assert all(len(set((row // 2).tolist())) <= 2 for row in indices)
    e = moe.experts
    expected = moe.shared_experts(x[0])
    for token in range(10):
        for w, i in zip(weights[token], indices[token]):
            h = x[0, token]
            expert = (torch.nn.functional.silu(e.gate_proj[i] @ h) * (e.up_proj[i] @ h))
            expected[token] += w * (e.down_proj[i] @ expert)
    torch.testing.assert_close(moe(x)[0], expected, atol=1e-5, rtol=0)


def test_expert_bias_moves_load_towards_balance() -> None:
    moe = MoEFeedForward(8, 4, n_experts=4, top_k=1, scoring="sigmoid")
    moe(torch.randn(2, 16, 8))
    load = moe.expert_load
    moe.update_expert_bias(rate=0.1)
    busiest, idlest = load.argmax(), load.argmin()
    assert moe.expert_bias[busiest] < 0 < moe.expert_bias[idlest]


def test_deepseek_exposes_summed_aux_loss() -> None:
    model = tiny("deepseek-v3").train()
    logits = model(torch.randint(0, 64, (2, 8)))
    assert logits.shape == (2, 8, 64)
    assert model.aux_loss is not None and torch.isfinite(model.aux_loss) and model.aux_loss > 0
    (logits.square().mean() + model.aux_loss).backward()


# ----------------------------------------------------------------------------- generation

@pytest.mark.parametrize("name", DECODERS)
def test_generate_shape_and_seeded_reproducibility(name: str) -> None:
    model = tiny(name).train()
    prompt = torch.randint(0, 64, (2, 5))
    # 40 new tokens run past block_size=32, so the context is cropped on the way
    sample = dict(temperature=0.8, top_k=10)
    first = generate(model, prompt, 40, **sample, generator=torch.Generator().manual_seed(0))
    second = generate(model, prompt, 40, **sample, generator=torch.Generator().manual_seed(0))
    assert first.shape == (2, 45) and first.dtype == torch.long
    assert torch.equal(first, second) and torch.equal(first[:, :5], prompt)
    assert int(first.max()) < 64
    assert model.training  # generate() restores the mode it found


def test_generate_with_temperature_zero_is_greedy() -> None:
    model = tiny("gpt-char")
    prompt = torch.randint(0, 64, (1, 4))
    out = generate(model, prompt, 1, temperature=0)
    assert out[0, -1] == model(prompt)[0, -1].argmax()


def test_generate_rejects_a_model_without_block_size() -> None:
    with pytest.raises(TypeError, match="block_size"):
        generate(nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), 1)
