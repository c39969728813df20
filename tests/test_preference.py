"""llm.preference: DPO loss on hand-computed values, sequence log-probabilities, batching, training, CLI errors."""

import argparse
import json
import math

import pytest
import torch

from llm.bpe import BPETokenizer
from llm.config import from_mapping
from llm.errors import DataError
from llm.instruct import IGNORE_INDEX, collate_instructions
from llm.preference import (
    DPOConfig,
    add_cli_command,
    collate_pairs,
    dpo_loss,
    dpo_metrics,
    encode_pairs,
    sequence_logprobs,
    train_dpo,
    with_reference_logprobs,
)
from llm.errors import ConfigError

from conftest import tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dpo_loss_on_hand_computed_values():
    # rewards: chosen 0.1 * (-12 + 13) = 0.1, rejected 0.1 * (-15 + 14) = -0.1, margin 0.2
    loss, chosen, rejected = dpo_loss(torch.tensor([-12.0, -7.0]), torch.tensor([-15.0, -3.0]),
                                      torch.tensor([-13.0, -7.0]), torch.tensor([-14.0, -5.0]), beta=0.1)
    torch.testing.assert_close(chosen, torch.tensor([0.1, 0.0]))
    torch.testing.assert_close(rejected, torch.tensor([-0.1, 0.2]))
    by_hand = (math.log(1 + math.exp(-0.2)) + math.log(1 + math.exp(0.2))) / 2  # -log sigmoid(m) = log(1 + e^-m)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    same, _, _ = dpo_loss(*(torch.tensor([-4.0]),) * 4, beta=0.5)
    assert same.item() == pytest.approx(math.log(2))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = torch.tensor([-5.0], requires_grad=True), torch.tensor([-6.0], requires_grad=True)
    loss, _, _ = dpo_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-6.0]), beta=0.1)
    loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descending the loss raises chosen, lowers rejected
    assert chosen.grad.item() == pytest.approx(-0.1 * 0.5) and rejected.grad.item() == pytest.approx(0.1 * 0.5)


def test_sequence_logprobs_sums_response_tokens_only():
    model = tiny_gpt().eval()
    inputs, targets = collate_instructions([([1, 2, 3], [4, 5]), ([6], [7, 8, 9])], 256, 32, mask_prompt=True)
    with torch.no_grad():
        fast = sequence_logprobs(model, inputs, targets)
        logprobs = model(inputs).log_softmax(-1)
    for row in range(2):
        slow = sum(logprobs[row, t, targets[row, t]].item() for t in range(targets.size(1))
                   if targets[row, t] != IGNORE_INDEX)
        assert fast[row].item() == pytest.approx(slow, rel=1e-5)
    counted = (targets != IGNORE_INDEX).sum(1).tolist()
    assert counted == [3, 4]  # two response tokens + end of text; three + end of text


def pairs(n: int) -> list[dict]:
    return [{"instruction": f"Greet {i}", "input": "", "chosen": "hello there", "rejected": "go away"}
            for i in range(n)]


def test_collate_pairs_stacks_chosen_then_rejected():
    encoded = encode_pairs(pairs(2), BPETokenizer([]))
    inputs, targets, reference = collate_pairs([(*p, -1.0, -2.0) for p in encoded], 256, 64)
    assert inputs.shape[0] == 4 and reference.tolist() == [[-1.0, -2.0], [-1.0, -2.0]]
    chosen_row = targets[0][targets[0] != IGNORE_INDEX].tolist()
    rejected_row = targets[2][targets[2] != IGNORE_INDEX].tolist()
    assert chosen_row == list(b"hello there") + [256] and rejected_row == list(b"go away") + [256]


def test_reference_model_gives_zero_rewards_and_log2_loss():
    model = tiny_gpt()
    data = with_reference_logprobs(model, encode_pairs(pairs(5), BPETokenizer([])), 256, 64, batch_size=2)
    metrics = dpo_metrics(model, data, 256, 64, beta=0.1)
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(metrics["margin"]) < 1e-5 and abs(metrics["chosen_reward"]) < 1e-5


def test_training_increases_the_margin(tmp_path):
    splits = {"train": pairs(8), "validation": pairs(10)[8:], "test": pairs(12)[10:]}
    config = from_mapping(DPOConfig, {"beta": 0.5, "max_length": 64,
                                          "train": {"epochs": 4, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0}})
    results = train_dpo(tiny_gpt(), BPETokenizer([]), splits, config, tmp_path)
    first, last = results["history"][0], results["history"][-1]
    assert first["val_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert last["val_margin"] > 0.5 and last["val_loss"] < first["val_loss"]
    assert results["metrics"]["test"]["pair_accuracy"] == 1.0
    with pytest.raises(ConfigError, match="^beta: must be > 0, got 0"):
        from_mapping(DPOConfig, {"beta": 0})


def test_cli_names_the_missing_key(tmp_path):
    (tmp_path / "instructions.json").write_text(json.dumps([{"instruction": "Hi", "input": "", "output": "a"}]))
    parser = argparse.ArgumentParser(prog="llm")
    add_cli_command(parser.add_subparsers())
    args = parser.parse_args(["dpo", "--model", "m", "--out-dir", "o", "--data", str(tmp_path / "instructions.json")])
    with pytest.raises(DataError, match=r"instructions\.json: entry 0 has no key 'chosen'"):
        args.handler(args)
    args = parser.parse_args(["dpo", "--data", "x.json", "--out-dir", "o"])
    with pytest.raises(ConfigError, match=r"the command line: model: missing \(or give --model\)"):
        args.handler(args)
