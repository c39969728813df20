"""llm.instruct: data validation, prompt format, collate masks, loss masking, ROUGE-L, answering, CLI errors."""

import argparse
import itertools
import json
import random

import pytest
import torch
import torch.nn.functional as F

import llm.instruct
from llm.bpe import BPETokenizer
from llm.errors import DataError
from llm.instruct import (
    IGNORE_INDEX,
    InstructConfig,
    add_cli_command,
    collate_instructions,
    encode_instructions,
    finetune_instructions,
    format_prompt,
    instruction_loss,
    lcs_length,
    load_instruction_file,
    respond,
    response_loss,
    rouge_l,
)
from llm.config import from_mapping
from llm.errors import ConfigError
from llm.splits import split

from conftest import tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")


def test_format_prompt_sections():
    assert format_prompt({"instruction": "Add.", "input": "2 and 3", "output": "5"}) == (
        "### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response:\n")
    assert format_prompt({"instruction": "Smile.", "input": ""}, preamble="Be kind.") == (
        "Be kind.\n\n### Instruction:\nSmile.\n\n### Response:\n")


def test_collate_pads_appends_end_of_text_and_masks():
    batch = [([1, 2, 3], [10, 11]), ([4, 5], [12])]
    inputs, targets = collate_instructions(batch, eot_id=0, max_length=8, mask_prompt=False)
    assert inputs.tolist() == [[1, 2, 3, 10, 11], [4, 5, 12, 0, 0]]
    assert targets.tolist() == [[2, 3, 10, 11, 0], [5, 12, 0, IGNORE_INDEX, IGNORE_INDEX]]
    _, masked = collate_instructions(batch, eot_id=0, max_length=8, mask_prompt=True)
    assert masked.tolist() == [[-100, -100, 10, 11, 0], [-100, 12, 0, -100, -100]]
    short_inputs, short_targets = collate_instructions(batch, eot_id=0, max_length=3, mask_prompt=False)
    assert short_inputs.tolist() == [[1, 2, 3], [4, 5, 12]]
    assert short_targets.tolist() == [[2, 3, 10], [5, 12, 0]]


