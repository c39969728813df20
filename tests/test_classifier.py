"""llm.classifier and llm.finetune: data handling, last-token pooling with padding, layer freezing, training, CLI."""

import argparse
from collections import Counter

import pytest
import torch

from llm.bpe import BPETokenizer
from llm.classifier import (
    ClassifierConfig,
    Example,
    GPTClassifier,
    add_cli_command,
    balance,
    classify,
    collate_classification,
    encode_examples,
    finetune_classifier,
    load_classifier,
    parse_labelled_lines,
    predict,
    set_trainable,
)
from llm.config import from_mapping
from llm.errors import CheckpointError, ConfigError, DataError
from llm.finetune import FinetuneConfig, fit, trainable_parameters
from llm.modelio import save_model
from llm.modern import ModernConfig, ModernGPT
from llm.splits import split

from conftest import tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")


def byte_tokenizer() -> BPETokenizer:
    return BPETokenizer([])  # 256 byte tokens and <|endoftext|> (id 256)


def test_parse_keeps_text_verbatim_and_names_bad_lines():
    examples = parse_labelled_lines('ham\t"Quoted" start\nspam\tWIN\ttabs stay\n\n', "f.tsv")
    assert examples == [Example('"Quoted" start', "ham"), Example("WIN\ttabs stay", "spam")]
    with pytest.raises(DataError, match=r"f\.tsv:2: expected 'label<TAB>text'"):
        parse_labelled_lines("ham\tfine\nno tab here\n", "f.tsv")
    with pytest.raises(DataError, match="no examples"):
        parse_labelled_lines("\n\n", "empty.tsv")


def test_balance_and_stratified_split():
    examples = [Example(f"h{i}", "ham") for i in range(50)] + [Example(f"s{i}", "spam") for i in range(20)]
    balanced = balance(examples, seed=1)
    assert Counter(e.label for e in balanced) == {"ham": 20, "spam": 20}
    assert set(balanced) <= set(examples) and balance(examples, seed=1) == balanced
    parts = split(balanced, (0.7, 0.1, 0.2), seed=1, key=lambda e: e.label)
    assert [len(p) for p in parts] == [28, 4, 8]
    for part in parts:
        counts = Counter(e.label for e in part)
        assert counts["ham"] == counts["spam"]
    assert sorted(e.text for p in parts for e in p) == sorted(e.text for e in balanced)
    with pytest.raises(ConfigError, match="sum to 1"):
        split(balanced, (0.5, 0.2), seed=1, key=lambda e: e.label)


def test_collate_pads_right_and_returns_lengths():
    ids, lengths, labels = collate_classification([([5, 6, 7], 1), ([8], 0)], pad_id=99)
    assert ids.tolist() == [[5, 6, 7], [8, 99, 99]]
    assert lengths.tolist() == [3, 1] and labels.tolist() == [1, 0]


def test_encode_rejects_labels_the_head_does_not_have():
    with pytest.raises(DataError, match="phishing not among the classifier's labels ham, spam"):
        encode_examples([Example("x", "phishing")], byte_tokenizer(), ["ham", "spam"], max_length=8)
    encoded = encode_examples([Example("abcdef", "spam")], byte_tokenizer(), ["ham", "spam"], max_length=4)
    assert encoded == [([97, 98, 99, 100], 1)]


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_padding_does_not_change_predictions(pooling):
    classifier = GPTClassifier(tiny_gpt(context_length=32), ["a", "b", "c"], pooling).eval()
    rows = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    ids, lengths, _ = collate_classification([(r, 0) for r in rows], pad_id=0)
    with torch.no_grad():
        batched = classifier(ids, lengths)
        alone = torch.cat([classifier(torch.tensor([r]), torch.tensor([len(r)])) for r in rows])
        per_position = classifier.gpt(torch.tensor([rows[1]]))
    assert batched.shape == (3, 3)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    expected = per_position[0, -1] if pooling == "last" else per_position[0].mean(dim=0)
    torch.testing.assert_close(batched[1], expected, rtol=1e-5, atol=1e-5)


