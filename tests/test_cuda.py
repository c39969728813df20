"""The CUDA code paths. They run where a GPU exists and are skipped elsewhere (CI has no GPU)."""

import json

import pytest
import torch

from llm.generate import generate
from llm.model import GPT, GPTConfig
from llm.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(vocab_size=97)).eval()


def test_forward_on_cuda_matches_cpu():
    model = tiny_model()
    idx = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        on_cpu = model(idx)
        on_gpu = model.cuda()(idx.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, atol=2e-4, rtol=1e-4)


def test_kv_cache_gives_the_same_tokens_on_cuda():
    model = tiny_model().cuda()
    prompt = torch.randint(0, 97, (2, 5), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    with_cache = generate(model, prompt, 40, use_cache=True)
    without = generate(model, prompt, 40, use_cache=False)
    assert with_cache.device.type == "cuda"
    assert torch.equal(with_cache, without)


def cyclic_windows(count: int, length: int, vocab: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Windows of a sequence that counts 0, 1, 2, ... modulo vocab: easy to learn, so the loss must fall."""
    stream = torch.arange(count + length + 1) % vocab
    return [(stream[i:i + length], stream[i + 1:i + length + 1]) for i in range(count)]


def test_trainer_uses_bf16_autocast_on_cuda_and_learns(tmp_path):
    data = cyclic_windows(512, 32, 97)
    config = TrainConfig(max_steps=60, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=5, eval_interval=30,
                         eval_batches=2, log_interval=10, device="cuda", out_dir=str(tmp_path), progress=False)
    trainer = Trainer(tiny_model(), data, data[:64], config)
    assert trainer.use_bf16 and trainer.device.type == "cuda"
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in records if r["kind"] == "eval"]
    assert evals[-1] < 0.5 * evals[0]
    assert next(trainer.model.parameters()).dtype == torch.float32  # autocast leaves the weights in fp32
