"""BPE training speed: the fast trainer against the textbook one, and the fast one on the full corpus.

Targets: fast >= 20x textbook on the same ~185 KB text at vocab 512; fast trains vocab 8192 on all fifteen novels
in <= 120 s. Each case runs in its own process so that its peak RSS is its own.

    .venv/bin/python benchmarks/bpe_training.py
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SMALL_SOURCE = "gutenberg-novels/pg1342-austen-pride-and-prejudice.txt"
SMALL_CHARS = 185_000
CASES = {
    "textbook": ("train_bpe_textbook", "small", 512),
    "fast": ("train_bpe", "small", 512),
    "fast-all-novels": ("train_bpe", "novels", 8192),
}


def run_case(case: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from llm import bpe
    from llm.data import list_files, read_text
    from llm.tokenizers import EOT

    trainer_name, corpus, vocab_size = CASES[case]
    if corpus == "small":
        text = read_text(SMALL_SOURCE, DATA)[:SMALL_CHARS]
    else:
        text = EOT.join(read_text(name, DATA) for name in list_files("gutenberg-novels/*.txt", DATA))
    start = time.perf_counter()
    tokenizer = getattr(bpe, trainer_name)(text, vocab_size)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "text_bytes": len(text.encode("utf-8")),
        "vocab_size": tokenizer.vocab_size,
        "merges_sha256": hashlib.sha256(json.dumps(tokenizer.merges).encode()).hexdigest(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(case: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--case", case], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    results = {case: measure(case) for case in CASES}
    print(f"{'case':18s} {'text':>9s} {'vocab':>6s} {'seconds':>9s} {'peak RSS':>9s}")
    for case, r in results.items():
        print(f"{case:18s} {r['text_bytes'] / 1e3:>6.0f} KB {r['vocab_size']:>6d} {r['seconds']:>9.2f}"
              f" {r['peak_rss_mb']:>6.0f} MB")
    same = results["fast"]["merges_sha256"] == results["textbook"]["merges_sha256"]
    speedup = results["textbook"]["seconds"] / results["fast"]["seconds"]
    full = results["fast-all-novels"]["seconds"]
    print(f"identical merges (fast vs textbook): {same}")
    print(f"speed-up fast / textbook at vocab 512: {speedup:.1f}x (target >= 20x)")
    print(f"fast, vocab 8192, all novels: {full:.1f} s = {full / 120:.2f} of the 120 s budget (target <= 1)")
    if not same:
        sys.exit("the fast trainer learned different merges than the textbook trainer")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(run_case(sys.argv[2])))
    else:
        main()
