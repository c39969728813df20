"""Tests for llm.generate: greedy decoding, the KV-cache path, cropping, custom samplers and end tokens."""

import pytest
import torch

from llm.generate import generate, greedy
from llm.model import GPT, GPTConfig


def model_for(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(**{"vocab_size": 211, "context_length": 32, "n_layer": 2, "n_head": 4, "d_model": 32,
                          "tie_weights": False, **overrides})
    return GPT(config).eval()


def reference_greedy(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding the plain way: full forward on the cropped sequence, argmax of the last logits."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(idx[:, -model.config.context_length:])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("use_cache", [False, True])
def test_greedy_matches_plain_loop(use_cache):
    model = model_for()
    prompt = torch.randint(0, 211, (2, 5))
    out = generate(model, prompt, 12, use_cache=use_cache)
    assert out.shape == (2, 17)
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(out, reference_greedy(model, prompt, 12))


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 1}, {"n_kv_head": 2, "bias": True},
                                       {"tie_weights": True}])
@pytest.mark.parametrize("prompt_len,steps", [(1, 10), (6, 20), (30, 10), (40, 15)])
def test_cache_gives_identical_tokens(overrides, prompt_len, steps):
    """Including prompts longer than the context and runs that outgrow it (cropping with a cache)."""
    model = model_for(**overrides)
    prompt = torch.randint(0, 211, (2, prompt_len))
    with_cache = generate(model, prompt, steps, use_cache=True)
    without = generate(model, prompt, steps, use_cache=False)
    assert torch.equal(with_cache, without)
    assert len(set(with_cache[0, prompt_len:].tolist())) > 1 or overrides.get("tie_weights")


def test_batch_rows_equal_single_runs():
    model = model_for(seed=1)
    prompts = torch.randint(0, 211, (3, 4))
    together = generate(model, prompts, 8)
    alone = torch.cat([generate(model, prompts[i:i + 1], 8) for i in range(3)])
    assert torch.equal(together, alone)


def test_custom_sampler_receives_last_logits_and_decides():
    model = model_for()
    prompt = torch.randint(0, 211, (2, 3))
    seen = []

    def always_seven(logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits.shape)
        return torch.full((logits.shape[0], 1), 7)

    out = generate(model, prompt, 5, sample=always_seven)
    assert seen == [torch.Size([2, 211])] * 5
    assert out[:, 3:].eq(7).all()


def test_greedy_sampler_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]])
    assert greedy(logits).tolist() == [[1], [0]]


def test_stops_at_eos_and_pads_finished_rows():
    model = model_for()
    prompt = torch.randint(0, 211, (2, 3))
    steps = iter([[5, 9], [9, 4], [6, 6], [1, 1]])

    def scripted(logits: torch.Tensor) -> torch.Tensor:
        return torch.tensor(next(steps)).view(2, 1)

    out = generate(model, prompt, 10, sample=scripted, eos_id=9)
    # Row 1 finished at step 1, row 0 at step 2: generation stops there, row 1 padded with eos.
    assert out[:, 3:].tolist() == [[5, 9], [9, 9]]


def test_without_eos_runs_all_steps_and_zero_steps_returns_prompt():
    model = model_for()
    prompt = torch.randint(0, 211, (1, 4))
    assert torch.equal(generate(model, prompt, 0), prompt)
    assert generate(model, prompt, 6, eos_id=None).shape == (1, 10)


def test_restores_training_mode_and_needs_no_grad():
    model = model_for(dropout=0.2).train()
    prompt = torch.randint(0, 211, (1, 4))
    first = generate(model, prompt, 6)
    assert model.training
    assert torch.equal(first, generate(model, prompt, 6))  # dropout was off during generation
    assert not first.requires_grad
