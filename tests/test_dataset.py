"""llm.dataset: sliding windows, their count and shift, and the seeded DataLoader."""

import pytest
import torch

from llm.dataset import SlidingWindowDataset, make_dataloader


@pytest.mark.parametrize("n", [9, 10, 57, 100])
@pytest.mark.parametrize("context_length", [1, 4, 8])
@pytest.mark.parametrize("stride", [1, 3, 8])
def test_windows_cover_the_stream(n, context_length, stride):
    if n < context_length + 1:
        pytest.skip("too short")
    ids = torch.arange(1000, 1000 + n)
    dataset = SlidingWindowDataset(ids, context_length, stride)
    starts = list(range(0, n - context_length, stride))  # every start whose window and next token fit
    assert len(dataset) == len(starts)
    for i, start in enumerate(starts):
        x, y = dataset[i]
        assert x.shape == y.shape == (context_length,) and x.dtype == torch.long
        assert torch.equal(x, ids[start : start + context_length])
        assert torch.equal(y, ids[start + 1 : start + context_length + 1])
    assert torch.equal(dataset[-1][0], dataset[len(dataset) - 1][0])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_stride_equal_to_context_does_not_overlap():
    dataset = SlidingWindowDataset(list(range(65)), context_length=8, stride=8)
    targets = torch.cat([dataset[i][1] for i in range(len(dataset))]).tolist()
    assert targets == list(range(1, 65))


def test_invalid_arguments():
    with pytest.raises(ValueError):
        SlidingWindowDataset(list(range(8)), context_length=8, stride=1)
    with pytest.raises(ValueError):
        SlidingWindowDataset(list(range(100)), context_length=8, stride=0)
    with pytest.raises(ValueError):
        SlidingWindowDataset([[1, 2], [3, 4]], context_length=1, stride=1)


def test_dataloader_shapes_and_seeded_shuffle():
    ids = list(range(1000))
    loader = make_dataloader(ids, context_length=16, stride=16, batch_size=5)
    batches = list(loader)
    n_windows = (1000 - 16 - 1) // 16 + 1
    assert len(batches) == len(loader) == n_windows // 5  # the last partial batch is dropped
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (5, 16)
        assert torch.equal(inputs + 1, targets)  # consecutive ids: every target is its input plus one
    again = [x for x, _ in make_dataloader(ids, 16, 16, 5)]
    other = [x for x, _ in make_dataloader(ids, 16, 16, 5, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(again, (x for x, _ in batches)))
    assert not all(torch.equal(a, b) for a, b in zip(again, other))
    ordered = next(iter(make_dataloader(ids, 16, 16, 5, shuffle=False)))[0]
    assert ordered[:, 0].tolist() == [0, 16, 32, 48, 64]


def test_dataloader_keeps_last_partial_batch_when_asked():
    dataset_len = len(SlidingWindowDataset(list(range(100)), 8, 8))
    loader = make_dataloader(list(range(100)), 8, 8, batch_size=5, drop_last=False)
    assert sum(len(x) for x, _ in loader) == dataset_len
