"""The training loop's parts: schedule, weight-decay groups, data order, accumulation, evaluation and logging."""

import json
import math

import pytest
import torch
from torch import nn

from llm.model import GPT, GPTConfig
from llm.config import from_mapping
from llm.errors import ConfigError
from llm.train import (DataOrder, MetricsLog, TrainConfig, Trainer, accumulate_gradients, clip_gradients,
                       evaluate_loss, evaluation_indices, lm_loss, lr_at, make_batch, next_token_loss, param_groups,
                       resolve_device, warmup_cosine)

TINY = dict(vocab_size=32, context_length=8, n_layer=1, n_head=2, n_kv_head=2, d_model=16, dropout=0.0,
            bias=True, tie_weights=True)


def windows(n_tokens: int = 4_000, period: int = 5, length: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A learnable stream: a repeating pattern of `period` tokens, cut into overlapping windows."""
    tokens = torch.arange(n_tokens) % period
    return [(tokens[i:i + length], tokens[i + 1:i + length + 1]) for i in range(0, n_tokens - length - 1, 3)]


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def test_lm_loss_is_mean_token_cross_entropy():
    logits, targets = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    log_probs = logits.log_softmax(-1)
    expected = -sum(log_probs[b, t, targets[b, t]] for b in range(2) for t in range(3)) / 6
    torch.testing.assert_close(lm_loss(logits, targets), expected)


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    lrs = [lr_at(step, lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110) for step in range(130)]
    assert lrs[:10] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)])
    assert max(lrs) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[60] == pytest.approx((1e-3 + 1e-4) / 2)  # halfway through the decay
    assert lrs[110:] == pytest.approx([1e-4] * 20)


def test_trainer_follows_schedule(tmp_path):
    config = TrainConfig(max_steps=12, warmup_steps=4, batch_size=2, log_interval=1, eval_interval=100,
                         eval_batches=1, out_dir=str(tmp_path), progress=False)
    Trainer(tiny_model(), windows(), windows(400), config).fit()
    logged = [r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if r["kind"] == "train"]
    assert logged == pytest.approx([lr_at(step, lr=config.lr, min_lr=config.min_lr, warmup_steps=4, max_steps=12)
                                    for step in range(12)])


def test_param_groups_decay_matrices_only():
    model = tiny_model()
    decay, no_decay = (group["params"] for group in param_groups(model, 0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    assert all(p.dim() == 2 for p in decay)
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    assert embeddings and embeddings <= {id(p) for p in no_decay}
    assert not embeddings & {id(p) for p in decay}
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} - embeddings
    assert linear_weights == {id(p) for p in decay}, sorted(names[i] for i in linear_weights)
    assert all(p.dim() == 1 for p in no_decay if id(p) not in embeddings)


def test_untied_output_layer_is_decayed():
    model = tiny_model(tie_weights=False)
    decay = {id(p) for p in param_groups(model, 0.1)[0]["params"]}
    head = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == TINY["vocab_size"]]
    assert head and id(head[0].weight) in decay


def test_data_order_is_a_permutation_per_epoch_and_resumes():
    order = DataOrder(10, seed=3)
    first = order.take(7)
    rest = order.take(13)
    epoch0, epoch1 = torch.cat([first, rest[:3]]), rest[3:13]
    assert sorted(epoch0.tolist()) == list(range(10)) and sorted(epoch1.tolist()) == list(range(10))
    assert not torch.equal(epoch0, epoch1)
    saved = order.state_dict()
    ahead = order.take(15)
    again = DataOrder(10, seed=3)
    again.load_state_dict(saved)
    assert torch.equal(again.take(15), ahead)


def test_evaluation_indices_are_fixed_and_spread():
    indices = evaluation_indices(1000, 10)
    assert indices.tolist() == evaluation_indices(1000, 10).tolist()
    assert indices[0] == 0 and indices[-1] == 999 and len(indices) == 10
    assert evaluation_indices(5, 50).tolist() == [0, 1, 2, 3, 4]


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    data = windows()
    results = []
    for batch_size, accum in [(8, 1), (4, 2), (2, 4)]:
        config = TrainConfig(max_steps=1, batch_size=batch_size, grad_accum_steps=accum, warmup_steps=0,
                             eval_batches=1, out_dir=str(tmp_path / f"{batch_size}"), progress=False)
        trainer = Trainer(tiny_model(), data, data[:20], config)
        trainer.train_step()
        results.append(trainer.model.state_dict())
    for other in results[1:]:
        for key in results[0]:
            torch.testing.assert_close(other[key], results[0][key], rtol=1e-5, atol=1e-6)


def test_training_learns_pattern_and_logs_metrics(tmp_path):
    config = TrainConfig(max_steps=60, batch_size=8, lr=1e-2, warmup_steps=5, eval_interval=20,
                         eval_batches=2, log_interval=10, out_dir=str(tmp_path), progress=False)
    trainer = Trainer(tiny_model(), windows(), windows(600), config)
    final = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in evals] == [0, 20, 40, 60] and [r["step"] for r in train] == [10, 20, 30, 40, 50, 60]
    assert evals[0]["val_loss"] == pytest.approx(math.log(32), abs=0.3)  # untrained: near uniform
    assert final == evals[-1] and final["val_loss"] < 0.5
    assert all(r["tokens"] == r["step"] * 8 * 8 for r in records)
    assert (tmp_path / "checkpoint.pt").exists()


def test_on_eval_adds_fields_and_does_not_disturb_training(tmp_path):
    def run(on_eval, name):
        config = TrainConfig(max_steps=10, batch_size=4, eval_interval=5, eval_batches=1, log_interval=5,
                             out_dir=str(tmp_path / name), progress=False)
        Trainer(tiny_model(dropout=0.1), windows(), windows(300), config, on_eval=on_eval).fit()
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    def sample(model, step):
        assert not model.training
        return {"note": f"step {step}"}

    plain, noted = run(None, "plain"), run(sample, "noted")
    assert [r.get("note") for r in noted if r["kind"] == "eval"] == ["step 0", "step 5", "step 10"]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("note", "tokens_per_s")} for r in rs]
    assert strip(plain) == strip(noted)


@pytest.mark.parametrize("field, value, message", [
    ("lr", -1.0, "^lr: must be > 0, got -1.0"),
    ("max_steps", 0, "^max_steps: must be at least 1, got 0"),
    ("min_lr", 1.0, "^min_lr: must be between 0 and lr=0.001, got 1.0"),
    ("precision", "fp8", "^precision: must be auto, fp32 or bf16, got 'fp8'"),
    ("device", "tpu", "^device: must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("checkpoint_interval", 15, "multiple of log_interval"),
])
def test_bad_config_values_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match="^train.learning_rate: unknown option"):
        from_mapping(TrainConfig, {"learning_rate": 0.1}, "train")


def test_trainer_takes_a_loss_function_and_logs_its_metrics(tmp_path):
    def with_penalty(model, batch):
        inputs, targets = batch
        loss = lm_loss(model(inputs), targets)
        penalty = sum(p.square().sum() for p in model.parameters()) * 0.0  # a zero term: the same updates
        return loss + penalty, {"penalty": 1.5}

    runs = {}
    for name, loss_fn in {"default": None, "custom": with_penalty}.items():
        config = TrainConfig(max_steps=4, batch_size=2, warmup_steps=1, log_interval=2, eval_interval=100,
                             eval_batches=1, out_dir=str(tmp_path / name), progress=False)
        options = {} if loss_fn is None else {"loss_fn": loss_fn}
        Trainer(tiny_model(), windows(), windows(400), config, **options).fit()
        runs[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
                      if json.loads(line)["kind"] == "train"]
    assert [r["penalty"] for r in runs["custom"]] == [1.5, 1.5]
    assert [r["loss"] for r in runs["custom"]] == [r["loss"] for r in runs["default"]]
    assert "penalty" not in runs["default"][0]


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto").type == expected


def test_asking_for_an_absent_device_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: 'mps' requested but MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="device: must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        resolve_device("gpu")


def test_metrics_log_truncates_after_a_resume_point(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(5):
        log.append({"step": step})
    log.truncate(2)
    assert [json.loads(line)["step"] for line in log.path.read_text().splitlines()] == [0, 1, 2]
    MetricsLog(tmp_path / "other.jsonl", enabled=False).append({"step": 0})  # another rank: writes nothing
    assert not (tmp_path / "other.jsonl").exists()


def test_warmup_cosine_gives_the_optimizer_the_rates_of_lr_at():
    schedule = dict(lr=1e-2, min_lr=1e-3, warmup_steps=3, max_steps=10)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=schedule["lr"])
    scheduler = warmup_cosine(optimizer, **schedule)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([lr_at(step, **schedule) for step in range(12)])


def test_evaluate_loss_is_the_token_mean_and_restores_the_mode():
    model, data = tiny_model(), windows()
    indices = evaluation_indices(len(data), 10)
    x, y = make_batch(data, indices)
    model.train()
    value = evaluate_loss(model, data, indices, batch_size=3)
    assert model.training
    with torch.no_grad():
        expected = lm_loss(model.eval()(x), y).item()
    assert value == pytest.approx(expected, rel=1e-6)


def test_clip_gradients_keeps_the_direction_and_zero_means_no_limit():
    model, data = tiny_model(), windows()
    x, y = make_batch(data, torch.arange(4))
    for max_norm in (0.01, 0.0):
        model.zero_grad()
        lm_loss(model(x), y).backward()
        before = torch.cat([p.grad.flatten() for p in model.parameters()])
        norm = clip_gradients(model, max_norm)
        after = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert norm == pytest.approx(before.norm().item(), rel=1e-5)
        limit = max_norm or math.inf
        assert after.norm().item() == pytest.approx(min(limit, norm.item()), rel=1e-4)
        assert torch.nn.functional.cosine_similarity(before, after, dim=0) > 0.9999


def test_accumulate_gradients_of_two_halves_match_one_batch():
    data = windows()
    x, y = make_batch(data, torch.arange(8))
    grads = []
    for batches in ([(x, y)], [(x[:4], y[:4]), (x[4:], y[4:])]):
        model = tiny_model()
        loss, metrics = accumulate_gradients(model, next_token_loss, batches)
        grads.append([p.grad for p in model.parameters()])
        assert metrics == {} and loss.requires_grad is False
    for one, two in zip(*grads):
        torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-7)
