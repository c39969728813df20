"""The trainer under torchrun with two processes (DistributedDataParallel, gloo backend on the CPU)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from llm.checkpoint import load_checkpoint

# Each rank trains, then writes a hash of its weights; rank 0 also writes the checkpoint and metrics.
DRIVER = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from llm.model import GPT, GPTConfig
    from llm.train import Trainer, TrainConfig

    out_dir, batch_size = Path(sys.argv[1]), int(sys.argv[2])
    tokens = torch.randint(0, 48, (4_000,), generator=torch.Generator().manual_seed(0))
    windows = [(tokens[i:i + 16], tokens[i + 1:i + 17]) for i in range(0, len(tokens) - 17, 8)]
    torch.manual_seed(1234)  # the same initial weights in every process
    model = GPT(GPTConfig(vocab_size=48, context_length=16, n_layer=2, n_head=2, n_kv_head=2, d_model=32,
                          dropout=0.0, bias=True, tie_weights=True))
    config = TrainConfig(max_steps=6, batch_size=batch_size, grad_accum_steps=2, lr=3e-3, warmup_steps=2,
                         eval_interval=3, eval_batches=2, log_interval=1, out_dir=str(out_dir), progress=False)
    trainer = Trainer(model, windows[:400], windows[400:], config)
    trainer.fit()
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    (out_dir / f"rank{trainer.rank}-of-{trainer.world_size}.json").write_text(json.dumps(digest))
    if dist.is_initialized():
        dist.destroy_process_group()
""")


def subprocess_env() -> dict[str, str]:
    """The environment for child processes, with the repository root importable (llm need not be installed)."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def test_two_processes_stay_in_sync_and_match_one_process(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    runs = [subprocess.Popen([*launch, str(script), str(ddp), "4"], env=subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True),
            subprocess.Popen([sys.executable, str(script), str(single), "8"], env=subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)]
    for run in runs:
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output

    digests = [json.loads((ddp / f"rank{r}-of-2.json").read_text()) for r in range(2)]
    assert digests[0] == digests[1]

    # two processes with 4 sequences each see the same global batches as one process with 8
    weights = [load_checkpoint(d / "checkpoint.pt")["model"] for d in (ddp, single)]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-3, atol=1e-4)
    records = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (ddp, single)]
    assert [r["step"] for r in records[0]] == [r["step"] for r in records[1]]
    for a, b in zip(*records):
        loss = "loss" if a["kind"] == "train" else "val_loss"
        assert a["tokens"] == b["tokens"] and abs(a[loss] - b[loss]) < 1e-4
