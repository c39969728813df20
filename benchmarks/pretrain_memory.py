"""Peak memory (RSS) of the book's pretraining run, configs/gutenberg.yaml, beside the memory its model needs.

Runs the real pipeline (read and tokenize the corpus, build the model, train) for a few steps and records the
resident set size after each stage. The model's own share is parameters + gradients + AdamW's two moment
estimates, all float32: 16 bytes per parameter.

    .venv/bin/python benchmarks/pretrain_memory.py [--steps N]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from llm.corpus import load_corpus
from llm.pretrain import load_run_config, run_model
from llm.train import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "gutenberg.yaml"
MiB = 1024 * 1024


def rss() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / MiB


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    stages = [("imports (torch, llm)", rss())]
    config = load_run_config(CONFIG)
    corpus = load_corpus(Path(config.data.root), config.data.files, config.data.validation, config.data.vocab_size)
    stages.append((f"corpus: {len(corpus.train_ids) + len(corpus.val_ids):,} tokens", rss()))
    torch.manual_seed(0)
    model = run_model(config.model, corpus.tokenizer.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    stages.append((f"model: {n_params / 1e6:.2f}M parameters", rss()))
    train_data, val_data = corpus.datasets(model.config.context_length)
    with tempfile.TemporaryDirectory() as out_dir:
        train = replace(config.train, max_steps=args.steps, eval_interval=args.steps, out_dir=out_dir,
                        progress=False)
        Trainer(model, train_data, val_data, train).fit()
    stages.append((f"after {args.steps} training steps", rss()))

    model_bytes = {"parameters": n_params * 4, "+ gradients": n_params * 4, "+ AdamW moments": n_params * 8}
    print(f"config {CONFIG.name}: batch {train.batch_size} x {model.config.context_length} tokens, "
          f"d_model {model.config.d_model}, {model.config.n_layer} layers, vocabulary {model.config.vocab_size}")
    print(f"{'stage':40s} {'RSS MiB':>8s}")
    for name, value in stages:
        print(f"{name:40s} {value:8.1f}")
    total = 0
    print(f"{'model state (float32)':40s} {'MiB':>8s}")
    for name, size in model_bytes.items():
        total += size
        print(f"{name:40s} {total / MiB:8.1f}")
    peak = peak_rss()
    print(f"peak RSS {peak:.0f} MiB; model state {total / MiB:.1f} MiB; ratio peak / model state "
          f"{peak / (total / MiB):.0f}; peak above imports {peak - stages[0][1]:.0f} MiB")


if __name__ == "__main__":
    main()