def test_last_token_pooling_reads_the_last_real_token_not_the_last_column():
    classifier = GPTClassifier(tiny_gpt(context_length=32), ["a", "b"]).eval()
    ids, lengths, _ = collate_classification([([1, 2, 3, 4], 0), ([5, 6], 0)], pad_id=0)
    with torch.no_grad():
        pooled = classifier(ids, lengths)
        columns = classifier.gpt(ids)
    torch.testing.assert_close(pooled[1], columns[1, 1])
    assert not torch.allclose(pooled[1], columns[1, -1])


def test_set_trainable_counts():
    classifier = GPTClassifier(tiny_gpt(context_length=32), ["a", "b"])
    gpt = classifier.gpt
    head = sum(p.numel() for m in (gpt.lm_head, gpt.ln_f) for p in m.parameters())
    block = sum(p.numel() for p in gpt.blocks[-1].parameters())
    set_trainable(classifier, "head")
    assert trainable_parameters(classifier) == head
    set_trainable(classifier, "last-1")
    assert trainable_parameters(classifier) == head + block
    set_trainable(classifier, "all")
    assert trainable_parameters(classifier) == sum(p.numel() for p in classifier.parameters())
    for bad in ["last-0", "last-3", "top", "last-x"]:
        with pytest.raises(ConfigError, match="train_layers"):
            set_trainable(classifier, bad)


def test_classifier_rejects_bad_labels_and_pooling():
    with pytest.raises(ConfigError, match="two distinct labels"):
        GPTClassifier(tiny_gpt(context_length=32), ["a", "a"])
    with pytest.raises(ConfigError, match="pooling"):
        GPTClassifier(tiny_gpt(context_length=32), ["a", "b"], pooling="max")


def test_fit_reduces_the_loss_and_records_history():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x = torch.randn(64, 4)
    data = list(zip(x, (x[:, 0] > 0).long()))

    def loss_fn(m, batch):
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(m(inputs), targets), {"ones": 1.0}

    def evaluate(m):
        return {"val_loss": torch.nn.functional.cross_entropy(m(x), (x[:, 0] > 0).long()).item()}

    collate = lambda b: (torch.stack([i for i, _ in b]), torch.stack([t for _, t in b]))  # noqa: E731
    config = FinetuneConfig(epochs=4, batch_size=16, lr=0.1, min_lr=0.01, warmup_steps=2, weight_decay=0.0)
    history = fit(model, data, collate, loss_fn, config, evaluate)
    assert [r["step"] for r in history] == [0, 4, 8, 12, 16]
    assert history[-1]["val_loss"] < history[0]["val_loss"] / 2
    assert all(r["train_ones"] == 1.0 for r in history[1:]) and "train_loss" not in history[0]
    again = fit(torch.nn.Linear(4, 2), data, collate, loss_fn, config, evaluate)
    assert len(again) == len(history)


