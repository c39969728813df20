"""llm.tasks: held-out values and phrasings, right answers, seeded draws, batched greedy answers, the commands."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm.bpe import BPETokenizer
from llm.cli import main
from llm.errors import ConfigError
from llm.instruct import encode_instructions, load_instruction_file, respond
from llm.modelio import save_model
from llm.preference import PREFERENCE_KEYS, encode_pairs
from llm.tasks import (
    TASKS,
    WORDS,
    accuracy_by_task,
    draws,
    exact_match,
    greedy_answers,
    held_out,
    make_examples,
    make_pairs,
    score_table,
    task_names,
)

from conftest import ROOT, tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_and_test_values_and_phrasings_never_meet():
    for name, task in TASKS.items():
        train = {repr(task.key(f)) for _, f, _ in draws([name], 3000, "train", seed=0)}
        test = {repr(task.key(f)) for _, f, _ in draws([name], 3000, "test", seed=0)}
        assert train and test and not train & test, name
        assert all(not held_out(task.key(f)) for _, f, _ in draws([name], 200, "train", seed=1))
        assert not set(task.phrasings) & set(task.new_phrasings)
        assert {t for _, _, t in draws([name], 200, "test", "new", seed=0)} <= set(task.new_phrasings)
        assert {t for _, _, t in draws([name], 200, "train", "seen", seed=0)} <= set(task.phrasings)
    # "3 plus 5" and "5 plus 3" are one value: never one in training and the other in the test
    sums = {(int(a), int(b)) for e in make_examples(["add"], 2000, "test")
            for a, b in [re.findall(r"\d", e["instruction"])]}
    training = {(int(a), int(b)) for e in make_examples(["add"], 2000, "train")
                for a, b in [re.findall(r"\d", e["instruction"])]}
    assert not {(b, a) for a, b in sums} & training


def test_the_partition_is_a_fixed_fifth():
    assert held_out((1, 3)) == held_out((1, 3)) and held_out("kite") != held_out("kitten")
    assert 0.1 < sum(held_out(w) for w in WORDS) / len(WORDS) < 0.3


def factor(request: str) -> int:
    """How many of the smaller unit named in `request` make one of the larger."""
    units = re.findall(r"\b(?:kilo|centi|milli)?(?:meters|grams|liters)\b", request)
    sizes = {"kilometers": 1000_000, "meters": 1000, "centimeters": 10, "millimeters": 1, "kilograms": 1000,
             "grams": 1, "liters": 1000, "milliliters": 1}
    return max(sizes[u] for u in units) // min(sizes[u] for u in units)


def test_answers_are_right_and_wrong_answers_are_not():
    for entry in make_examples(count=200, split="test"):
        numbers = [int(n) for n in re.findall(r"\d+", entry["instruction"])]
        lines = entry["input"].split("\n")
        expected = {"larger": lambda: str(max(numbers)), "add": lambda: str(sum(numbers)),
                    "count_words": lambda: str(len(lines)), "reverse": lambda: "\n".join(lines[::-1]),
                    "spell": lambda: "-".join(re.search(r"'(\w+)'", entry["instruction"]).group(1)),
                    "convert": lambda: str(numbers[0] * factor(entry["instruction"]))}[entry["task"]]()
        assert entry["output"] == expected, entry
    assert [e["output"] for e in make_examples(["convert"], 300) if "7 kilometers" in e["instruction"]][0] == "7000"
    for pair in make_pairs(count=200, split="test", phrasings="new"):
        assert exact_match(pair["chosen"], pair["chosen"]) and not exact_match(pair["rejected"], pair["chosen"])


def test_exact_match_forgives_only_surrounding_space():
    assert exact_match(" 8\n", "8") and exact_match("a\nb", "a\nb")
    assert not exact_match("8.", "8") and not exact_match("08", "8") and not exact_match("Kite", "kite")


def test_draws_are_determined_by_the_seed_and_independent_per_task():
    assert make_examples(count=30, seed=5) == make_examples(count=30, seed=5)
    assert make_examples(count=30, seed=5) != make_examples(count=30, seed=6)
    alone = make_examples(["spell"], 20, seed=2)
    assert [e for e in make_examples(["add", "spell"], 20, seed=2) if e["task"] == "spell"] == alone
    pairs = make_pairs(["larger"], 20, "test", "new", seed=2)
    examples = make_examples(["larger"], 20, "test", "new", seed=2)
    assert [(p["instruction"], p["chosen"]) for p in pairs] == [(e["instruction"], e["output"]) for e in examples]


def test_task_names_refuse_an_unknown_task():
    assert task_names(None) == list(TASKS) and task_names("add, spell") == ["add", "spell"]
    with pytest.raises(ConfigError, match=r"unknown task 'divide' \(the tasks are convert, "):
        task_names(["add", "divide"])


def test_greedy_answers_are_those_of_respond():
    model, tokenizer = tiny_gpt(context_length=128), BPETokenizer([])
    entries = make_examples(count=3, split="test", seed=1)
    assert greedy_answers(model, tokenizer, entries, max_new_tokens=6, batch_size=2) == [
        respond(model, tokenizer, e, max_new_tokens=6) for e in entries]
    long = {"instruction": "x" * 200, "input": "", "output": "y"}  # no room left to answer
    assert greedy_answers(model, tokenizer, [long]) == [""]


def test_accuracy_by_task_and_its_table():
    entries = make_examples(["convert", "larger"], 2, seed=0)
    answers = [entries[0]["output"], "wrong", entries[2]["output"] + " ", entries[3]["output"]]
    scores = accuracy_by_task(entries, answers)
    assert scores == {"convert": 0.5, "larger": 1.0}
    table = score_table({"before": {"convert": 0.0, "larger": 0.5}, "after": scores}).splitlines()
    assert table[0].split() == ["task", "before", "after"]
    assert table[1].split() == ["convert", "0%", "50%"] and table[-1].split() == ["mean", "25%", "75%"]


def run_llm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "llm", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(needle in result.stderr for needle in needles), result.stderr


@pytest.fixture
def tiny_run(tmp_path) -> Path:
    """A saved model with its byte-level tokenizer, as a run directory."""
    save_model(tiny_gpt(context_length=128), tmp_path / "tiny" / "model.safetensors", BPETokenizer([]))
    return tmp_path / "tiny"


def test_make_tasks_and_score_tasks_from_the_command_line(tmp_path, tiny_run):
    (tmp_path / "extra.json").write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi."}]))
    result = run_llm("make-tasks", "--tasks", "convert,reverse", "--count", "3", "--mix", "extra.json",
                     "--out", "out/tasks.json", cwd=tmp_path)
    assert result.returncode == 0 and "7 entries written to out/tasks.json" in result.stderr, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tasks.json"]  # renamed into place, no leftovers
    entries = load_instruction_file(tmp_path / "out" / "tasks.json")
    assert sorted(e.get("task", "") for e in entries) == ["", "convert", "convert", "convert"] + ["reverse"] * 3
    assert len(encode_instructions(entries, BPETokenizer([]))) == 7  # what finetune-instruct reads
    result = run_llm("make-tasks", "--pairs", "--tasks", "larger", "--count", "2", "--split", "test",
                     "--phrasings", "new", cwd=tmp_path)
    pairs = json.loads(result.stdout)
    assert result.returncode == 0 and pairs == make_pairs(["larger"], 2, "test", "new", seed=0)
    assert len(encode_pairs(load_pairs(tmp_path, pairs), BPETokenizer([]))) == 2  # what dpo reads

    result = run_llm("score-tasks", "--model", str(tiny_run), "--count", "2", "--max-new-tokens", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["task", "held-out", "values", "new", "phrasings"]
    assert [row[0] for row in rows[1:]] == [*TASKS, "mean"] and all(row[1].endswith("%") for row in rows[1:])
    result = run_llm("score-tasks", "--model", str(tiny_run / "model.safetensors"), "--data", "out/tasks.json",
                     "--max-new-tokens", "2", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.split()[:2] == ["task", "exact"], result.stderr


def load_pairs(tmp_path: Path, pairs: list[dict]) -> list[dict]:
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    return load_instruction_file(tmp_path / "pairs.json", keys=PREFERENCE_KEYS)


def test_bad_input_stops_with_one_line_naming_it(tmp_path):
    one_line_error(run_llm("make-tasks", "--tasks", "add,divide", cwd=tmp_path), "make-tasks", "'divide'")
    one_line_error(run_llm("make-tasks", "--count", "ten", cwd=tmp_path), "--count", "'ten'")
    one_line_error(run_llm("score-tasks", "--model", "nowhere", "--count", "0", cwd=tmp_path), "--count", "'0'")
    one_line_error(run_llm("score-tasks", "--model", "nowhere", cwd=tmp_path), "nowhere", "not found")
    (tmp_path / "pairs.json").write_text(json.dumps([{"instruction": "x", "input": "", "chosen": "a"}]))
    one_line_error(run_llm("make-tasks", "--pairs", "--mix", "pairs.json", cwd=tmp_path), "pairs.json",
                   "no key 'rejected'")


@pytest.mark.parametrize("command, config, data", [
    ("finetune-instruct", "finetune-instruct-tasks.yaml", lambda: make_examples(count=4)),
    ("dpo", "finetune-dpo-tasks.yaml", lambda: make_pairs(["convert", "larger"], count=12)),
])
def test_the_book_configs_train(tmp_path, tiny_run, command, config, data, capsys):
    """The configs' options are valid: each trains a tiny model for one epoch, its paths replaced by flags."""
    (tmp_path / "data.json").write_text(json.dumps(data()))
    model_flag = "--pretrained" if command == "finetune-instruct" else "--model"
    status = main([command, "--config", str(ROOT / "configs" / config), model_flag,
                   str(tiny_run / "model.safetensors"), "--data", str(tmp_path / "data.json"),
                   "--out-dir", str(tmp_path / "out"), "--epochs", "1", "--device", "cpu"])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "results.json").is_file()
