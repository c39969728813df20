"""Checkpoints: atomic writes, refusal of bad files, and exact resumption after the process is killed."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from llm.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state

# Trains a tiny GPT on a fixed random token stream; a sleep per step gives the test time to kill it mid-run.
DRIVER = textwrap.dedent("""
    import sys, time
    import torch
    from llm.model import GPT, GPTConfig
    from llm.train import Trainer, TrainConfig

    out_dir, resume, slow = sys.argv[1], sys.argv[2] == "resume", sys.argv[3] == "slow"
    torch.set_num_threads(1)  # the two runs share the cores; with one thread each, load cannot change a reduction
    tokens = torch.randint(0, 64, (8_000,), generator=torch.Generator().manual_seed(0))
    windows = [(tokens[i:i + 16], tokens[i + 1:i + 17]) for i in range(0, len(tokens) - 17, 8)]
    torch.manual_seed(0)
    model_config = dict(vocab_size=64, context_length=16, n_layer=2, n_head=2, n_kv_head=2, d_model=32,
                        dropout=0.1, bias=True, tie_weights=True)
    model = GPT(GPTConfig(**model_config))
    config = TrainConfig(max_steps=40, batch_size=4, grad_accum_steps=2, lr=3e-3, warmup_steps=5,
                         eval_interval=10, eval_batches=2, log_interval=1, checkpoint_interval=5,
                         out_dir=out_dir, progress=False)

    class SlowTrainer(Trainer):
        def train_step(self):
            if slow:
                time.sleep(0.1)
            return super().train_step()

    trainer = SlowTrainer(model, windows[:800], windows[800:], config, model_config=model_config)
    if resume:
        trainer.load(trainer.checkpoint_path)
    trainer.fit()
""")


def subprocess_env() -> dict[str, str]:
    """The environment for child processes, with the repository root importable (llm need not be installed)."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def run_driver(tmp_path: Path, out_dir: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(script), str(out_dir), *args], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def losses(out_dir: Path) -> list[dict]:
    """The metrics records without the wall-clock field."""
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def test_resume_after_sigkill_reproduces_uninterrupted_run(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    reference = run_driver(tmp_path, straight, "fresh", "fast")

    victim = run_driver(tmp_path, interrupted, "fresh", "slow")
    checkpoint = interrupted / "checkpoint.pt"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.25)  # let it train a few steps past the checkpoint, then kill it without warning
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(checkpoint)["step"]
    assert 0 < killed_at < 40
    assert max(r["step"] for r in losses(interrupted)) < 40

    resumed = run_driver(tmp_path, interrupted, "resume", "fast")
    assert resumed.wait(timeout=120) == 0, resumed.stdout.read()
    assert reference.wait(timeout=120) == 0, reference.stdout.read()

    assert losses(interrupted) == losses(straight)
    final = [load_checkpoint(d / "checkpoint.pt")["model"] for d in (straight, interrupted)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


def test_rng_state_round_trip(tmp_path):
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    save_checkpoint(tmp_path / "c.pt", {"rng": state})
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(load_checkpoint(tmp_path / "c.pt", required=("rng",))["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_bad_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "partial.pt", {"model": {}})
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        load_checkpoint(tmp_path / "partial.pt", required=("model", "optimizer"))
