"""llm.hub: Hugging Face Llama / Qwen3 / Qwen3-MoE checkpoints load into ModernGPT and compute what transformers
computes. The reference models are tiny random ones built by transformers itself (a test-only dependency)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llm.errors import CheckpointError, ConfigError
from llm.generate import generate
from llm.hub import hf_config, hf_shapes, hf_to_ours, load_hf

pytest.importorskip("transformers")
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM,  # noqa: E402
                          Qwen3MoeConfig, Qwen3MoeForCausalLM)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: threads would only wait for each other
FAMILIES = {"Llama": (LlamaConfig, LlamaForCausalLM), "Qwen3": (Qwen3Config, Qwen3ForCausalLM),
            "Qwen3Moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM)}

TINY = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, max_position_embeddings=256, bos_token_id=None, eos_token_id=None,
            pad_token_id=None)
QWEN = dict(TINY, head_dim=32)  # Qwen3 decouples the head width from hidden_size / num_attention_heads
MOE = dict(QWEN, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}  # low enough to scale short spans
VARIANTS = {
    "llama": ("Llama", dict(TINY)),
    "llama-tied": ("Llama", dict(TINY, tie_word_embeddings=True)),
    "llama3-rope": ("Llama", dict(TINY, rope_parameters=LLAMA3_ROPE)),
    "llama-linear-rope": ("Llama", dict(TINY, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0,
                                                               "factor": 4.0})),
    "qwen3": ("Qwen3", dict(QWEN)),
    "qwen3-tied": ("Qwen3", dict(QWEN, tie_word_embeddings=True)),
    "qwen3-sliding": ("Qwen3", dict(QWEN, use_sliding_window=True, sliding_window=5, max_window_layers=0)),
    "qwen3-moe": ("Qwen3Moe", dict(MOE, norm_topk_prob=True)),
    "qwen3-moe-unnormalised": ("Qwen3Moe", dict(MOE, norm_topk_prob=False)),
}


def reference_model(family: str, settings: dict, seed: int = 0):
    """A transformers model with random weights, drawn wider than transformers' own initialisation (and norm
    weights away from 1, router weights away from 0) so that a wrong convention shows in the logits."""
    torch.manual_seed(seed)
    config_class, model_class = FAMILIES[family]
    model = model_class(config_class(**settings)).eval()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            weight.copy_(torch.rand_like(weight) + 0.5 if name.endswith("norm.weight")
                         else 0.3 * torch.randn_like(weight))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """variant -> (transformers model, checkpoint folder), each built and saved once."""
    built = {}

    def get(variant: str):
        if variant not in built:
            model = reference_model(*VARIANTS[variant])
            folder = tmp_path_factory.mktemp(variant)
            model.save_pretrained(folder)
            built[variant] = model, folder
        return built[variant]
    return get


def copy_checkpoint(folder, tmp_path):
    """A private copy of a saved checkpoint folder that a test may damage."""
    for file in folder.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    return tmp_path


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_match_transformers(saved, variant):
    reference, folder = saved(variant)
    model = load_hf(folder)
    idx = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(idx).logits
        logits = model(idx)
    assert expected.std() > 1.0  # far from uniform, so agreement means something
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_generation_with_kv_cache_matches_transformers(saved, variant):
    reference, folder = saved(variant)
    model = load_hf(folder)
    prompt = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(2))
    ours = generate(model, prompt, max_new_tokens=20, use_cache=True)
    theirs = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                                do_sample=False, eos_token_id=None, pad_token_id=0)
    assert ours.shape == (2, 26)
    assert ours.tolist() == theirs.tolist()


def test_config_fields_map_onto_modern_config(saved):
    _, folder = saved("qwen3-moe")
    config = hf_config(json.loads((folder / "config.json").read_text()))
    assert (config.d_model, config.n_layer, config.n_head, config.n_kv_head, config.head_dim) == (64, 2, 4, 2, 32)
    assert (config.n_expert, config.n_expert_active, config.d_expert, config.norm_topk_prob) == (4, 2, 32, True)
    assert config.qk_norm and not config.tie_embeddings and config.rope_scaling == "none"
    _, folder = saved("llama-tied")
    config = hf_config(json.loads((folder / "config.json").read_text()))
    assert not config.qk_norm and config.tie_embeddings and config.head_dim == 16 and config.n_expert == 0


def test_older_config_spelling_is_read():
    """Files on the hub written by transformers 4 keep rope_theta at the top level, the scaling in rope_scaling,
    and the expert count in num_experts; Llama files may lack head_dim."""
    llama = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128,
             "num_attention_heads": 4, "intermediate_size": 96, "max_position_embeddings": 256,
             "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0,
                                                      "original_max_position_embeddings": 8192}}
    config = hf_config(llama)
    assert (config.head_dim, config.n_kv_head, config.rope_theta, config.rope_scaling) == (16, 4, 500000.0, "llama3")
    assert (config.rope_factor, config.rope_original_context, config.rope_high_freq_factor) == (32.0, 8192, 4.0)
    moe = {**llama, "architectures": ["Qwen3MoeForCausalLM"], "rope_scaling": None, "num_experts": 8,
           "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True, "mlp_only_layers": [],
           "decoder_sparse_step": 1, "use_sliding_window": False, "sliding_window": 4096}
    config = hf_config(moe)
    assert (config.n_expert, config.rope_scaling, config.sliding_window) == (8, "none", None)


def test_expert_matrices_are_stacked_per_layer(saved):
    _, folder = saved("qwen3-moe")
    state = load_hf(folder).state_dict()
    file = load_file(folder / "model.safetensors")
    for j in range(4):
        for projection in ("gate_proj", "up_proj", "down_proj"):
            assert torch.equal(state[f"blocks.1.ffn.{projection}"][j],
                               file[f"model.layers.1.mlp.experts.{j}.{projection}.weight"])
    assert torch.equal(state["blocks.1.ffn.router.weight"], file["model.layers.1.mlp.gate.weight"])
    assert hf_to_ours("model.layers.1.mlp.experts.3.down_proj.weight") == ("blocks.1.ffn.down_proj", 3)
    assert hf_to_ours("model.layers.0.mlp.gate.weight") == ("blocks.0.ffn.router.weight", None)


def test_every_checkpoint_tensor_has_a_place(saved):
    for variant in ("llama", "qwen3-tied", "qwen3-moe"):
        _, folder = saved(variant)
        names = set(load_file(folder / "model.safetensors"))
        config = hf_config(json.loads((folder / "config.json").read_text()))
        assert names == set(hf_shapes(config))


def test_bfloat16_checkpoint_loads_as_float32_unless_asked(tmp_path):
    reference_model(*VARIANTS["qwen3"]).to(torch.bfloat16).save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    original = load_file(tmp_path / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert original.dtype == torch.bfloat16
    assert torch.equal(model.state_dict()["blocks.0.attn.q_proj.weight"], original.float())
    assert {p.dtype for p in load_hf(tmp_path, dtype=torch.bfloat16).parameters()} == {torch.bfloat16}


def test_sharded_checkpoint_loads(saved, tmp_path):
    reference, _ = saved("qwen3-moe")
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "model.safetensors").exists()
    idx = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(load_hf(tmp_path)(idx), reference(idx).logits, atol=1e-5, rtol=0)


def test_context_length_override(saved):
    _, folder = saved("qwen3")
    assert load_hf(folder, context_length=32).config.context_length == 32


def rewrite_tensors(folder, change):
    file = folder / "model.safetensors"
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file)


def rewrite_config(folder, change):
    file = folder / "config.json"
    settings = json.loads(file.read_text())
    change(settings)
    file.write_text(json.dumps(settings))


def test_missing_tensor_is_named(saved, tmp_path):
    folder = copy_checkpoint(saved("qwen3-moe")[1], tmp_path)
    rewrite_tensors(folder, lambda t: t.pop("model.layers.1.mlp.experts.2.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing tensor "
                                              r"'model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight'"):
        load_hf(folder)


def test_untied_checkpoint_without_head_is_missing_lm_head(saved, tmp_path):
    folder = copy_checkpoint(saved("llama")[1], tmp_path)
    rewrite_tensors(folder, lambda t: t.pop("lm_head.weight"))
    with pytest.raises(CheckpointError, match="missing tensor 'lm_head.weight'"):
        load_hf(folder)


def test_unexpected_tensor_is_named(saved, tmp_path):
    folder = copy_checkpoint(saved("llama")[1], tmp_path)
    rewrite_tensors(folder, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\.q_proj\.bias'"):
        load_hf(folder)


def test_tied_head_copy_is_accepted_only_when_equal(saved, tmp_path):
    folder = copy_checkpoint(saved("qwen3-tied")[1], tmp_path)
    rewrite_tensors(folder, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"].clone()}))
    load_hf(folder)
    rewrite_tensors(folder, lambda t: t.update({"lm_head.weight": t["lm_head.weight"] + 1}))
    with pytest.raises(CheckpointError, match="'lm_head.weight' differs from 'model.embed_tokens.weight'"):
        load_hf(folder)


def test_shape_mismatch_names_tensor_and_both_shapes(saved, tmp_path):
    folder = copy_checkpoint(saved("qwen3")[1], tmp_path)
    rewrite_tensors(folder, lambda t: t.update({"model.layers.1.self_attn.k_proj.weight": torch.zeros(32, 64)}))
    with pytest.raises(CheckpointError, match=r"tensor 'model\.layers\.1\.self_attn\.k_proj\.weight' has shape "
                                              r"\(32, 64\), expected \(64, 64\)"):
        load_hf(folder)


def test_unknown_architecture_is_named(saved, tmp_path):
    folder = copy_checkpoint(saved("llama")[1], tmp_path)
    rewrite_config(folder, lambda s: s.update(architectures=["MistralForCausalLM"]))
    with pytest.raises(ConfigError, match=r"config\.json: architectures=\[\"MistralForCausalLM\"\] is not "
                                          r"supported \(the loader knows LlamaForCausalLM"):
        load_hf(folder)


@pytest.mark.parametrize("field, value, message", [
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}, 'rope_type="yarn"'),
    ("attention_bias", True, "attention_bias=true is not supported"),
    ("hidden_act", "gelu", 'hidden_act="gelu" is not supported'),
    ("mlp_only_layers", [0], r"mlp_only_layers=\[0\] is not supported"),
    ("decoder_sparse_step", 2, "decoder_sparse_step=2 is not supported"),
    ("num_hidden_layers", None, "missing field 'num_hidden_layers'"),
])
def test_unsupported_or_missing_field_is_named(saved, tmp_path, field, value, message):
    folder = copy_checkpoint(saved("qwen3-moe")[1], tmp_path)
    rewrite_config(folder, lambda s: s.update({field: value}) if value is not None else s.pop(field))
    with pytest.raises(ConfigError, match=message):
        load_hf(folder)


def test_sliding_window_on_some_layers_only_is_refused(saved, tmp_path):
    folder = copy_checkpoint(saved("qwen3-sliding")[1], tmp_path)
    rewrite_config(folder, lambda s: s.update(layer_types=["full_attention", "sliding_attention"]))
    with pytest.raises(ConfigError, match=r"config\.json: layer_types=.* is not supported \(ModernGPT uses the "
                                          r"sliding window in every layer or in none\)$"):
        load_hf(folder)


def test_missing_shard_is_named(saved, tmp_path):
    saved("llama")[0].save_pretrained(tmp_path, max_shard_size="50KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.norm.weight"]
    (tmp_path / shard).unlink()
    with pytest.raises(CheckpointError, match=rf"model\.safetensors\.index\.json: shard '{shard}' \(holding "):
        load_hf(tmp_path)


def test_index_listing_a_tensor_its_shard_lacks_is_named(saved, tmp_path):
    saved("llama")[0].save_pretrained(tmp_path, max_shard_size="50KB")
    file = tmp_path / "model.safetensors.index.json"
    index = json.loads(file.read_text())
    index["weight_map"]["model.norm.weight"] = index["weight_map"]["model.embed_tokens.weight"]
    file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing tensor 'model.norm.weight' .listed in "
                                              "model.safetensors.index.json"):
        load_hf(tmp_path)


def test_folder_without_checkpoint_and_damaged_file(saved, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf(tmp_path)
    folder = copy_checkpoint(saved("llama")[1], tmp_path)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_hf(folder)
