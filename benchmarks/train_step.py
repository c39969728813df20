"""Training-step throughput: forward, backward and AdamW step, ours against llms-from-scratch (Raschka).

Shape: GPT-2's vocabulary (50,257), 6 layers, d_model 384, 6 heads, context 256, batch 4, dropout 0, float32 weights,
torch's default thread count; the loss is cross-entropy over all 1,024 positions. Timing: all rows live in one
process and take steps in turn (row 1, row 2, ..., row 1, ...), so that load from other processes on the shared
cores hits every row alike; after WARMUP untimed steps per row, ROUNDS x STEPS steps per row are timed and the
median is reported as tokens/s. Peak RSS: each row alone in a fresh process, over its first steps (model,
gradients, optimizer state, activations; setup excluded).

Rows:
  reference GPTModel                     llms_from_scratch.ch04.GPTModel, AdamW(lr=4e-4, weight_decay=0.1) as in its
                                         chapter 5, float32
  reference GPTModelFast                 llms_from_scratch.ch04.GPTModelFast (nn.LayerNorm, tanh GELU, SDPA)
  ours, same architecture                llm.model.GPT with biases and an untied output layer, like the references
  ours, book default                     GPTConfig.small: no biases, tied embeddings (19.3M fewer parameters)
  ours, book default, bf16 autocast      the same under torch.autocast(bfloat16), TrainConfig(precision="bf16")
  reference GPTModelFast, bf16 autocast  the fairness check: the reference given the same autocast
"Ours" rows use AdamW(fused=True). Targets: ours >= 1.5x GPTModel and >= 1.2x GPTModelFast.

Measured on the book's machine (2 cores of an Intel Xeon with AMX, December 2026, other processes running at low
priority), tokens/s: GPTModel 692, GPTModelFast 736, ours same architecture 762 (1.10x), book default 787, book
default with bf16 autocast 1348 (1.95x GPTModel, 1.83x GPTModelFast); GPTModelFast with bf16 autocast 1091, so at
equal precision ours leads by 1.24x. (On an AMD EPYC with AVX512-BF16 in November 2026: 734, 739, 797, 778, 1559.)
The step is bound by matrix products (the output layer alone is over half the FLOPs), so what pays is doing them
faster, not fewer small kernels:
  - bf16 autocast: the CPU multiplies bfloat16 natively, several times the float32 rate. It is what meets the
    targets; it is a trainer option rather than the CPU default, because CPUs without native bf16 emulate it and
    run slower, and because at the book's own width (128) it does not pay (chapter 5 measures it).
  - fused AdamW (one pass over each parameter), one fused QKV projection, SDPA, nn.LayerNorm and F.gelu: the float32
    lead over the references, and less memory (peak RSS 1758 MB for the book default, 2361 for GPTModel).
Efficiency, in the same run: torch.mm reached 364 GFLOP/s in float32 and 2,400 in bfloat16. The book default's
float32 step reached 147 GFLOP/s (40%; 180 GFLOP/s, 49%, in a quieter run), its bf16 step 252 GFLOP/s (10%). The
step's own linear-layer products, timed alone at their shapes, reach 59% of the mm rate in float32 but only 39% in
bfloat16: the products of a step this size (1,024 tokens; widths 384 to 1,536, and the 50,257-wide output layer,
whose result is too large for the caches) are too small or too memory-bound for AMX's peak. So no change outside
the matrix products can bring the bf16 step to 50%: the bound is the products themselves. The float32 step loses
the rest of its share to the softmax and cross-entropy over 51 million logits and the copies around them.
What did not help, and is therefore not used:
  - torch.compile (inductor, gcc): 861 against 828 tokens/s in float32 and 1593 against 1571 in bf16 (1-4%), after
    a first step that compiles for 10-20 s, and minutes on a loaded machine.
  - column-major ("[in, out]") weights (llm.attention.Linear): no measurable change in the training step; they
    are there for generation (kv_cache.py).
  - one thread instead of two: faster only when other processes load the cores (every kernel then waits for the
    slower thread); on idle cores torch's default of one thread per core is best, and all rows use it.

Efficiency: each row's achieved FLOP/s as a share of this CPU's own matrix-product rate in the row's precision,
measured in the same run (torch.mm on 2048 x 2048 matrices, best of every round, float32 and bfloat16). A step's
FLOPs are counted as usual for transformers: 6 per weight of every matrix product per token (forward and the two
backward products), the output layer included and the embedding lookups not, plus 12 x layers x context x d_model
per token for the attention scores and their weighted sums (causal masking not subtracted). The last lines time
the step's own matrix products alone, at their shapes and in each precision: the rate a step could reach if it did
nothing else, which bounds what any change outside the matrix products can win. Goal: >= 50% of the measured rate.

    .venv/bin/python benchmarks/train_step.py [--rounds 3] [--steps 5] [--extra]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _rss import peak_rss_mb, reset_peak_rss  # noqa: E402  (the script's own folder is on sys.path)

VOCAB, CONTEXT, LAYERS, HEADS, WIDTH, BATCH = 50257, 256, 6, 6, 384, 4
REFERENCE_CONFIG = {"vocab_size": VOCAB, "context_length": CONTEXT, "emb_dim": WIDTH, "n_heads": HEADS,
                    "n_layers": LAYERS, "drop_rate": 0.0, "qkv_bias": False}
MAIN_ROWS = ["reference GPTModel", "reference GPTModelFast", "ours, same architecture", "ours, book default",
             "ours, book default, bf16 autocast", "reference GPTModelFast, bf16 autocast"]
EXTRA_ROWS = ["ours, book default, AdamW foreach", "ours, book default, AdamW default",
              "ours, book default, 1 thread", "ours, book default, torch.compile"]


def build(row: str):
    """Model, optimizer and thread count for one row."""
    import torch

    torch.manual_seed(0)
    threads = 1 if row.endswith("1 thread") else torch.get_num_threads()
    if row.startswith("reference"):
        from llms_from_scratch.ch04 import GPTModel, GPTModelFast

        model = (GPTModelFast if "Fast" in row else GPTModel)(REFERENCE_CONFIG)
        return model, torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1), threads
    from llm.model import GPT, GPTConfig

    if row == "ours, same architecture":
        config = GPTConfig(VOCAB, CONTEXT, LAYERS, HEADS, WIDTH, bias=True, tie_weights=False)
    else:
        config = GPTConfig.small(VOCAB)
    model = GPT(config)
    optimizer_options = {"fused": True}
    if row.endswith("AdamW foreach"):
        optimizer_options = {"foreach": True}
    elif row.endswith("AdamW default"):
        optimizer_options = {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, **optimizer_options)
    if row.endswith("torch.compile"):
        model = torch.compile(model)
    return model, optimizer, threads


class Row:
    """One row's model, optimizer and data; `step()` runs and times one training step."""

    def __init__(self, name: str):
        import torch

        self.name = name
        self.model, self.optimizer, self.threads = build(name)
        self.model.train()
        generator = torch.Generator().manual_seed(1)
        self.inputs = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=generator)
        self.targets = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=generator)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.bf16 = name.endswith("bf16 autocast")

    def step(self) -> float:
        import torch
        import torch.nn.functional as F

        default_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(self.inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), self.targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        seconds = time.perf_counter() - start
        torch.set_num_threads(default_threads)
        return seconds


