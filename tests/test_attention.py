"""Tests for llm.attention: masks, the naive and efficient layers, grouped-query attention and the KV cache."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm.attention import CausalSelfAttention, KVCache, Linear, NaiveMultiHeadAttention, causal_mask


def seeded(seed: int = 0) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def copy_naive_into_fast(naive: NaiveMultiHeadAttention, fast: CausalSelfAttention) -> None:
    with torch.no_grad():
        fast.qkv.weight.copy_(torch.cat([naive.w_query.weight, naive.w_key.weight, naive.w_value.weight]))
        fast.proj.weight.copy_(naive.out_proj.weight)
        if naive.out_proj.bias is not None:
            fast.qkv.bias.copy_(torch.cat([naive.w_query.bias, naive.w_key.bias, naive.w_value.bias]))
            fast.proj.bias.copy_(naive.out_proj.bias)


def loop_attention(x: torch.Tensor, naive: NaiveMultiHeadAttention) -> torch.Tensor:
    """Causal multi-head attention computed query by query with explicit sums, from the naive layer's weights."""
    batch, seq_len, d_model = x.shape
    hd = naive.head_dim
    q, k, v = naive.w_query(x), naive.w_key(x), naive.w_value(x)
    out = torch.zeros(batch, seq_len, d_model)
    for b in range(batch):
        for h in range(naive.n_head):
            cols = slice(h * hd, (h + 1) * hd)
            for i in range(seq_len):
                scores = torch.stack([q[b, i, cols] @ k[b, j, cols] / math.sqrt(hd) for j in range(i + 1)])
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                out[b, i, cols] = sum(w * v[b, j, cols] for j, w in enumerate(weights))
    return naive.out_proj(out)


@pytest.mark.parametrize("q_len,k_len", [(1, 1), (5, 5), (1, 7), (3, 7), (7, 7), (2, 3)])
def test_causal_mask_matches_definition(q_len, k_len):
    mask = causal_mask(q_len, k_len)
    assert mask.shape == (q_len, k_len) and mask.dtype == torch.bool
    for i in range(q_len):
        for j in range(k_len):
            assert bool(mask[i, j]) == (j <= k_len - q_len + i)


def test_causal_mask_rejects_more_queries_than_keys():
    with pytest.raises(ValueError, match="3 queries"):
        causal_mask(3, 2)


def test_naive_attention_matches_explicit_loops():
    seeded()
    naive = NaiveMultiHeadAttention(12, 3, bias=True).eval()
    x = torch.randn(2, 6, 12)
    with torch.no_grad():
        torch.testing.assert_close(naive(x), loop_attention(x, naive))


def test_naive_attention_matches_torch_multihead_attention():
    seeded()
    naive = NaiveMultiHeadAttention(32, 4, bias=True).eval()
    mha = nn.MultiheadAttention(32, 4, bias=True, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([naive.w_query.weight, naive.w_key.weight, naive.w_value.weight]))
        mha.in_proj_bias.copy_(torch.cat([naive.w_query.bias, naive.w_key.bias, naive.w_value.bias]))
        mha.out_proj.weight.copy_(naive.out_proj.weight)
        mha.out_proj.bias.copy_(naive.out_proj.bias)
        x = torch.randn(3, 9, 32)
        expected, _ = mha(x, x, x, attn_mask=~causal_mask(9, 9), need_weights=False)
        torch.testing.assert_close(naive(x), expected)


@pytest.mark.parametrize("bias", [False, True])
def test_efficient_equals_naive_forward_and_backward(bias):
    seeded()
    naive = NaiveMultiHeadAttention(48, 6, bias=bias)
    fast = CausalSelfAttention(48, 6, bias=bias)
    copy_naive_into_fast(naive, fast)
    x1 = torch.randn(2, 11, 48, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    target = torch.randn(2, 11, 48)
    F.mse_loss(naive(x1), target).backward()
    F.mse_loss(fast(x2), target).backward()
    torch.testing.assert_close(fast(x2), naive(x1))
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(fast.qkv.weight.grad[48:96], naive.w_key.weight.grad)
    torch.testing.assert_close(fast.proj.weight.grad, naive.out_proj.weight.grad)


def test_efficient_output_is_causal():
    """Changing a later token must not change the outputs at earlier positions."""
    seeded()
    layer = CausalSelfAttention(16, 2).eval()
    x = torch.randn(1, 8, 16)
    changed = x.clone()
    changed[0, 5:] = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(changed)[:, :5], layer(x)[:, :5])
        assert not torch.allclose(layer(changed)[:, 5:], layer(x)[:, 5:])


