"""Tests for llm.gpt2: loading Hugging Face GPT-2 checkpoints, checked against an independent forward pass."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from llm.errors import CheckpointError
from llm.gpt2 import hf_gpt2_shapes, load_gpt2, to_hf_gpt2
from llm.model import GPT, GPTConfig

VOCAB, CONTEXT, LAYERS, HEADS, WIDTH = 101, 32, 2, 4, 64


def hf_checkpoint(seed: int = 0, vocab=VOCAB, context=CONTEXT, layers=LAYERS, width=WIDTH) -> dict:
    """Random float32 tensors under Hugging Face GPT-2's names and shapes, written out by hand."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1):
        return (torch.randn(*shape, generator=g) * scale).to(torch.float32)

    tensors = {"wte.weight": rand(vocab, width), "wpe.weight": rand(context, width)}
    for i in range(layers):
        p = f"h.{i}."
        tensors.update({
            p + "ln_1.weight": 1 + rand(width), p + "ln_1.bias": rand(width),
            p + "attn.c_attn.weight": rand(width, 3 * width), p + "attn.c_attn.bias": rand(3 * width),
            p + "attn.c_proj.weight": rand(width, width), p + "attn.c_proj.bias": rand(width),
            p + "ln_2.weight": 1 + rand(width), p + "ln_2.bias": rand(width),
            p + "mlp.c_fc.weight": rand(width, 4 * width), p + "mlp.c_fc.bias": rand(4 * width),
            p + "mlp.c_proj.weight": rand(4 * width, width), p + "mlp.c_proj.bias": rand(width),
        })
    tensors.update({"ln_f.weight": 1 + rand(width), "ln_f.bias": rand(width)})
    return tensors


def reference_logits(t: dict, idx: torch.Tensor, n_head: int) -> torch.Tensor:
    """GPT-2's forward pass written directly on the raw checkpoint tensors, independent of llm's modules."""

    def layer_norm(x, w, b):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * w + b

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    seq_len = idx.shape[1]
    width = t["wte.weight"].shape[1]
    hd = width // n_head
    x = t["wte.weight"][idx] + t["wpe.weight"][:seq_len]
    future = torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=1)
    i = 0
    while f"h.{i}.ln_1.weight" in t:
        p = f"h.{i}."
        h = layer_norm(x, t[p + "ln_1.weight"], t[p + "ln_1.bias"])
        qkv = h @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]  # Conv1D: x @ W, W is [in, out]
        q, k, v = qkv.split(width, dim=-1)
        heads = []
        for head in range(n_head):
            cols = slice(head * hd, (head + 1) * hd)
            scores = q[..., cols] @ k[..., cols].transpose(-1, -2) / math.sqrt(hd)
            weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
            heads.append(weights @ v[..., cols])
        x = x + torch.cat(heads, dim=-1) @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]
        h = layer_norm(x, t[p + "ln_2.weight"], t[p + "ln_2.bias"])
        h = gelu(h @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"])
        x = x + h @ t[p + "mlp.c_proj.weight"] + t[p + "mlp.c_proj.bias"]
        i += 1
    x = layer_norm(x, t["ln_f.weight"], t["ln_f.bias"])
    return x @ t["wte.weight"].T


@pytest.fixture
def checkpoint_dir(tmp_path):
    save_file(hf_checkpoint(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"n_head": HEADS, "n_embd": WIDTH}))
    return tmp_path


def test_loaded_model_matches_independent_forward(checkpoint_dir):
    model = load_gpt2(checkpoint_dir)
    c = model.config
    assert (c.vocab_size, c.context_length, c.n_layer, c.n_head, c.d_model) == (VOCAB, CONTEXT, LAYERS, HEADS, WIDTH)
    assert c.bias and c.tie_weights and not model.training
    idx = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference_logits(hf_checkpoint(), idx, HEADS))


def test_file_path_prefix_extra_buffers_and_n_head_argument(tmp_path):
    tensors = hf_checkpoint(seed=3)
    prefixed = {f"transformer.{name}": tensor for name, tensor in tensors.items()}
    prefixed["lm_head.weight"] = tensors["wte.weight"].clone()  # tied head stored explicitly
    prefixed["transformer.h.0.attn.bias"] = torch.ones(1, 1, CONTEXT, CONTEXT)  # mask buffer of old exports
    prefixed["transformer.h.1.attn.masked_bias"] = torch.tensor(-1e4)
    path = tmp_path / "weights.safetensors"
    save_file(prefixed, path)
    model = load_gpt2(path, n_head=HEADS)
    idx = torch.randint(0, VOCAB, (1, CONTEXT), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference_logits(tensors, idx, HEADS))


