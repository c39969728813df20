"""Time for chapter 5's modern recipe to reach the validation loss that chapter 4's GPT-2 recipe ends its run at.

The GPT-2 recipe (llm.recipes.RECIPES["gpt2"]) trains as configs/gutenberg.yaml says: 1,500 steps of 16 windows
of 128 tokens, warmup over the first 100, cosine decay after. Its final validation loss is the target. The modern
recipe (RECIPES["modern"]) trains on the same data, its schedule spanning a fraction (default one half) of the
GPT-2 run's training time, as configs/modern.yaml does; the benchmark reports when its validation loss first
reaches the target, interpolating between evaluations. Both are evaluated on the same fixed validation windows,
and evaluation time is not counted. The goal is a ratio of at most 0.5.

Timing: the two runs alternate step by step in one process and each step is timed on its own, so that load from
other processes slows both alike. The modern run's number of steps is set before training from both recipes'
measured step times (llm.recipes.measure_step_seconds).

Measured on the book's machine (2 cores of an Intel Xeon, December 2026, seed 0): GPT-2's 1,500 steps end at 4.116
after 244 s of training; the modern recipe's 552 steps reach 4.116 after 79 s, a ratio of 0.32, and end at 3.985.

    .venv/bin/python benchmarks/modern_recipe.py                  # the full comparison (about 6 min on 2 cores)
    .venv/bin/python benchmarks/modern_recipe.py --steps 300      # a quick run: a shorter GPT-2 schedule
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from llm.corpus import cached_tokenizer, load_corpus, split_documents
from llm.data import list_files
from llm.recipes import RECIPES, make_trainer, measure_step_seconds, timed_step
from llm.train import evaluation_indices

from _target import time_to_target  # noqa: E402  (the script's own folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def load_book_corpus(cache: Path):
    data = yaml.safe_load((ROOT / "configs" / "gutenberg.yaml").read_text())["data"]
    root = ROOT / "data"
    train_names, _ = split_documents(list_files(data["files"], root=root), data["validation"])
    tokenizer = cached_tokenizer(root, train_names, data["vocab_size"], cache)
    return load_corpus(root, data["files"], data["validation"], data["vocab_size"], tokenizer)


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
    print(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads; "
          f"{len(corpus.train_ids):,} training tokens, {args.eval_windows} validation windows per evaluation")

    step_s = {name: measure_step_seconds(RECIPES[name], corpus, seed=args.seed, device=args.device)
              for name in ("gpt2", "modern")}
    steps = {"gpt2": args.steps,
             "modern": max(1, round(args.fraction * args.steps * step_s["gpt2"] / step_s["modern"]))}
    trainers = {name: make_trainer(RECIPES[name], corpus, seed=args.seed, max_steps=n, device=args.device)
                for name, n in steps.items()}
    indices = evaluation_indices(len(trainers["gpt2"].val_data), args.eval_windows)
    eval_at = {name: {round(n * (i + 1) / args.evals) for i in range(args.evals)} for name, n in steps.items()}
    seconds = {name: 0.0 for name in steps}
    evals: dict[str, list[dict]] = {name: [] for name in steps}
    while any(trainer.step < steps[name] for name, trainer in trainers.items()):
        for name, trainer in trainers.items():
            if trainer.step < steps[name]:
                seconds[name] += timed_step(trainer)[0]
                if trainer.step in eval_at[name]:
                    evals[name].append({"seconds": seconds[name],
                                        "val_loss": trainer.evaluate(trainer.val_data, indices)})
    gpt2 = {"steps": steps["gpt2"], "seconds": seconds["gpt2"], "evals": evals["gpt2"]}
    modern = {"steps": steps["modern"], "seconds": seconds["modern"], "evals": evals["modern"]}
    target = gpt2["evals"][-1]["val_loss"]
    reached = time_to_target([(e["seconds"], e["val_loss"]) for e in modern["evals"]], target)
    for name, run in (("gpt2", gpt2), ("modern", modern)):
        print(f"{name + ':':7s} {run['steps']:,} steps ({1000 * step_s[name]:.0f} ms each when measured alone), "
              f"{run['seconds']:.1f} s of training, final validation loss {run['evals'][-1]['val_loss']:.4f}")
        print("        validation loss by training second: "
              + " ".join(f"{e['seconds']:.0f}s:{e['val_loss']:.3f}" for e in run["evals"][1::2]))

    print(f"\n{'recipe':8s} {'seconds to loss ' + format(target, '.3f'):>24s} {'ratio':>6s}")
    print(f"{'gpt2':8s} {gpt2['seconds']:>24.1f} {1:>6.2f}")
    if reached is None:
        print(f"{'modern':8s} {'not reached in ' + format(modern['seconds'], '.1f'):>24s} "
              f"{'> ' + format(modern['seconds'] / gpt2['seconds'], '.2f'):>6s}")
    else:
        print(f"{'modern':8s} {reached:>24.1f} {reached / gpt2['seconds']:>6.2f}")
    print("target: ratio <= 0.5")
    print(f"load average at the end (1, 5, 15 min): {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    sys.exit(main())