def test_padding_and_masked_prompt_do_not_change_the_loss():
    model = tiny_gpt().eval()
    long, short = ([1, 2, 3, 4, 5, 6], [7, 8, 9]), ([20, 21], [22])
    with torch.no_grad():
        together, _ = instruction_loss(model, collate_instructions([long, short], 256, 32, mask_prompt=True))
        per_token = []
        for prompt, response in (long, short):
            seq = torch.tensor([prompt + response + [256]])
            logits = model(seq[:, :-1])[0]
            losses = F.cross_entropy(logits, seq[0, 1:], reduction="none")
            per_token.append(losses[len(prompt) - 1:])
    torch.testing.assert_close(together, torch.cat(per_token).mean(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert response_loss(model, [long, short], 256, 32) == pytest.approx(together.item(), rel=1e-5)


def test_lcs_matches_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        common = {s for n in range(len(a) + 1) for s in itertools.combinations(a, n)}
        brute = max(n for n in range(len(b) + 1) for s in itertools.combinations(b, n) if s in common)
        assert lcs_length(a, b) == brute == lcs_length(b, a)


def test_rouge_l_hand_computed():
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("the cat", "the cat is on the mat") == pytest.approx(0.5)  # P = 1, R = 1/3
    assert rouge_l("mat the on", "the cat is on the mat") == pytest.approx(2 * (2 / 3) * (2 / 6) / (2 / 3 + 2 / 6))
    assert rouge_l("", "anything") == 0.0 and rouge_l("Yes!", "yes") == 1.0
    assert rouge_l("a b", "a b c d", beta=2.0) == pytest.approx(5 * 1 * 0.5 / (0.5 + 4 * 1))


def test_load_instruction_file_names_file_entry_and_key(tmp_path):
    good = [{"instruction": "Hi", "input": "", "output": "Hello"}]
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert load_instruction_file(tmp_path / "good.json") == good
    (tmp_path / "pairs.json").write_text(json.dumps(good + [{"instruction": "x", "input": "", "chosen": "y"}]))
    with pytest.raises(DataError, match=r"pairs\.json: entry 1 has no key 'output'"):
        load_instruction_file(tmp_path / "pairs.json")
    (tmp_path / "number.json").write_text(json.dumps([{"instruction": "x", "input": 3, "output": "y"}]))
    with pytest.raises(DataError, match="entry 0, key 'input': expected a string"):
        load_instruction_file(tmp_path / "number.json")
    (tmp_path / "object.json").write_text(json.dumps({"instruction": "x"}))
    with pytest.raises(DataError, match="expected a non-empty JSON list"):
        load_instruction_file(tmp_path / "object.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        load_instruction_file(tmp_path / "broken.json")


def test_split_is_a_seeded_partition():
    parts = split(list(range(100)), (0.85, 0.05, 0.10), seed=3)
    assert [len(p) for p in parts] == [85, 5, 10]
    assert sorted(sum(parts, [])) == list(range(100))
    assert parts == split(list(range(100)), (0.85, 0.05, 0.10), seed=3)
    assert parts != split(list(range(100)), (0.85, 0.05, 0.10), seed=4)


def test_respond_stops_at_end_of_text(monkeypatch):
    tokenizer = BPETokenizer([])
    answer = list(b"ok") + [256] + list(b"junk")

    def fake_generate(model, idx, max_new_tokens, **kwargs):
        assert kwargs.get("eos_id") == 256 and max_new_tokens == 5
        return torch.cat([idx, torch.tensor([answer[:max_new_tokens]])], dim=1)

    monkeypatch.setattr(llm.instruct, "generate", fake_generate)
    entry = {"instruction": "Say ok.", "input": ""}
    prompt_length = len(format_prompt(entry).encode())
    model = tiny_gpt(context_length=prompt_length + 5)
    assert respond(model, tokenizer, entry, max_new_tokens=50) == "ok"


def test_finetuning_learns_a_fixed_answer(tmp_path):
    tokenizer = BPETokenizer([])
    entries = [{"instruction": f"Say yes {i}", "input": "", "output": "yes"} for i in range(12)]
    splits = {"train": entries[:8], "validation": entries[8:10], "test": entries[10:]}
    config = from_mapping(InstructConfig, {"max_length": 48, "train": {"epochs": 10, "batch_size": 4, "lr": 3e-2,
                                                                             "warmup_steps": 2}})
    gpt = tiny_gpt()
    before = [p.clone() for p in gpt.parameters()]
    results = finetune_instructions(gpt, tokenizer, splits, config, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, gpt.parameters()))  # it trained a copy
    losses = [r["val_loss"] for r in results["history"]]
    assert losses[-1] < losses[0] / 2 and (tmp_path / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="max_length"):
        finetune_instructions(tiny_gpt(), tokenizer, splits, from_mapping(InstructConfig, {"max_length": 99}),
                              tmp_path)
    encoded = encode_instructions(entries[:1], tokenizer)
    assert encoded[0][1] == list(b"yes")


def test_cli_names_the_missing_key(tmp_path):
    (tmp_path / "pairs.json").write_text(json.dumps([{"instruction": "Hi", "input": "", "chosen": "a",
                                                      "rejected": "b"}]))
    parser = argparse.ArgumentParser(prog="llm")
    add_cli_command(parser.add_subparsers())
    args = parser.parse_args(["finetune-instruct", "--pretrained", "m", "--out-dir", "o",
                              "--data", str(tmp_path / "pairs.json")])
    with pytest.raises(DataError, match=r"pairs\.json: entry 0 has no key 'output'"):
        args.handler(args)
    (tmp_path / "run.yaml").write_text("pretrained: m\ndata: pairs.json\nout_dir: o\nmask_prompts: true\n")
    args = parser.parse_args(["finetune-instruct", "--config", str(tmp_path / "run.yaml")])
    with pytest.raises(ConfigError, match=r"run\.yaml: mask_prompts: unknown option"):
        args.handler(args)
