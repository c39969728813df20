"""The website: one page per chapter with a sidebar, a table of contents and page links."""

from __future__ import annotations

import json
import re
import shutil
from html import escape
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
        previous = chapters[i - 1] if i > 0 else None
        following = chapters[i + 1] if i + 1 < len(chapters) else None
        page = _page(project, chapter, titles, css, toc, body, previous, following, provenance.get(chapter))
        (out / page_name(chapter)).write_text(page, encoding="utf-8")


def search_index(docs: dict[Chapter, dict], titles: dict[Chapter, str]) -> list[dict]:
    """One entry per section (prose only, no code) for the sidebar's search box."""
    entries = []
    for chapter, doc in docs.items():
        entry = {"page": page_name(chapter), "id": "", "title": titles[chapter], "text": []}
        entries.append(entry)
        for block in doc["blocks"]:
            if block["t"] == "Header" and block["c"][0] in (2, 3) and block["c"][1][0]:
                entry = {"page": page_name(chapter), "id": block["c"][1][0],
                         "title": f"{titles[chapter]}: {pandoc.stringify(block['c'][2])}", "text": []}
                entries.append(entry)
            elif block["t"] in ("Para", "Plain", "BulletList", "OrderedList", "Div"):
                entry["text"].append(pandoc.stringify(block))
    return [{**e, "text": " ".join(e["text"])} for e in entries]


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


def _page(project, chapter, titles, css, toc, body, previous, following, provenance) -> str:
    active = ' class="active"'
    items = "\n".join(
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
<title>{page_title}</title>
<link rel="stylesheet" href="book.css">
<style>{css}</style>
</head>
<body>
<aside class="sidebar">
<a class="book-title" href="index.html">{escape(project.title)}</a>
<div class="book-subtitle">{escape(project.subtitle)}</div>
<input class="search" type="search" placeholder="Search the book" aria-label="Search the book">
<ol class="search-results"></ol>
<ol class="chapters">
{items}
</ol>
<div class="downloads"><a href="{escape(project.output_file)}.pdf">Download the PDF</a></div>
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
