"""Freeze keys follow the code, not the prose: what re-executes a chapter, what only re-renders it."""

import subprocess
import sys

import nbformat
import pytest

from bookbuild import build, execute, project, tangle
from conftest import ROOT

FIRST, SECOND, PREFACE = "chapters/01-first.qmd", "chapters/02-second.qmd", "index.qmd"


def load(root):
    """The book after `make tangle`, as the build sees it."""
    book = project.load(root)
    tangle.write(book, tangle.tangle(book))
    return book


def keys(book) -> dict[str, str]:
    return {c.path.as_posix(): execute.freeze_key(book, c) for c in book.chapters}


def edit(root, chapter: str, old: str, new: str) -> None:
    path = root / chapter
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


# Edits that change how a chapter reads but not what it computes.
PROSE = (FIRST, "Some text with", "Different words, then text with")
DOCSTRING = (FIRST, '"""The square of x."""', '"""x times itself,\n    for any integer x."""')
MODULE_DOCSTRING = (FIRST, '"""Numbers used by the test book."""', '"""Numbers that the test book uses."""')
COMMENT = (SECOND, "    return square(x) * x", "    # cube via square\n    return square(x) * x  # x * x * x")
LAYOUT = (FIRST, "print([square(i) for i in range(4)])", "print([square(i)\n       for i in range(4)])")
PRESENTATION = (FIRST, '#| fig-cap: "A straight line."', '#| fig-cap: "A line."\n#| fig-alt: "A line."\n#| echo: false')


@pytest.mark.parametrize("change", [PROSE, DOCSTRING, MODULE_DOCSTRING, COMMENT, LAYOUT, PRESENTATION],
                         ids=["prose", "docstring", "module-docstring", "comment", "layout", "presentation"])
def test_reading_edits_keep_every_freeze(minibook, change):
    before = keys(load(minibook))
    edit(minibook, *change)
    assert keys(load(minibook)) == before


@pytest.mark.parametrize("change, stale", [
    ((FIRST, "range(4)", "range(5)"), {FIRST}),
    ((FIRST, "#| label: use-squares", "#| label: use-squares\n#| tags: [nbval-ignore-output]"), {FIRST}),
    ((FIRST, "#| label: use-squares", "#| label: use-squares\n#| eval: false"), {FIRST}),
    # chapter 2 imports llm.numbers, which chapter 1 exports: a logic change there reaches it through the import
    ((FIRST, "return x * x", "return x ** 2"), {FIRST, SECOND}),
    ((PREFACE, "A book with two chapters.", "A book.\n\n```{python}\n#| label: ext\nfrom llm import powers\n```\n"),
     {PREFACE}),
])
def test_code_edits_make_exactly_the_affected_freezes_stale(minibook, change, stale):
    before = keys(load(minibook))
    edit(minibook, *change)
    after = keys(load(minibook))
    assert {chapter for chapter in before if after[chapter] != before[chapter]} == stale


def test_the_import_walk_is_transitive(minibook):
    # The preface imports llm.powers only; llm.powers imports llm.numbers, which chapter 1 exports.
    edit(minibook, PREFACE, "A book with two chapters.", "```{python}\n#| label: ext\nfrom llm import powers\n```\n")
    before = keys(load(minibook))[PREFACE]
    edit(minibook, *DOCSTRING)
    assert keys(load(minibook))[PREFACE] == before
    edit(minibook, FIRST, "return x * x", "return x ** 2")
    assert keys(load(minibook))[PREFACE] != before


def test_a_cell_that_is_not_python_is_keyed_by_its_text(minibook):
    edit(minibook, SECOND, "print(cube(3))", "%time print(cube(3))")
    before = keys(load(minibook))[SECOND]
    edit(minibook, SECOND, "%time print(cube(3))", "%time print(cube(3))  # timed")
    assert keys(load(minibook))[SECOND] != before


def test_prose_and_docstring_edits_render_without_re_executing(minibook):
    book = load(minibook)
    build.build(book, formats=("html",), log=lambda *_: None)
    notebooks = {p.name: p.read_bytes() for p in (minibook / "_notebooks").glob("*.ipynb")}
    figures = {p.name: p.read_bytes() for p in (minibook / "figures").rglob("*") if p.is_file()}
    timing = _output(book, SECOND, "timing")  # a number that a second execution would change

    for change in (PROSE, DOCSTRING, COMMENT, PRESENTATION):
        edit(minibook, *change)
    messages = []
    build.build(load(minibook), formats=("html",), log=messages.append)

    assert not [m for m in messages if m.startswith("executing")], messages
    assert {p.name: p.read_bytes() for p in (minibook / "_notebooks").glob("*.ipynb")} == notebooks
    assert {p.name: p.read_bytes() for p in (minibook / "figures").rglob("*") if p.is_file()} == figures
    first = (minibook / "_book" / "01-first.html").read_text()
    assert "Different words, then text with" in first and "Some text with" not in first
    assert "x times itself," in first and "The square of x." not in first
    assert "<strong>Figure 1.1:</strong> A line." in first and "plt.plot" not in first  # echo: false now
    assert "[0, 1, 4, 9]" in first
    second = (minibook / "_book" / "02-second.html").read_text()
    assert "cube via square" in second and timing in second


def test_frozen_gives_the_current_text_with_the_outputs_of_the_run(minibook):
    book = load(minibook)
    chapter = book.chapter(SECOND)
    build.notebooks(book, [chapter], log=lambda *_: None)
    edit(minibook, *COMMENT)
    nb = execute.frozen(book, chapter)
    saved = nbformat.read(execute.notebook_path(book, chapter), as_version=4)
    assert "cube via square" in "".join(c.source for c in nb.cells)
    assert "cube via square" not in "".join(c.source for c in saved.cells)
    code, saved_code = ([c for c in n.cells if c.cell_type == "code"] for n in (nb, saved))
    assert [(c.outputs, c.execution_count) for c in code] == [(c.outputs, c.execution_count) for c in saved_code]
    assert nb.metadata["book"] == saved.metadata["book"]


def test_tangle_and_check_do_not_import_llm(minibook):
    script = ("import sys; from bookbuild.__main__ import main; "
              f"assert main(['--root', {str(minibook)!r}, 'tangle']) == 0; "
              f"assert main(['--root', {str(minibook)!r}, 'check']) == 0; "
              "assert 'llm' not in sys.modules and 'torch' not in sys.modules, 'imported llm'")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _output(book, chapter: str, label: str) -> str:
    nb = nbformat.read(execute.notebook_path(book, book.chapter(chapter)), as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("book", {}).get("label") == label)
    return "".join(o["text"] for o in cell.outputs).strip()
