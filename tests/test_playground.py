"""The playground page in a real browser: Debian's Chromium, headless, driven by Playwright over a static server on
127.0.0.1, must tokenize, generate and answer exactly as the Python package does, with each of the book's pretrained
models (about a minute).

The page under test is the playground's HTML as playground.qmd writes it, with the site's stylesheet and the files
of playground/, and models exported from the book's cached runs by llm.webexport as the build exports them, so the
test needs no built site. tests/test_playground_models.py checks the engine on tiny models of every shape it runs.
"""

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from bookbuild import browser as site_browser
from conftest import ROOT
from llm.bpe import load_gpt2
from llm.generate import generate
from llm.instruct import respond
from llm.modelio import load_model
from llm.modern import ModernGPT, apply_rope, attention_mask, rope_cos_sin
from llm.pretrain import cached_pretraining
from llm.sampling import Sampler
from llm.webexport import BOOK_PRETRAINING, cached_instruct_run, export_web, finetune_base

CACHE = ROOT / "_cache"
ASSETS = ROOT / "bookbuild" / "assets"  # the embedded renderer's stylesheet, which the page is tested with
PRETRAIN_CONFIGS = [ROOT / config for config in BOOK_PRETRAINING]
MODELS = [config.stem for config in PRETRAIN_CONFIGS]  # the names of the page's menus, in their order
INSTRUCT_CONFIG = ROOT / "configs" / "finetune-instruct.yaml"
# Text that exercises the pre-split pattern: contractions, digits, accents, symbols split across tokens, emoji,
# runs of spaces and tabs, the whitespace where Python's and JavaScript's \s differ (U+0085, U+FEFF), a non-breaking
# space, and the special token. (No carriage return: a textarea turns CRLF into LF.)
TEXT = ("It was the best of times, it wasn't the worst.\n\nMr. Darcy's 1,234 naïve cafés cost £12½ — "
        "«vraiment» 東京 🤖🤖 \u00a0nbsp\u0085nel\ufeffbom   spaces\t\ttabs  \n<|endoftext|>They'll say we've won.")
LONG_PROMPT = "The old house stood at the end of the lane, and the wind came over the hill. " * 8  # > 128 tokens


@pytest.fixture(scope="module")
def browser():
    problem = site_browser.unavailable()
    if problem:  # CI must run these tests; a developer's machine may lack the browser
        (pytest.fail if os.environ.get("CI") else pytest.skip)(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(site_browser.CHROMIUM))
        yield chromium
        chromium.close()


def playground_page() -> str:
    """The playground's widgets as the page holds them: every raw HTML block of playground.qmd, in order."""
    blocks = re.findall(r"^```\{=html\}\n(.*?)^```$", (ROOT / "playground.qmd").read_text(), re.M | re.S)
    assert len(blocks) >= 5, "playground.qmd lost its widgets"
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="stylesheet" href="book.css">'
            "</head><body><main><div class='content'>\n" + "\n".join(blocks) + "</div></main></body></html>\n")


@contextlib.contextmanager
def served_site(export):
    """The URL of the playground page served from a folder of its own: the page, the site's stylesheet and fonts,
    playground/, and the models that `export(folder)` writes into it.

    A folder of its own rather than pytest's tmp_path: another pytest run on the machine prunes pytest's older
    temporary folders, and this one must outlive the module's tests."""
    with tempfile.TemporaryDirectory(prefix="playground-site-") as folder:
        root = Path(folder)
        shutil.copytree(ROOT / "playground", root / "playground", ignore=shutil.ignore_patterns("models"))
        shutil.copy(ASSETS / "book.css", root / "book.css")
        if (ASSETS / "fonts").is_dir():  # what book.css refers to, copied as the site gets it
            shutil.copytree(ASSETS / "fonts", root / "fonts")
        export(root / "playground" / "models")
        (root / "playground.html").write_text(playground_page(), encoding="utf-8")
        with site_browser.serve(root) as base:
            yield base + "playground.html"


