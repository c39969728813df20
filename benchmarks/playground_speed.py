"""The playground page in headless Chromium: how fast each of the book's pretrained models generates, and how many
bytes the page downloads, printed beside the targets as ratios.

Setup: the built site (`make book` first), served from 127.0.0.1 by Python's http.server, opened in Debian's
Chromium through Playwright; the browser runs on this machine's cores like a reader's would.

Rows, for each pretrained model of the Generation widget's menu (the manifest's `pretrained` list):
  - engine: playground/engine.js alone (llm.generate's loop in JavaScript, greedy), 100 new tokens after the
    pretraining run's first sample prompt, median of the repeats: the model's own speed.
  - widget: the Generation widget end to end (click to last token drawn), 100 tokens at its default sampling
    settings, so drawing every token and its bars is included: the speed a reader sees.
  - past the context: 40 greedy tokens after a prompt longer than the context, where every step runs the whole
    window again from position 0, as llm.generate does.
Download: every response the page receives while each widget is used once and each model chosen once (the
instruction-tuned model loads on the first question), split into the playground's own files (runtime, models,
tokenizers) and the site's page.

Targets: >= 50 tokens/s for every pretrained model (engine and widget rows), playground files < 15 MB.

    .venv/bin/python benchmarks/playground_speed.py [--repeats 5] [--site _book]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bookbuild.browser import CHROMIUM, serve  # noqa: E402  (the site checks' Chromium and static server)

NEW_TOKENS = 100
TARGET_TOKENS_PER_S = 50
TARGET_BYTES = 15e6

ENGINE_SPEED = """async ([name, tokens, repeats]) => {
  const p = bookPlayground, E = p.engine, manifest = await p.manifest();
  const [model, tok] = await Promise.all([p.model(name), p.tokenizer(manifest.models[name].tokenizer)]);
  const ids = tok.encode(manifest.models[name].prompts[0]);
  const eos = tok.specialIds.get(manifest.end_of_text);
  const rates = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    let n = 0;
    for (const step of E.generate(model, ids, { maxNewTokens: tokens, temperature: 0 })) n++;
    rates.push(n / ((performance.now() - t0) / 1000));
  }
  const long = tok.encode("The old house stood at the end of the lane, and the wind came over the hill. ".repeat(8));
  const t0 = performance.now();
  let n = 0;
  for (const step of E.generate(model, long, { maxNewTokens: 40, temperature: 0 })) n++;
  return { rates, sliding: n / ((performance.now() - t0) / 1000), promptTokens: long.length };
}"""


def widget_speed(page, model: str, repeats: int) -> list[float]:
    """Tokens per second of the Generation widget running `model`, from the click to the last token shown."""
    part = "[data-pg=generate]"
    page.locator(f"{part} select").select_option(model)
    page.locator(f"{part} input[type=number] >> nth=1").fill(str(NEW_TOKENS))
    rates = []
    for seed in range(repeats):
        page.locator(f"{part} input[type=number] >> nth=2").fill(str(seed))
        t0 = time.perf_counter()
        page.locator(f"{part} button", has_text="Generate").click()
        page.wait_for_selector(f"{part} .pg-output[data-state=done]")
        n = len(page.locator(f"{part} .pg-output").get_attribute("data-ids").split(","))
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--site", type=Path, default=ROOT / "_book", help="the built site (default: _book)")
    args = parser.parse_args()
    if not (args.site / "playground.html").is_file():
        print(f"{args.site / 'playground.html'} does not exist: build the site first (make book)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    received: dict[str, int] = {}
    with serve(args.site) as base, sync_playwright() as p:
        url = base + "playground.html"
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("response", lambda r: received.__setitem__(r.url, len(r.body())) if r.ok else None)
        t0 = time.perf_counter()
        page.goto(url)
        page.evaluate("bookPlayground.ready")
        ready = time.perf_counter() - t0
        page.locator("[data-pg=ask] button.pg-primary").click()
        page.wait_for_selector("[data-pg=ask] .pg-answer[data-state=done]")
        models = page.evaluate("bookPlayground.manifest().then((m) => m.pretrained)")
        rates = {}  # model: (engine tokens/s, widget tokens/s, the engine's measurements)
        for model in models:
            engine = page.evaluate(ENGINE_SPEED, [model, NEW_TOKENS, args.repeats])
            widget = widget_speed(page, model, args.repeats)
            rates[model] = (statistics.median(engine["rates"]), statistics.median(widget), engine)
        browser.close()

    playground = {u: n for u, n in received.items() if "/playground/" in u}
    site = {u: n for u, n in received.items() if u not in playground}
    total = sum(playground.values())
    print(f"Chromium {CHROMIUM}, {args.repeats} repeats; page ready (all widgets drawn) in {ready:.2f} s")
    print(f"{'measure':44s} {'value':>12s} {'target':>12s} {'ratio':>8s}")
    for model, (engine_rate, widget_rate, engine) in rates.items():
        print(f"{model}:")
        print(f"{'  engine: greedy, tokens/s':44s} {engine_rate:12.0f} {'>= 50':>12s} "
              f"{engine_rate / TARGET_TOKENS_PER_S:7.1f}x")
        print(f"{'  widget: sampling and drawing, tokens/s':44s} {widget_rate:12.0f} {'>= 50':>12s} "
              f"{widget_rate / TARGET_TOKENS_PER_S:7.1f}x")
        sliding = f"  past the context ({engine['promptTokens']}-token prompt), tokens/s"
        print(f"{sliding:44s} {engine['sliding']:12.1f}")
    print(f"{'playground download, MB':44s} {total / 1e6:12.2f} {'< 15':>12s} {total / TARGET_BYTES:7.2f}x")
    for u, n in sorted(playground.items(), key=lambda item: -item[1]):
        print(f"  {u.split('/playground/')[1]:42s} {n / 1e3:10,.0f} kB")
    print(f"{'rest of the page (HTML, book.css, book.js), kB':44s} {sum(site.values()) / 1e3:12,.0f}")
    fast = all(min(engine, widget) >= TARGET_TOKENS_PER_S for engine, widget, _ in rates.values())
    ok = fast and total < TARGET_BYTES
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