def test_classifier_config_reads_nested_sections_and_names_mistakes():
    config = from_mapping(ClassifierConfig, {"pooling": "mean", "lora": {"rank": 4}, "train": {"lr": "1e-2"}})
    assert config.pooling == "mean" and config.lora.rank == 4 and config.train.lr == 0.01
    with pytest.raises(ConfigError, match="^train.learning_rate: unknown option"):
        from_mapping(ClassifierConfig, {"train": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="^colour: unknown option"):
        from_mapping(ClassifierConfig, {"colour": "red"})
    with pytest.raises(ConfigError, match="^train.epochs: must be at least 1, got 0"):
        from_mapping(ClassifierConfig, {"train": {"epochs": 0}})
    with pytest.raises(ConfigError, match="^train.epochs: expected an integer, got True"):
        from_mapping(ClassifierConfig, {"train": {"epochs": True}})


def toy_splits():
    examples = [Example("a" * (3 + i % 5), "vowel") for i in range(24)]
    examples += [Example("x" * (3 + i % 5), "consonant") for i in range(24)]
    train, val, test = split(examples, (0.5, 0.25, 0.25), seed=0, key=lambda e: e.label)
    return {"train": train, "validation": val, "test": test}


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_finetune_learns_a_toy_task_and_saves_what_it_evaluated(tmp_path, lora_rank):
    config = from_mapping(ClassifierConfig, {
        "max_length": 16, "lora": {"rank": lora_rank, "alpha": 8},
        "train": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2}})
    tokenizer = byte_tokenizer()
    gpt = tiny_gpt(context_length=32)
    before = {name: t.clone() for name, t in gpt.state_dict().items()}
    results = finetune_classifier(gpt, tokenizer, toy_splits(), config, tmp_path)
    assert gpt.lm_head is None and all(torch.equal(t, before[n]) for n, t in gpt.state_dict().items())  # a copy
    assert results["labels"] == ["consonant", "vowel"]
    assert results["metrics"]["test"]["accuracy"] == 1.0
    assert len(results["history"]) == 5 and results["history"][-1]["val_accuracy"] == 1.0
    classifier, loaded_tokenizer = load_classifier(tmp_path)
    assert classifier.max_length == 16
    encoded = encode_examples(toy_splits()["test"], loaded_tokenizer, classifier.labels, 16)
    assert predict(classifier, encoded, 256).argmax(-1).tolist() == results["predictions"]["test"]
    assert classify(classifier, loaded_tokenizer, "aaaa") == "vowel"
    assert classify(classifier, loaded_tokenizer, "xxxxx") == "consonant"


def test_the_modern_model_becomes_a_classifier_too(tmp_path):
    """Chapter 6 starts from chapter 5's ModernGPT: freezing finds its final norm, and LoRA, dropout and saving work."""
    torch.manual_seed(0)
    modern = ModernGPT(ModernConfig(vocab_size=257, context_length=32, n_layer=2, n_head=2, n_kv_head=1, d_model=16))
    classifier = GPTClassifier(modern, ["a", "b"])
    set_trainable(classifier, "head")
    head = [*modern.lm_head.parameters(), *modern.final_norm.parameters()]
    assert trainable_parameters(classifier) == sum(p.numel() for p in head) and all(p.requires_grad for p in head)
    config = from_mapping(ClassifierConfig, {
        "max_length": 16, "dropout": 0.1, "lora": {"rank": 4, "alpha": 8},
        "train": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2}})
    torch.manual_seed(0)
    fresh = ModernGPT(ModernConfig(vocab_size=257, context_length=32, n_layer=2, n_head=2, n_kv_head=1, d_model=16))
    results = finetune_classifier(fresh, byte_tokenizer(), toy_splits(), config, tmp_path)
    assert results["metrics"]["test"]["accuracy"] == 1.0
    loaded, tokenizer = load_classifier(tmp_path)
    assert isinstance(loaded.gpt, ModernGPT)
    assert classify(loaded, tokenizer, "aaaa") == "vowel" and classify(loaded, tokenizer, "xxxxx") == "consonant"


def cli(*argv):
    parser = argparse.ArgumentParser(prog="llm")
    add_cli_command(parser.add_subparsers())
    args = parser.parse_args(argv)
    args.handler(args)


