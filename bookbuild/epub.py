"""The EPUB: all chapters in one e-book, written by pandoc from the same AST as the website and the PDF.

Pandoc splits the book into one file per chapter and rewrites the `#id` links of
cross-references to point into the right file. Two things are done here that an
e-reader needs and pandoc does not do: figures are sized in `em`, so their text
stays near the reader's own font size (bookbuild/pdf.py sizes them in inches for
the same reason), and each line of code gets a hanging indent under its own
indentation, so that a line wrapped on a narrow screen still shows its nesting.
"""

from __future__ import annotations

import json
import re
import uuid
import zipfile
from pathlib import Path

import pypandoc

from . import pandoc, pdf
from .project import Project

STYLESHEET = Path(__file__).parent / "assets" / "epub.css"
# A figure's text is set at 10 pt: at 7.2 em per figure inch (72 pt / 10 pt) it prints at the reader's font size.
EM_PER_INCH = 72 / 10
_CODE_LINE = re.compile(r'(<span id="cb\d+-\d+">(?:<a [^>]*></a>)?)( *)')


def write_epub(project: Project, out: Path, docs: list[dict], provenance: str) -> Path:
    """Write the finished epub ASTs (in chapter order) into out/<output-file>.epub; image paths are relative to out/."""
    book = {"pandoc-api-version": docs[0]["pandoc-api-version"], "meta": {}, "blocks": []}
    for doc in docs:
        book["blocks"].extend(doc["blocks"])
    book = pandoc.walk(book, lambda node: _sized(node, out))
    book = pandoc.walk(book, _without_scripts)
    book = pandoc.walk(book, _figure_anchor)
    book = pandoc.walk(book, _visible_controls)
    epub = out / f"{project.output_file}.epub"
    pypandoc.convert_text(json.dumps(book), "epub3", format="json", outputfile=str(epub), extra_args=[
        "--toc", "--toc-depth=2", "--split-level=1", "--mathml", "--syntax-highlighting=pygments",
        f"--css={STYLESHEET}", f"--resource-path={out}",
        "-M", f"title={project.title}", "-M", f"subtitle={project.subtitle}", "-M", f"author={project.author}",
        "-M", "lang=en", "-M", f"description={provenance}",
        "-M", f"identifier=urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'book:' + project.title)}",
    ])
    _indent_code_lines(epub)
    return epub


def _sized(node: dict, out: Path):
    if node["t"] != "Image" or any(key in ("width", "height") for key, _ in node["c"][0][2]):
        return None
    size = pdf.image_size(out / node["c"][2][0])
    if size:
        node["c"][0][2].append(["width", f"{size[0] * EM_PER_INCH:.1f}em"])
    return node


def _figure_anchor(node: dict):
    """Pandoc points `#id` links into the chapter file that holds the id, but not for a figure's own id: a div
    around the figure carries it instead."""
    if node["t"] != "Figure" or not node["c"][0][0]:
        return None
    ident = node["c"][0][0]
    node["c"][0][0] = ""
    return {"t": "Div", "c": [[ident, ["figure"], []], [node]]}


def _visible_controls(node: dict):
    if node["t"] == "Str":
        node["c"] = pandoc.visible_controls(node["c"])
    elif node["t"] in ("Code", "CodeBlock"):
        node["c"][1] = pandoc.visible_controls(node["c"][1])
    return node


def _without_scripts(node: dict):
    """Raw HTML that loads scripts or stylesheets is the website's (an interactive page): an e-book has neither."""
    if node["t"] in ("RawBlock", "RawInline") and node["c"][0] == "html":
        if re.search(r"<(script|link)\b", node["c"][1]):
            return []
    return None


def _indent_code_lines(epub: Path) -> None:
    """Give each highlighted code line a hanging indent of its own leading spaces plus two (pandoc writes every
    line as `<span id="cbN-M">`), rewriting the archive with its `mimetype` first and uncompressed, as EPUB wants."""
    with zipfile.ZipFile(epub) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(epub, "w") as archive:
        for info, data in entries:
            if info.filename.endswith(".xhtml"):
                data = _CODE_LINE.sub(_hanging, data.decode("utf-8")).encode("utf-8")
            archive.writestr(info, data, compress_type=zipfile.ZIP_STORED if info.filename == "mimetype"
                             else zipfile.ZIP_DEFLATED)


def _hanging(match: re.Match) -> str:
    depth = len(match.group(2)) + 2
    opening = match.group(1).replace("<span ", f'<span style="padding-left: {depth}ch; text-indent: -{depth}ch" ', 1)
    return opening + match.group(2)
