"""The website: one page per chapter with a sidebar, a table of contents and page links."""

from __future__ import annotations

import json
import re
import shutil
import struct
from html import escape, unescape
from pathlib import Path

from . import pandoc
from .project import Chapter, Project

ASSETS = Path(__file__).parent / "assets"


def chapter_title(doc: dict) -> str:
    for block in doc["blocks"]:
        if block["t"] == "Header" and block["c"][0] == 1:
            return pandoc.stringify(block["c"][2])
    return "Untitled"


def write_site(project: Project, out: Path, docs: dict[Chapter, dict], titles: dict[Chapter, str],
               provenance: dict[Chapter, dict]) -> None:
    """Write every page of the site into out/ (docs are finished ASTs for html)."""
    for asset in ("book.css", "book.js"):
        shutil.copy(ASSETS / asset, out / asset)
    shutil.copytree(ASSETS / "fonts", out / "fonts", dirs_exist_ok=True)  # the site's own fonts, with their licences
    # A script rather than JSON so that search also works on pages opened from disk (file://).
    (out / "search-index.js").write_text(f"window.bookSearchIndex = {json.dumps(search_index(docs, titles))};\n",
                                         encoding="utf-8")
    chapters = list(docs)
    for i, chapter in enumerate(chapters):
        css, toc, body = pandoc.convert(docs[chapter], "html5", [
            "--standalone", f"--template={ASSETS / 'fragment.html'}", "--toc", "--toc-depth=3",
            "--mathml", "--syntax-highlighting=pygments", "--wrap=none",
        ]).split("<!--book:split-->")
        toc = _without_title(toc)
        body = _wrapped_tables(_sized_images(_indented_code_lines(body), out))
        previous = chapters[i - 1] if i > 0 else None
        following = chapters[i + 1] if i + 1 < len(chapters) else None
        page = _page(project, chapter, titles, css, toc, body, previous, following, provenance.get(chapter))
        (out / page_name(chapter)).write_text(page, encoding="utf-8")


def search_index(docs: dict[Chapter, dict], titles: dict[Chapter, str]) -> list[dict]:
    """One entry per section (prose, captions and tables; no code) for the sidebar's search box. book.js ranks
    a match in the chapter's title above one in the section's heading, and both above matches in the text."""
    entries = []
    for chapter, doc in docs.items():
        entry = {"page": page_name(chapter), "id": "", "chapter": titles[chapter], "heading": "", "text": []}
        entries.append(entry)
        for block in doc["blocks"]:
            if block["t"] == "Header" and block["c"][0] in (2, 3) and block["c"][1][0]:
                entry = {"page": page_name(chapter), "id": block["c"][1][0], "chapter": titles[chapter],
                         "heading": pandoc.stringify(block["c"][2]), "text": []}
                entries.append(entry)
            elif block["t"] in ("Para", "Plain", "BulletList", "OrderedList", "Div", "BlockQuote", "Figure",
                                "Table", "DefinitionList"):
                entry["text"].append(_words(block))
    return [{**e, "text": " ".join(t for t in e["text"] if t)} for e in entries]


def _words(block: dict) -> str:
    """A block's text, with a space between the paragraphs, list items and table cells it holds."""
    parts = []
    pandoc.walk(block, lambda node: parts.append(pandoc.stringify(node)) if node["t"] in ("Para", "Plain") else None)
    return " ".join(p for p in parts if p)


def _without_title(toc: str) -> str:
    """Drop the chapter title from its own table of contents, keeping the sections under it."""
    m = re.fullmatch(r"\s*<ul>\s*<li><a [^>]*>.*?</a>\s*(<ul>.*</ul>)\s*</li>\s*</ul>\s*", toc, re.S)
    return m.group(1) if m else toc


def page_name(chapter: Chapter) -> str:
    return "index.html" if chapter.path.name == "index.qmd" else chapter.html_name


