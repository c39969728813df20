"""Training throughput of llm.train.Trainer against a bare training loop, on the same model and data.

Both do the same arithmetic per step (forward, cross-entropy, backward, gradient clipping, AdamW step); the
trainer adds its data order, learning-rate schedule, metrics logging, progress bar and a final checkpoint. Runs
alternate (bare, trainer, bare, ...) so that a busy machine slows both alike, and the best run of each is
reported. On a shared machine wall-clock time is noisy, so on the CPU the script also reports throughput per second
of this process's CPU time, which other processes disturb much less.

    .venv/bin/python benchmarks/trainer_overhead.py [--steps N] [--repeats R]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import sys
import tempfile
import time

import torch

from llm.dataset import SlidingWindowDataset
from llm.model import GPT, GPTConfig
from llm.train import TrainConfig, Trainer, lm_loss

MODEL = dict(vocab_size=2048, context_length=128, n_layer=4, n_head=4, n_kv_head=4, d_model=128, dropout=0.0,
             bias=False, tie_weights=True)  # the book's pretraining model (configs/gutenberg.yaml)
BATCH = 16


def make_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**MODEL))


class Clock:
    """Wall-clock and process CPU seconds between start() and stop(), excluding pause()d stretches."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def bare_loop(data: SlidingWindowDataset, steps: int, device: torch.device) -> Clock:
    """The plainest correct loop: random windows, forward, backward, clip, step (bf16 autocast on a GPU, like the
    trainer)."""
    model = make_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    generator = torch.Generator().manual_seed(0)
    clock = Clock()
    clock.start()
    for _ in range(steps):
        indices = torch.randint(len(data), (BATCH,), generator=generator).tolist()
        x, y = (torch.stack(t).to(device) for t in zip(*(data[i] for i in indices)))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = lm_loss(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss.item()  # waits for the GPU to finish
    clock.stop()
    return clock


def trainer_loop(data: SlidingWindowDataset, steps: int, device: torch.device) -> Clock:
    """Trainer.fit, with the time spent in its evaluations (at step 0 and at the end) left out."""
    with tempfile.TemporaryDirectory() as out_dir:
        config = TrainConfig(max_steps=steps, batch_size=BATCH, lr=1e-3, warmup_steps=10, eval_interval=steps,
                             eval_batches=1, log_interval=10, out_dir=out_dir, progress=True,
                             device=str(device))
        trainer = Trainer(make_model(), data, data, config)
        clock, evaluate = Clock(), trainer.evaluate

        def paused_evaluate(*args, **kwargs):
            clock.stop()
            try:
                return evaluate(*args, **kwargs)
            finally:
                clock.start()

        trainer.evaluate = paused_evaluate
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar is drawn, but not shown
            clock.start()
            trainer.fit()
            clock.stop()
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both loops run there)")
    args = parser.parse_args()
    device = torch.device(args.device)
    tokens = torch.randint(0, MODEL["vocab_size"], (400_000,), generator=torch.Generator().manual_seed(0))
    data = SlidingWindowDataset(tokens, MODEL["context_length"], MODEL["context_length"])
    bare_loop(data, 5, device)  # warm up allocator and kernels
    tokens_per_run = args.steps * BATCH * MODEL["context_length"]
    wall: dict[str, list[float]] = {"bare loop": [], "Trainer": []}
    cpu: dict[str, list[float]] = {"bare loop": [], "Trainer": []}
    for _ in range(args.repeats):
        for name, loop in (("bare loop", bare_loop), ("Trainer", trainer_loop)):
            clock = loop(data, args.steps, device)
            wall[name].append(tokens_per_run / clock.wall)
            cpu[name].append(tokens_per_run / clock.cpu)
    print(f"model {sum(p.numel() for p in make_model().parameters()) / 1e6:.2f}M parameters, batch {BATCH} x "
          f"{MODEL['context_length']} tokens, {args.steps} steps x {args.repeats} alternating runs, "
          f"on {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    tables = [("tokens/s (wall clock)", wall)] + ([("tokens per CPU second", cpu)] if device.type == "cpu" else [])
    for title, results in tables:
        best = {name: max(values) for name, values in results.items()}
        print(f"{title:24s} {'best':>9s}   all runs")
        for name, values in results.items():
            print(f"  {name:22s} {best[name]:>9,.0f}   {', '.join(f'{v:,.0f}' for v in values)}")
        ratio = best["Trainer"] / best["bare loop"]
        print(f"  ratio Trainer / bare loop: {ratio:.3f} (overhead {100 * (1 - ratio):+.1f}%)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
