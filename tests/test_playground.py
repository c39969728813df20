"""The playground page in a real browser: Debian's Chromium, headless, driven by Playwright over a static server on
127.0.0.1, must tokenize, generate and answer exactly as the Python package does (about half a minute).

The page under test is the playground's HTML as playground.qmd writes it, with the site's stylesheet and the files
of playground/, and models exported from the book's cached runs by llm.webexport, so the test needs no built site.
"""

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
from llm.pretrain import cached_pretraining
from llm.sampling import Sampler
from llm.webexport import cached_instruct_run, export_web

CACHE = ROOT / "_cache"
ASSETS = ROOT / "bookbuild" / "assets"  # the embedded renderer's stylesheet, which the page is tested with
PRETRAIN_CONFIG = ROOT / "configs" / "gutenberg.yaml"
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


@pytest.fixture(scope="module")
def site():
    """A folder a static server can serve: the page, the site's stylesheet and fonts, playground/ and exported models.

    A folder of its own rather than pytest's tmp_path: another pytest run on the machine prunes pytest's older
    temporary folders, and this one must outlive the module's tests."""
    with tempfile.TemporaryDirectory(prefix="playground-site-") as folder:
        root = Path(folder)
        shutil.copytree(ROOT / "playground", root / "playground", ignore=shutil.ignore_patterns("models"))
        shutil.copy(ASSETS / "book.css", root / "book.css")
        if (ASSETS / "fonts").is_dir():  # what book.css refers to, copied as the site gets it
            shutil.copytree(ASSETS / "fonts", root / "fonts")
        export_web(root / "playground" / "models", PRETRAIN_CONFIG, INSTRUCT_CONFIG, ROOT / "data", cache=CACHE)
        (root / "playground.html").write_text(playground_page(), encoding="utf-8")
        yield root


@pytest.fixture(scope="module")
def url(site):
    with site_browser.serve(site) as base:
        yield base + "playground.html"


@pytest.fixture
def page(browser, url):
    """The loaded playground; at the end, the test fails if the page logged an error or threw."""
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
def pretrained():
    return load_model(cached_pretraining(PRETRAIN_CONFIG, cache=CACHE) / "model.safetensors")


def set_value(tab, selector: str, value) -> None:
    """Set a control the way a reader does (fill() cannot move a range slider): a new value, then an input event.
    An unchanged control is left alone, as a reader would."""
    tab.locator(selector).evaluate(
        "(el, v) => { if (el.value !== v) { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); } }",
        str(value))


def generated(tab, prompt: str, temperature=0, top_k=0, top_p=1, seed=0, tokens=40, button="Generate") -> list[int]:
    part = "[data-pg=generate]"
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


def test_tokenizers_give_the_ids_of_the_python_tokenizers(page, pretrained):
    _, book = pretrained
    page.locator("[data-pg=tokens] textarea").fill(TEXT)
    page.wait_for_selector("[data-pg=tokens][data-state=done]")
    ids = {name: page.locator(f"[data-tokenizer={name}]").get_attribute("data-ids") for name in ("book", "gpt2")}
    assert ids["book"] == ",".join(map(str, book.encode(TEXT, allowed_special="all")))
    assert ids["gpt2"] == ",".join(map(str, load_gpt2(ROOT / "data").encode(TEXT, allowed_special="all")))


# Past the context every step reruns the whole window (slow in JavaScript), so that case makes fewer tokens.
@pytest.mark.parametrize("prompt, tokens", [("It was a dark and stormy night", 40), ("Mr. Darcy", 40), ("", 40),
                                            (LONG_PROMPT, 10)],
                         ids=["stormy-night", "darcy", "empty", "past-the-context"])
def test_greedy_generation_gives_the_tokens_of_python(page, pretrained, prompt, tokens):
    model, tokenizer = pretrained
    assert len(tokenizer.encode(LONG_PROMPT)) > model.config.context_length  # so the window slides on every step
    assert generated(page, prompt, tokens=tokens) == python_greedy(model, tokenizer, prompt, tokens)