@contextlib.contextmanager
def opened(browser, url):
    """The loaded playground in a new tab; at the end, fails if the page logged an error or threw."""
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    # Chromium asks every site for /favicon.ico and logs the 404; the book has no icon, and that is no fault.
    tab.on("console", lambda m: m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
           and errors.append(m.text))
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(url)
    tab.evaluate("bookPlayground.ready")
    tab.wait_for_selector("[data-pg=generate] .pg-output[data-state=done]")
    yield tab
    tab.close()
    assert errors == []


@pytest.fixture(scope="module")
def url():
    with served_site(lambda out: export_web(out, PRETRAIN_CONFIGS, INSTRUCT_CONFIG, ROOT / "data",
                                            cache=CACHE)) as address:
        yield address


@pytest.fixture
def page(browser, url):
    with opened(browser, url) as tab:
        yield tab


@pytest.fixture(scope="module")
def pretrained():
    """The book's pretrained models and their tokenizers, by the names of the page's menus."""
    return {config.stem: load_model(cached_pretraining(config, cache=CACHE) / "model.safetensors")
            for config in PRETRAIN_CONFIGS}


def set_value(tab, selector: str, value) -> None:
    """Set a control the way a reader does (fill() cannot move a range slider): a new value, then an input event.
    An unchanged control is left alone, as a reader would."""
    tab.locator(selector).evaluate(
        "(el, v) => { if (el.value !== v) { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); } }",
        str(value))


def generated(tab, prompt: str, temperature=0, top_k=0, top_p=1, seed=0, tokens=40, button="Generate",
              model=MODELS[0]) -> list[int]:
    part = "[data-pg=generate]"
    if tab.locator(f"{part} select").input_value() != model:  # choosing a model starts a new generation
        tab.locator(f"{part} select").select_option(model)
    if tab.locator(f"{part} textarea").input_value() != prompt:
        tab.locator(f"{part} textarea").fill(prompt)
    set_value(tab, f"{part} input[type=range] >> nth=0", temperature)
    set_value(tab, f"{part} input[type=number] >> nth=0", top_k)
    set_value(tab, f"{part} input[type=range] >> nth=1", top_p)
    set_value(tab, f"{part} input[type=number] >> nth=1", tokens)
    set_value(tab, f"{part} input[type=number] >> nth=2", seed)
    tab.locator(f"{part} button", has_text=button).click()
    tab.wait_for_selector(f"{part} .pg-output:not([data-state=running])")
    ids = tab.locator(f"{part} .pg-output").get_attribute("data-ids")
    return [int(i) for i in ids.split(",")] if ids else []


def python_greedy(model, tokenizer, prompt: str, tokens: int = 40) -> list[int]:
    """The tokens llm.generate writes after `prompt`, up to and including the first end of text (where the page
    stops; generate pads with it)."""
    eot = tokenizer.special_ids["<|endoftext|>"]
    ids = tokenizer.encode(prompt) or [eot]
    new = generate(model, torch.tensor([ids]), tokens, eos_id=eot)[0, len(ids):].tolist()
    return new[:new.index(eot) + 1] if eot in new else new


