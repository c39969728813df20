"""Training throughput of a mixture-of-experts layer against a dense feed-forward layer with the same active parameters.

The MoE layer is llm.modern.MoE: n_expert SwiGLU experts of width d_expert, each token sent to top_k of them. The
dense layer is llm.modern.FeedForward, one SwiGLU network of width top_k * d_expert: per token it holds exactly the
parameters the MoE layer uses (the MoE adds only its router, n_expert * d_model weights). Both do the same
multiplications per token; the MoE layer also routes, sorts the tokens by expert and gathers their outputs back,
and it multiplies in n_expert smaller products instead of one large one. Each measures forward plus backward on the
same tokens; runs alternate (dense, MoE, dense, ...) so that a busy machine slows both alike, and the best run of
each is reported.

Measured on the book's machine (2 cores of an Intel Xeon, December 2026), MoE / dense: 0.58 at the book's shape,
0.79 at the 6 x 384 shape, after chapter 5 replaced per-expert indexing of the stacked weights by `unbind` and the
row gather by `index_select` (before: 0.40 and 0.50). At the book's width of 128 each expert's products are a few
million operations, and the fixed cost of routing, sorting and some forty small kernels per step is what remains;
the goal is met at the larger shape, not at the book's.

    .venv/bin/python benchmarks/moe_throughput.py [--repeats R] [--iters N] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from llm.modern import MoE, FeedForward

SHAPES = {  # name: (d_model, n_expert, top_k, d_expert, tokens per batch)
    "book (chapter 5's moe recipe)": (128, 8, 2, 128, 16 * 128),
    "6 layers x 384 shape": (384, 8, 2, 512, 8 * 256),
}


def make_layers(d_model: int, n_expert: int, top_k: int, d_expert: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    moe = MoE(d_model, d_expert, n_expert, top_k)
    for weight in (moe.gate_proj, moe.up_proj, moe.down_proj):
        nn.init.normal_(weight, std=0.02)
    dense = FeedForward(d_model, top_k * d_expert, "swiglu")
    return dense, moe


def tokens_per_second(layer: nn.Module, x: torch.Tensor, iters: int) -> float:
    """Forward and backward through `layer` `iters` times; tokens processed per second."""
    def step() -> None:
        layer(x).square().mean().backward()
        layer.zero_grad(set_to_none=True)
        x.grad = None

    step()  # warm-up: allocations, kernel choice
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return iters * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10, help="forward+backward passes per timed run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads; best of {args.repeats} "
          f"alternating runs of {args.iters} forward+backward passes")
    print(f"{'shape':32s} {'active params':>13s} {'dense tok/s':>12s} {'MoE tok/s':>12s} {'MoE / dense':>11s}")
    for name, (d_model, n_expert, top_k, d_expert, tokens) in SHAPES.items():
        dense, moe = (layer.to(args.device) for layer in make_layers(d_model, n_expert, top_k, d_expert))
        active = sum(p.numel() for p in dense.parameters())
        assert sum(p.numel() for p in moe.parameters()) == n_expert / top_k * active + n_expert * d_model
        x = torch.randn(tokens, d_model, device=args.device, requires_grad=True)
        best = {"dense": 0.0, "moe": 0.0}
        for _ in range(args.repeats):
            for key, layer in (("dense", dense), ("moe", moe)):
                best[key] = max(best[key], tokens_per_second(layer, x, args.iters))
        print(f"{name:32s} {active:>13,d} {best['dense']:>12,.0f} {best['moe']:>12,.0f} "
              f"{best['moe'] / best['dense']:>11.2f}")
    print("target: MoE / dense >= 0.7")


if __name__ == "__main__":
    sys.exit(main())
