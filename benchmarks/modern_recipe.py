"""Time for chapter 5's modern recipe to reach the validation loss that chapter 4's GPT-2 recipe ends its run at.

The GPT-2 recipe (llm.recipes.RECIPES["gpt2"]) trains as configs/gutenberg.yaml says: 1,500 steps of 16 windows
of 128 tokens, warmup over the first 100, cosine decay after. Its final validation loss is the target. The modern
recipe (RECIPES["modern"]) then trains on the same data for a fraction of the GPT-2 run's training seconds (its
schedule spans that budget, as in the chapter), and the benchmark reports when its validation loss first reaches
the target, interpolating between evaluations. Both are evaluated on the same fixed validation windows, and
evaluation time is not counted. The goal is a ratio of at most 0.5.

Wall-clock time on a shared machine is noisy: run it on an otherwise idle one.

    .venv/bin/python benchmarks/modern_recipe.py                  # the full comparison (a few minutes on 2 cores)
    .venv/bin/python benchmarks/modern_recipe.py --steps 300      # a quick run: a shorter GPT-2 schedule
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

from llm.corpus import cached_tokenizer, load_corpus, split_documents
from llm.data import list_files
from llm.recipes import RECIPES, train_for_budget, train_recipe

ROOT = Path(__file__).resolve().parents[1]


def load_book_corpus(cache: Path):
    data = yaml.safe_load((ROOT / "configs" / "gutenberg.yaml").read_text())["data"]
    root = ROOT / "data"
    train_names, _ = split_documents(list_files(data["files"], root=root), data["validation"])
    tokenizer = cached_tokenizer(root, train_names, data["vocab_size"], cache)
    return load_corpus(root, data["files"], data["validation"], data["vocab_size"], tokenizer)


def time_to_target(evals: list[dict], target: float) -> float | None:
    """Training seconds at which the validation loss first reaches `target`, linear between evaluations."""
    previous = {"seconds": 0.0, "val_loss": float("inf")}
    for point in evals:
        if point["val_loss"] <= target:
            if previous["val_loss"] == float("inf"):
                return point["seconds"]
            share = (previous["val_loss"] - target) / (previous["val_loss"] - point["val_loss"])
            return previous["seconds"] + share * (point["seconds"] - previous["seconds"])
        previous = point
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    book_steps = yaml.safe_load((ROOT / "configs" / "gutenberg.yaml").read_text())["train"]["max_steps"]
    parser.add_argument("--steps", type=int, default=book_steps, help="the GPT-2 run's steps (configs/gutenberg.yaml)")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="the modern recipe's budget, as a share of the GPT-2 run's training seconds")
    parser.add_argument("--evals", type=int, default=20, help="evaluations per run")
    parser.add_argument("--eval-windows", type=int, default=256, help="fixed validation windows per evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=ROOT / "_cache", help="where the tokenizer is cached")
    args = parser.parse_args()
    corpus = load_book_corpus(args.cache)
    evaluation = {"evals": args.evals, "eval_windows": args.eval_windows, "final_windows": args.eval_windows,
                  "device": args.device}
    print(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads; "
          f"{len(corpus.train_ids):,} training tokens, {args.eval_windows} validation windows per evaluation")

    start = time.perf_counter()
    _, gpt2 = train_recipe(RECIPES["gpt2"], corpus, seed=args.seed, max_steps=args.steps, **evaluation)
    target = gpt2["evals"][-1]["val_loss"]
    print(f"gpt2:   {gpt2['steps']:,} steps in {gpt2['seconds']:.1f} s of training "
          f"({time.perf_counter() - start:.0f} s with evaluations), final validation loss {target:.4f}")

    start = time.perf_counter()
    _, modern = train_for_budget(RECIPES["modern"], corpus, seed=args.seed, budget_s=args.fraction * gpt2["seconds"],
                                 **evaluation)
    reached = time_to_target(modern["evals"], target)
    print(f"modern: {modern['steps']:,} steps in {modern['seconds']:.1f} s of training "
          f"({time.perf_counter() - start:.0f} s with evaluations), final validation loss "
          f"{modern['evals'][-1]['val_loss']:.4f}")

    print(f"\n{'recipe':8s} {'seconds to loss ' + format(target, '.3f'):>24s} {'ratio':>6s}")
    print(f"{'gpt2':8s} {gpt2['seconds']:>24.1f} {1:>6.2f}")
    if reached is None:
        print(f"{'modern':8s} {'not reached in ' + format(modern['seconds'], '.1f'):>24s} "
              f"{'> ' + format(modern['seconds'] / gpt2['seconds'], '.2f'):>6s}")
    else:
        print(f"{'modern':8s} {reached:>24.1f} {reached / gpt2['seconds']:>6.2f}")
    print("target: ratio <= 0.5")


if __name__ == "__main__":
    sys.exit(main())
