"""llm.modern: each piece against a reference, and the model against generation, the registry and its config."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm.bpe import BPETokenizer
from llm.config import from_mapping
from llm.errors import ConfigError
from llm.generate import generate
from llm.modelio import build_model, load_model, save_model
from llm.modern import (FFN_KINDS, FeedForward, ModernAttention, ModernConfig, ModernGPT, MoE, RMSNorm,
                        RollingKVCache, apply_rope, attention_mask, default_d_ff, load_balancing_loss, modern_loss,
                        rope_cos_sin, rope_inv_freq)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides) -> ModernConfig:
    """A two-layer model with random (not zero) output projections, so that every path shows in the outputs."""
    options = {"vocab_size": 97, "context_length": 48, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 32,
               "zero_init_out": False}
    return ModernConfig(**{**options, **overrides})


def model_of(config: ModernConfig, seed: int = 0) -> ModernGPT:
    torch.manual_seed(seed)
    return ModernGPT(config).eval()


def test_rmsnorm_matches_torch():
    x = 2 * torch.randn(3, 5, 24) + 0.5
    ours, reference = RMSNorm(24, eps=1e-6), nn.RMSNorm(24, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
        reference.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), reference(x))
    half = ours(x.bfloat16())  # normalised in float32, cast back before the gain
    expected = ours.weight * (x.bfloat16().float() * torch.rsqrt(x.bfloat16().float().pow(2).mean(-1, keepdim=True)
                                                                    + 1e-6)).bfloat16()
    torch.testing.assert_close(half, expected)


def test_rope_scores_depend_only_on_distance():
    inv_freq = rope_inv_freq(32).double()
    q, k = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)

    def score(m: int, n: int) -> torch.Tensor:
        cos, sin = rope_cos_sin(torch.tensor([m, n]), inv_freq)
        return (apply_rope(q, cos[0], sin[0]) * apply_rope(k, cos[1], sin[1])).sum()

    for m, n in [(3, 0), (10, 10), (2, 9)]:
        for shift in (1, 77, 4000):
            torch.testing.assert_close(score(m + shift, n + shift), score(m, n))
    assert not torch.isclose(score(3, 0), score(4, 0))
    # Rotation keeps the length of every vector.
    cos, sin = rope_cos_sin(torch.arange(20), inv_freq)
    torch.testing.assert_close(apply_rope(q.expand(20, 32), cos, sin).norm(dim=-1), q.norm().expand(20))


def test_rope_linear_scaling_divides_positions():
    positions = torch.arange(0, 64, dtype=torch.float32)
    plain, linear = rope_inv_freq(16), rope_inv_freq(16, scaling="linear", factor=4.0)
    torch.testing.assert_close(rope_cos_sin(positions, linear), rope_cos_sin(positions / 4, plain))


def test_rope_ntk_keeps_fastest_pair_and_slows_the_slowest_by_the_factor():
    plain, ntk = rope_inv_freq(64, 500.0), rope_inv_freq(64, 500.0, scaling="ntk", factor=8.0)
    assert ntk[0] == plain[0]
    torch.testing.assert_close(ntk[-1], plain[-1] / 8, rtol=1e-5, atol=0)


def test_rope_llama3_matches_the_formula():
    head_dim, theta, factor, original, low, high = 64, 500000.0, 8.0, 8192, 1.0, 4.0
    got = rope_inv_freq(head_dim, theta, "llama3", factor, original_context=original, low_freq_factor=low,
                        high_freq_factor=high)
    expected = []
    for i in range(0, head_dim, 2):  # one pair at a time, in the words of Llama 3.1's rule
        freq = 1.0 / theta ** (i / head_dim)
        wavelength = 2 * math.pi / freq
        if wavelength < original / high:
            expected.append(freq)
        elif wavelength > original / low:
            expected.append(freq / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            expected.append((1 - smooth) * freq / factor + smooth * freq)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32))
    assert (got == rope_inv_freq(head_dim, theta)).any() and (got < rope_inv_freq(head_dim, theta)).any()


@pytest.mark.parametrize("d_model", [48, 96, 64])
def test_ffn_kinds_have_gpt2_parameter_count(d_model):
    gpt2_count = 8 * d_model * d_model
    for kind in FFN_KINDS:
        count = sum(p.numel() for p in FeedForward(d_model, default_d_ff(d_model, kind), kind).parameters())
        assert abs(count - gpt2_count) <= 3 * d_model  # exact when d_model is a multiple of 3
        if d_model % 3 == 0:
            assert count == gpt2_count


def test_ffn_kinds_compute_their_formulas():
    x = torch.randn(4, 16)
    swiglu, relu2 = FeedForward(16, 24, "swiglu"), FeedForward(16, 24, "relu2")
    torch.testing.assert_close(swiglu(x), swiglu.down_proj(F.silu(swiglu.gate_proj(x)) * swiglu.up_proj(x)))
    torch.testing.assert_close(relu2(x), relu2.down_proj(F.relu(relu2.up_proj(x)) ** 2))
    assert relu2.gate_proj is None


def test_gqa_model_equals_model_with_repeated_kv_heads():
    grouped = model_of(tiny(n_head=4, n_kv_head=2))
    full = model_of(tiny(n_head=4, n_kv_head=4))
    state = grouped.state_dict()
    for name, tensor in state.items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            head_dim = grouped.config.head_dim
            state[name] = tensor.view(2, head_dim, -1).repeat_interleave(2, dim=0).reshape(4 * head_dim, -1)
    full.load_state_dict(state)
    ids = torch.randint(0, 97, (2, 20))
    torch.testing.assert_close(full(ids), grouped(ids))


def test_attention_mask_matches_explicit_band():
    positions = torch.arange(9)
    for window in (1, 3, 9, None):
        expected = torch.tensor([[k <= q and (window is None or k > q - window) for k in range(9)]
                                 for q in range(9)])
        assert torch.equal(attention_mask(positions, positions, window), expected)
    assert not attention_mask(torch.tensor([5]), torch.tensor([-1, 4]), None)[0, 0]  # empty slots stay hidden


def test_sliding_window_attention_matches_explicit_mask():
    torch.manual_seed(0)
    layer = ModernAttention(32, 4, 2, 8, window=4, qk_norm=False).eval()
    x, positions = torch.randn(2, 11, 32), torch.arange(11)
    q = layer.q_proj(x).view(2, 11, 4, 8).transpose(1, 2)
    k = layer.k_proj(x).view(2, 11, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    v = layer.v_proj(x).view(2, 11, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    allowed = torch.tensor([[q_pos - 4 < k_pos <= q_pos for k_pos in range(11)] for q_pos in range(11)])
    weights = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~allowed, float("-inf")).softmax(-1)
    expected = layer.o_proj((weights @ v).transpose(1, 2).reshape(2, 11, 32))
    torch.testing.assert_close(layer(x, positions), expected)


def test_rolling_cache_keeps_only_the_window():
    cache = RollingKVCache(1, 2, 4, max_len=100, window=5)
    assert cache.keys.shape[2] == 5
    for p in range(13):
        keys, _, positions = cache.append(torch.full((1, 2, 1, 4), float(p)), torch.zeros(1, 2, 1, 4))
    assert sorted(cache.positions.tolist()) == [8, 9, 10, 11, 12]
    assert all(cache.keys[0, 0, slot, 0] == position for slot, position in enumerate(cache.positions.tolist()))
    assert cache.length == 13
    cache.reset()
    assert cache.length == 0 and (cache.positions == -1).all()
    with pytest.raises(ValueError, match="holds 3 positions"):
        RollingKVCache(1, 1, 2, max_len=3).append(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))


@pytest.mark.parametrize("options", [{}, {"sliding_window": 5}, {"n_expert": 4},
                                     {"n_expert": 4, "n_expert_active": 1, "sliding_window": 3},
                                     {"position": "learned", "sliding_window": 6}])
def test_cached_generation_equals_uncached(options):
    model = model_of(tiny(**options))
    prompt = torch.randint(0, 97, (2, 4))
    # 40 new tokens: past every window, and past the context of 48 (the crop-and-recompute path).
    for new in (12, 50):
        cached = generate(model, prompt, max_new_tokens=new, use_cache=True)
        assert torch.equal(cached, generate(model, prompt, max_new_tokens=new, use_cache=False))


def test_chunked_prefill_through_rolling_cache_equals_one_pass():
    model = model_of(tiny(sliding_window=4, n_expert=4))
    ids = torch.randint(0, 97, (1, 19))
    cache = model.new_cache(1)
    pieces = [model(ids[:, a:b], cache) for a, b in [(0, 7), (7, 8), (8, 13), (13, 19)]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(ids))
    assert sum(layer.nbytes for layer in cache) < sum(layer.nbytes for layer in model_of(tiny()).new_cache(1)) / 5


def test_moe_equals_per_token_loop():
    torch.manual_seed(0)
    moe = MoE(d_model=12, d_expert=10, n_expert=5, top_k=2, norm_topk_prob=False)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 7, 12)
    expected = torch.zeros(14, 12)
    for t, token in enumerate(x.reshape(14, 12)):
        probs = (moe.router.weight @ token).softmax(-1)
        for e in probs.topk(2).indices.tolist():
            hidden = F.silu(moe.gate_proj[e] @ token) * (moe.up_proj[e] @ token)
            expected[t] += probs[e] * (moe.down_proj[e] @ hidden)
    torch.testing.assert_close(moe(x), expected.view(2, 7, 12))
    assert moe.expert_fraction.sum().item() == pytest.approx(1.0)
    # Gradients reach every expert that was chosen, and the router through the weights and the aux loss.
    (moe(x).square().sum() + moe.aux_loss).backward()
    assert moe.router.weight.grad.abs().sum() > 0 and moe.gate_proj.grad.abs().sum() > 0


def test_load_balancing_loss_by_hand():
    probs = torch.full((4, 4), 0.25)
    aux, fraction = load_balancing_loss(probs, torch.tensor([[0], [1], [2], [3]]), 4)
    assert aux.item() == pytest.approx(1.0) and fraction.tolist() == [0.25] * 4
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(4, 1)
    aux, fraction = load_balancing_loss(probs, torch.zeros(4, 1, dtype=torch.long), 4)
    assert aux.item() == pytest.approx(2.8) and fraction.tolist() == [1.0, 0, 0, 0]
    # top-2 over 2 tokens: choices (0, 1), (0, 2); fractions 1/2, 1/4, 1/4, 0.
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.5, 0.1, 0.3, 0.1]])
    aux, _ = load_balancing_loss(probs, torch.tensor([[0, 1], [0, 2]]), 4)
    assert aux.item() == pytest.approx(4 * (0.5 * 0.5 + 0.25 * 0.2 + 0.25 * 0.2))


def test_modern_loss_adds_weighted_aux_and_logs_shares():
    model = model_of(tiny(n_expert=4, aux_loss_weight=0.5))
    ids = torch.randint(0, 97, (2, 10))
    loss, metrics = modern_loss(model, (ids, ids))
    plain = F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    assert loss.item() == pytest.approx(plain.item() + 0.5 * metrics["aux_loss"], rel=1e-5)
    assert sum(metrics[f"load.1.{e}"] for e in range(4)) == pytest.approx(1.0)
    assert modern_loss(model_of(tiny()), (ids, ids))[1] == {}


def test_state_dict_names_and_shapes():
    config = tiny(n_expert=3, head_dim=6, d_expert=5)
    shapes = {name: tuple(t.shape) for name, t in model_of(config).state_dict().items()}
    assert shapes["tok_emb.weight"] == (97, 32) and shapes["lm_head.weight"] == (97, 32)
    assert shapes["blocks.0.attn.q_proj.weight"] == (24, 32) and shapes["blocks.0.attn.k_proj.weight"] == (12, 32)
    assert shapes["blocks.1.attn.o_proj.weight"] == (32, 24) and shapes["blocks.1.attn.q_norm.weight"] == (6,)
    assert shapes["blocks.0.ffn.router.weight"] == (3, 32)
    assert shapes["blocks.0.ffn.gate_proj"] == (3, 5, 32) and shapes["blocks.0.ffn.down_proj"] == (3, 32, 5)
    assert "final_norm.weight" in shapes and "pos_emb.weight" not in shapes
    assert not any("bias" in name for name in shapes)
    tied = model_of(tiny(tie_embeddings=True, position="learned", qk_norm=False, ffn="relu2")).state_dict()
    assert "lm_head.weight" not in tied and "pos_emb.weight" in tied and "blocks.0.attn.k_norm.weight" not in tied
    assert "blocks.0.ffn.gate_proj.weight" not in tied and "blocks.0.ffn.up_proj.weight" in tied


def test_zero_init_blocks_start_as_identity():
    model = model_of(tiny(zero_init_out=True))
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model.lm_head(model.final_norm(model.tok_emb(ids))))


def test_rope_model_runs_past_its_context_but_learned_positions_do_not():
    ids = torch.randint(0, 97, (1, 60))
    assert model_of(tiny())(ids).shape == (1, 60, 97)
    with pytest.raises(ValueError, match="context length"):
        model_of(tiny(position="learned"))(ids)


def test_save_load_round_trip(tmp_path):
    model = model_of(tiny(n_expert=4, sliding_window=8, rope_scaling="ntk", rope_factor=2.0))
    path = tmp_path / "model.safetensors"
    save_model(model, path, BPETokenizer([]))
    loaded, _ = load_model(path)
    assert type(loaded) is ModernGPT and loaded.config == model.config
    ids = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(loaded(ids), model(ids))


def test_build_from_config_file_section():
    model = build_model("modern", {"vocab_size": 50, "context_length": 16, "n_layer": 1, "n_head": 2,
                                   "d_model": 8, "ffn": "relu2"})
    assert isinstance(model, ModernGPT) and model.config.d_ff == 32


@pytest.mark.parametrize("options, field", [
    ({"n_kv_head": 3}, "n_kv_head"),
    ({"ffn": "geglu"}, "ffn"),
    ({"norm": "batchnorm"}, "norm"),
    ({"position": "alibi"}, "position"),
    ({"rope_scaling": "yarn"}, "rope_scaling"),
    ({"rope_scaling": "llama3"}, "rope_original_context"),
    ({"head_dim": 5}, "head_dim"),
    ({"d_model": 30}, "d_model"),
    ({"sliding_window": 0}, "sliding_window"),
    ({"n_expert": 4, "n_expert_active": 5}, "n_expert_active"),
    ({"n_expert": 4, "ffn": "gelu"}, "ffn"),
    ({"dropout": 1.0}, "dropout"),
    ({"rope_factor": 0.5}, "rope_factor"),
])
def test_config_errors_name_the_field(options, field):
    with pytest.raises(ConfigError) as error:
        tiny(**options)
    message = str(error.value)
    assert message.startswith(f"{field}: ") and "\n" not in message
    with pytest.raises(ConfigError, match=rf"^model\.{field}: "):
        from_mapping(ModernConfig, {**tiny().__dict__, "n_kv_head": None, "head_dim": None, "d_ff": None,
                                    **options}, "model")
