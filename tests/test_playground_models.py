"""The playground's engine against PyTorch on tiny models of every shape it runs, and the export that feeds it.

Each model is random (every weight drawn, so that no zero-initialised projection hides a mistake), saved by
llm.modelio with a bytes-only tokenizer, written by llm.webexport into a page served to headless Chromium as in
tests/test_playground.py, and run there: its logits, its attention weights and its greedy tokens, generated with the
KV cache past the end of the context, must be those of the Python model.
"""

import json
import os

import pytest
import torch

from conftest import ROOT
from llm.bpe import BPETokenizer, load_gpt2
from llm.errors import ConfigError
from llm.generate import generate
from llm.model import GPT, GPTConfig
from llm.modelio import save_model
from llm.modern import ModernConfig, ModernGPT
from llm.webexport import WebModel, finetune_base, playground_files, prompt_templates, write_playground
from test_playground import attention_by_hand, browser, generated, opened, served_site, shown_attention  # noqa: F401

SMALL = {"vocab_size": 257, "context_length": 24, "n_layer": 2, "d_model": 32}
CONFIGS = {
    "gqa-swiglu": ModernConfig(**SMALL, n_head=4, n_kv_head=2),  # the defaults: QK-norm, RoPE, untied head
    "mqa-relu2-tied": ModernConfig(**SMALL, n_head=4, n_kv_head=1, ffn="relu2", qk_norm=False, tie_embeddings=True),
    "gelu-layernorm-learned": ModernConfig(**SMALL, n_head=2, head_dim=12, ffn="gelu", norm="layernorm",
                                           position="learned", norm_eps=1e-5),
    "window-llama3": ModernConfig(**SMALL, n_head=4, n_kv_head=2, sliding_window=5, rope_scaling="llama3",
                                  rope_factor=4.0, rope_original_context=8),
    "ntk": ModernConfig(**SMALL, n_head=2, rope_scaling="ntk", rope_factor=2.0, rope_theta=500.0),
    "linear": ModernConfig(**SMALL, n_head=2, rope_scaling="linear", rope_factor=2.0),
    "gpt": GPTConfig(**SMALL, n_head=4, n_kv_head=2, bias=True, tie_weights=False),
}
MOE = ModernConfig(**SMALL, n_head=2, n_expert=4)
PROMPT = list(range(60, 75))  # 15 tokens: 20 new ones go past the context of 24


