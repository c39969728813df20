"""The built website in a real browser, the way a reader meets it.

Debian's Chromium, headless and driven by Playwright, opens every page of the
site (served on 127.0.0.1 only) at a desktop width (1280 px) and a phone
width (390 px), and reports what a reader would notice: a page that scrolls
sideways, a broken link or image, a script error, a code line that wraps to
the left of its own indentation, a table without a number, and a menu,
theme toggle, search box or copy button that does not work. It keeps
screenshots of every page, light and dark, at both widths, for a person to
look at.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (apt-get install chromium); .ci/run installs it
# name: (width, height, device pixels per CSS pixel, a touch screen without hover)
SCREENS = {"desktop": (1280, 800, 1, False), "phone": (390, 844, 2, True)}
# Screenshots come in parts this many CSS pixels high, each readable at the size an image viewer shows it.
PART_HEIGHT = 1600
# Characters a line of prose on a desktop, as the median over paragraphs of three lines or more (counting their short
# last lines, which pull it below the length of a full line of about 75).
MEASURE = (55, 85)


def unavailable() -> str | None:
    """Why the browser checks cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -r requirements.txt)"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@contextlib.contextmanager
def serve(site: Path):
    """A static server for site/ on a free port of 127.0.0.1; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class QuietServer(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # A browser that drops a request it no longer needs (a page moving on) is not an error of the site.
            if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                super().handle_error(request, client_address)

    server = QuietServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def check_site(site: Path, screenshots: Path | None = None, log=print) -> list[str]:
    """Open every page of site/ in Chromium; return the problems found (empty when none). Screenshots go to
    screenshots/ (replaced) when given."""
    from playwright.sync_api import sync_playwright

    pages = sorted(p.name for p in site.glob("*.html"))
    if not pages:
        return [f"{site}: no pages to check"]
    if screenshots:
        for old in screenshots.glob("*/*.png") if screenshots.is_dir() else []:
            old.unlink()
    problems: list[str] = []
    seen: dict[str, dict] = {}  # page -> its ids and links, as the browser sees them after scripts ran
    soft: set[str] = set()  # images with fewer than two pixels to a CSS pixel: blurred on high-density screens
    with serve(site) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            for screen, (width, height, scale, touch) in SCREENS.items():
                for theme in ("light", "dark"):
                    context = browser.new_context(viewport={"width": width, "height": height},
                                                  device_scale_factor=scale, is_mobile=touch, has_touch=touch,
                                                  color_scheme=theme)
                    try:
                        for name in pages:
                            tab = _open(context, base + name, problems, f"{name} ({screen}, {theme})")
                            if theme == "light":  # layout does not depend on the theme: check it once
                                seen[name] = tab.evaluate(_LINKS_AND_IDS)
                                problems.extend(f"{name} ({screen}): {m}" for m in _layout_problems(tab, width))
                                if screen == "desktop":
                                    soft.update(tab.evaluate(_SOFT_IMAGES))
                            elif tab.evaluate("document.documentElement.dataset.theme") != "dark":
                                problems.append(f"{name} ({screen}): the page ignores the system's dark setting")
                            if screenshots:
                                # every part in light; in dark, the parts that show how figures look there
                                _screenshot(tab, screenshots / f"{screen}-{theme}", name, theme == "light")
                            tab.close()
                    finally:
                        context.close()
            problems.extend(_link_problems(site, base, seen))
            probe = _probe_page(site, pages)
            problems.extend(f"{probe} (desktop): {m}" for m in _desktop_behaviour(browser, base, probe, pages))
            problems.extend(f"{probe} (phone): {m}" for m in _phone_behaviour(browser, base, probe))
        finally:
            browser.close()
    if soft:
        log(f"{len(soft)} images have fewer than 2 pixels per CSS pixel, soft on high-density screens (a figure needs "
            f"220 dpi or more; executing its chapter again applies chapters/matplotlibrc): "
            + ", ".join(sorted(soft)[:4]))
    if screenshots:
        log(f"screenshots of {len(pages)} pages, light and dark, at {' and '.join(str(s[0]) for s in SCREENS.values())}"
            f" px: {screenshots}")
    return problems


def _open(context, url: str, problems: list[str], where: str):
    """A loaded page; failed requests, HTTP errors and script errors become problems."""
    tab = context.new_page()

    def failed_response(response):
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            problems.append(f"{where}: {response.url.split('/', 3)[-1]} answered HTTP {response.status}")

    tab.on("response", failed_response)
    tab.on("requestfailed", lambda r: problems.append(f"{where}: {r.url.split('/', 3)[-1]} failed to load"))
    tab.on("pageerror", lambda e: problems.append(f"{where}: script error: {e}"))
    # (a failed load is told above, with its address; the console's "Failed to load resource" would repeat it)
    tab.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
           and problems.append(f"{where}: the console says: {m.text}"))
    tab.goto(url, wait_until="load")
    tab.evaluate("document.fonts.ready")
    return tab


def _layout_problems(tab, width: int) -> list[str]:
    problems = []
    sideways = tab.evaluate(_SIDEWAYS)
    if sideways:
        problems.append(sideways)
    problems.extend(f"image {src!r} is broken" for src in tab.evaluate(_BROKEN_IMAGES))
    problems.extend(f"code line wraps to the left of its indentation: {line}" for line in tab.evaluate(_WRAPS_LEFT))
    problems.extend(tab.evaluate(_FURNITURE))
    measure = tab.evaluate(_MEASURE)
    if width >= 1000 and measure and not MEASURE[0] <= measure <= MEASURE[1]:
        problems.append(f"prose runs {measure:.0f} characters a line, outside a comfortable {MEASURE[0]}-{MEASURE[1]}")
    return problems


def _screenshot(tab, folder: Path, name: str, every_part: bool) -> None:
    """The page as parts of PART_HEIGHT CSS pixels, one CSS pixel to an image pixel: folder/NAME.png, or NAME-01.png,
    NAME-02.png... Each part is the browser's window made that tall and scrolled there (a capture of the whole page
    at once renders all of it, minutes for a long chapter). Without every_part, only the first part and those
    showing a figure."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(".html")
    viewport = tab.viewport_size
    tab.add_style_tag(content=".topbar { position: static !important; }")  # else it covers the top of every part
    height = tab.evaluate("document.documentElement.scrollHeight")
    parts = max(1, -(-height // PART_HEIGHT))
    wanted = range(parts) if every_part else sorted({0} | {
        min(parts - 1, int(top // PART_HEIGHT)) for top in
        tab.evaluate("[...document.querySelectorAll('main img')].map(i => i.getBoundingClientRect().top + scrollY)")})
    for i in wanted:
        top = i * PART_HEIGHT
        tab.set_viewport_size({"width": viewport["width"], "height": min(PART_HEIGHT, height - top)})
        tab.evaluate("y => window.scrollTo(0, y)", top)
        path = folder / (f"{stem}.png" if parts == 1 else f"{stem}-{i + 1:02d}.png")
        tab.screenshot(path=str(path), scale="css", animations="disabled")
    tab.set_viewport_size(viewport)


def _link_problems(site: Path, base: str, seen: dict[str, dict]) -> list[str]:
    """Every link to this site must reach a file, and a link to a place in a page must find that place."""
    problems = []
    for name, page in seen.items():
        for href in page["links"]:
            if not href.startswith(base):
                continue  # another site: not checked offline
            url, fragment = urldefrag(href)
            target = unquote(urlparse(url).path).lstrip("/") or "index.html"
            if not (site / target).is_file():
                problems.append(f"{name}: the link to {href[len(base):]} leads nowhere")
            elif fragment and target in seen and unquote(fragment) not in seen[target]["ids"]:
                problems.append(f"{name}: the link to {href[len(base):]} finds no such place")
    return problems


def _probe_page(site: Path, pages: list[str]) -> str:
    """The page to try the controls on: the first chapter with code (else the first page)."""
    for name in pages:
        if 'class="sourceCode' in (site / name).read_text(encoding="utf-8"):
            return name
    return pages[0]


def _desktop_behaviour(browser, base: str, probe: str, pages: list[str]) -> list[str]:
    problems = []
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    context.set_default_timeout(5000)
    tab = context.new_page()

    def theme():
        """Dark on a click, figures on a light card, and still dark on the next page (the choice is remembered)."""
        tab.goto(base + probe)
        if tab.evaluate("document.documentElement.dataset.theme") != "light":
            problems.append("a light system setting does not give the light theme")
        light = tab.evaluate(_BACKGROUND_LIGHTNESS)
        tab.locator(".sidebar .theme-toggle").click()
        dark = tab.evaluate(_BACKGROUND_LIGHTNESS)
        if tab.evaluate("document.documentElement.dataset.theme") != "dark" or not dark < 0.3 < light:
            problems.append(f"the theme toggle does not darken the page (lightness {light:.2f} -> {dark:.2f})")
            return
        cards = tab.evaluate("[...document.querySelectorAll('main img')].map(i => getComputedStyle(i).backgroundColor)")
        if any(color != "rgb(255, 255, 255)" for color in cards):
            problems.append("in the dark theme a figure lacks its light card")
        other = next((p for p in pages if p != probe), probe)
        tab.goto(base + other)
        if tab.evaluate("document.documentElement.dataset.theme") != "dark":
            problems.append(f"the dark theme chosen on {probe} is forgotten on {other}")
        tab.locator(".sidebar .theme-toggle").click()  # back to light for what follows

    try:
        _step(problems, "the theme toggle", theme)
        _step(problems, "the copy button", lambda: (tab.goto(base + probe), problems.extend(_copy_problems(tab))))
        _step(problems, "'On this page'", lambda: (tab.goto(base + probe), problems.extend(_toc_problems(tab))))
        _step(problems, "the search box",
              lambda: (tab.goto(base + probe), problems.extend(_search_problems(tab, base))))
    finally:
        context.close()
    return problems


def _phone_behaviour(browser, base: str, probe: str) -> list[str]:
    problems = []
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    context.set_default_timeout(5000)
    tab = context.new_page()

    def menu():
        tab.goto(base + probe)
        state = tab.evaluate(_PHONE_START)
        if state["chapterListShown"]:
            problems.append("the chapter list is shown before the menu button is pressed")
        if state["titleTop"] is None or state["titleTop"] > 200:
            problems.append(f"the page does not start with its own title (its top is at {state['titleTop']} px)")
        tab.locator(".menu-toggle").click()
        tab.wait_for_timeout(400)  # the drawer slides in
        if not tab.evaluate(_CHAPTER_LINK_ON_TOP):
            problems.append("the menu button does not show the chapter list")
            return
        problems.extend(_search_problems(tab, base))  # the search box is in the drawer
        tab.goto(base + probe)
        tab.locator(".menu-toggle").click()
        tab.wait_for_timeout(400)
        tab.keyboard.press("Escape")
        tab.wait_for_timeout(400)
        if tab.evaluate(_CHAPTER_LINK_ON_TOP):
            problems.append("the chapter list does not close again")

    def theme():
        tab.goto(base + probe)
        tab.locator(".topbar .theme-toggle").click()
        if tab.evaluate("document.documentElement.dataset.theme") != "dark":
            problems.append("the theme toggle in the top bar does not switch to dark")

    try:
        _step(problems, "the menu", menu)
        _step(problems, "the theme toggle", theme)
        _step(problems, "the copy button", lambda: (tab.goto(base + probe), problems.extend(_copy_problems(tab))))
    finally:
        context.close()
    return problems


def _step(problems: list[str], what: str, action) -> None:
    """Run one interaction; a control that cannot be used (hidden, covered, never answering) is a problem."""
    from playwright.sync_api import Error

    try:
        action()
    except Error as e:
        problems.append(f"{what} cannot be used: {str(e).splitlines()[0]}")


def _copy_problems(tab) -> list[str]:
    """The first code block's copy button: seen without pointing at it, and it copies exactly the code."""
    if not tab.locator("div.sourceCode").count():
        return []
    tab.mouse.move(0, 0)
    block = tab.locator("div.sourceCode").first
    block.scroll_into_view_if_needed()
    button = block.locator("button.copy-code")
    if not button.count():
        return ["a code block has no copy button"]
    opacity = float(button.evaluate("b => getComputedStyle(b).opacity"))
    problems = [] if opacity >= 0.5 else [f"the copy button is hidden until pointed at (opacity {opacity})"]
    button.click()
    copied = tab.evaluate("navigator.clipboard.readText()")
    code = block.locator("code").evaluate("c => c.textContent")
    if copied != code:
        problems.append(f"the copy button copied {copied[:60]!r} instead of the code {code[:60]!r}")
    return problems


def _toc_problems(tab) -> list[str]:
    """Scrolling a section into view marks its entry in "On this page"."""
    ids = tab.evaluate("[...document.querySelectorAll('nav.toc a[href^=\"#\"]')].map(a => a.getAttribute('href'))")
    if len(ids) < 2:
        return []
    target = ids[-1]
    tab.evaluate("id => document.getElementById(decodeURIComponent(id.slice(1))).scrollIntoView()", target)
    tab.wait_for_timeout(300)
    active = tab.evaluate("[...document.querySelectorAll('nav.toc a.active')].map(a => a.getAttribute('href'))")
    if active != [target]:
        return [f"with {target} in view, 'On this page' marks {active or 'nothing'}"]
    return []


def _search_problems(tab, base: str) -> list[str]:
    """A word from a section's heading: that section ranks first, shown with an excerpt that marks the word."""
    index = tab.evaluate("""() => new Promise(resolve => {
        if (window.bookSearchIndex) return resolve(window.bookSearchIndex);
        const s = document.createElement('script'); s.src = 'search-index.js';
        s.onload = () => resolve(window.bookSearchIndex); s.onerror = () => resolve(null);
        document.head.appendChild(s); })""")
    if not index:
        return ["the search index does not load"]
    sections = [e for e in index if e["id"] and e["text"] and e["heading"].strip()]
    if not sections:
        return []
    word = max(sections[-1]["heading"].split(), key=len).strip(".,:;()?!’'\"").lower()
    box = tab.locator("input.search")
    box.fill(word)
    try:
        tab.wait_for_selector("ol.search-results a", timeout=3000)
    except Exception:  # Playwright's TimeoutError
        return [f"searching for {word!r} shows no result"]
    first = tab.locator("ol.search-results a").first
    problems = []
    href = first.get_attribute("href")
    best = [f"{e['page']}#{e['id']}" if e["id"] else e["page"] for e in index
            if word in e["chapter"].lower() and not e["id"]] or \
           [f"{e['page']}#{e['id']}" for e in index if word in e["heading"].lower()]
    if href not in best:
        problems.append(f"searching for {word!r} ranks {href} first, not {' or '.join(best)}")
    excerpt = first.locator(".excerpt")
    if not excerpt.count() or not excerpt.inner_text().strip():
        problems.append(f"the result for {word!r} shows no excerpt")
    if not first.locator("mark").count():
        problems.append(f"the result for {word!r} does not mark the word")
    first.click()
    tab.wait_for_load_state()
    page, _, ident = href.partition("#")
    if not tab.url.startswith(base + page) or (ident and not tab.evaluate(
            "id => !!document.getElementById(id)", unquote(ident))):
        problems.append(f"the first result for {word!r} leads to {tab.url}, not {href}")
    return problems


# --- what the pages are asked ----------------------------------------------------------------

_DESCRIBE = """el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + (el.classList.length ? '.' + [...el.classList].join('.') : '')
    + ' "' + (el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 50) + '"'"""

# Why a page scrolls sideways: which elements reach past the right edge outside a box that scrolls by itself.
_SIDEWAYS = """() => {
    const doc = document.documentElement, width = doc.clientWidth;
    if (doc.scrollWidth <= width + 1) return null;
    const describe = %s;
    const clipped = el => {
        for (let a = el.parentElement; a && a !== document.body; a = a.parentElement)
            if (getComputedStyle(a).overflowX !== 'visible') return true;
        return false;
    };
    const past = el => el.getBoundingClientRect().right > width + 1 && !clipped(el);
    const culprits = [];  // the outermost elements past the edge
    for (const el of document.querySelectorAll('body *')) {
        const parent = el.parentElement;
        if (el.getBoundingClientRect().width && past(el) && (parent === document.body || !past(parent)))
            culprits.push(describe(el) + ' reaches ' + Math.round(el.getBoundingClientRect().right) + ' px');
    }
    return 'the page scrolls sideways (' + doc.scrollWidth + ' px wide on a ' + width + ' px screen)'
        + (culprits.length ? ': ' + culprits.slice(0, 3).join('; ') : '');
}""" % _DESCRIBE

_BROKEN_IMAGES = """() => [...document.images].filter(i => !i.complete || !i.naturalWidth)
    .map(i => i.getAttribute('src'))"""

_SOFT_IMAGES = """() => [...document.querySelectorAll('main img')]
    .filter(i => i.naturalWidth && i.clientWidth && i.naturalWidth < 2 * i.clientWidth && !/\\.svg$/.test(i.src))
    .map(i => i.getAttribute('src'))"""

# A wrapped code line whose continuation starts left of the line's first non-blank character.
_WRAPS_LEFT = """() => {
    const bad = [];
    for (const line of document.querySelectorAll('pre code > span')) {
        const height = line.getBoundingClientRect().height;
        const lineHeight = parseFloat(getComputedStyle(line).lineHeight) || 16;
        if (height < lineHeight * 1.5) continue;  // one visual line: nothing wrapped
        const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
        const range = document.createRange();
        let first = null, node;
        const rects = [];
        while ((node = walker.nextNode())) {
            range.selectNodeContents(node);
            for (const r of range.getClientRects()) if (r.width > 0) rects.push(r);
            const k = node.data.search(/\\S/);
            if (!first && k >= 0) {
                const c = document.createRange();
                c.setStart(node, k); c.setEnd(node, k + 1);
                first = c.getBoundingClientRect();
            }
        }
        if (!first) continue;
        const continued = rects.filter(r => r.top > first.top + lineHeight / 2);
        if (!continued.length) continue;
        const left = Math.min(...continued.map(r => r.left));
        if (left < first.left - 1)
            bad.push(JSON.stringify(line.textContent.trim().slice(0, 70)) + ' continues '
                     + Math.round(first.left - left) + ' px left of its indentation');
    }
    return bad;
}"""

# Headings have anchors, callouts icons, tables a number and caption.
_FURNITURE = """() => {
    const problems = [];
    for (const h of document.querySelectorAll('main h2[id], main h3[id]'))
        if (!h.querySelector('a.anchor[href="#' + CSS.escape(h.id) + '"]'))
            problems.push('heading "' + h.textContent.trim().slice(0, 40) + '" has no anchor link');
    for (const t of document.querySelectorAll('.callout-title')) {
        const style = getComputedStyle(t, '::before');
        if ((style.maskImage || style.webkitMaskImage || 'none') === 'none')
            problems.push('callout "' + t.textContent.trim().slice(0, 40) + '" has no icon');
    }
    for (const t of document.querySelectorAll('main table')) {
        const caption = t.querySelector('caption') || t.closest('figure.table')?.querySelector(':scope > figcaption');
        if (!caption || !/^Table [A-Z0-9]+(\\.\\d+)*:/.test(caption.textContent.trim()))
            problems.push('a table has no number and caption (write ": Caption {#tbl-id}" under it): '
                          + JSON.stringify(t.textContent.trim().replace(/\\s+/g, ' ').slice(0, 60)));
    }
    return problems;
}"""

_MEASURE = """() => {
    const perLine = [];
    for (const p of document.querySelectorAll('main p')) {
        const lines = Math.round(p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight));
        if (lines >= 3) perLine.push(p.textContent.length / lines);
    }
    perLine.sort((a, b) => a - b);
    return perLine.length >= 3 ? perLine[Math.floor(perLine.length / 2)] : null;
}"""

_LINKS_AND_IDS = """() => ({
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
})"""

_BACKGROUND_LIGHTNESS = """() => {
    const [r, g, b] = getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number);
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}"""

_PHONE_START = """() => {
    const link = document.querySelector('.sidebar ol.chapters a');
    const r = link && link.getBoundingClientRect();
    const title = document.querySelector('main h1');
    return {
        chapterListShown: !!r && r.right > 0 && r.left < innerWidth && r.bottom > 0 && r.top < innerHeight
            && getComputedStyle(link).visibility !== 'hidden',
        titleTop: title ? Math.round(title.getBoundingClientRect().top) : null,
    };
}"""

# The first chapter link is on screen and nothing covers it.
_CHAPTER_LINK_ON_TOP = """() => {
    const link = document.querySelector('.sidebar ol.chapters a');
    if (!link) return false;
    const r = link.getBoundingClientRect();
    if (r.right <= 0 || r.left >= innerWidth || r.bottom <= 0 || r.top >= innerHeight) return false;
    const hit = document.elementFromPoint(r.left + Math.min(20, r.width / 2), r.top + r.height / 2);
    return !!hit && link.contains(hit);
}"""


def main_check(site: Path, log=print) -> list[str]:
    """`bookbuild verify --browser`: the checks, with screenshots in site/screenshots/; a missing browser is a
    problem under CI (CI=true) and a message elsewhere."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            return [f"the browser checks cannot run: {reason}"]
        log(f"browser checks skipped: {reason}")
        return []
    return check_site(site, site / "screenshots", log=log)

