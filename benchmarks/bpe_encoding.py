"""BPE encoding throughput: our trained tokenizer exported to tiktoken against tiktoken's GPT-2, same text.

Target: ours >= 0.9x GPT-2's throughput. Our pure-Python encoder is shown for context. The tokenizer is the one
chapter 1 trains (8192 ids, fourteen novels), taken from the shared cache in _cache/ or trained if absent.

    .venv/bin/python benchmarks/bpe_encoding.py
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm.bpe import BPETokenizer, gpt2_tiktoken  # noqa: E402
from llm.corpus import cached_tokenizer  # noqa: E402
from llm.data import list_files, read_text  # noqa: E402
from llm.tokenizers import EOT  # noqa: E402

DATA = ROOT / "data"
HELD_OUT = "gutenberg-novels/pg174-wilde-picture-of-dorian-gray.txt"
REPEATS = 3
PYTHON_SLICE = 2_000_000  # characters for the (slow) pure-Python encoder


def novel_tokenizer():
    """BPE with 8,192 ids trained on every novel but the held-out one, cached under _cache/ like the book's runs."""
    train_names = [name for name in list_files("gutenberg-novels/*.txt", DATA) if name != HELD_OUT]
    return cached_tokenizer(DATA, train_names, 8192, ROOT / "_cache")


def best_seconds(encode, text: str) -> tuple[float, int]:
    times, n_tokens = [], 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        n_tokens = len(encode(text))
        times.append(time.perf_counter() - start)
    return min(times), n_tokens


def main() -> None:
    text = EOT.join(read_text(name, DATA) for name in list_files("gutenberg-novels/*.txt", DATA))
    megabytes = len(text.encode("utf-8")) / 1e6
    ours = novel_tokenizer()
    rows = {
        "tiktoken GPT-2 (50,257 ids)": best_seconds(gpt2_tiktoken(DATA).encode_ordinary, text),
        "ours via tiktoken (8,192 ids)": best_seconds(ours.to_tiktoken().encode_ordinary, text),
    }
    python_text = text[:PYTHON_SLICE]
    start = time.perf_counter()
    python_tokens = len(BPETokenizer(ours.merges).encode_ordinary(python_text))
    python_seconds = time.perf_counter() - start

    print(f"text: all 15 novels, {megabytes:.1f} MB; best of {REPEATS}; pure Python on the first"
          f" {len(python_text.encode()) / 1e6:.1f} MB, cold chunk cache")
    print(f"{'encoder':32s} {'tokens':>11s} {'seconds':>8s} {'MB/s':>7s} {'Mtok/s':>7s}")
    for name, (seconds, n_tokens) in rows.items():
        print(f"{name:32s} {n_tokens:>11,} {seconds:>8.3f} {megabytes / seconds:>7.2f} {n_tokens / seconds / 1e6:>7.2f}")
    python_mb = len(python_text.encode()) / 1e6
    print(f"{'ours, pure Python':32s} {python_tokens:>11,} {python_seconds:>8.3f} {python_mb / python_seconds:>7.2f}"
          f" {python_tokens / python_seconds / 1e6:>7.2f}")
    (gpt2_seconds, _), (ours_seconds, _) = rows.values()
    print(f"throughput ours / GPT-2 (bytes per second): {gpt2_seconds / ours_seconds:.2f}x (target >= 0.9x)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
