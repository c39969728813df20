"""The trainer under torchrun with two processes (DistributedDataParallel, gloo backend on the CPU): two processes on
one node, and two nodes of one process each that meet over the loopback address as separate machines would."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
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
    """The environment for child processes, with the repository root importable (llm need not be installed), and one
    thread each: the processes share the cores, and under load a multi-threaded kernel may split a sum differently
    in each of them, which would make two ranks' weights differ in their last bits."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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

    assert_two_ranks_match_one_process(ddp, single)


def assert_two_ranks_match_one_process(ddp: Path, single: Path) -> None:
    """Both ranks of the two-process run hold the same weights, and those match one process with twice the batch."""
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


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multi_node_launch(node: int, nodes: int, port: int, run_id: str) -> list[str]:
    """torchrun's multi-machine form for one node: every node runs the same command, naming the rendezvous host.

    Between real machines only --rdzv_endpoint (node 0's address) and --local_addr (each node's own address) change;
    is_host says which node serves the rendezvous store, which on separate machines torchrun infers itself.
    """
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc_per_node=1",
            "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={run_id}",
            f"--rdzv_conf=is_host={int(node == 0)},join_timeout=60,read_timeout=60", "--local_addr=127.0.0.1",
            "--max_restarts=0"]


def test_two_nodes_over_loopback_stay_in_sync_and_match_one_process(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    nodes, single = tmp_path / "nodes", tmp_path / "single"
    nodes.mkdir(), single.mkdir()
    port, run_id = free_loopback_port(), f"llm-test-{uuid.uuid4().hex[:8]}"
    # gloo picks its network interface from the host name unless told: keep all traffic on the loopback device
    env = {**subprocess_env(), "GLOO_SOCKET_IFNAME": "lo"}
    commands = {f"node{node}": [*multi_node_launch(node, 2, port, run_id), str(script), str(nodes), "4"]
                for node in range(2)}
    commands["single"] = [sys.executable, str(script), str(single), "8"]
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    runs = {}
    try:
        for name, command in commands.items():
            with open(logs[name], "w") as log:  # files, not pipes: no process blocks on a full pipe
                runs[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True)  # its own group, torchrun's workers included
        deadline = time.monotonic() + 240
        for name, run in runs.items():
            try:
                code = run.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = "timed out"
            assert code == 0, f"{name}: {code}\n{logs[name].read_text()}"
    finally:
        for run in runs.values():
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()

    assert sorted(p.name for p in nodes.glob("rank*.json")) == ["rank0-of-2.json", "rank1-of-2.json"]
    assert_two_ranks_match_one_process(nodes, single)