def test_dropout_acts_only_in_training():
    seeded()
    layer = CausalSelfAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 10, 16)
    layer.train()
    assert not torch.allclose(layer(x), layer(x))
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    no_dropout = CausalSelfAttention(16, 2).eval()
    no_dropout.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), no_dropout(x))


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_grouped_query_attention_equals_repeated_kv_heads(n_kv_head):
    seeded()
    d_model, n_head, hd = 32, 8, 4
    gqa = CausalSelfAttention(d_model, n_head, n_kv_head=n_kv_head, bias=True).eval()
    mha = CausalSelfAttention(d_model, n_head, bias=True).eval()
    group = n_head // n_kv_head
    sizes = [d_model, n_kv_head * hd, n_kv_head * hd]
    qw, kw, vw = gqa.qkv.weight.split(sizes)
    qb, kb, vb = gqa.qkv.bias.split(sizes)

    def rep(t):
        return t.unflatten(0, (n_kv_head, hd)).repeat_interleave(group, dim=0).flatten(0, 1)

    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([qw, rep(kw), rep(vw)]))
        mha.qkv.bias.copy_(torch.cat([qb, rep(kb), rep(vb)]))
        mha.proj.load_state_dict(gqa.proj.state_dict())
        x = torch.randn(2, 7, d_model)
        torch.testing.assert_close(gqa(x), mha(x))
    assert gqa.qkv.weight.shape == (d_model + 2 * n_kv_head * hd, d_model)


@pytest.mark.parametrize("d_model,n_head,n_kv_head", [(30, 4, None), (32, 8, 3), (32, 4, 8)])
def test_invalid_head_counts_rejected(d_model, n_head, n_kv_head):
    with pytest.raises(ValueError):
        CausalSelfAttention(d_model, n_head, n_kv_head)


@pytest.mark.parametrize("n_kv_head", [8, 2, 1])
@pytest.mark.parametrize("chunks", [[12], [1] * 12, [5, 1, 1, 5], [3, 4, 2, 1, 2], [11, 1]])
def test_cache_in_pieces_equals_one_pass(n_kv_head, chunks):
    seeded()
    layer = CausalSelfAttention(32, 8, n_kv_head=n_kv_head, bias=True).eval()
    x = torch.randn(2, 12, 32)
    cache = KVCache(2, n_kv_head, 4, max_len=12)
    outputs, start = [], 0
    with torch.no_grad():
        for size in chunks:
            outputs.append(layer(x[:, start:start + size], cache))
            start += size
        torch.testing.assert_close(torch.cat(outputs, dim=1), layer(x))
    assert cache.length == 12


def test_cache_stores_keys_and_values_and_rejects_overflow():
    seeded()
    cache = KVCache(1, 2, 3, max_len=4)
    k1, v1 = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    keys, values = cache.append(k1, v1)
    torch.testing.assert_close(keys, k1)
    torch.testing.assert_close(values, v1)
    k2, v2 = torch.randn(1, 2, 1, 3), torch.randn(1, 2, 1, 3)
    keys, values = cache.append(k2, v2)
    torch.testing.assert_close(keys, torch.cat([k1, k2], dim=2))
    torch.testing.assert_close(values, torch.cat([v1, v2], dim=2))
    with pytest.raises(ValueError, match="4 positions"):
        cache.append(k2, v2)
    cache.reset()
    assert cache.length == 0
    keys, _ = cache.append(k2, v2)
    torch.testing.assert_close(keys, k2)


@pytest.mark.parametrize("n_kv_head", [12, 4, 1])
def test_cache_memory_scales_with_kv_heads(n_kv_head):
    cache = KVCache(batch_size=3, n_kv_head=n_kv_head, head_dim=64, max_len=100)
    assert cache.keys.nbytes + cache.values.nbytes == 2 * 3 * n_kv_head * 100 * 64 * 4
    half = KVCache(3, n_kv_head, 64, 100, dtype=torch.bfloat16)
    assert half.keys.nbytes == cache.keys.nbytes // 2


def test_linear_is_nn_linear_with_column_major_weight():
    seeded()
    plain, ours = nn.Linear(6, 5), Linear(6, 5)
    assert isinstance(ours, nn.Linear)
    assert ours.weight.shape == (5, 6) and ours.weight.stride() == (1, 5)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 6)
    torch.testing.assert_close(ours(x), plain(x))
    # The order survives training steps and dtype conversion.
    optimizer = torch.optim.AdamW(ours.parameters(), lr=0.1)
    ours(x).sum().backward()
    optimizer.step()
    assert ours.weight.stride() == (1, 5)
    assert ours.to(torch.float64).weight.stride() == (1, 5)
    assert Linear(4, 3, bias=False).bias is None
