"""Shared test helpers."""

import shutil
from pathlib import Path

import pytest
import torch

from llm.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_BOOK = Path(__file__).parent / "fixtures" / "minibook"


@pytest.fixture
def minibook(tmp_path) -> Path:
    """A fresh copy of the two-chapter fixture book."""
    root = tmp_path / "book"
    shutil.copytree(FIXTURE_BOOK, root)
    return root


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread than on several that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_gpt(vocab_size: int = 257, context_length: int = 64, seed: int = 0) -> GPT:
    """A two-layer GPT small enough to train in a test; 257 tokens fit BPETokenizer([]) (bytes + end of text)."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, n_layer=2, n_head=2, d_model=16))