def test_cli_errors_name_the_problem(tmp_path):
    (tmp_path / "three.tsv").write_text("ham\thello\nspam\tWIN\nphishing\tverify your bank\n")
    (tmp_path / "labels.yaml").write_text("pretrained: m.safetensors\ndata: three.tsv\nout_dir: o\n"
                                          "labels: [ham, spam]\n")
    (tmp_path / "typo.yaml").write_text("pretrained: m.safetensors\ndata: three.tsv\nout_dir: o\ntrain: {epoch: 2}\n")
    (tmp_path / "partial.yaml").write_text("data: three.tsv\nout_dir: o\n")
    (tmp_path / "seed.yaml").write_text("pretrained: m\ndata: three.tsv\nout_dir: o\nsplit_seed: abc\n")
    with pytest.raises(ConfigError, match=r"seed\.yaml: split_seed: expected an integer, got 'abc'"):
        cli("finetune-classifier", "--config", str(tmp_path / "seed.yaml"))
    with pytest.raises(DataError, match=r"three\.tsv: label\(s\) phishing do not match the classifier's labels ham, spam"):
        cli("finetune-classifier", "--config", str(tmp_path / "labels.yaml"))
    with pytest.raises(ConfigError, match=r"typo\.yaml: train\.epoch: unknown option"):
        cli("finetune-classifier", "--config", str(tmp_path / "typo.yaml"))
    with pytest.raises(ConfigError, match=r"partial\.yaml: pretrained: missing \(or give --pretrained\)"):
        cli("finetune-classifier", "--config", str(tmp_path / "partial.yaml"))
    with pytest.raises(DataError, match="nope.tsv: file not found"):
        cli("finetune-classifier", "--pretrained", "m", "--out-dir", "o", "--data", str(tmp_path / "nope.tsv"))


def test_cli_trains_and_classify_checks_labels(tmp_path, capsys):
    save_model(tiny_gpt(context_length=32), tmp_path / "model.safetensors", byte_tokenizer())
    lines = [f"vowel\t{'a' * (3 + i % 5)}" for i in range(20)] + [f"consonant\t{'x' * (3 + i % 5)}" for i in range(20)]
    (tmp_path / "toy.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "run.yaml").write_text("pretrained: model.safetensors\ndata: toy.tsv\nout_dir: out\nmax_length: 16\n"
                                       "train: {epochs: 3, batch_size: 8, lr: 0.003, warmup_steps: 2}\n")
    cli("finetune-classifier", "--config", str(tmp_path / "run.yaml"))
    assert "; written to" in capsys.readouterr().out
    cli("classify", "--classifier", str(tmp_path / "out"), "aaaa", "xxxxx")
    assert capsys.readouterr().out.split("\n")[:2] == ["vowel\taaaa", "consonant\txxxxx"]
    (tmp_path / "other.tsv").write_text("vowel\taaa\nspam\tWIN\n")
    with pytest.raises(DataError, match="spam do not match the classifier's labels consonant, vowel"):
        cli("classify", "--classifier", str(tmp_path / "out"), "--data", str(tmp_path / "other.tsv"))


def test_load_classifier_refuses_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="classifier.safetensors: not found"):
        load_classifier(tmp_path)
    (tmp_path / "classifier.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_classifier(tmp_path)


def test_prediction_reads_only_the_max_length_the_classifier_was_trained_with(tmp_path):
    from llm.classifier import label_probabilities, save_classifier

    classifier = GPTClassifier(tiny_gpt(context_length=32), ["ham", "spam"], max_length=3).eval()
    tokenizer = byte_tokenizer()
    assert label_probabilities(classifier, tokenizer, "abcdefgh") == label_probabilities(classifier, tokenizer, "abc")
    save_classifier(classifier, tokenizer, tmp_path)
    loaded, _ = load_classifier(tmp_path)
    assert loaded.max_length == 3
    loaded.max_length = 8
    assert label_probabilities(loaded, tokenizer, "abcdefgh") != label_probabilities(loaded, tokenizer, "abc")


@pytest.mark.parametrize("command, model_flag", [("finetune-classifier", "--pretrained"),
                                                 ("finetune-instruct", "--pretrained"), ("dpo", "--model")])
def test_every_finetuning_command_takes_a_device(command, model_flag, tmp_path):
    from llm.cli import build_parser
    from llm.finetune import run_options

    argv = [command, model_flag, "m.safetensors", "--data", "d", "--out-dir", "o"]
    args = build_parser().parse_args([*argv, "--device", "cpu"])
    _, values = run_options(args, model_flag[2:], {})
    assert values["train"]["device"] == "cpu"
    args = build_parser().parse_args([*argv, "--device", "tpu"])
    with pytest.raises(ConfigError, match="the command line: train.device: must be auto, cpu, cuda, cuda:N or mps"):
        args.handler(args)
