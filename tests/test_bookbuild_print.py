"""The book as printed and as an e-book: the PDF's figures, apostrophes and code, and the EPUB, checked by epubcheck."""

import os
import re
import shutil
import zipfile

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bookbuild import build, epub, pandoc, pdf, project, tangle, verify  # noqa: E402
from conftest import FIXTURE_BOOK  # noqa: E402

LONG_CODE = "total = " + " + ".join(f"value_{i}" for i in range(30))  # about 280 characters, wider than any page
EXTRA = f"""
## Printing {{#sec-printing}}

GPT-2's vocabulary, the 1990's, and Bob's book; a table in the next chapter: @tbl-powers.

```{{python}}
#| label: print-long-line
def nested():
    if True:
        {LONG_CODE.replace("total = ", "return ")}
print("x" * 200)
```
"""


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    root = tmp_path_factory.mktemp("printed") / "book"
    shutil.copytree(FIXTURE_BOOK, root)
    with open(root / "chapters" / "01-first.qmd", "a") as chapter:
        chapter.write(EXTRA)
    book = project.load(root)
    tangle.write(book, tangle.tangle(book))
    build.build(book, log=lambda *_: None)
    return book


def epub_pages(book) -> dict[str, str]:
    with zipfile.ZipFile(book.output_dir / "a-tiny-book.epub") as archive:
        return {name: archive.read(name).decode() for name in archive.namelist() if name.endswith(".xhtml")}


def test_epub_passes_epubcheck(printed):
    if verify.epubcheck_command() is None and os.environ.get("CI") != "true":
        pytest.skip("epubcheck is not installed (apt-get install epubcheck); CI installs it")
    assert verify.verify_epub(printed.output_dir / "a-tiny-book.epub") == []


def test_epub_keeps_figures_code_and_cross_references(printed):
    with zipfile.ZipFile(printed.output_dir / "a-tiny-book.epub") as archive:
        names = archive.namelist()
        assert names[0] == "mimetype" and archive.getinfo("mimetype").compress_type == zipfile.ZIP_STORED
        assert any(name.endswith(".png") for name in names)
    text = "\n".join(epub_pages(printed).values())
    # cross-references point into the file that holds their target, across chapters too
    second = next(page for page in epub_pages(printed).values() if "The second chapter</h1>" in page)
    assert re.search(r'href="ch\d+\.xhtml#fig-line"[^>]*>Figure 1\.1</a>', second)
    assert re.search(r'href="ch\d+\.xhtml#sec-first"[^>]*>Chapter 1</a>', second)
    assert '<div id="fig-line" class="figure">' in text and "Figure 1.1:" in text
    # figures are sized in em (an inch of figure at 7.2 em); callouts are open; code keeps its indentation
    assert re.search(r'<img src="[^"]+\.png"[^>]*style="width:\d+(\.\d)?em"', text)
    assert "Exercise 1.1" in text and "Solution" in text and "It is 25." in text
    assert 'style="padding-left: 10ch; text-indent: -10ch"' in text  # the `return` line, 8 spaces deep
    assert "[0, 1, 4, 9]" in text


def test_website_links_the_pdf_and_the_epub(printed):
    page = (printed.output_dir / "index.html").read_text()
    assert 'href="a-tiny-book.pdf"' in page and 'href="a-tiny-book.epub"' in page
    assert (printed.output_dir / "a-tiny-book.pdf").read_bytes().startswith(b"%PDF-")


def test_an_apostrophe_after_a_digit_stays_an_apostrophe_in_typst():
    doc = pandoc.finish(pandoc.parse("GPT-2's vocabulary, the 1990's and Bob's book."), {}, "typst")
    source = pandoc.convert(doc, "typst")
    # Typst's smart quotes print 2's as 2′s: the apostrophe after a digit must reach Typst as ’ itself
    assert "GPT-2’s" in source and "1990’s" in source and "2's" not in source
    assert "Bob's" in source  # elsewhere Typst's smart quotes already give an apostrophe


def test_images_are_sized_from_their_resolution(tmp_path):
    fig = plt.figure(figsize=(3, 2), dpi=200)
    fig.savefig(tmp_path / "small.png", dpi=200)
    plt.close(fig)
    wide = plt.figure(figsize=(10, 2))
    wide.savefig(tmp_path / "wide.png", dpi=100)
    wide.savefig(tmp_path / "wide.svg")
    plt.close(wide)
    assert pdf.image_size(tmp_path / "small.png") == pytest.approx((3.0, 2.0), abs=0.01)
    assert pdf.image_size(tmp_path / "wide.svg") == pytest.approx((10.0, 2.0), abs=0.01)
    doc = pandoc.parse("![A small figure](small.png)\n\n![A wide figure](wide.png)\n\n"
                       "![Set by hand](wide.png){width=50%}")
    sized, warnings = pdf.size_images(doc, tmp_path)
    widths = [dict(image["c"][0][2]).get("width") for image in _images(sized)]
    assert widths == ["3.000in", "10.000in", "50%"]
    too_wide, soft = warnings
    assert "wide.png" in too_wide and "wider than" in too_wide and "at 65%" in too_wide
    assert soft.startswith("2 images print below 300 ppi, the lowest at 155 ppi (wide.png)")
    assert pdf.png_ppi(tmp_path / "small.png") == pytest.approx(200, abs=1)


def test_epub_code_lines_hang_under_their_own_indentation():
    line = '<span id="cb3-7"><a href="#cb3-7" aria-hidden="true" tabindex="-1"></a>    <span class="cf">return</span>'
    assert epub._CODE_LINE.sub(epub._hanging, line).startswith(
        '<span style="padding-left: 6ch; text-indent: -6ch" id="cb3-7">')


def test_verify_reports_a_missing_epub(printed, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(printed.output_dir, site)
    (site / "a-tiny-book.epub").unlink()
    problems = "\n".join(verify.verify_site(printed, site))
    assert "a-tiny-book.epub: the EPUB is missing" in problems
    assert "link 'a-tiny-book.epub' points to a missing file" in problems


def _images(doc):
    found = []
    pandoc.walk(doc, lambda node: found.append(node) if node["t"] == "Image" else None)
    return found


def test_a_missing_epubcheck_fails_only_under_ci(printed, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no epubcheck, no java
    book = printed.output_dir / "a-tiny-book.epub"
    monkeypatch.setenv("CI", "true")
    assert any("epubcheck is not installed" in p for p in verify.verify_epub(book))
    monkeypatch.delenv("CI")
    heard = []
    assert verify.verify_epub(book, log=heard.append) == []
    assert heard and "not validated" in heard[0]
