"""llm.modelio: saved models record their architecture, and a new architecture plugs in from its own module."""

import json
import sys
import textwrap

import pytest
import safetensors
import torch

import llm
import llm.modelio
from llm.bpe import BPETokenizer, save_bpe
from llm.cli import main
from llm.config import from_mapping
from llm.errors import CheckpointError, ConfigError
from llm.instruct import InstructConfig, finetune_instructions
from llm.modelio import ARCHITECTURES, architecture_of, build_model, load_model, save_model
from llm.train import TrainConfig, Trainer

from conftest import tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")

# A model family the package has never heard of, in a module of its own: a bigram table with a bias.
TOY_MODULE = textwrap.dedent('''
    from dataclasses import dataclass

    import torch
    from torch import nn

    from llm.modelio import register_architecture


    @dataclass
    class BigramConfig:
        vocab_size: int
        context_length: int = 64
        dropout: float = 0.0


    class Bigram(nn.Module):
        def __init__(self, config: BigramConfig):
            super().__init__()
            self.config = config
            self.table = nn.Embedding(config.vocab_size, config.vocab_size)
            self.bias = nn.Parameter(torch.zeros(config.vocab_size))

        def forward(self, idx, cache=None):
            return self.table(idx) + self.bias

        def new_cache(self, batch_size, max_len=None):
            return None  # nothing to cache: generation recomputes the (cheap) forward pass


    register_architecture("bigram", Bigram, BigramConfig)
''')


@pytest.fixture
def toy_architecture(tmp_path, monkeypatch):
    """The toy module placed where the package looks for extensions, unregistered until something needs it."""
    extensions = tmp_path / "extensions"
    extensions.mkdir()
    (extensions / "toy_bigram.py").write_text(TOY_MODULE)
    monkeypatch.setattr(llm, "__path__", [*llm.__path__, str(extensions)])
    yield
    ARCHITECTURES.pop("bigram", None)
    sys.modules.pop("llm.toy_bigram", None)


def test_gpt_round_trip_records_architecture_and_config(tmp_path):
    model = tiny_gpt(context_length=32).eval()
    save_model(model, tmp_path / "model.safetensors", BPETokenizer([]))
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert metadata["architecture"] == "gpt" and json.loads(metadata["model_config"])["context_length"] == 32
    loaded, tokenizer = load_model(tmp_path / "model.safetensors")
    ids = torch.randint(0, 257, (2, 16))
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
    assert tokenizer.vocab_size == 257 and not loaded.training


def test_a_new_architecture_loads_generates_and_finetunes_without_changes_elsewhere(toy_architecture, tmp_path,
                                                                                    capsys):
    assert "bigram" not in ARCHITECTURES
    with pytest.raises(ConfigError):  # `gpt` fields do not fit it, and the error names the section
        build_model("bigram", {"vocab_size": 257, "n_layer": 2})
    model = build_model("bigram", {"vocab_size": 257})  # the lookup imported the module, which registered itself
    assert architecture_of(model) == "bigram"
    save_model(model, tmp_path / "toy" / "model.safetensors", BPETokenizer([]))
    ARCHITECTURES.pop("bigram")  # as in a fresh process: loading finds and imports the module again
    sys.modules.pop("llm.toy_bigram")
    loaded, tokenizer = load_model(tmp_path / "toy" / "model.safetensors")
    assert type(loaded).__name__ == "Bigram"

    assert main(["generate", "--checkpoint", str(tmp_path / "toy" / "model.safetensors"), "--prompt", "Hi",
                 "--max-new-tokens", "5", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("Hi")

    entries = [{"instruction": f"Say yes {i}", "input": "", "output": "yes"} for i in range(8)]
    splits = {"train": entries[:4], "validation": entries[4:6], "test": entries[6:]}
    config = from_mapping(InstructConfig, {"max_length": 48, "train": {"epochs": 2, "batch_size": 2, "lr": 0.1}})
    results = finetune_instructions(loaded, tokenizer, splits, config, tmp_path / "tuned")
    assert results["history"][-1]["val_loss"] < results["history"][0]["val_loss"]
    assert type(load_model(tmp_path / "tuned" / "model.safetensors")[0]).__name__ == "Bigram"


def test_training_checkpoint_loads_like_the_weights(tmp_path):
    model = tiny_gpt(context_length=16)
    windows = [(torch.arange(i, i + 16) % 257, torch.arange(i + 1, i + 17) % 257) for i in range(40)]
    config = TrainConfig(max_steps=2, batch_size=4, warmup_steps=1, eval_batches=1, log_interval=1,
                         out_dir=str(tmp_path), progress=False, device="cpu")
    Trainer(model, windows, windows, config, model_config={**vars(model.config)},
            extra={"architecture": "gpt"}).fit()
    save_bpe(BPETokenizer([]), tmp_path / "tokenizer.bpe")  # `pretrain` writes it beside the checkpoint
    loaded, _ = load_model(tmp_path / "checkpoint.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_broken_files_get_one_error_type_naming_the_file(tmp_path):
    save_model(tiny_gpt(context_length=32), tmp_path / "model.safetensors", BPETokenizer([]))
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        metadata = f.metadata()

    def write(name, tensors, metadata):
        safetensors.torch.save_file(tensors, str(tmp_path / name), metadata=metadata)
        return tmp_path / name

    unknown = write("unknown.safetensors", tensors, {**metadata, "architecture": "llama9"})
    with pytest.raises(CheckpointError, match=r"unknown\.safetensors: architecture: 'llama9' is not registered"):
        load_model(unknown)
    bare = write("bare.safetensors", tensors, {})
    with pytest.raises(CheckpointError, match=r"bare\.safetensors: no 'architecture' in its metadata"):
        load_model(bare)
    wrong_field = write("field.safetensors", tensors, {**metadata, "model_config": json.dumps({"vocab_size": 257})})
    with pytest.raises(CheckpointError, match=r"field\.safetensors: model_config\.context_length: missing"):
        load_model(wrong_field)
    bigger = json.dumps({**json.loads(metadata["model_config"]), "d_model": 32})
    mismatched = write("shape.safetensors", tensors, {**metadata, "model_config": bigger})
    with pytest.raises(CheckpointError, match=r"shape\.safetensors: does not fit the model it describes"):
        load_model(mismatched)
    (tmp_path / "noise.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"noise\.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "noise.safetensors")
    (tmp_path / "tokenizer.bpe").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.bpe: not found"):
        load_model(tmp_path / "model.safetensors")
