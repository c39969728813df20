"""The .qmd reader: cells, options, and errors that name file and line."""

import pytest

from bookbuild import qmd
from bookbuild.qmd import BookError


def parse(tmp_path, text):
    path = tmp_path / "ch.qmd"
    path.write_text(text)
    return qmd.read(path)


def test_cells_options_and_lines(tmp_path):
    doc = parse(tmp_path, "# T\n\ntext\n\n```{python}\n#| label: a\n#| export: mod\nx = 1\n```\n\nmore\n")
    kinds = [c.kind for c in doc.cells]
    assert kinds == ["markdown", "code", "markdown"]
    cell = doc.code_cells[0]
    assert cell.options == {"label": "a", "export": "mod"}
    assert cell.source == "x = 1"
    assert cell.line == 5 and cell.code_line == 8


def test_plain_code_blocks_stay_prose(tmp_path):
    doc = parse(tmp_path, "````markdown\n```{python}\nx = 1\n```\n````\n")
    assert doc.code_cells == []
    assert "```{python}" in doc.cells[0].source


def test_front_matter_is_read(tmp_path):
    doc = parse(tmp_path, "---\ntitle: Hello\n---\n# T\n")
    assert doc.front_matter == {"title": "Hello"}


def test_unclosed_fence_names_its_line(tmp_path):
    with pytest.raises(BookError) as e:
        parse(tmp_path, "# T\n\n```{python}\nx = 1\n")
    assert e.value.line == 3 and "never closed" in e.value.message
    assert str(e.value).startswith(str(tmp_path / "ch.qmd") + ":3:")


def test_invalid_option_yaml_names_its_line(tmp_path):
    with pytest.raises(BookError) as e:
        parse(tmp_path, "# T\n\n```{python}\n#| label: ok\n#| tags: [a, b\nx = 1\n```\n")
    assert e.value.line in (5, 6) and "cell options" in e.value.message


def test_duplicate_labels_are_rejected(tmp_path):
    with pytest.raises(BookError) as e:
        parse(tmp_path, "```{python}\n#| label: a\n```\n\n```{python}\n#| label: a\n```\n")
    assert e.value.line == 5 and "line 1" in e.value.message
