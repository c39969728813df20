"""llm.repro: seeding makes draws repeat; the cache builds once per config and code, atomically."""

import random

import numpy as np
import pytest
import torch

from llm.repro import cache_key, cached, set_seed


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_set_seed_repeats_every_generator():
    set_seed(123)
    first = draws()
    set_seed(123)
    assert draws() == first
    set_seed(124)
    assert draws() != first


def test_cached_builds_once_per_config(tmp_path):
    calls = []

    def build(directory):
        calls.append(directory)
        (directory / "result.txt").write_text(str(len(calls)))

    first = cached("thing", {"a": 1, "b": [2, 3]}, build, root=tmp_path)
    again = cached("thing", {"b": [2, 3], "a": 1}, build, root=tmp_path)  # key order does not matter
    other = cached("thing", {"a": 2, "b": [2, 3]}, build, root=tmp_path)
    assert first == again != other
    assert len(calls) == 2
    assert (first / "result.txt").read_text() == "1" and (other / "result.txt").read_text() == "2"
    assert first.parent == tmp_path and first.name.startswith("thing-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def version_one():
    return 1


def version_two():
    return 2


def test_cache_key_covers_code():
    config = {"x": 1}
    assert cache_key(config) == cache_key(config, ())
    assert cache_key(config, [version_one]) != cache_key(config, [version_two])
    assert cache_key(config, [version_one]) != cache_key(config)
    assert len(cache_key(config)) == 12


def test_failed_build_leaves_nothing(tmp_path):
    def broken(directory):
        (directory / "partial.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cached("broken", {}, broken, root=tmp_path)
    assert list(tmp_path.iterdir()) == []

    result = cached("broken", {}, lambda d: (d / "ok.txt").write_text("done"), root=tmp_path)
    assert (result / "ok.txt").read_text() == "done"


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "cache"))
    result = cached("env", {"k": "v"}, lambda d: (d / "f").write_text("x"))
    assert result.parent == tmp_path / "cache"
