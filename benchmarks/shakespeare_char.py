"""Time to reach a fixed validation loss on character-level Tiny Shakespeare: our Trainer against a minimal loop.

The reference is written in the style of nanoGPT's train.py, reduced to its core: random windows drawn with
torch.randint, AdamW with PyTorch's default betas and weight decay, a constant learning rate of 1e-3, no warmup
and no gradient clipping. Ours is llm.train.Trainer with the book's defaults: a higher peak learning rate reached
by linear warmup, cosine decay, betas (0.9, 0.95), weight decay on matrices only and clipping at 1.0. Both train the
same GPT (same size, same initial weights) on the same 90/10 split, evaluate every EVAL_EVERY steps on the same
number of windows, and stop at the first evaluation whose validation loss is at or below the target.

    .venv/bin/python benchmarks/shakespeare_char.py [--target 1.9] [--max-steps 3000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llm.data import read_text
from llm.dataset import SlidingWindowDataset
from llm.model import GPT, GPTConfig
from llm.tokenizers import CharTokenizer
from llm.train import TrainConfig, Trainer, lm_loss

DATA = Path(__file__).resolve().parents[1] / "data"
CONTEXT, BATCH, EVAL_EVERY, EVAL_BATCHES = 128, 32, 50, 8


def make_model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=CONTEXT, n_layer=4, n_head=4, n_kv_head=4,
                         d_model=128, dropout=0.0, bias=False, tie_weights=True))


class TargetReached(Exception):
    """Raised with the evaluation record that reached the target, to end training early."""


class StopAtTarget(Trainer):
    target: float
    history: list[tuple[int, float]]

    def _eval_record(self) -> dict:
        record = super()._eval_record()
        if self.step > 0:
            self.history.append((self.step, record["val_loss"]))
        if self.step > 0 and record["val_loss"] <= self.target:
            raise TargetReached(record)
        return record


def reference(train: torch.Tensor, val: torch.Tensor, vocab_size: int, target: float, max_steps: int):
    """A nanoGPT-style loop; returns (seconds, steps, final validation loss) at the first evaluation <= target."""
    model = make_model(vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def batch(ids: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(ids) - CONTEXT - 1, (BATCH,), generator=gen)
        x = torch.stack([ids[s:s + CONTEXT] for s in starts])
        y = torch.stack([ids[s + 1:s + CONTEXT + 1] for s in starts])
        return x, y

    @torch.no_grad()
    def estimate_loss() -> float:
        model.eval()
        losses = {}
        for name, ids in (("train", train), ("val", val)):
            gen = torch.Generator().manual_seed(1)  # the same evaluation windows every time
            losses[name] = sum(lm_loss(model(x), y).item() for x, y in (batch(ids, gen) for _ in range(EVAL_BATCHES)))
        model.train()
        return losses["val"] / EVAL_BATCHES

    history = []
    start = time.perf_counter()
    for step in range(1, max_steps + 1):
        x, y = batch(train, generator)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % EVAL_EVERY == 0:
            val_loss = estimate_loss()
            history.append((step, val_loss))
            if val_loss <= target:
                return time.perf_counter() - start, step, val_loss, history
    return time.perf_counter() - start, None, val_loss, history


def ours(train: torch.Tensor, val: torch.Tensor, vocab_size: int, target: float, max_steps: int, lr: float,
         schedule_steps: int):
    """llm.train.Trainer with warmup and cosine decay over `schedule_steps`; stops at the first eval <= target."""
    train_data = SlidingWindowDataset(train, CONTEXT, 1)  # every offset, like random windows
    val_data = SlidingWindowDataset(val, CONTEXT, 1)
    with tempfile.TemporaryDirectory() as out_dir:
        config = TrainConfig(max_steps=schedule_steps, batch_size=BATCH, lr=lr, min_lr=lr / 10,
                             warmup_steps=schedule_steps // 20, eval_interval=EVAL_EVERY,
                             eval_batches=EVAL_BATCHES, log_interval=EVAL_EVERY, out_dir=out_dir, progress=False)
        trainer = StopAtTarget(make_model(vocab_size), train_data, val_data, config)
        trainer.target, trainer.history = target, []
        start = time.perf_counter()
        try:
            last = trainer.fit()
        except TargetReached as reached:
            last = reached.args[0]
            return time.perf_counter() - start, last["step"], last["val_loss"], trainer.history
        return time.perf_counter() - start, None, last["val_loss"], trainer.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=1.9, help="validation loss to reach (nats per character)")
    parser.add_argument("--max-steps", type=int, default=3000, help="give up after this many steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="our peak learning rate")
    parser.add_argument("--schedule-steps", type=int, default=1500, help="length of our cosine schedule")
    args = parser.parse_args()

    text = read_text("tinyshakespeare/input.txt", root=DATA)
    tokenizer = CharTokenizer.from_text(text)
    ids = torch.tensor(tokenizer.encode(text))
    split = int(0.9 * len(ids))
    train, val = ids[:split], ids[split:]
    print(f"Tiny Shakespeare: {len(train):,} training and {len(val):,} validation characters, vocabulary "
          f"{len(tokenizer)}; model {sum(p.numel() for p in make_model(len(tokenizer)).parameters()) / 1e6:.2f}M "
          f"parameters, batch {BATCH} x {CONTEXT}; target validation loss {args.target}; "
          f"{torch.get_num_threads()} threads")
    runs = {"reference (constant 1e-3)": reference(train, val, len(tokenizer), args.target, args.max_steps),
            f"ours (warmup+cosine, {args.lr:g})": ours(train, val, len(tokenizer), args.target, args.max_steps,
                                                    args.lr, args.schedule_steps)}
    print(f"{'':32s} {'seconds':>8s} {'steps':>6s} {'val loss':>9s} {'steps/s':>8s}")
    for name, (seconds, steps, loss, _) in runs.items():
        shown = steps if steps is not None else "never"
        print(f"{name:32s} {seconds:8.1f} {shown!s:>6s} {loss:9.3f} {(steps or 0) / seconds:8.2f}")
    for name, (*_, history) in runs.items():
        print(f"{name}: validation loss by step", " ".join(f"{s}:{v:.2f}" for s, v in history))
    (ref_s, ref_steps, *_), (our_s, our_steps, *_) = runs.values()
    if ref_steps and our_steps:
        print(f"ratio ours / reference: time {our_s / ref_s:.2f}, steps {our_steps / ref_steps:.2f}")
    else:
        print("ratio: not available, a run did not reach the target within --max-steps")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