def test_sampling_controls_change_the_output(page, pretrained):
    model, tokenizer = pretrained
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


def test_attention_heatmap_shows_the_weights_of_the_chosen_head(page, pretrained):
    model, tokenizer = pretrained
    text = page.locator("[data-pg=attention] input[type=text]").input_value()
    ids = torch.tensor(tokenizer.encode(text))
    c = model.config
    block, head_dim, kv_head = model.blocks[1], c.d_model // c.n_head, 2 // (c.n_head // c.n_kv_head)
    with torch.no_grad():  # layer 2, head 3 by hand: the model's fused kernel does not return its weights
        x = model.blocks[0]((model.wte(ids) + model.wpe(torch.arange(len(ids))))[None])[0]
        qkv = block.attn.qkv(block.ln_1(x))
        q = qkv[:, 2 * head_dim:3 * head_dim]
        k = qkv[:, c.d_model:][:, kv_head * head_dim:(kv_head + 1) * head_dim]
        scores = (q @ k.T / head_dim**0.5).masked_fill(torch.ones(len(ids), len(ids)).triu(1).bool(), -torch.inf)
        expected = scores.softmax(-1)
    first = page.evaluate("bookPlayground.lastAttention")
    page.locator("[data-pg=attention] select >> nth=0").select_option("2")
    page.locator("[data-pg=attention] select >> nth=1").select_option("3")
    rows = page.evaluate("bookPlayground.lastAttention")
    assert rows != first
    shown = torch.zeros(len(ids), len(ids))
    for i, row in enumerate(rows):
        shown[i, :len(row)] = torch.tensor(row)
    torch.testing.assert_close(shown, expected, atol=1e-5, rtol=1e-4)


def test_ask_gives_the_answer_of_python(page, pretrained):
    request = {"instruction": "Rewrite the sentence in the passive voice.", "input": "The dog chased the ball."}
    model, tokenizer = load_model(cached_instruct_run(INSTRUCT_CONFIG, cached_pretraining(PRETRAIN_CONFIG, CACHE)
                                                      / "model.safetensors", CACHE) / "model.safetensors")
    page.locator("[data-pg=ask] textarea >> nth=0").fill(request["instruction"])
    page.locator("[data-pg=ask] textarea >> nth=1").fill(request["input"])
    page.locator("[data-pg=ask] button.pg-primary").click()
    page.wait_for_selector("[data-pg=ask] .pg-answer[data-state=done]")
    assert page.locator("[data-pg=ask] .pg-answer").text_content() == respond(model, tokenizer, request)


def test_forward_pass_and_sampler_match_python(page, pretrained):
    """Closer than tokens can show: the page's logits and sampling distributions against llm's, number by number."""
    model, tokenizer = pretrained
    ids = tokenizer.encode("It was a dark and stormy night")
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1]
    page_logits = page.evaluate("""async (ids) => {
        const model = await bookPlayground.model("pretrained");
        return Array.from(model.next(ids, model.newCache()));
    }""", ids)
    torch.testing.assert_close(torch.tensor(page_logits), logits, atol=2e-4, rtol=1e-4)
    for temperature, top_k, top_p in [(0, 0, 1), (0.8, 50, 1), (1.0, 0, 0.9), (1.3, 5, 0.5), (0.5, 3, 0.2)]:
        sampler = Sampler(temperature, top_k or None, top_p if top_p < 1 else None)
        probs = page.evaluate("([logits, options]) => Array.from(bookPlayground.engine.distribution(logits, options))",
                              [logits.tolist(), {"temperature": temperature, "topK": top_k, "topP": top_p}])
        torch.testing.assert_close(torch.tensor(probs, dtype=torch.float32), sampler.distribution(logits[None])[0],
                                   atol=1e-6, rtol=1e-4)
