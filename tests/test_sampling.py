"""Decoding strategies in llm.sampling, checked against plain Python reference computations."""

import math

import pytest
import torch

from llm.sampling import Sampler, greedy, top_k_filter, top_p_filter


def reference_top_k(row: list[float], k: int) -> list[bool]:
    threshold = sorted(row, reverse=True)[k - 1]
    return [value >= threshold for value in row]


def reference_top_p(row: list[float], p: float) -> list[bool]:
    peak = max(row)
    weights = [math.exp(v - peak) for v in row]
    total = sum(weights)
    keep, mass = [False] * len(row), 0.0
    for i in sorted(range(len(row)), key=lambda i: -row[i]):
        keep[i] = True
        mass += weights[i] / total
        if mass >= p:
            break
    return keep


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(8, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2


@pytest.mark.parametrize("k", [1, 2, 7, 49, 50, 80])
def test_top_k_matches_reference(logits, k):
    kept = torch.isfinite(top_k_filter(logits, k))
    expected = torch.tensor([reference_top_k(row, min(k, 50)) for row in logits.tolist()])
    assert torch.equal(kept, expected)
    assert (kept.sum(-1) == min(k, 50)).all()


@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 0.9, 0.999, 1.0])
def test_top_p_matches_reference(logits, p):
    kept = torch.isfinite(top_p_filter(logits, p))
    expected = torch.tensor([reference_top_p(row, p) for row in logits.tolist()])
    assert torch.equal(kept, expected)


def test_filters_keep_surviving_logits_unchanged(logits):
    for filtered in (top_k_filter(logits, 5), top_p_filter(logits, 0.7)):
        kept = torch.isfinite(filtered)
        assert torch.equal(filtered[kept], logits[kept])


def test_greedy_and_zero_temperature_pick_argmax(logits):
    assert torch.equal(greedy(logits).squeeze(1), logits.argmax(-1))
    assert torch.equal(Sampler(temperature=0)(logits), greedy(logits))
    assert torch.equal(Sampler(top_k=1, seed=3)(logits), greedy(logits))


def test_distribution_applies_temperature_then_filters(logits):
    sampler = Sampler(temperature=0.7, top_k=10, top_p=0.8)
    expected = top_p_filter(top_k_filter(logits.float() / 0.7, 10), 0.8).softmax(-1)
    torch.testing.assert_close(sampler.distribution(logits), expected)


def test_same_seed_same_tokens_and_global_rng_untouched(logits):
    before = torch.get_rng_state()
    first = [Sampler(temperature=1.2, top_p=0.95, seed=7)(logits) for _ in range(2)]
    assert torch.equal(first[0], first[1])
    assert torch.equal(torch.get_rng_state(), before)
    draws = [Sampler(seed=s)(logits.repeat(20, 1)) for s in (7, 8)]
    assert not torch.equal(draws[0], draws[1])


def test_empirical_frequencies_follow_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    sampler = Sampler(temperature=1.5, top_k=4, seed=0)
    draws = sampler(logits.expand(40_000, -1)).squeeze(1)
    frequencies = torch.bincount(draws, minlength=6).double() / len(draws)
    probs = sampler.distribution(logits)[0].double()
    assert frequencies[4:].sum() == 0
    torch.testing.assert_close(frequencies, probs, atol=0.01, rtol=0)


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Sampler(**kwargs)
