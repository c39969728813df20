"""Build the book: run the pre-render commands, execute what is stale, then render the website, the PDF and the EPUB.

The output is assembled in a staging directory and swapped in only when
everything succeeded, so a broken chapter never wipes the last good build.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import epub, execute, html, markdown, pandoc, pdf
from .project import Chapter, Project
from .qmd import BookError

STAMP = ".build-stamp"


def notebooks(project: Project, chapters=None, *, force: bool = False, log=print) -> dict[Chapter, object]:
    """The chapters as notebooks to render: current text with outputs, executing only chapters whose freeze is stale."""
    result = {}
    for chapter in chapters or project.chapters:
        nb = None if force else execute.frozen(project, chapter)
        if nb is None:
            log(f"executing {chapter.path}")
            t0 = time.perf_counter()
            nb = execute.execute(project, chapter, log=log)
            log(f"  done in {time.perf_counter() - t0:.1f}s")
        result[chapter] = nb
    return result


def build(project: Project, *, formats=("html", "pdf", "epub"), log=print) -> Path:
    pre_render(project, log=log)
    nbs = notebooks(project, log=log)
    stamp = _stamp(project, formats)
    out = project.output_dir
    if (out / STAMP).exists() and (out / STAMP).read_text() == stamp:
        log(f"{out.name}/ is up to date")
        return out

    staging = out.with_name(f"{out.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        docs, targets = {}, {}
        for chapter, nb in nbs.items():
            doc = pandoc.parse(markdown.chapter_markdown(nb, chapter.stem, staging))
            for ident, target in pandoc.number_chapter(doc, chapter.number, html.page_name(chapter)).items():
                if ident in targets:
                    raise BookError(chapter.path, _line_of(project, chapter, "#" + ident),
                                    f"id {ident!r} is also used on {targets[ident].page}; ids must be unique in the book")
                targets[ident] = target
            docs[chapter] = doc
        provenance = {c: nb.metadata.get("book", {}).get("provenance") for c, nb in nbs.items()}
        if "html" in formats:
            finished = {c: _finish(project, c, copy.deepcopy(d), targets, "html") for c, d in docs.items()}
            titles = {c: html.chapter_title(d) for c, d in docs.items()}
            html.write_site(project, staging, finished, titles, provenance)
            copy_resources(project, staging)
        if "pdf" in formats:
            finished = [_finish(project, c, copy.deepcopy(d), targets, "typst") for c, d in docs.items()]
            pdf.write_pdf(project, staging, finished, _pdf_provenance(provenance), log=log)
        if "epub" in formats:
            finished = [_finish(project, c, copy.deepcopy(d), targets, "epub") for c, d in docs.items()]
            epub.write_epub(project, staging, finished, _pdf_provenance(provenance))
        (staging / STAMP).write_text(stamp)
        _swap(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"built {out.relative_to(project.root)}/")
    return out


def pre_render(project: Project, log=print) -> None:
    """Run `project.pre-render` in the project root, as Quarto does before a render. `python` on the PATH is the
    interpreter running this build (the project's virtual environment), so commands find the book's packages."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    for command in project.pre_render:
        log(f"pre-render: {command}")
        status = subprocess.call(command, shell=True, cwd=project.root, env=env)
        if status:
            raise BookError(project.root / "_quarto.yml", None,
                            f"pre-render command {command!r} failed with exit status {status}")


def copy_resources(project: Project, site: Path) -> None:
    """Copy the files of `project.resources` into the site, keeping their paths."""
    for path in project.resource_files():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project.root / path, site / path)


def _finish(project: Project, chapter: Chapter, doc: dict, targets, fmt: str) -> dict:
    try:
        return pandoc.finish(doc, targets, fmt)
    except pandoc.UnresolvedReference as e:
        first = str(e).split(",")[0]
        raise BookError(chapter.path, _line_of(project, chapter, first),
                        f"unresolved cross-reference {e}: no section or figure has that id") from None


def _line_of(project: Project, chapter: Chapter, needle: str) -> int | None:
    for number, line in enumerate((project.root / chapter.path).read_text().splitlines(), 1):
        if needle in line:
            return number
    return None


def _stamp(project: Project, formats) -> str:
    """Everything the rendered output depends on, hashed: chapters (whose prose is not in the freeze key),
    notebooks, resources, renderer, config."""
    digest = hashlib.sha256(repr(sorted(formats)).encode())
    inputs = [project.root / "_quarto.yml", *sorted(Path(__file__).parent.rglob("*.*"))]
    inputs += [project.root / c.path for c in project.chapters]
    inputs += [execute.notebook_path(project, c) for c in project.chapters]
    inputs += [project.root / path for path in project.resource_files()]
    for path in inputs:
        if path.suffix != ".pyc":
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _pdf_provenance(provenance: dict) -> str:
    commits = sorted({p.get("commit") or "uncommitted" for p in provenance.values() if p})
    machines = sorted({(p.get("hardware") or {}).get("cpu", "?") for p in provenance.values() if p})
    return f"Every output in this book was computed by running it: commit {', '.join(commits)}, on {', '.join(machines)}."


def _swap(staging: Path, out: Path) -> None:
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
