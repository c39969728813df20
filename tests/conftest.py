"""Shared test helpers."""

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_BOOK = Path(__file__).parent / "fixtures" / "minibook"


@pytest.fixture
def minibook(tmp_path) -> Path:
    """A fresh copy of the two-chapter fixture book."""
    root = tmp_path / "book"
    shutil.copytree(FIXTURE_BOOK, root)
    return root