def test_dtype_and_weight_order(checkpoint_dir):
    model = load_gpt2(checkpoint_dir, dtype=torch.float64)
    assert model.wte.weight.dtype == torch.float64
    fc = model.blocks[0].mlp.fc.weight
    assert fc.shape == (4 * WIDTH, WIDTH) and fc.stride() == (1, 4 * WIDTH)  # column-major, as Linear keeps it


def test_real_gpt2_small_names_and_shapes():
    """The 124M checkpoint's tensor list, written from GPT-2's published architecture."""
    expected = {"wte.weight": (50257, 768), "wpe.weight": (1024, 768), "ln_f.weight": (768,), "ln_f.bias": (768,)}
    for i in range(12):
        for norm in ("ln_1", "ln_2"):
            expected[f"h.{i}.{norm}.weight"] = expected[f"h.{i}.{norm}.bias"] = (768,)
        for name, (fan_in, fan_out) in {"attn.c_attn": (768, 2304), "attn.c_proj": (768, 768),
                                        "mlp.c_fc": (768, 3072), "mlp.c_proj": (3072, 768)}.items():
            expected[f"h.{i}.{name}.weight"] = (fan_in, fan_out)
            expected[f"h.{i}.{name}.bias"] = (fan_out,)
    shapes = hf_gpt2_shapes(GPTConfig.gpt2("124m"))
    assert shapes == expected and len(shapes) == 148
    assert sum(math.prod(s) for s in shapes.values()) == 124_439_808 == GPTConfig.gpt2("124m").num_params()


def test_round_trip_through_hf_layout(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("124m", n_layer=1, vocab_size=300, context_length=16)).eval()
    save_file(to_hf_gpt2(model), tmp_path / "model.safetensors")
    loaded = load_gpt2(tmp_path)
    idx = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model(idx))
    with pytest.raises(ValueError):
        to_hf_gpt2(GPT(GPTConfig.tiny(vocab_size=50)))


def write(tmp_path, tensors) -> str:
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    return str(path)


def test_missing_tensor_is_named(tmp_path):
    tensors = hf_checkpoint()
    del tensors["h.1.mlp.c_fc.bias"]
    path = write(tmp_path, tensors)
    with pytest.raises(CheckpointError, match=r"missing tensor 'h\.1\.mlp\.c_fc\.bias'") as error:
        load_gpt2(path, n_head=HEADS)
    assert path in str(error.value)


def test_unexpected_tensor_is_named(tmp_path):
    tensors = hf_checkpoint()
    tensors["h.0.attn.rotary.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'h\.0\.attn\.rotary\.weight'"):
        load_gpt2(write(tmp_path, tensors), n_head=HEADS)


def test_untied_head_is_rejected(tmp_path):
    tensors = hf_checkpoint()
    tensors["lm_head.weight"] = torch.zeros(VOCAB, WIDTH)
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        load_gpt2(write(tmp_path, tensors), n_head=HEADS)


@pytest.mark.parametrize("name,transpose", [("h.1.mlp.c_fc.weight", True), ("h.0.attn.c_proj.weight", False),
                                            ("ln_f.bias", False)])
def test_wrong_shape_is_named(tmp_path, name, transpose):
    tensors = hf_checkpoint()
    original = tensors[name]
    tensors[name] = original.T.contiguous() if transpose else torch.zeros(*original.shape[:-1], original.shape[-1] + 1)
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has shape"):
        load_gpt2(write(tmp_path, tensors), n_head=HEADS)


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(hf_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as error:
        load_gpt2(path, n_head=HEADS)
    assert str(path) in str(error.value)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}")
    with pytest.raises(CheckpointError, match=str(path)):
        load_gpt2(path, n_head=HEADS)


def test_missing_file_and_unknown_width(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gpt2(tmp_path)
    with pytest.raises(CheckpointError, match="pass n_head"):
        load_gpt2(write(tmp_path, hf_checkpoint()))
