"""The PDF: all chapters in one Typst document, compiled without LaTeX."""

from __future__ import annotations

from pathlib import Path

import typst

from . import pandoc
from .project import Project
from .qmd import BookError

TEMPLATE = Path(__file__).parent / "assets" / "book.typ"
# Math symbols pandoc writes under names this Typst release does not know.
TYPST_SYMBOLS = {"dot.circle": "dot.o"}


def write_pdf(project: Project, out: Path, docs: list[dict], provenance: str) -> Path:
    """Compile the finished typst ASTs (in chapter order) into out/<output-file>.pdf.

    Image paths in the ASTs are relative to out/, so the .typ source is
    written there and compiled with out/ as Typst's root.
    """
    book = {"pandoc-api-version": docs[0]["pandoc-api-version"], "meta": {}, "blocks": []}
    for doc in docs:
        book["blocks"].extend(doc["blocks"])
    source = pandoc.convert(book, "typst", [
        "--standalone", f"--template={TEMPLATE}", "--syntax-highlighting=idiomatic", "--wrap=preserve",
        "-V", f"title={project.title}", "-V", f"subtitle={project.subtitle}",
        "-V", f"author={project.author}", "-V", f"provenance={provenance}",
    ])
    for pandoc_name, typst_name in TYPST_SYMBOLS.items():
        source = source.replace(pandoc_name, typst_name)
    typ = out / f"{project.output_file}.typ"
    typ.write_text(source, encoding="utf-8")
    pdf = out / f"{project.output_file}.pdf"
    try:
        typst.compile(str(typ), output=str(pdf), root=str(out))
    except Exception as e:
        kept = project.root / f"{project.output_dir.name}.failed.typ"  # the staging folder is removed
        kept.write_text(source, encoding="utf-8")
        raise BookError(kept, None, f"typst could not compile the book: {e}") from None
    typ.unlink()
    return pdf
