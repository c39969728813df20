"""Read Quarto `.qmd` files into cells.

Both render paths (Quarto itself and the embedded one in this package) see a
chapter as a sequence of markdown and executable code cells.  This module is
the one place that turns the text into that sequence, so every later step
(tangle, execution, rendering) reports errors with the same file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# An executable cell opens with ```{python} (Quarto also accepts {.python}).
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*?)\s*$")
_EXECUTABLE = re.compile(r"^\{\.?python\b[^}]*\}$")
_OPTION = re.compile(r"^#\|\s?(.*)$")


class BookError(Exception):
    """An error in the book's sources, reported as `file:line: message`."""

    def __init__(self, path: Path | str, line: int | None, message: str):
        self.path, self.line, self.message = Path(path), line, message
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass
class Cell:
    """One markdown block or one executable code cell of a chapter."""

    kind: str  # "markdown" or "code"
    source: str  # for code: the code without its `#|` option lines
    line: int  # 1-based line of the opening fence (code) or first line (markdown)
    path: Path
    options: dict = field(default_factory=dict)
    option_lines: list[str] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        return self.options.get("label")

    @property
    def code_line(self) -> int:
        """Line in the .qmd of the first line of `source`."""
        return self.line + 1 + len(self.option_lines)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Document:
    path: Path
    front_matter: dict
    cells: list[Cell]

    @property
    def code_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.kind == "code"]


def read(path: Path | str, text: str | None = None) -> Document:
    """Parse a .qmd file; raise BookError naming file and line on malformed input."""
    path = Path(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BookError(path, None, "file not found") from None
    lines = text.splitlines()
    front, start = _front_matter(path, lines)
    cells: list[Cell] = []
    markdown: list[str] = []
    markdown_start = start + 1
    i = start
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            markdown.append(lines[i])
            i += 1
            continue
        end = _closing_fence(lines, i, m.group("fence"))
        if end is None:
            raise BookError(path, i + 1, f"code fence {m.group('fence')} is never closed")
        if _EXECUTABLE.match(m.group("info")):
            if markdown:
                cells.append(Cell("markdown", "\n".join(markdown), markdown_start, path))
            cells.append(_code_cell(path, i + 1, lines[i + 1 : end]))
            markdown, markdown_start = [], end + 2
        else:  # a plain code block is part of the prose
            markdown.extend(lines[i : end + 1])
        i = end + 1
    if markdown:
        cells.append(Cell("markdown", "\n".join(markdown), markdown_start, path))
    _check_labels(path, cells)
    return Document(path, front, [c for c in cells if c.kind == "code" or c.source.strip()])


def _front_matter(path: Path, lines: list[str]) -> tuple[dict, int]:
    if not lines or lines[0].strip() != "---":
        return {}, 0
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            try:
                data = yaml.safe_load("\n".join(lines[1:end])) or {}
            except yaml.YAMLError as e:
                line = getattr(getattr(e, "problem_mark", None), "line", 0) + 2
                raise BookError(path, line, f"invalid YAML front matter: {e}") from None
            return data, end + 1
    raise BookError(path, 1, "front matter opened with --- is never closed")


def _closing_fence(lines: list[str], start: int, fence: str) -> int | None:
    char, width = fence[0], len(fence)
    for j in range(start + 1, len(lines)):
        stripped = lines[j].strip()
        if len(stripped) >= width and set(stripped) == {char}:
            return j
    return None


def _code_cell(path: Path, fence_line: int, body: list[str]) -> Cell:
    option_lines = []
    for line in body:
        m = _OPTION.match(line)
        if not m:
            break
        option_lines.append(m.group(1))
    try:
        options = yaml.safe_load("\n".join(option_lines)) if option_lines else {}
    except yaml.YAMLError as e:
        offset = getattr(getattr(e, "problem_mark", None), "line", 0)
        raise BookError(path, fence_line + 1 + offset, f"invalid #| cell options: {_yaml_problem(e)}") from None
    options = options or {}
    if not isinstance(options, dict):
        raise BookError(path, fence_line + 1, "#| cell options must be `key: value` lines")
    source = "\n".join(body[len(option_lines) :])
    return Cell("code", source, fence_line, path, options, option_lines)


def _yaml_problem(e: yaml.YAMLError) -> str:
    return str(getattr(e, "problem", None) or e).strip()


def _check_labels(path: Path, cells: list[Cell]) -> None:
    seen: dict[str, int] = {}
    for cell in cells:
        label = cell.label
        if cell.kind != "code" or label is None:
            continue
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z][\w-]*", label):
            raise BookError(path, cell.line, f"cell label {label!r} must be a word like `bpe-train`")
        if label in seen:
            raise BookError(path, cell.line, f"cell label {label!r} is already used at line {seen[label]}")
        seen[label] = cell.line
