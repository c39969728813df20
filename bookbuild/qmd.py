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
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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
            data = path.read_bytes()
        except FileNotFoundError:
            raise BookError(path, None, "file not found") from None
        text = _decode(path, data)
    lines = _lines(text)
    front, start = _front_matter(path, lines)
    cells: list[Cell] = []
    markdown: list[str] = []
    markdown_start = start + 1
    i = start
    while i < len(lines):
        m = _fence(lines[i])
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


def _decode(path: Path, data: bytes) -> str:
    """The file's text; bytes that are not UTF-8 are a BookError at their line, not a UnicodeDecodeError."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = len(_LINE_BREAK.split(data[: e.start].decode("utf-8")))
        raise BookError(path, line, f"is not valid UTF-8 (byte {data[e.start]:#04x}); save it as UTF-8") from None


def _lines(text: str) -> list[str]:
    r"""Split at \n, \r\n and \r only: the line breaks that editors, git and pandoc count.

    `str.splitlines` also breaks at \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029.
    That shifted every line number reported after such a character, and cut
    a line of code in two where Python sees none (\f is whitespace to it).
    """
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":  # a final line break ends the last line; it does not begin another
        lines.pop()
    return lines


def _fence(line: str) -> re.Match | None:
    """The code fence that `line` opens, if any.

    As in CommonMark, the info string of a backtick fence may not contain a
    backtick, so prose such as "```{python}``` opens a cell" is inline code,
    not a fence that swallows the rest of the chapter.
    """
    m = _FENCE.match(line)
    if m and m.group("fence")[0] == "`" and "`" in m.group("info"):
        return None
    return m


def _front_matter(path: Path, lines: list[str]) -> tuple[dict, int]:
    if not lines or lines[0].strip() != "---":
        return {}, 0
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            data = _load_yaml(path, "\n".join(lines[1:end]), 2, "invalid YAML front matter") or {}
            if not isinstance(data, dict):  # Quarto and pandoc need a mapping, and so does every reader of it
                raise BookError(path, 2, "front matter must be `key: value` lines")
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
    options = {}
    if option_lines:
        options = _load_yaml(path, "\n".join(option_lines), fence_line + 1, "invalid #| cell options") or {}
    if not isinstance(options, dict):
        raise BookError(path, fence_line + 1, "#| cell options must be `key: value` lines")
    source = "\n".join(body[len(option_lines) :])
    return Cell("code", source, fence_line, path, options, option_lines)


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader whose every error is a YAMLError with a position, and which refuses cycles.

    SafeLoader parses `2001-02-30`, `!!int abc` or `!!bool maybe` and then
    fails to build the value with a bare ValueError, KeyError or
    AttributeError that says neither what nor where.  And it loads
    `&a [*a]` as a list that contains itself, which no later step can
    compare, copy into a notebook or print.
    """

    _open_anchors: frozenset = frozenset()  # anchors of the nodes being composed

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self._open_anchors:
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} refers to a value that contains it", event.start_mark
            )
        if isinstance(event, yaml.AliasEvent) or event.anchor is None:
            return super().compose_node(parent, index)
        outer, self._open_anchors = self._open_anchors, self._open_anchors | {event.anchor}
        try:
            return super().compose_node(parent, index)
        finally:
            self._open_anchors = outer

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as e:  # whatever a constructor raises, the value is at fault
            problem = "invalid value"
            if isinstance(node.value, str):  # a scalar: name it and the type it failed to be
                problem = f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}"
            if isinstance(e, ValueError):  # e.g. "day is out of range for month"
                problem += f" ({e})"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


def _load_yaml(path: Path, text: str, first_line: int, what: str):
    r"""Load YAML that starts at `first_line` of the file; any failure is a BookError at the line at fault.

    The line is counted from the error's character index, not from its
    `line`: YAML also breaks lines at \x85, \u2028 and \u2029, which are
    ordinary characters within a line of a .qmd.
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        index = mark.index if mark else getattr(e, "position", 0)  # a ReaderError has only a position
        problem = _yaml_problem(e)
    except RecursionError:  # the composer recurses once per level of [[[...]]]
        index, problem = 0, "nested too deeply"
    offset = text.count("\n", 0, index)
    raise BookError(path, first_line + offset, f"{what}: {problem}")


def _yaml_problem(e: yaml.YAMLError) -> str:
    return str(getattr(e, "problem", None) or e).strip().partition("\n")[0] or "invalid YAML"


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
