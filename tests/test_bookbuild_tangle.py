"""Tangling chapters into llm/: output, ownership, drift detection, all-or-nothing writes."""

import subprocess
import sys

import pytest

from bookbuild import project, tangle
from bookbuild.qmd import BookError


def tangled(root):
    book = project.load(root)
    return book, tangle.tangle(book)


def test_modules_have_headers_markers_and_chapter_order(minibook):
    _, files = tangled(minibook)
    assert sorted(files) == ["llm/__init__.py", "llm/numbers.py", "llm/powers.py"]
    numbers = files["llm/numbers.py"]
    assert numbers.startswith("# Generated from chapters/01-first.qmd by `make tangle`. Do not edit")
    assert "# -- chapters/01-first.qmd :: squares --" in numbers
    assert "llm.powers   chapters/02-second.qmd" in files["llm/__init__.py"]


def test_tangle_is_deterministic_and_idempotent(minibook):
    book, files = tangled(minibook)
    assert tangle.write(book, files) == sorted(files)
    assert tangle.write(book, tangle.tangle(book)) == []
    assert tangle.check(book, tangle.tangle(book)) == []


def test_generated_package_imports_and_works(minibook):
    book, files = tangled(minibook)
    tangle.write(book, files)
    out = subprocess.run([sys.executable, "-c", "from llm.powers import cube; print(cube(3))"],
                         cwd=minibook, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "27"


def test_hand_edit_is_reported_with_the_cell_to_edit(minibook):
    book, files = tangled(minibook)
    tangle.write(book, files)
    path = minibook / "llm" / "numbers.py"
    path.write_text(path.read_text().replace("return x * x", "return x ** 2"))
    problems = tangle.check(book, tangle.tangle(book))
    assert len(problems) == 1
    assert "Edit cell `squares` in chapters/01-first.qmd" in problems[0]
    assert "-    return x * x" in problems[0] and "+    return x ** 2" in problems[0]


def test_stray_module_is_reported(minibook):
    book, files = tangled(minibook)
    tangle.write(book, files)
    (minibook / "llm" / "extra.py").write_text("x = 1\n")
    assert any("llm/extra.py is not generated" in p for p in tangle.check(book, tangle.tangle(book)))


def append_cell(root, chapter, cell):
    path = root / "chapters" / chapter
    path.write_text(path.read_text() + "\n" + cell)


def test_module_claimed_by_two_chapters(minibook):
    append_cell(minibook, "02-second.qmd", "```{python}\n#| label: steal\n#| export: numbers\nx = 1\n```\n")
    with pytest.raises(BookError) as e:
        tangled(minibook)
    assert "chapters/02-second.qmd" in str(e.value.path) and "owned by chapters/01-first.qmd:7" in e.value.message


def test_exported_cell_that_does_not_parse(minibook):
    append_cell(minibook, "01-first.qmd", "```{python}\n#| label: broken\n#| export: numbers\ndef f(:\n    pass\n```\n")
    with pytest.raises(BookError) as e:
        tangled(minibook)
    text = (minibook / "chapters" / "01-first.qmd").read_text().splitlines()
    assert text[e.value.line - 1] == "def f(:"
    assert "'broken' is not valid Python" in e.value.message


def test_exported_cell_needs_a_label(minibook):
    append_cell(minibook, "01-first.qmd", "```{python}\n#| export: numbers\nx = 1\n```\n")
    with pytest.raises(BookError, match="needs a `#| label:`"):
        tangled(minibook)


def test_errors_write_nothing(minibook):
    book, files = tangled(minibook)
    tangle.write(book, files)
    before = {p.name: p.read_text() for p in (minibook / "llm").glob("*.py")}
    (minibook / "chapters" / "01-first.qmd").write_text(
        (minibook / "chapters" / "01-first.qmd").read_text().replace("return x * x", "return x * x * 1")
    )
    append_cell(minibook, "02-second.qmd", "```{python}\n#| label: bad\n#| export: powers\n)\n```\n")
    with pytest.raises(BookError):
        tangle.write(book, tangle.tangle(book))
    assert {p.name: p.read_text() for p in (minibook / "llm").glob("*.py")} == before
