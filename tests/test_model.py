"""Tests for llm.model: configuration and presets, the blocks, the full model and its KV-cache path."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from llm.errors import ConfigError
from llm.model import GPT, MLP, Block, GPTConfig


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 97, "context_length": 16, "n_layer": 2, "n_head": 4, "d_model": 32,
                        **overrides})


def test_config_defaults_and_validation():
    config = tiny_config()
    assert config.n_kv_head == config.n_head
    assert (config.dropout, config.bias, config.tie_weights) == (0.0, False, True)
    with pytest.raises(ValueError):
        tiny_config(d_model=30)
    with pytest.raises(ValueError):
        tiny_config(n_kv_head=3)


@pytest.mark.parametrize("size,shape", [
    ("124m", (12, 12, 768)),
    ("355m", (24, 16, 1024)),
    ("774m", (36, 20, 1280)),
    ("1558m", (48, 25, 1600)),
])
def test_gpt2_presets_have_published_shapes(size, shape):
    config = GPTConfig.gpt2(size)
    assert (config.n_layer, config.n_head, config.d_model) == shape
    assert (config.vocab_size, config.context_length, config.bias, config.tie_weights) == (50257, 1024, True, True)
    d, n = config.d_model, config.n_layer
    # Published architecture: per block 12 d^2 + 13 d, plus embeddings and the final layer norm.
    assert config.num_params() == (50257 + 1024) * d + n * (12 * d * d + 13 * d) + 2 * d


def test_presets_accept_overrides():
    assert GPTConfig.gpt2("124m", n_layer=2, dropout=0.1).n_layer == 2
    with pytest.raises(ConfigError, match="GPT-2 size must be one of 124m, 355m, 774m, 1558m, got '125m'"):
        GPTConfig.gpt2("125m")
    small = GPTConfig.small(vocab_size=1000, n_kv_head=2)
    assert (small.vocab_size, small.n_kv_head, small.bias) == (1000, 2, False)
    assert GPTConfig.tiny(vocab_size=50).vocab_size == 50


def test_gpt2_small_parameter_count():
    assert GPTConfig.gpt2("124m").num_params() == 124_439_808


@pytest.mark.parametrize("overrides", [{}, {"tie_weights": False}, {"bias": True}, {"n_kv_head": 2}])
def test_meta_count_equals_real_model(overrides):
    config = tiny_config(**overrides)
    model = GPT(config)
    assert config.num_params() == model.num_params() == sum(p.numel() for p in set(model.parameters()))


def test_non_embedding_count():
    tied, untied = GPT(tiny_config()), GPT(tiny_config(tie_weights=False))
    blocks_and_norm = sum(p.numel() for p in tied.blocks.parameters()) + sum(p.numel() for p in tied.ln_f.parameters())
    assert tied.num_params(non_embedding=True) == blocks_and_norm
    assert untied.num_params(non_embedding=True) == blocks_and_norm + 97 * 32
    assert tiny_config().num_params(non_embedding=True) == blocks_and_norm


def test_memory_estimate():
    config = tiny_config()
    n = config.num_params()
    assert config.memory_bytes() == 4 * n
    assert config.memory_bytes(torch.bfloat16) == 2 * n
    assert config.memory_bytes(training=True) == 16 * n


def test_untied_model_has_one_more_embedding_matrix():
    tied, untied = GPT(tiny_config()), GPT(tiny_config(tie_weights=False))
    assert untied.num_params() - tied.num_params() == 97 * 32
    assert tied.lm_head is None and untied.lm_head is not None


def test_forward_shape_and_initial_loss():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=5000)
    model = GPT(config)
    idx = torch.randint(0, 5000, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 5000) and logits.dtype == torch.float32
    loss = F.cross_entropy(logits.flatten(0, 1), torch.randint(0, 5000, (48,)))
    assert abs(loss.item() - math.log(5000)) < 0.2


def test_forward_is_causal():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 97, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 97
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, :8], model(idx)[:, :8])


def test_tied_embedding_receives_gradient_from_both_uses():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx = torch.tensor([[1, 2, 3]])
    model(idx).sum().backward()
    grad = model.wte.weight.grad
    # The output layer touches every row; rows of tokens not in the input get gradient from it alone.
    assert grad[50].abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_context_length_is_enforced():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 1, "bias": True}, {"tie_weights": False}])
def test_cached_forward_equals_full_forward(overrides):
    torch.manual_seed(0)
    model = GPT(tiny_config(**overrides)).eval()
    idx = torch.randint(0, 97, (2, 16))
    cache = model.new_cache(batch_size=2)
    with torch.no_grad():
        pieces = [model(idx[:, :7], cache), model(idx[:, 7:10], cache)]
        pieces += [model(idx[:, t:t + 1], cache) for t in range(10, 16)]
        torch.testing.assert_close(torch.cat(pieces, dim=1), model(idx))
    assert [c.length for c in cache] == [16, 16]
    with pytest.raises(ValueError):
        model(idx[:, :1], cache)


def test_new_cache_follows_model_dtype():
    model = GPT(tiny_config(n_kv_head=2)).to(torch.float64)
    cache = model.new_cache(batch_size=3, max_len=5)
    assert len(cache) == 2
    assert cache[0].keys.shape == (3, 2, 5, 8) and cache[0].keys.dtype == torch.float64


def test_residual_projections_use_scaled_initialisation():
    torch.manual_seed(0)
    model = GPT(tiny_config(n_layer=8, d_model=256))
    proj_std = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks]).std().item()
    fc_std = torch.cat([b.mlp.fc.weight.flatten() for b in model.blocks]).std().item()
    assert abs(fc_std - 0.02) < 0.001
    assert abs(proj_std - 0.02 / math.sqrt(2 * 8)) < 0.0005


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = GPT(tiny_config(dropout=0.3))
    idx = torch.randint(0, 97, (2, 10))
    assert not torch.allclose(model(idx), model(idx))
    model.eval()
    torch.testing.assert_close(model(idx), model(idx))


def test_block_with_zero_branches_is_identity_and_mlp_is_positionwise():
    torch.manual_seed(0)
    block = Block(tiny_config(bias=True))
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        for proj in (block.attn.proj, block.mlp.proj):
            proj.weight.zero_()
            proj.bias.zero_()
    torch.testing.assert_close(block(x), x)
    mlp = MLP(32)
    torch.testing.assert_close(mlp(x), torch.stack([mlp(x[:, t]) for t in range(5)], dim=1))


def test_replace_keeps_config_valid():
    config = dataclasses.replace(GPTConfig.gpt2("124m"), n_kv_head=4)
    assert config.num_params() < GPTConfig.gpt2("124m").num_params()
