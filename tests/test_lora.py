"""llm.lora: zero-initialised adapters, merge/unmerge equality, parameter counts, both linear layouts."""

import pytest
import torch
from torch import nn

from llm.attention import Linear
from llm.lora import LoRALinear, apply_lora, lora_layers, merge_lora

from conftest import tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("layer", [nn.Linear(12, 7), Linear(12, 7)])
def test_adapter_starts_as_identity_and_merges_exactly(layer):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 12)
    reference = layer(x).detach()
    lora = LoRALinear(layer, rank=4, alpha=8)
    torch.testing.assert_close(lora(x), reference)  # B = 0
    with torch.no_grad():
        lora.lora_b.normal_()
    unmerged = lora(x).detach()
    expected = reference + 2.0 * x @ lora.lora_a.T.detach() @ lora.lora_b.T.detach()  # scaling alpha/rank = 2
    torch.testing.assert_close(unmerged, expected, rtol=1e-5, atol=1e-5)
    original = layer.weight.detach().clone()
    lora.merge()
    assert lora.merged and not torch.allclose(layer.weight, original)
    torch.testing.assert_close(lora(x), unmerged, rtol=1e-5, atol=1e-5)
    lora.merge()  # idempotent
    torch.testing.assert_close(lora(x), unmerged, rtol=1e-5, atol=1e-5)
    lora.unmerge()
    torch.testing.assert_close(layer.weight, original, rtol=0, atol=1e-6)
    torch.testing.assert_close(lora(x), unmerged, rtol=1e-5, atol=1e-5)


def test_only_adapters_train_and_gradients_reach_them():
    layer = LoRALinear(nn.Linear(6, 4), rank=2, alpha=2)
    with torch.no_grad():
        layer.lora_b.fill_(0.1)
    layer(torch.randn(5, 6)).sum().backward()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert layer.lora_a.grad is not None and layer.lora_b.grad is not None
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(6, 4), rank=0, alpha=1)


def test_apply_lora_to_a_gpt_counts_and_merges():
    model = tiny_gpt(vocab_size=64, context_length=16).eval()
    x = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        reference = model(x)
    names = apply_lora(model.blocks, rank=3, alpha=6)
    assert len(names) == 2 * 4 and "0.attn.qkv" in names and "1.mlp.proj" in names  # qkv, proj, fc, proj per block
    layers = lora_layers(model)
    trainable = sum(p.numel() for p in model.blocks.parameters() if p.requires_grad)
    assert trainable == sum(3 * (m.base.in_features + m.base.out_features) for m in layers)
    assert all(not p.requires_grad for name, p in model.blocks.named_parameters() if "lora_" not in name)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference)
        for layer in layers:
            layer.lora_b.normal_(std=0.05)
        adapted = model(x)
    assert not torch.allclose(adapted, reference, atol=1e-3)
    assert merge_lora(model) == 8 and not lora_layers(model)
    assert isinstance(model.blocks[0].attn.qkv, Linear) and isinstance(model.blocks[1].mlp.fc, Linear)
    with torch.no_grad():
        torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-4)
    fresh = tiny_gpt(vocab_size=64, context_length=16)
    fresh.load_state_dict(model.state_dict())  # a merged model is an ordinary GPT again
