"""The `llm` command line: training from a config, generating, --help, and one-line errors for user mistakes."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm.cli import build_parser, main

SHAKESPEARE = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare" / "input.txt"
CONFIG = """\
data:
  root: data
  files: plays/*.txt
  validation: [plays/c.txt]
  vocab_size: 300
model: {context_length: 32, n_layer: 1, n_head: 2, n_kv_head: 2, d_model: 32, dropout: 0.0, bias: false,
        tie_weights: true}
train: {max_steps: 12, batch_size: 8, lr: 0.003, warmup_steps: 2, eval_interval: 6, eval_batches: 2,
        log_interval: 2, checkpoint_interval: 6, out_dir: run, progress: false}
samples: {prompts: ["ROMEO:"], max_new_tokens: 8}
"""


def write_project(directory: Path, config: str = CONFIG) -> Path:
    """A data root with three small documents and its manifest, plus a config file; returns the config path."""
    text = SHAKESPEARE.read_text()
    (directory / "data" / "plays").mkdir(parents=True)
    manifest = []
    for name, part in {"a": text[:40_000], "b": text[40_000:80_000], "c": text[80_000:95_000]}.items():
        (directory / "data" / "plays" / f"{name}.txt").write_text(part)
        manifest.append(f"{hashlib.sha256(part.encode()).hexdigest()}  plays/{name}.txt")
    (directory / "data" / "SHA256SUMS").write_text("\n".join(manifest) + "\n")
    (directory / "run.yaml").write_text(config)
    return directory / "run.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One small run shared by the tests that need a trained model."""
    config = write_project(tmp_path_factory.mktemp("project"))
    assert main(["train", "--config", str(config)]) == 0
    return config.parent / "run"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "llm", *args], capture_output=True, text=True, timeout=120, env=env)


def test_train_writes_a_complete_run(trained):
    assert sorted(p.name for p in trained.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "model.safetensors",
                                                         "tokenizer.bpe"]
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 6, 12]
    assert all(len(r["samples"]) == 1 for r in evals)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_generate_is_deterministic_per_seed(trained, capsys):
    def generate(*extra):
        assert main(["generate", "--checkpoint", str(trained / "model.safetensors"), "--prompt", "ROMEO:",
                     "--max-new-tokens", "12", *extra]) == 0
        return capsys.readouterr().out

    first, again, other = generate("--seed", "1"), generate("--seed", "1"), generate("--seed", "2")
    assert first.startswith("ROMEO:") and first == again != other
    greedy = generate("--temperature", "0")
    assert greedy == generate("--temperature", "0", "--seed", "5")
    assert generate("--top-k", "1") == greedy
    assert generate("--num-samples", "3", "--top-p", "0.9").count("ROMEO:") == 3


def test_generate_from_training_checkpoint_matches_final_weights(trained, capsys):
    outputs = []
    for name in ("model.safetensors", "checkpoint.pt"):
        assert main(["generate", "--checkpoint", str(trained / name), "--prompt", "", "--seed", "3"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


def test_resume_continues_where_the_run_stopped(tmp_path):
    config = write_project(tmp_path)
    assert main(["train", "--config", str(config), "--max-steps", "6"]) == 0
    assert main(["train", "--config", str(config), "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 12
    assert len([s for s in steps if s == 6]) == 2  # one training and one evaluation record, none repeated


def test_help_explains_every_option():
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    for name, sub in subparsers.items():
        result = run_cli(name, "--help")
        assert result.returncode == 0
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and action.option_strings[-1] in result.stdout
    top = run_cli("--help")
    assert top.returncode == 0 and "train" in top.stdout and "generate" in top.stdout


def one_line_error(result: subprocess.CompletedProcess | tuple[int, str], *needles: str) -> None:
    code, stderr = (result.returncode, result.stderr) if isinstance(result, subprocess.CompletedProcess) else result
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr


def test_errors_from_a_subprocess_are_one_line(tmp_path):
    one_line_error(run_cli("train", "--config", str(tmp_path / "nowhere.yaml")), "nowhere.yaml", "not found")
    one_line_error(run_cli("generate", "--checkpoint", str(tmp_path / "none.pt"), "--prompt", "x"), "none.pt")


@pytest.mark.parametrize("change, needles", [
    (("lr: 0.003", "lr: -1"), ["run.yaml: train.lr: must be > 0, got -1.0"]),
    (("lr: 0.003", "lr: fast"), ["run.yaml: train.lr: expected a number, got 'fast'"]),
    (("max_steps: 12", "max_stepz: 12"), ["run.yaml: train.max_stepz: unknown option"]),
    (("max_steps: 12", "max_steps: true"), ["run.yaml: train.max_steps: expected an integer, got True"]),
    (("d_model: 32", "d_model: 32, width: 3"), ["run.yaml: model.width: unknown option"]),
    (("d_model: 32", "d_model: 33"), ["run.yaml: model.d_model: must be a multiple of n_head=2, got 33"]),
    (("d_model: 32", "d_model: 32, architecture: llama9"), ["run.yaml: model.architecture: 'llama9' is not registered"]),
    (("validation: [plays/c.txt]", "validation: [plays/z.txt]"), ["plays/z.txt", "match no document"]),
    (("files: plays/*.txt", "files: poems/*.txt"), ["poems/*.txt"]),
    (("vocab_size: 300", "vocab_size: 300\n  extra: 1"), ["data", "extra"]),
    (("model: {", "model: [{"), ["YAML"]),
    (("samples:", "optimizer: {name: lion}\nsamples:"), ["run.yaml: optimizer.name: 'lion' is not registered"]),
    (("samples:", "optimizer: {name: muon, muon_rate: 0.1}\nsamples:"),
     ["run.yaml: optimizer.muon_rate: not an option of 'muon'", "muon_lr"]),
])
def test_bad_config_values_are_named(tmp_path, capsys, change, needles):
    config = write_project(tmp_path, CONFIG.replace(*change))
    code = main(["train", "--config", str(config)])
    one_line_error((code, capsys.readouterr().err), *needles)


def test_train_runs_the_modern_recipe_with_muon(tmp_path):
    """configs/modern.yaml's two novelties through `llm train`: a registered architecture and Muon, by name."""
    modern = CONFIG.replace(CONFIG[CONFIG.index("model:"):CONFIG.index("train:")],
                            "model: {architecture: modern, context_length: 32, n_layer: 1, n_head: 2, n_kv_head: 1,"
                            " d_model: 32}\noptimizer: {name: muon, muon_lr: 0.01}\n")
    config = write_project(tmp_path, modern)
    assert main(["train", "--config", str(config)]) == 0
    state = torch.load(config.parent / "run" / "checkpoint.pt", weights_only=False)
    assert state["architecture"] == "modern"
    groups = state["optimizer"]["param_groups"]
    assert [g["use_muon"] for g in groups][-1] is True and any(not g["use_muon"] for g in groups)
    assert groups[-1]["lr"] < 0.01  # Muon's own rate, scaled down by the cosine schedule at the last step


def test_cache_keys_hash_the_package_copy_of_what_a_notebook_registers_again():
    """Chapter 5's notebook registers its own ModernGPT and Muon, defined by the cells llm/ is tangled from; the
    pretraining cache key must hash the package's copies, or every chapter would train the book's model again."""
    import types

    from llm.modern import ModernGPT
    from llm.muon import muon_with_adamw
    from llm.pretrain import package_twin

    notebook_class = type("ModernGPT", (), {"__module__": "__main__"})
    notebook_function = types.FunctionType(muon_with_adamw.__code__, {}, "muon_with_adamw")
    notebook_function.__module__ = "__main__"
    assert package_twin(notebook_class) is ModernGPT and package_twin(ModernGPT) is ModernGPT
    assert package_twin(notebook_function) is muon_with_adamw
    with pytest.raises(TypeError, match="outside the llm package"):
        package_twin(type("Stranger", (), {"__module__": "__main__"}))


def test_incompatible_or_foreign_checkpoints_are_refused(trained, tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(3)}, foreign)
    one_line_error((main(["generate", "--checkpoint", str(foreign), "--prompt", "x"]), capsys.readouterr().err),
                   "not a checkpoint")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    one_line_error((main(["generate", "--checkpoint", str(tmp_path / "garbage.safetensors"), "--prompt", "x"]),
                    capsys.readouterr().err), "garbage.safetensors")

    # resuming a run with a different model shape names the differing fields
    config = write_project(tmp_path / "other")
    run = config.parent / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "tokenizer.bpe"):
        (run / name).write_bytes((trained / name).read_bytes())
    config.write_text(CONFIG.replace("d_model: 32", "d_model: 48"))
    one_line_error((main(["train", "--config", str(config), "--resume"]), capsys.readouterr().err),
                   "different model", "d_model")


def test_invalid_sampling_options_are_refused(trained, capsys):
    checkpoint = str(trained / "model.safetensors")
    one_line_error((main(["generate", "--checkpoint", checkpoint, "--prompt", "x", "--top-p", "1.5"]),
                    capsys.readouterr().err), "top_p")
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects a non-positive count itself
        main(["generate", "--checkpoint", checkpoint, "--prompt", "x", "--max-new-tokens", "0"])
    assert exit_info.value.code == 2 and "--max-new-tokens" in capsys.readouterr().err


def test_later_chapters_register_their_subcommands():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "generate", "finetune-classifier", "classify", "finetune-instruct", "dpo"} <= set(commands)


def test_finetune_classifier_and_classify_from_the_command_line(trained, tmp_path):
    lines = [f"ham\tsee you at {hour} tonight" for hour in range(20)]
    lines += [f"spam\tWIN {hour}00 cash now, text CLAIM" for hour in range(20)]
    (tmp_path / "sms.tsv").write_text("\n".join(lines) + "\n")
    pretrained, out = str(trained / "model.safetensors"), str(tmp_path / "classifier")
    result = run_cli("finetune-classifier", "--pretrained", pretrained, "--data", str(tmp_path / "sms.tsv"),
                     "--out-dir", out, "--epochs", "2", "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "classifier" / "results.json").read_text())["labels"] == ["ham", "spam"]
    result = run_cli("classify", "--classifier", out, "see you at 9 tonight", "WIN cash now")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2 and all(
        line.split()[0] in ("ham", "spam") for line in result.stdout.splitlines())
    (tmp_path / "odd.tsv").write_text("ham\thello\nphishing\tverify your bank\n")
    one_line_error(run_cli("classify", "--classifier", out, "--data", str(tmp_path / "odd.tsv")),
                   "odd.tsv", "phishing")
