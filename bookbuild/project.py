"""The book project as `_quarto.yml` describes it.

Quarto reads the same file, so this module only reads the keys Quarto
defines (`book.title`, `book.chapters`, `book.appendices`, `project.output-dir`,
`project.resources`, `project.pre-render`, ...) and never invents new ones.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from .qmd import BookError


@dataclass(frozen=True)
class Chapter:
    path: Path  # relative to the project root, e.g. chapters/01-tokens.qmd
    number: int | str | None  # None for the unnumbered preface (index.qmd); "A", "B", ... for appendices

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def html_name(self) -> str:
        return f"{self.stem}.html"


@dataclass(frozen=True)
class Project:
    root: Path
    title: str
    subtitle: str
    author: str
    output_dir: Path
    output_file: str
    chapters: tuple[Chapter, ...]  # book.chapters, then book.appendices
    resources: tuple[str, ...] = ()  # project.resources: files copied into the site as they are
    pre_render: tuple[str, ...] = ()  # project.pre-render: shell commands run before every build

    def chapter(self, path: Path | str) -> Chapter:
        path = Path(path)
        if path.is_absolute():
            path = path.relative_to(self.root)
        for chapter in self.chapters:
            if chapter.path == path:
                return chapter
        raise BookError(path, None, "is not listed under book.chapters in _quarto.yml")

    def resource_files(self) -> list[Path]:
        """The files `project.resources` names, relative to the root: a folder stands for every file under it.

        Quarto also matches a relative entry in any subfolder (`data/` finds `a/data/` too); here every entry is
        read from the root, which is what an entry starting with `/` means to Quarto, so write them that way.
        """
        files: set[Path] = set()
        for entry in self.resources:
            pattern = entry.lstrip("/").rstrip("/")
            for match in self.root.glob(pattern):
                candidates = match.rglob("*") if match.is_dir() else [match]
                files |= {f.relative_to(self.root) for f in candidates if f.is_file()}
        return sorted(files)

    @property
    def notebooks_dir(self) -> Path:
        """Executed chapters, frozen as notebooks (committed; re-run by nbval)."""
        return self.root / "_notebooks"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def package_dir(self) -> Path:
        return self.root / "llm"


def load(root: Path | str = ".") -> Project:
    root = Path(root).resolve()
    config_path = root / "_quarto.yml"
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise BookError(config_path, None, "not found: is this the book's root directory?") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", -1) + 1
        raise BookError(config_path, line or None, f"invalid YAML: {e}") from None
    book = config.get("book") or {}
    if not isinstance(book, dict) or not book.get("chapters"):
        raise BookError(config_path, None, "needs a `book:` section with a `chapters:` list")
    title = str(book.get("title", "Untitled"))
    output_file = book.get("output-file") or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    settings = config.get("project") or {}
    return Project(
        root=root,
        title=title,
        subtitle=str(book.get("subtitle", "")),
        author=_author(book.get("author", "")),
        output_dir=root / (settings.get("output-dir") or "_book"),
        output_file=output_file,
        chapters=tuple(_chapters(config_path, root, book["chapters"], book.get("appendices") or [])),
        resources=tuple(_strings(settings.get("resources"))),
        pre_render=tuple(_strings(settings.get("pre-render"))),
    )


def _strings(value) -> list[str]:
    """A Quarto option that takes one string or a list of them."""
    return [] if value is None else [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _author(value) -> str:
    if isinstance(value, list):
        return ", ".join(a["name"] if isinstance(a, dict) else str(a) for a in value)
    return value["name"] if isinstance(value, dict) else str(value)


def _chapters(config_path: Path, root: Path, entries, appendices) -> list[Chapter]:
    """Flatten `chapters:` (plain entries and `part:` groups) and `appendices:`, numbering like Quarto: chapters
    1, 2, ..., appendices A, B, ..."""
    chapters, number = [], 0
    for path in _paths(config_path, root, entries):
        if path.name == "index.qmd":
            chapters.append(Chapter(path, None))
        else:
            number += 1
            chapters.append(Chapter(path, number))
    for letter, path in zip(string.ascii_uppercase, _paths(config_path, root, appendices)):
        chapters.append(Chapter(path, letter))
    return chapters


def _paths(config_path: Path, root: Path, entries) -> list[Path]:
    """The files of a `chapters:` or `appendices:` list (plain entries and `part:` groups), each checked to exist."""
    paths: list[Path] = []
    for entry in entries:
        if isinstance(entry, dict):  # - part: "Title"  chapters: [...]
            paths.extend(Path(p) for p in entry.get("chapters", []))
        else:
            paths.append(Path(entry))
    for path in paths:
        if not (root / path).exists():
            raise BookError(config_path, None, f"chapter {path} does not exist")
    return paths
