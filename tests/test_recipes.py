"""Tests for llm.recipes: the recipes build the models they name, the budget runner and its cache, the statistics."""

from pathlib import Path

import pytest
import torch
import yaml

from llm import recipes
from llm.bpe import BPETokenizer
from llm.corpus import Corpus
from llm.model import GPT, GPTConfig
from llm.modelio import load_model
from llm.modern import ModernGPT
from llm.recipes import (BOOK_MODEL, PIECES, RECIPES, loss_by_position, merge, paired_difference, recipe_model,
                         run_recipe, seed_spread, t_quantile, train_for_budget, train_recipe, with_rope_scaling)

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 2048
TINY = {"model": {"context_length": 16, "n_layer": 1, "n_head": 2, "d_model": 32}, "train": {"batch_size": 4}}


def book_count(name: str) -> int:
    return recipe_model(RECIPES[name], VOCAB).num_params()


@pytest.fixture
def corpus() -> Corpus:
    """Random token streams of the byte-level tokenizer's 257 ids: all the runner needs."""
    g = torch.Generator().manual_seed(0)
    return Corpus(BPETokenizer([]), [], [], torch.randint(0, 257, (4000,), generator=g),
                  torch.randint(0, 257, (2000,), generator=g))


def test_gpt2_recipe_is_chapter_4s_model():
    book = yaml.safe_load((ROOT / "configs" / "gutenberg.yaml").read_text())["model"]
    model = recipe_model(RECIPES["gpt2"], VOCAB)
    assert isinstance(model, GPT)
    assert model.config == GPTConfig(vocab_size=VOCAB, **book)
    assert {k: book[k] for k in BOOK_MODEL} == BOOK_MODEL


def test_gpt2_as_modern_computes_gpt2s_function():
    """The ablation's baseline is GPT-2 written in ModernGPT's code: with GPT's weights it gives GPT's logits."""
    torch.manual_seed(0)
    gpt = recipe_model(RECIPES["gpt2"], VOCAB)
    modern = recipe_model(RECIPES["gpt2 as ModernGPT"], VOCAB)
    ours = gpt.state_dict()
    state = {"tok_emb.weight": ours["wte.weight"], "pos_emb.weight": ours["wpe.weight"],
             "final_norm.weight": ours["ln_f.weight"]}
    for i in range(BOOK_MODEL["n_layer"]):
        q, k, v = ours[f"blocks.{i}.attn.qkv.weight"].chunk(3)
        state.update({f"blocks.{i}.attn_norm.weight": ours[f"blocks.{i}.ln_1.weight"],
                      f"blocks.{i}.attn.q_proj.weight": q, f"blocks.{i}.attn.k_proj.weight": k,
                      f"blocks.{i}.attn.v_proj.weight": v,
                      f"blocks.{i}.attn.o_proj.weight": ours[f"blocks.{i}.attn.proj.weight"],
                      f"blocks.{i}.ffn_norm.weight": ours[f"blocks.{i}.ln_2.weight"],
                      f"blocks.{i}.ffn.up_proj.weight": ours[f"blocks.{i}.mlp.fc.weight"],
                      f"blocks.{i}.ffn.down_proj.weight": ours[f"blocks.{i}.mlp.proj.weight"]})
    modern.load_state_dict(state)
    idx = torch.randint(0, VOCAB, (2, 128))
    torch.testing.assert_close(modern(idx), gpt(idx), atol=1e-5, rtol=1e-5)


def test_each_piece_changes_one_thing():
    base = RECIPES["gpt2 as ModernGPT"]
    for name, change in PIECES.items():
        differs = {(section, key) for section in ("model", "optimizer")
                   for key in base[section].keys() | RECIPES[name][section].keys()
                   if base[section].get(key) != RECIPES[name][section].get(key)}
        assert differs == {(section, key) for section, entries in change.items() for key in entries}, name


def test_piece_parameter_counts():
    c = BOOK_MODEL
    head_dim, base = c["d_model"] // c["n_head"], book_count("gpt2 as ModernGPT")
    assert base == book_count("gpt2")
    assert book_count("+ rmsnorm") == book_count("+ relu2") == book_count("+ muon") == base
    assert abs(book_count("+ swiglu") - base) / base < 0.001  # 8/3 of the width, rounded
    assert book_count("+ rope") == base - c["context_length"] * c["d_model"]
    assert book_count("+ untied head") == base + VOCAB * c["d_model"]
    assert book_count("+ gqa") == base - c["n_layer"] * 2 * (c["n_head"] - 2) * head_dim * c["d_model"]
    assert book_count("+ qk-norm, zero-init") == base + c["n_layer"] * 2 * head_dim


def test_moe_has_the_active_parameters_of_its_dense_twin():
    moe, dense = recipe_model(RECIPES["modern, moe"], VOCAB), recipe_model(RECIPES["modern, dense twin"], VOCAB)
    config = moe.config
    router = config.n_layer * config.n_expert * config.d_model
    assert moe.num_params(active=True) == dense.num_params() + router
    assert moe.num_params() > 2 * dense.num_params(non_embedding=True)
    assert isinstance(moe, ModernGPT) and config.n_expert == 8 and config.n_expert_active == 2


