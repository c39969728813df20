"""llm.comparison (chapter 6): cross-validation folds, the corrected interval and the paired tests."""

import math
import random
import statistics

import pytest
import torch

from llm.comparison import cv_interval, mcnemar, paired_bootstrap, stratified_folds
from llm.errors import ConfigError
from llm.recipes import seed_spread


def test_folds_partition_the_items_and_keep_every_label_balanced():
    labels = ["spam"] * 37 + ["ham"] * 63
    random.Random(1).shuffle(labels)
    folds = stratified_folds(labels, 5, seed=3, key=lambda label: label)
    assert sorted(i for fold in folds for i in fold) == list(range(100))
    assert {len(fold) for fold in folds} == {20}
    for fold in folds:
        spam = sum(labels[i] == "spam" for i in fold)
        assert spam in (7, 8)  # 37 / 5 = 7.4: every fold within one of its share


def test_folds_depend_on_the_seed_only():
    items = list(range(50))
    parity = lambda i: i % 2  # noqa: E731
    assert stratified_folds(items, 4, seed=0, key=parity) == stratified_folds(items, 4, seed=0, key=parity)
    assert stratified_folds(items, 4, seed=0, key=parity) != stratified_folds(items, 4, seed=1, key=parity)


@pytest.mark.parametrize("k", [1, 11])
def test_folds_reject_an_impossible_k(k):
    with pytest.raises(ConfigError, match=f"got {k}"):
        stratified_folds(list(range(10)), k, seed=0, key=lambda i: 0)


def test_cv_interval_widens_the_t_interval_by_the_correction():
    values = [0.95, 0.97, 0.96, 0.98, 0.94, 0.97]
    plain, corrected = seed_spread(values), cv_interval(values, test_to_train=0.25)
    assert corrected.mean == pytest.approx(statistics.fmean(values))
    half_plain, half_corrected = (plain.high - plain.low) / 2, (corrected.high - corrected.low) / 2
    assert half_corrected / half_plain == pytest.approx(math.sqrt((1 / 6 + 0.25) * 6))
    assert cv_interval(values, test_to_train=0.0).low == pytest.approx(plain.low)
    with pytest.raises(ValueError, match="two folds"):
        cv_interval([0.9], 0.25)


def test_mcnemar_counts_discordant_pairs_and_matches_the_binomial_tail():
    a = torch.tensor([1, 1, 1, 1, 1, 1, 0, 1, 0, 0])
    b = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 0, 0])
    only_a, only_b, p = mcnemar(a, b)
    assert (only_a, only_b) == (5, 1)
    assert p == pytest.approx(2 * (1 + 6) / 2**6)  # P(X <= 1) for X ~ Binomial(6, 1/2), both tails
    assert mcnemar(a, a) == (0, 0, 1.0)
    assert mcnemar(b, a)[2] == p


def test_paired_bootstrap_interval_covers_the_difference_and_shrinks_with_more_examples():
    generator = torch.Generator().manual_seed(0)
    a_small = (torch.rand(200, generator=generator) < 0.9).double()
    b_small = (torch.rand(200, generator=generator) < 0.8).double()
    small = paired_bootstrap(a_small, b_small, samples=2000)
    assert small.low < small.mean < small.high
    assert small.mean == pytest.approx((a_small - b_small).mean().item())
    large = paired_bootstrap(a_small.repeat(16), b_small.repeat(16), samples=2000)
    assert (large.high - large.low) < (small.high - small.low) / 3  # 16 times the data: about a quarter the width
    same = paired_bootstrap(a_small, a_small, samples=500)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