def random_model(config, seed: int = 0):
    """A model of `config` with every weight drawn from N(0, 0.3²), norm gains included."""
    torch.manual_seed(seed)
    model = (GPT if isinstance(config, GPTConfig) else ModernGPT)(config)
    with torch.no_grad():
        for weight in model.parameters():
            weight.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Every tiny model by name, saved with its tokenizer, and the MoE model the page must refuse."""
    folder = tmp_path_factory.mktemp("tiny-models")
    built = {name: random_model(config) for name, config in {**CONFIGS, "moe": MOE}.items()}
    for name, model in built.items():
        save_model(model, folder / name / "model.safetensors", BPETokenizer([]))
    return {name: (model, folder / name / "model.safetensors") for name, model in built.items()}


@pytest.fixture(scope="module")
def url(models):
    """The page with every tiny model in its menus (the MoE one last) and the first one as the instruct model."""
    pretrained = {name: WebModel(file, f"{name}.yaml", {"prompts": ["Hello"]}) for name, (_, file) in models.items()}
    instruct = WebModel(models["gqa-swiglu"][1], "instruct.yaml", {"base": "gqa-swiglu", **prompt_templates("")})
    files = playground_files(pretrained, instruct, load_gpt2(ROOT / "data"))
    with served_site(lambda out: write_playground(out, files)) as address:
        yield address


@pytest.fixture
def page(browser, url):  # noqa: F811 (the browser fixture, imported)
    with opened(browser, url) as tab:
        yield tab


def run_in_page(tab, name: str, script: str, *args):
    """The value of `script`, an async function of the model the manifest names `name`, the engine and `args`."""
    return tab.evaluate(f"""async ([name, args]) => {{
        const model = await bookPlayground.model(name), E = bookPlayground.engine;
        return ({script})(model, E, ...args);
    }}""", [name, list(args)])


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_pytorch(page, models, name):
    model, _ = models[name]
    with torch.no_grad():
        expected = model(torch.tensor([PROMPT]))[0, -1]
    logits = run_in_page(page, name, "(model, E, ids) => Array.from(model.next(ids, model.newCache()))", PROMPT)
    torch.testing.assert_close(torch.tensor(logits), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_generation_gives_the_greedy_tokens_of_generate(page, models, name):
    model, _ = models[name]
    expected = generate(model, torch.tensor([PROMPT]), 20)[0, len(PROMPT):].tolist()
    tokens = run_in_page(page, name, """(model, E, ids) =>
        [...E.generate(model, ids, { maxNewTokens: 20, temperature: 0 })].map((step) => step.token)""", PROMPT)
    assert tokens == expected


@pytest.mark.parametrize("name", ["gqa-swiglu", "gelu-layernorm-learned", "window-llama3", "gpt"])
def test_attention_weights_match_pytorch(page, models, name):
    model, _ = models[name]
    text = page.locator("[data-pg=attention] input[type=text]").input_value()
    ids = list(text.encode())[:model.config.context_length]  # the tokenizer has no merges: one token per byte
    shown = shown_attention(page, name, layer=2, head=2)
    expected = attention_by_hand(model, ids, layer=1, head=1)
    torch.testing.assert_close(shown, expected, atol=1e-5, rtol=1e-4)
    if name == "window-llama3":
        assert (shown.tril(-5) == 0).all() and (shown.diagonal(-4) > 0).all(), "the window hides keys 5 back"


def test_the_generation_menu_switches_models(page, models):
    """The widget runs the chosen model, whose tokens differ from the first model's."""
    first, _ = models["gqa-swiglu"]
    chosen, _ = models["mqa-relu2-tied"]
    ids = list(b"Hello")
    expected = generate(chosen, torch.tensor([ids]), 30)[0, len(ids):].tolist()
    assert expected != generate(first, torch.tensor([ids]), 30)[0, len(ids):].tolist()
    assert generated(page, "Hello", tokens=30, model="mqa-relu2-tied") == expected


def test_a_mixture_of_experts_is_refused_in_the_page(page, models):
    part = "[data-pg=generate]"
    page.locator(f"{part} select").select_option("moe")
    page.locator(f"{part} button", has_text="Generate").click()
    page.wait_for_selector(f"{part} .pg-stats.pg-error")
    assert "mixture of experts (4 per block)" in page.locator(f"{part} .pg-stats").first.text_content()
    page.locator("[data-pg=attention] select >> nth=0").select_option("moe")
    page.wait_for_selector("[data-pg=attention][data-state=failed]")
    assert "mixture of experts" in page.locator("[data-pg=attention] .pg-error").text_content()
    # The widgets keep their controls: another model still runs.
    model, _ = models["gpt"]
    expected = generate(model, torch.tensor([list(b"Hi")]), 5)[0, 2:].tolist()
    assert generated(page, "Hi", tokens=5, model="gpt") == expected
    assert not page.locator(f"{part} .pg-stats.pg-error").count()