def _label(chapter: Chapter, titles: dict) -> str:
    title = escape(titles[chapter])
    if chapter.number is None:
        return f'<span class="chapter-number"></span><span>{title}</span>'
    return f'<span class="chapter-number">{chapter.number}</span><span>{title}</span>'


def _part_heading(chapter: Chapter, chapters: list[Chapter]) -> str:
    """The heading "Appendices" above the first appendix in the sidebar, as Quarto shows it."""
    first_appendix = next((c for c in chapters if isinstance(c.number, str)), None)
    return '<li class="part">Appendices</li>\n' if chapter == first_appendix else ""


def _page(project, chapter, titles, css, toc, body, previous, following, provenance) -> str:
    active = ' class="active"'
    items = "\n".join(
        _part_heading(c, list(titles)) +
        f'<li><a href="{page_name(c)}"{active if c == chapter else ""}>{_label(c, titles)}</a></li>'
        for c in titles
    )
    nav = []
    if previous:
        nav.append(f'<a class="prev" href="{page_name(previous)}"><small>Previous</small>{escape(titles[previous])}</a>')
    if following:
        nav.append(f'<a class="next" href="{page_name(following)}"><small>Next</small>{escape(titles[following])}</a>')
    toc_html = f'<nav class="toc"><div class="toc-title">On this page</div>{toc}</nav>' if toc.strip() else ""
    footer = _provenance_footer(provenance)
    page_title = escape(titles[chapter]) + " – " + escape(project.title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{page_title}</title>
{_THEME_SCRIPT}
<link rel="stylesheet" href="book.css">
<style>{css}</style>
</head>
<body>
<header class="topbar">
<button class="menu-toggle" type="button" aria-controls="sidebar" aria-expanded="false"
 aria-label="Chapters and search">{_MENU_ICON}</button>
<a class="topbar-title" href="index.html">{escape(project.title)}</a>
{_THEME_TOGGLE}
</header>
<div class="backdrop"></div>
<aside class="sidebar" id="sidebar">
<div class="sidebar-head"><a class="book-title" href="index.html">{escape(project.title)}</a>
{_THEME_TOGGLE}</div>
<div class="book-subtitle">{escape(project.subtitle)}</div>
<input class="search" type="search" placeholder="Search the book" aria-label="Search the book">
<ol class="search-results"></ol>
<ol class="chapters">
{items}
</ol>
<div class="downloads">Download the book: <a href="{escape(project.output_file)}.pdf">PDF</a> ·
<a href="{escape(project.output_file)}.epub">EPUB</a></div>
</aside>
{toc_html}
<main><div class="content">
{body}
<nav class="page-nav">{''.join(nav)}</nav>
{footer}
</div></main>
<script src="book.js"></script>
</body>
</html>
"""


def _provenance_footer(provenance: dict | None) -> str:
    if not provenance:
        return ""
    hw = provenance.get("hardware", {})
    machine = hw.get("cuda") or f"{hw.get('cpu', 'unknown CPU')} ({hw.get('cpus')} CPUs)"
    commit = provenance.get("commit") or "uncommitted"
    if provenance.get("dirty"):
        commit += " with local changes"
    return (f'<footer class="provenance">Outputs on this page were computed at commit {escape(commit)}, '
            f'seed {provenance.get("seed")}, on {escape(machine)} with PyTorch {escape(str(provenance.get("torch")))}, '
            f'in {provenance.get("seconds")} s.</footer>')


# --- the page's furniture ----------------------------------------------------

# Run in <head> before anything is drawn, so a page never flashes the other theme: the reader's choice (kept by
# book.js in localStorage), else the system's.
_THEME_SCRIPT = """<script>(function () {
  var theme = null;
  try { theme = localStorage.getItem("book-theme"); } catch (e) {}
  if (theme !== "dark" && theme !== "light")
    theme = window.matchMedia && matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  document.documentElement.dataset.theme = theme;
})();</script>"""
_MENU_ICON = ('<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path d="M3 6h18M3 12h18M3 18h18" '
              'stroke="currentColor" stroke-width="2" stroke-linecap="round"/></svg>')
_THEME_TOGGLE = ('<button class="theme-toggle" type="button" aria-label="Switch to the dark theme">'
                 '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true"><circle cx="12" cy="12" r="8.5" '
                 'fill="none" stroke="currentColor" stroke-width="2"/><path d="M12 3.5a8.5 8.5 0 0 1 0 17z" '
                 'fill="currentColor"/></svg></button>')

# --- code lines and images -------------------------------------------------

# One line of a highlighted code block as pandoc writes it (--wrap=none keeps each on its own line of HTML).
_CODE_LINE = re.compile(r'<span id="cb\d+-\d+">(?:<a href="#cb\d+-\d+" aria-hidden="true" tabindex="-1"></a>)?'
                        r'([^\n]*)')
# CSS pixels per inch of a figure on screen: matplotlib's 10-point labels then show at about 15 px, near the body
# text. A figure saved at a higher dpi shows at the same size with more pixels, sharp on high-density screens.
SCREEN_PPI = 110


def _indented_code_lines(body: str) -> str:
    """Give every indented code line its indentation (--indent, in characters), so that book.css can wrap a long
    line under its own indentation rather than at the left edge."""
    def mark(m: re.Match) -> str:
        text = unescape(re.sub(r"<[^>]+>", "", m.group(1)))
        indent = len(text) - len(text.lstrip(" "))
        if not indent or indent == len(text):
            return m.group(0)
        return f'<span style="--indent:{indent}"' + m.group(0)[len("<span"):]
    return _CODE_LINE.sub(mark, body)


def _sized_images(body: str, site: Path) -> str:
    """Give each PNG a display size from its pixels and resolution (pHYs), at SCREEN_PPI: a figure saved at twice
    the dpi shows at the same size, twice as sharp."""
    def size(m: re.Match) -> str:
        tag = m.group(0)
        if re.search(r"\s(width|height)=", tag):
            return tag
        png = _png_size(site / unescape(m.group(1)))
        if png is None:
            return tag
        width, height, ppi = png
        scale = SCREEN_PPI / ppi
        return f'{tag[:-1].rstrip("/").rstrip()} width="{round(width * scale)}" height="{round(height * scale)}">'
    return re.sub(r'<img src="([^"]+\.png)"[^>]*>', size, body)


_TABLE = re.compile(r'<table(?P<attrs>[^>]*)>\s*(?:<caption>(?P<caption>.*?)</caption>)?(?P<rest>.*?</table>)', re.S)


def _wrapped_tables(body: str) -> str:
    """Each table in a box that scrolls sideways when the table is wider than the page, under its caption (which
    then spans the column, as a figure's does); the table's id moves to the box."""
    def wrap(m: re.Match) -> str:
        ident = re.search(r'\sid="([^"]*)"', m["attrs"])
        attrs = re.sub(r'\sid="[^"]*"', "", m["attrs"])
        caption = f"<figcaption>{m['caption']}</figcaption>" if m["caption"] is not None else ""
        box = f' id="{ident.group(1)}"' if ident else ""
        return f'<figure class="table"{box}>{caption}<div class="table-scroll"><table{attrs}>{m["rest"]}</div></figure>'
    return _TABLE.sub(wrap, body)


def _png_size(path: Path) -> tuple[int, int, float] | None:
    """(width, height, pixels per inch) of a PNG that states its resolution; None otherwise."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", data[16:24])
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"pHYs":
            per_x, _, unit = struct.unpack(">IIB", data[offset + 8:offset + 17])
            return (width, height, per_x * 0.0254) if unit == 1 and per_x else None
        if kind in (b"IDAT", b"IEND"):
            return None
        offset += 12 + length
    return None