def rss_worker(name: str, warmup: int) -> dict:
    """Peak RSS of one row alone, over its warm-up steps (in its own process)."""
    row = Row(name)
    reset_peak_rss()
    for _ in range(warmup + 1):
        row.step()
    return {"rss_mb": peak_rss_mb()}


def flops_per_step() -> float:
    """Model FLOPs of one training step of the benchmark's shape (see the docstring for the convention)."""
    matrix_weights = LAYERS * 12 * WIDTH**2 + WIDTH * VOCAB  # attention 4d^2 + MLP 8d^2 per block; the output layer
    per_token = 6 * matrix_weights + 12 * LAYERS * CONTEXT * WIDTH
    return per_token * BATCH * CONTEXT


def matmul_rate(dtype, shape: tuple[int, int, int] = (2048, 2048, 2048), repeats: int = 5) -> float:
    """FLOP/s of torch.mm at `shape` (m, k, n) in `dtype`: the best of `repeats` products after a warm-up."""
    import torch

    m, k, n = shape
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best


def step_matmul_rate(dtype) -> float:
    """FLOP/s of the step's linear-layer products alone, at their shapes: forward x W^T, and backward dY W and
    dY^T x, for the fused QKV, attention output, MLP and output layers."""
    tokens = BATCH * CONTEXT
    layers = [(WIDTH, 3 * WIDTH), (WIDTH, WIDTH), (WIDTH, 4 * WIDTH), (4 * WIDTH, WIDTH)] * LAYERS
    layers.append((WIDTH, VOCAB))
    flops, seconds = 0.0, 0.0
    for fan_in, fan_out in layers:
        for shape in [(tokens, fan_in, fan_out), (tokens, fan_out, fan_in), (fan_out, tokens, fan_in)]:
            rate = matmul_rate(dtype, shape, repeats=3)
            flops += 2 * shape[0] * shape[1] * shape[2]
            seconds += 2 * shape[0] * shape[1] * shape[2] / rate
    return flops / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--extra", action="store_true", help="also run the rows that did not make the cut")
    parser.add_argument("--rss-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_worker:
        print(json.dumps(rss_worker(args.rss_worker, args.warmup)))
        return

    import torch
    from importlib.metadata import version

    names = MAIN_ROWS + (EXTRA_ROWS if args.extra else [])
    rss = {}
    for name in names:  # memory first, each row alone in a fresh process
        out = subprocess.run([sys.executable, __file__, "--rss-worker", name, "--warmup", str(args.warmup)],
                             capture_output=True, text=True, check=True)
        rss[name] = json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"]
        print(f"  peak RSS measured: {name}", file=sys.stderr, flush=True)

    # Timing: all rows in this process, stepping in turn, so that outside load hits every row alike.
    rows = [Row(name) for name in names]
    first_step = {row.name: row.step() for row in rows}
    for _ in range(args.warmup - 1):
        for row in rows:
            row.step()
    times: dict[str, list[float]] = {row.name: [] for row in rows}
    peak = {"float32": 0.0, "bfloat16": 0.0}
    for round_number in range(args.rounds):
        for _ in range(args.steps):
            for row in rows:
                times[row.name].append(row.step())
        for dtype in peak:
            peak[dtype] = max(peak[dtype], matmul_rate(getattr(torch, dtype)))
        print(f"  round {round_number + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    tokens = BATCH * CONTEXT
    throughput = {name: tokens / statistics.median(t) for name, t in times.items()}
    reference, reference_fast = throughput["reference GPTModel"], throughput["reference GPTModelFast"]
    print(f"train step: vocab {VOCAB}, {LAYERS} layers, d_model {WIDTH}, {HEADS} heads, context {CONTEXT},"
          f" batch {BATCH}, float32, {torch.get_num_threads()} threads; llms-from-scratch"
          f" {version('llms-from-scratch')}; median of {args.rounds * args.steps} interleaved steps")
    print(f"{'':38s} {'params':>11s} {'tokens/s':>9s} {'vs GPTModel':>12s} {'vs Fast':>8s} {'peak RSS MB':>12s}"
          f" {'1st step s':>11s} {'GFLOP/s':>8s} {'of mm peak':>10s}")
    step_flops = flops_per_step()
    for row in rows:
        name = row.name
        achieved = step_flops / statistics.median(times[name])
        share = achieved / peak["bfloat16" if row.bf16 else "float32"]
        print(f"{name:38s} {row.params:>11,} {throughput[name]:>9.0f} {throughput[name] / reference:>11.2f}x"
              f" {throughput[name] / reference_fast:>7.2f}x {rss[name]:>12.0f} {first_step[name]:>11.1f}"
              f" {achieved / 1e9:>8.0f} {share:>10.0%}")
    print(f"FLOPs per step {step_flops / 1e9:.1f} G; torch.mm on 2048 x 2048 in this run: float32 "
          f"{peak['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s")
    for dtype in peak:
        alone = step_matmul_rate(getattr(torch, dtype))
        print(f"the step's linear-layer products alone, {dtype}: {alone / 1e9:.0f} GFLOP/s, "
              f"{alone / peak[dtype]:.0%} of the mm rate")
    print("goal: a training step at >= 50% of the mm rate, in float32 and in bfloat16")
    ours = throughput["ours, book default, bf16 autocast"]
    print(f"targets, ours with bf16 autocast (a trainer option, not the CPU default): >= 1.5x GPTModel"
          f" (got {ours / reference:.2f}x), >= 1.2x GPTModelFast (got {ours / reference_fast:.2f}x)")
    both = throughput["reference GPTModelFast, bf16 autocast"]
    print(f"with bf16 autocast on both sides: ours / GPTModelFast {ours / both:.2f}x")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average at the end (1, 5, 15 min): {' '.join(load)} on {torch.get_num_threads()} cores")


if __name__ == "__main__":
    main()