def test_the_manifest_describes_each_model_and_shares_equal_tokenizers(models, tmp_path):
    files = {"a": models["gpt"][1], "b": models["gqa-swiglu"][1]}
    other = tmp_path / "other" / "model.safetensors"
    save_model(models["ntk"][0], other, BPETokenizer([(104, 105)]))  # one merge: a tokenizer of its own
    pretrained = {name: WebModel(file, f"{name}.yaml", {"prompts": [name]}) for name, file in files.items()}
    pretrained["c"] = WebModel(other, "c.yaml", {"prompts": []})
    written = playground_files(pretrained, WebModel(files["b"], "i.yaml", {"base": "b"}), BPETokenizer([]))
    manifest = json.loads(written["manifest.json"])
    assert manifest["pretrained"] == ["a", "b", "c"]
    assert manifest["tokenizers"] == {"book": "book-tokenizer.json", "book-c": "book-c-tokenizer.json",
                                      "gpt2": "gpt2-tokenizer.json"}
    assert {name: model["tokenizer"] for name, model in manifest["models"].items()} == {
        "a": "book", "b": "book", "c": "book-c", "instruct": "book"}
    a, b = manifest["models"]["a"], manifest["models"]["b"]
    assert (a["architecture"], b["architecture"]) == ("gpt", "modern")
    assert a["parameters"] == sum(p.numel() for p in models["gpt"][0].parameters())
    assert (a["config"], a["prompts"], manifest["models"]["instruct"]["base"]) == ("a.yaml", ["a"], "b")
    assert written["instruct.safetensors"] == files["b"].read_bytes()
    assert sorted(written) == sorted(["manifest.json", "a.safetensors", "b.safetensors", "c.safetensors",
                                      "instruct.safetensors", "book-tokenizer.json", "book-c-tokenizer.json",
                                      "gpt2-tokenizer.json"])
    with pytest.raises(ConfigError, match="cannot be named 'instruct'"):
        playground_files({"instruct": pretrained["a"]}, pretrained["b"], BPETokenizer([]))


def test_writing_leaves_unchanged_files_alone_and_removes_stale_ones(tmp_path):
    old = {"manifest.json": json.dumps({"models": {"pretrained": {"file": "pretrained.safetensors"}},
                                        "tokenizers": {"book": "book-tokenizer.json"}}).encode(),
           "pretrained.safetensors": b"old weights", "book-tokenizer.json": b"{}"}
    write_playground(tmp_path, old)
    (tmp_path / "notes.txt").write_text("not the export's")
    os.utime(tmp_path / "book-tokenizer.json", (0, 0))
    new = {"manifest.json": json.dumps({"models": {"gutenberg": {"file": "gutenberg.safetensors"}},
                                        "tokenizers": {"book": "book-tokenizer.json"}}).encode(),
           "gutenberg.safetensors": b"new weights", "book-tokenizer.json": b"{}"}
    write_playground(tmp_path, new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book-tokenizer.json", "gutenberg.safetensors",
                                                         "manifest.json", "notes.txt"]
    assert (tmp_path / "book-tokenizer.json").stat().st_mtime == 0, "an unchanged file is not rewritten"
    assert (tmp_path / "gutenberg.safetensors").read_bytes() == b"new weights"


def write_config(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_instruct_model_starts_from_the_run_its_config_names(tmp_path):
    run = ("data: {root: ../data, files: '*.txt', validation: [v.txt]}\nmodel: {context_length: 8, n_layer: 1, "
           "n_head: 1, d_model: 8}\ntrain: {out_dir: ../runs/%s}\n")
    configs = [write_config(tmp_path / "configs" / f"{name}.yaml", run % name) for name in ("small", "modern")]
    instruct = write_config(tmp_path / "configs" / "instruct.yaml", "pretrained: ../runs/modern/model.safetensors\n")
    assert finetune_base(instruct, configs) == configs[1]
    write_config(instruct, "pretrained: ../runs/elsewhere/model.safetensors\n")
    with pytest.raises(ConfigError, match=r"instruct.yaml: pretrained: \.\./runs/elsewhere/model.safetensors is the "
                                          r"model of none of the pretraining runs \(.*small.yaml, .*modern.yaml\)"):
        finetune_base(instruct, configs)
    write_config(instruct, "data: x.json\n")
    with pytest.raises(ConfigError, match="instruct.yaml: pretrained: missing"):
        finetune_base(instruct, configs)
