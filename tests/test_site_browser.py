"""The website in a real browser (bookbuild.browser): Debian's Chromium, headless, driven by Playwright over a static
server on 127.0.0.1, opens the fixture book's pages at 1280 and 390 px, light and dark (about a minute).

`make test` runs the same checks over the real book (`bookbuild verify --browser`), with screenshots in
_book/screenshots/. Here the fixture book must pass them, and a copy of it with faults put in must fail them, each
fault by name.
"""

import os
import shutil

import pytest

from bookbuild import browser, build, html, pandoc, project, tangle
from conftest import FIXTURE_BOOK


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    problem = browser.unavailable()
    if problem:  # CI must run these tests; a developer's machine may lack the browser
        (pytest.fail if os.environ.get("CI") else pytest.skip)(problem)
    root = tmp_path_factory.mktemp("browser") / "book"
    shutil.copytree(FIXTURE_BOOK, root)
    book = project.load(root)
    tangle.write(book, tangle.tangle(book))
    build.build(book, log=lambda *_: None)
    return book.output_dir


def test_the_site_holds_up_at_desktop_and_phone_widths(site):
    problems = browser.check_site(site, site / "screenshots", log=lambda *_: None)
    assert problems == []
    shots = {p.relative_to(site / "screenshots").as_posix() for p in (site / "screenshots").rglob("*.png")}
    for screen in ("desktop", "phone"):
        for theme in ("light", "dark"):
            for page in ("index", "01-first", "02-second"):  # a page in one part, or in parts -01, -02...
                folder = f"{screen}-{theme}"
                assert {f"{folder}/{page}.png", f"{folder}/{page}-01.png"} & shots, (folder, page)
    assert "phone-light/02-second-02.png" in shots  # every part of a long page, in light
    page = (site / "01-first.html").read_text()
    # no flash of the wrong theme: the theme is set before the stylesheet loads
    assert page.index('localStorage.getItem("book-theme")') < page.index('<link rel="stylesheet" href="book.css">')


def test_faults_a_reader_would_notice_are_found(site, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(site, broken, ignore=shutil.ignore_patterns("screenshots"))

    def edit(name, old, new):
        path = broken / name
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} is not in {name}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    # 02-second: something too wide for a phone, a link to a place that is not there, code wrapped at the left edge
    edit("02-second.html", "<main>", '<main><div style="width: 700px">a fixed-width banner</div>'
                                     '<a href="01-first.html#nowhere">gone</a>')
    edit("02-second.html", "</head>", "<style>main pre > code.sourceCode > span "
                                      "{ padding-left: 0 !important; text-indent: 0 !important; }</style></head>")
    # 01-first (where the controls are tried): a missing figure, a menu that does not open
    edit("01-first.html", "figures/01-first/fig-line.png", "figures/01-first/missing.png")
    edit("01-first.html", "</head>", "<style>body.menu-open .sidebar { transform: translateX(-100%); }</style></head>")
    # the site's script: a theme toggle that does nothing, a copy button that copies the wrong text
    edit("book.js", 'setTheme(root.dataset.theme === "dark" ? "light" : "dark", true);', "")
    edit("book.js", 'block.querySelector("code").textContent', '"print()"')
    # tables without a number
    edit("02-second.html", "<strong>Table 2.1:</strong>", "")

    problems = "\n".join(browser.check_site(broken, log=lambda *_: None))
    for expected in [
        "02-second.html (phone): the page scrolls sideways",
        'div "a fixed-width banner" reaches',
        "02-second.html: the link to 01-first.html#nowhere finds no such place",
        "02-second.html (desktop): code line wraps to the left of its indentation",
        "01-first.html (desktop): image 'figures/01-first/missing.png' is broken",
        "figures/01-first/missing.png answered HTTP 404",
        "01-first.html (phone): the menu button does not show the chapter list",
        "01-first.html (desktop): the theme toggle does not darken the page",
        "01-first.html (desktop): the copy button copied 'print()'",
        "02-second.html (desktop): a table has no number and caption",
    ]:
        assert expected in problems, f"{expected!r} not reported in:\n{problems}"


def test_search_ranks_a_heading_match_above_a_mention_and_excerpts_the_match(site):
    """The best match first, not the first page: a word in a section's heading beats the same word in the text of
    an earlier section; the result shows the text around the word, the word marked."""
    from playwright.sync_api import sync_playwright

    with browser.serve(site) as base, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(browser.CHROMIUM))
        try:
            tab = chromium.new_page()
            tab.goto(base + "index.html")
            tab.locator("input.search").fill("layout")
            tab.wait_for_selector("ol.search-results a")
            results = tab.locator("ol.search-results a")
            assert results.first.get_attribute("href") == "02-second.html#sec-layout"
            assert "Layout" in results.first.locator(".where").inner_text()
            tab.locator("input.search").fill("wraps under")
            tab.wait_for_selector("ol.search-results a .excerpt mark")
            excerpt = results.first.locator(".excerpt").inner_text()
            assert "a long code line wraps under its own indentation" in excerpt
            assert results.first.locator("mark").all_inner_texts() == ["wraps", "under"]
            tab.locator("input.search").fill("zebra")
            tab.wait_for_selector("ol.search-results li.none")
        finally:
            chromium.close()


def test_tables_are_numbered_and_referenced_like_figures():
    doc = pandoc.parse("# Two {#sec-two}\n\n| a |\n|---|\n| 1 |\n\n: First. {#tbl-one}\n\n"
                       "![A line.](line.png){#fig-line}\n\n| b |\n|---|\n| 2 |\n\n: Second. {#tbl-two}\n\n"
                       "| no id |\n|---|\n| 3 |\n\nSee @tbl-two and @fig-line.\n")
    targets = pandoc.number_chapter(doc, 2, "02.html")
    assert [targets[i].text() for i in ("tbl-one", "fig-line", "tbl-two")] == ["Table 2.1", "Figure 2.1", "Table 2.2"]
    page = pandoc.convert(pandoc.finish(doc, targets, "html"), "html5")
    assert "<caption><strong>Table 2.2:</strong> Second.</caption>" in page
    assert '<a href="02.html#tbl-two" class="xref">Table 2.2</a>' in page
    wrapped = html._wrapped_tables(page)
    assert '<figure class="table" id="tbl-two"><figcaption><strong>Table 2.2:</strong> Second.</figcaption>' \
           '<div class="table-scroll"><table>' in wrapped
    assert wrapped.count('<div class="table-scroll">') == 3


def test_code_lines_carry_their_indentation():
    line = ('<span id="cb1-3"><a href="#cb1-3" aria-hidden="true" tabindex="-1"></a>        '
            '<span class="cf">return</span> x</span>')
    top = ('<span id="cb1-1"><a href="#cb1-1" aria-hidden="true" tabindex="-1"></a>'
           '<span class="kw">def</span> f():</span>')
    out = html._indented_code_lines(f"{top}\n{line}")
    assert out.splitlines()[0] == top
    assert out.splitlines()[1].startswith('<span style="--indent:8" id="cb1-3">')


def test_figures_show_at_their_size_in_inches_whatever_their_dpi(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for dpi in (110, 300):
        fig = plt.figure(figsize=(4, 2), dpi=dpi)
        fig.savefig(tmp_path / f"f{dpi}.png", dpi=dpi)
        plt.close(fig)
    page = html._sized_images('<img src="f110.png" alt="" /><img src="f300.png" alt="" /><img src="gone.png" />',
                              tmp_path)
    assert page == ('<img src="f110.png" alt="" width="440" height="220">'
                    '<img src="f300.png" alt="" width="440" height="220"><img src="gone.png" />')
