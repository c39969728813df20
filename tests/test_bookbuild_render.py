"""Executing, freezing and rendering the fixture book end to end (runs real kernels, ~20 s)."""

import json
import shutil

import nbformat
import pytest

from bookbuild import build, execute, project, qmd, tangle, verify
from bookbuild.qmd import BookError
from conftest import FIXTURE_BOOK


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built") / "book"
    shutil.copytree(FIXTURE_BOOK, root)
    book = project.load(root)
    tangle.write(book, tangle.tangle(book))
    build.build(book, log=lambda *_: None)
    return book


def test_site_has_pages_figures_and_resolved_references(built):
    out = built.output_dir
    assert verify.verify_site(built) == []
    first = (out / "01-first.html").read_text()
    assert '<a href="01-first.html#fig-line" class="xref">Figure 1.1</a>' in first
    assert '<a href="01-first.html#sec-squares" class="xref">Section 1.1</a>' in first
    assert "<strong>Figure 1.1:</strong> A straight line." in first
    assert "[0, 1, 4, 9]" in first
    assert '<details class="callout callout-tip"><summary class="callout-title">Solution</summary>' in first
    second = (out / "02-second.html").read_text()
    assert '<a href="index.html"' in second and 'href="01-first.html" class="active"' not in second
    assert "<pre class=\"cell-output stdout\"><code>27</code></pre>" in second
    assert (out / "a-tiny-book.pdf").read_bytes().startswith(b"%PDF-")


def test_frozen_notebooks_and_figures_carry_provenance(built):
    nb = nbformat.read(built.root / "_notebooks" / "01-first.ipynb", as_version=4)
    meta = nb.metadata["book"]
    assert meta["chapter"] == "chapters/01-first.qmd"
    assert meta["freeze_key"] == execute.freeze_key(built, built.chapter("chapters/01-first.qmd"))
    record = json.loads((built.root / "figures" / "01-first" / "provenance.json").read_text())
    assert record["figures"] == ["fig-line.png"]
    assert {"commit", "seed", "hardware", "torch"} <= set(record)
    assert (built.root / "figures" / "01-first" / "fig-line.png").read_bytes()[:4] == b"\x89PNG"


def test_freeze_follows_the_chapter_and_its_imports(built):
    first, second = built.chapter("chapters/01-first.qmd"), built.chapter("chapters/02-second.qmd")
    assert execute.frozen(built, first) is not None and execute.frozen(built, second) is not None
    numbers = built.root / "llm" / "numbers.py"
    original = numbers.read_text()
    numbers.write_text(original + "\nCHANGED = True\n")
    try:  # chapter 2 imports llm.numbers, so its freeze is stale; the preface's is not
        assert execute.frozen(built, second) is None
        assert execute.frozen(built, built.chapter("index.qmd")) is not None
    finally:
        numbers.write_text(original)
    assert execute.frozen(built, second) is not None


def test_unchanged_book_is_not_rebuilt(built):
    messages = []
    build.build(built, log=messages.append)
    assert messages == ["_book/ is up to date"]


def test_failing_chapter_keeps_the_last_good_build(built):
    chapter = built.root / "chapters" / "02-second.qmd"
    original = chapter.read_text()
    notebook_before = (built.root / "_notebooks" / "02-second.ipynb").read_text()
    site_before = (built.output_dir / "02-second.html").read_text()
    chapter.write_text(original + "\n```{python}\n#| label: boom\nraise ValueError('broken on purpose')\n```\n")
    try:
        with pytest.raises(BookError) as e:
            build.build(built, log=lambda *_: None)
        assert e.value.line == len(original.splitlines()) + 2
        assert "'boom' failed" in e.value.message and "broken on purpose" in e.value.message
        assert (built.root / "_notebooks" / "02-second.ipynb").read_text() == notebook_before
        assert (built.output_dir / "02-second.html").read_text() == site_before
    finally:
        chapter.write_text(original)


def test_unresolved_reference_names_the_line(built):
    chapter = built.root / "chapters" / "01-first.qmd"
    original = chapter.read_text()
    chapter.write_text(original.replace("Some text", "See @fig-nowhere. Some text"))
    try:
        with pytest.raises(BookError) as e:
            build.build(built, log=lambda *_: None)
        assert e.value.line == 3 and "@fig-nowhere" in e.value.message
    finally:
        chapter.write_text(original)


def test_verify_finds_broken_links_images_and_raw_references(built, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(built.output_dir, site)
    page = site / "01-first.html"
    html = page.read_text()
    html = html.replace('href="02-second.html"', 'href="03-missing.html"', 1)
    html = html.replace("figures/01-first/fig-line.png", "figures/nope.png")
    html = html.replace("Some text", "See ?? and @fig-raw. Some text")
    page.write_text(html)
    problems = "\n".join(verify.verify_site(built, site))
    assert "03-missing.html" in problems
    assert "figures/nope.png" in problems
    assert "'??'" in problems and "'@fig-raw'" in problems


def test_notebook_cell_ids_are_stable_and_valid(built):
    document = qmd.read(built.root / "chapters/01-first.qmd")
    first, second = execute.to_notebook(document), execute.to_notebook(document)
    ids = [cell.id for cell in first.cells]
    assert ids == [cell.id for cell in second.cells]
    assert len(set(ids)) == len(ids)
    nbformat.validate(first)
