"""The `llm` executable that `pip install .` (or `make setup`'s editable install) puts beside the interpreter.

tests/test_cli.py drives `python -m llm` and llm.cli.main(); these tests run the console script itself, the way a
reader types it, from a directory outside the repository and without PYTHONPATH, so they only pass when the package
is installed with its `[project.scripts]` entry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from llm.cli import build_parser

SHAKESPEARE = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare" / "input.txt"
TIMEOUT = 300  # seconds for one command; each run takes a few seconds on two cores


def installed_llm() -> Path:
    """The `llm` console script of the interpreter running the tests; skips where llm is not installed at all."""
    try:
        distribution = metadata.distribution("llm")
    except metadata.PackageNotFoundError:
        pytest.skip("the llm package is not installed as a distribution (run `make setup` or `pip install .`)")
    scripts = [e for e in distribution.entry_points if e.group == "console_scripts" and e.name == "llm"]
    assert [e.value for e in scripts] == ["llm.cli:main"], "reinstall llm: its metadata lacks the llm script"
    bin_dir = Path(sys.executable).parent
    found = shutil.which("llm", path=str(bin_dir))  # also finds llm.exe on Windows
    assert found is not None, f"the llm package is installed but {bin_dir} has no llm executable"
    return Path(found)


def run_llm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the installed executable as a user would: no PYTHONPATH, outside the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(installed_llm()), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def tiny_project(directory: Path) -> Path:
    """A data root (two documents and their SHA256SUMS manifest) and a config for a very small run."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    (directory / "data" / "plays").mkdir(parents=True)
    manifest = []
    for name, part in {"train": text[:30_000], "val": text[30_000:40_000]}.items():
        (directory / "data" / "plays" / f"{name}.txt").write_text(part, encoding="utf-8")
        manifest.append(f"{hashlib.sha256(part.encode()).hexdigest()}  plays/{name}.txt")
    (directory / "data" / "SHA256SUMS").write_text("\n".join(manifest) + "\n")
    config = directory / "tiny.yaml"
    config.write_text(
        "data: {root: data, files: plays/*.txt, validation: [plays/val.txt], vocab_size: 280}\n"
        "model: {context_length: 16, n_layer: 1, n_head: 2, n_kv_head: 2, d_model: 16, dropout: 0.0,"
        " bias: false, tie_weights: true}\n"
        "train: {max_steps: 50, batch_size: 4, lr: 0.003, warmup_steps: 1, eval_interval: 50, eval_batches: 1,"
        " log_interval: 1, out_dir: default-run, progress: false}\n")
    return config


def test_help_lists_every_subcommand(tmp_path):
    result = run_llm("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: llm ")
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"train", "generate"} <= commands
    for command in commands:
        assert command in result.stdout


def test_train_then_generate(tmp_path):
    config = tiny_project(tmp_path)
    out = tmp_path / "out"
    result = run_llm("train", "--config", str(config), "--max-steps", "3", "--out-dir", str(out), "--device", "cpu",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.bpe").is_file()
    assert not (tmp_path / "default-run").exists()  # --out-dir replaced the config's out_dir

    result = run_llm("generate", "--checkpoint", str(out / "model.safetensors"), "--prompt", "Hi",
                     "--max-new-tokens", "5", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hi") and len(result.stdout.removesuffix("\n")) > len("Hi"), result.stdout


def test_missing_config_is_a_one_line_error(tmp_path):
    result = run_llm("train", "--config", str(tmp_path / "nowhere.yaml"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nowhere.yaml" in result.stderr