def test_budget_sets_the_step_count(corpus, monkeypatch, one_thread):
    monkeypatch.setattr(recipes, "measure_step_seconds", lambda *args, **kwargs: 0.05)
    _, record = train_for_budget(merge(RECIPES["gpt2"], TINY), corpus, seed=0, budget_s=0.5, device="cpu")
    assert record["steps"] == 10 and record["measured_step_s"] == 0.05 and record["budget_s"] == 0.5
    assert [e["step"] for e in record["evals"]] == [2, 3, 5, 7, 8, 10]
    assert all(e["seconds"] > 0 for e in record["evals"]) and record["seconds"] == record["evals"][-1]["seconds"]
    assert record["val_windows"] == len(corpus.datasets(16)[1]) < 256  # every window, when there are fewer


def test_step_seconds_are_measured(corpus, one_thread):
    seconds = recipes.measure_step_seconds(merge(RECIPES["modern"], TINY), corpus, steps=4, device="cpu")
    assert 0 < seconds < 5


def test_runs_are_cached(corpus, tmp_path, one_thread):
    recipe = merge(RECIPES["+ rope"], TINY)
    first = run_recipe(recipe, corpus, seed=1, budget_s=0.2, name="+ rope", cache=tmp_path, device="cpu",
                       keep_model=True)
    again = run_recipe(recipe, corpus, seed=1, budget_s=0.2, name="+ rope", cache=tmp_path, device="cpu",
                       keep_model=True)
    assert first == again  # the same measured seconds: read back, not trained again
    assert [p.name.rsplit("-", 1)[0] for p in tmp_path.iterdir()] == ["recipe-rope"]
    other = run_recipe(recipe, corpus, seed=2, budget_s=0.2, name="+ rope", cache=tmp_path, device="cpu",
                       keep_model=True)
    assert other["model"] != first["model"] and len(list(tmp_path.iterdir())) == 2
    record_only = run_recipe(recipe, corpus, seed=2, budget_s=0.2, name="+ rope", cache=tmp_path, device="cpu")
    assert "model" not in record_only and len(list(tmp_path.iterdir())) == 3  # another key: trained again
    assert len(list(tmp_path.glob("recipe-rope-*/model.safetensors"))) == 2  # only the runs that kept theirs
    model, tokenizer = load_model(first["model"])
    assert isinstance(model, ModernGPT) and model.config.position == "rope" and tokenizer.vocab_size == 257


def test_moe_runs_log_expert_shares(corpus, one_thread):
    recipe = merge(RECIPES["modern, moe"], merge(TINY, {"model": {"d_expert": 8}}))
    _, record = train_recipe(recipe, corpus, seed=0, max_steps=3, evals=3, device="cpu")
    for point in record["evals"]:
        shares = [point[f"load.0.{e}"] for e in range(8)]
        assert sum(shares) == pytest.approx(1.0) and point["aux_loss"] >= 1.0 - 1e-6
    assert record["active_params"] < record["params"]


def test_t_quantile_matches_tables():
    for df, expected in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423), (1000, 1.9623)]:
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)
    assert t_quantile(0.95, 3) == pytest.approx(2.3534, abs=2e-4)


def test_seed_spread_and_paired_difference():
    spread = seed_spread([1.0, 2.0, 3.0])
    assert (spread.mean, spread.std, spread.n) == (2.0, 1.0, 3)
    assert spread.high - spread.mean == pytest.approx(4.3027 / 3 ** 0.5, abs=1e-3)
    assert str(spread) == "2.000 ± 2.484"
    # Pairing removes what the seeds share: a constant offset is certain, however spread the seeds are.
    a, b = {0: 5.0, 1: 3.0, 2: 4.0, 9: 0.0}, {0: 4.9, 1: 2.9, 2: 3.9}
    difference = paired_difference(a, b)
    assert difference.mean == pytest.approx(0.1) and difference.high - difference.low == pytest.approx(0, abs=1e-9)
    assert seed_spread([5.0, 3.0, 4.0]).low < 4.0 - 1
    with pytest.raises(ValueError, match="two"):
        seed_spread([1.0])


def test_loss_by_position(corpus):
    torch.manual_seed(0)
    model = recipe_model(merge(RECIPES["modern"], TINY), 257).eval()
    losses = loss_by_position(model, corpus.val_ids, 16, windows=5)
    starts = torch.linspace(0, len(corpus.val_ids) - 17, 5).round().long()
    rows = torch.stack([corpus.val_ids[s:s + 17] for s in starts.tolist()])
    expected = torch.nn.functional.cross_entropy(model(rows[:, :-1]).transpose(1, 2), rows[:, 1:],
                                                 reduction="none").mean(0)
    torch.testing.assert_close(losses.float(), expected)
    longer = loss_by_position(with_rope_scaling(model, 64), corpus.val_ids, 64, windows=5)
    assert longer.shape == (64,) and torch.isfinite(longer).all()
    learned = recipe_model(merge(RECIPES["gpt2 as ModernGPT"], TINY), 257)
    with pytest.raises(ValueError, match="context length"):
        loss_by_position(learned, corpus.val_ids, 32, windows=2)


def test_rope_scaling_keeps_weights_and_changes_angles():
    torch.manual_seed(0)
    model = recipe_model(merge(RECIPES["modern"], TINY), 257).eval()
    idx = torch.randint(0, 257, (1, 16))
    torch.testing.assert_close(with_rope_scaling(model, 64)(idx), model(idx))
    linear = with_rope_scaling(model, 64, "linear", 4.0)
    assert linear.config.context_length == 64 and linear.config.rope_factor == 4.0
    torch.testing.assert_close(linear.inv_freq, model.inv_freq / 4)
    ntk = with_rope_scaling(model, 64, "ntk", 4.0)
    assert ntk.inv_freq[0] == model.inv_freq[0] and ntk.inv_freq[-1] < model.inv_freq[-1]