def attention_by_hand(model, ids: list[int], layer: int, head: int) -> torch.Tensor:
    """The attention weights [T, T] of one head, recomputed from its block's own projections, since the fused kernel
    does not return them: its queries against the keys of its key/value head, scaled, masked, softmax."""
    c, positions = model.config, torch.arange(len(ids))
    tokens, group = torch.tensor([ids]), c.n_head // c.n_kv_head
    with torch.no_grad():
        if isinstance(model, ModernGPT):
            x = model.tok_emb(tokens) + (0 if model.pos_emb is None else model.pos_emb(positions))
            rope = None if model.inv_freq is None else rope_cos_sin(positions, model.inv_freq)
            for block in model.blocks[:layer]:
                x = block(x, positions, rope)
            block, head_dim = model.blocks[layer], c.head_dim
            normed = block.attn_norm(x)[0]
            q = block.attn.q_proj(normed).view(len(ids), c.n_head, head_dim)[:, head]
            k = block.attn.k_proj(normed).view(len(ids), c.n_kv_head, head_dim)[:, head // group]
            if block.attn.q_norm is not None:
                q, k = block.attn.q_norm(q), block.attn.k_norm(k)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        else:
            x = model.wte(tokens) + model.wpe(positions)
            for block in model.blocks[:layer]:
                x = block(x)
            block, head_dim = model.blocks[layer], c.d_model // c.n_head
            qkv = block.attn.qkv(block.ln_1(x))[0]
            q = qkv[:, head * head_dim:(head + 1) * head_dim]
            k = qkv[:, c.d_model:][:, head // group * head_dim:(head // group + 1) * head_dim]
        visible = attention_mask(positions, positions, getattr(c, "sliding_window", None))
        return (q @ k.T / head_dim**0.5).masked_fill(~visible, -torch.inf).softmax(-1)


def shown_attention(tab, model: str, layer: int, head: int) -> torch.Tensor:
    """The heatmap's weights [T, T] for `model`, layer and head (counted from 1, as the page's menus count)."""
    part = "[data-pg=attention]"
    tab.locator(f"{part} select >> nth=0").select_option(model)
    tab.wait_for_selector(f"{part}[data-state=done]")
    tab.locator(f"{part} select >> nth=1").select_option(str(layer))
    tab.locator(f"{part} select >> nth=2").select_option(str(head))
    rows = tab.evaluate("bookPlayground.lastAttention")
    shown = torch.zeros(len(rows), len(rows))
    for i, row in enumerate(rows):
        shown[i, :len(row)] = torch.tensor(row)
    return shown


def test_tokenizers_give_the_ids_of_the_python_tokenizers(page, pretrained):
    _, book = pretrained[MODELS[0]]
    page.locator("[data-pg=tokens] textarea").fill(TEXT)
    page.wait_for_selector("[data-pg=tokens][data-state=done]")
    ids = {name: page.locator(f"[data-tokenizer={name}]").get_attribute("data-ids") for name in ("book", "gpt2")}
    assert ids["book"] == ",".join(map(str, book.encode(TEXT, allowed_special="all")))
    assert ids["gpt2"] == ",".join(map(str, load_gpt2(ROOT / "data").encode(TEXT, allowed_special="all")))


# Past the context every step reruns the whole window (slow in JavaScript), so that case makes fewer tokens.
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("prompt, tokens", [("It was a dark and stormy night", 40), ("Mr. Darcy", 40), ("", 40),
                                            (LONG_PROMPT, 10)],
                         ids=["stormy-night", "darcy", "empty", "past-the-context"])
def test_greedy_generation_gives_the_tokens_of_python(page, pretrained, model_name, prompt, tokens):
    model, tokenizer = pretrained[model_name]
    assert len(tokenizer.encode(LONG_PROMPT)) > model.config.context_length  # so the window slides on every step
    assert generated(page, prompt, tokens=tokens, model=model_name) == python_greedy(model, tokenizer, prompt, tokens)


def test_the_menus_offer_the_pretrained_models_in_order(page):
    for part in ("generate", "attention"):
        options = page.locator(f"[data-pg={part}] select >> nth=0").locator("option")
        assert options.evaluate_all("(all) => all.map((o) => o.value)") == MODELS
    labels = page.locator("[data-pg=generate] select option").all_text_contents()
    assert all(re.fullmatch(r"(GPT-2-style|modern) model \(\S+\.yaml, \d\.\d\d M parameters\)", label)
               for label in labels), labels


def test_sampling_controls_change_the_output(page, pretrained):
    model, tokenizer = pretrained[MODELS[0]]
    prompt = "It was a dark and stormy night"
    greedy = python_greedy(model, tokenizer, prompt)
    sampled = generated(page, prompt, temperature=1)
    assert sampled != greedy
    assert generated(page, prompt, temperature=1) == sampled, "the same seed must draw the same tokens"
    assert generated(page, prompt, temperature=1, seed=1) != sampled
    assert generated(page, prompt, temperature=1.5, top_p=0.5) != sampled
    assert generated(page, prompt, temperature=1, top_k=1) == greedy, "top-k 1 leaves only the most likely token"
    assert generated(page, prompt, tokens=5) == greedy[:5]
    steps = [generated(page, prompt, button="Next token") for _ in range(3)]
    assert steps == [greedy[:1], greedy[:2], greedy[:3]], "Next token continues the generation one token at a time"
    bars = page.locator("[data-pg=generate] .pg-bar")
    assert bars.count() >= 10 and page.locator("[data-pg=generate] .pg-bar.pg-drawn").count() == 1


@pytest.mark.parametrize("model_name", MODELS)
def test_attention_heatmap_shows_the_weights_of_the_chosen_head(page, pretrained, model_name):
    model, tokenizer = pretrained[model_name]
    text = page.locator("[data-pg=attention] input[type=text]").input_value()
    first = page.evaluate("bookPlayground.lastAttention")
    shown = shown_attention(page, model_name, layer=2, head=3)
    assert shown.tolist() != first
    expected = attention_by_hand(model, tokenizer.encode(text), layer=1, head=2)
    torch.testing.assert_close(shown, expected, atol=1e-5, rtol=1e-4)


def test_ask_gives_the_answer_of_python(page):
    request = {"instruction": "Rewrite the sentence in the passive voice.", "input": "The dog chased the ball."}
    base = cached_pretraining(finetune_base(INSTRUCT_CONFIG, PRETRAIN_CONFIGS), CACHE) / "model.safetensors"
    model, tokenizer = load_model(cached_instruct_run(INSTRUCT_CONFIG, base, CACHE) / "model.safetensors")
    page.locator("[data-pg=ask] textarea >> nth=0").fill(request["instruction"])
    page.locator("[data-pg=ask] textarea >> nth=1").fill(request["input"])
    page.locator("[data-pg=ask] button.pg-primary").click()
    page.wait_for_selector("[data-pg=ask] .pg-answer[data-state=done]")
    assert page.locator("[data-pg=ask] .pg-answer").text_content() == respond(model, tokenizer, request)


def page_logits(tab, model: str, ids: list[int]) -> torch.Tensor:
    """The page's next-token logits after `ids`, from a fresh cache of the model the manifest names `model`."""
    return torch.tensor(tab.evaluate("""async ([name, ids]) => {
        const model = await bookPlayground.model(name);
        return Array.from(model.next(ids, model.newCache()));
    }""", [model, ids]))


@pytest.mark.parametrize("model_name", MODELS)
def test_forward_pass_matches_python(page, pretrained, model_name):
    """Closer than tokens can show: the page's logits against the model's, number by number."""
    model, tokenizer = pretrained[model_name]
    ids = tokenizer.encode("It was a dark and stormy night")
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1]
    torch.testing.assert_close(page_logits(page, model_name, ids), logits, atol=2e-4, rtol=1e-4)


def test_sampler_matches_python(page, pretrained):
    model, tokenizer = pretrained[MODELS[0]]
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode("It was a dark and stormy night")]))[0, -1]
    for temperature, top_k, top_p in [(0, 0, 1), (0.8, 50, 1), (1.0, 0, 0.9), (1.3, 5, 0.5), (0.5, 3, 0.2)]:
        sampler = Sampler(temperature, top_k or None, top_p if top_p < 1 else None)
        probs = page.evaluate("([logits, options]) => Array.from(bookPlayground.engine.distribution(logits, options))",
                              [logits.tolist(), {"temperature": temperature, "topK": top_k, "topP": top_p}])
        torch.testing.assert_close(torch.tensor(probs, dtype=torch.float32), sampler.distribution(logits[None])[0],
                                   atol=1e-6, rtol=1e-4)
