"""The PDF: all chapters in one Typst document, compiled without LaTeX."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import typst

from . import pandoc
from .project import Project
from .qmd import BookError

TEMPLATE = Path(__file__).parent / "assets" / "book.typ"
# Math symbols pandoc writes under names this Typst release does not know.
TYPST_SYMBOLS = {"dot.circle": "dot.o"}
# The width of book.typ's text column: A4 (21 cm) less its two 2.3 cm margins.
TEXT_WIDTH_IN = (21 - 2 * 2.3) / 2.54
# Pixels per inch of an image that does not say (CSS pixels; matplotlib always says).
DEFAULT_PPI = 96
# What print needs: below this, a raster figure looks soft on paper.
PRINT_PPI = 300


def write_pdf(project: Project, out: Path, docs: list[dict], provenance: str, log=print) -> Path:
    """Compile the finished typst ASTs (in chapter order) into out/<output-file>.pdf.

    Image paths in the ASTs are relative to out/, so the .typ source is
    written there and compiled with out/ as Typst's root.
    """
    book = {"pandoc-api-version": docs[0]["pandoc-api-version"], "meta": {}, "blocks": []}
    for doc in docs:
        book["blocks"].extend(doc["blocks"])
    book, warnings = size_images(book, out)
    for warning in warnings:
        log(f"PDF: {warning}")
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


def size_images(doc: dict, out: Path) -> tuple[dict, list[str]]:
    """Give every image its natural width, so that an inch of a figure is an inch of paper.

    Matplotlib sets its fonts in points for a figure of so many inches, and records its resolution in the PNG;
    printed at that size, a figure's labels are as large on paper as the chapter asked for (10 pt, near the
    body's 10.5 pt), however wide or tall the figure is. book.typ shrinks only what is wider than its column;
    the warnings returned with the new document name the figures it shrinks by more than a tenth, whose text
    then prints well below the body's size, and count the raster images that print below PRINT_PPI.
    """
    warnings, soft = [], []

    def visit(node):
        if node["t"] != "Image":
            return None
        attrs = node["c"][0][2]
        if any(key in ("width", "height") for key, _ in attrs):
            return None  # sized by the author
        size = image_size(out / node["c"][2][0])
        if size is None:
            return None
        width, _ = size
        attrs.append(["width", f"{width:.3f}in"])
        if width > TEXT_WIDTH_IN / 0.9:  # shrunk by more than a tenth: its text is no longer near the body's size
            scale = TEXT_WIDTH_IN / width
            warnings.append(f"{node['c'][2][0]} is {width:.1f} in wide, wider than the {TEXT_WIDTH_IN:.1f} in "
                            f"column: printed at {scale:.0%}, text set at 10 pt prints at {10 * scale:.1f} pt")
        ppi = png_ppi(out / node["c"][2][0])
        # A PNG stores its resolution in pixels per metre, so 300 ppi reads back as 299.9994: round before comparing.
        if ppi and round(ppi * max(1, width / TEXT_WIDTH_IN)) < PRINT_PPI:
            soft.append((ppi * max(1, width / TEXT_WIDTH_IN), node["c"][2][0]))
        return node

    doc = pandoc.walk(doc, visit)
    if soft:
        ppi, path = min(soft)
        warnings.append(f"{len(soft)} images print below {PRINT_PPI} ppi, the lowest at {ppi:.0f} ppi ({path}): "
                        "raise figure.dpi in chapters/matplotlibrc, or save vector figures")
    return doc, warnings


def png_ppi(path: Path) -> float | None:
    """A PNG's resolution in pixels per inch (None for other files)."""
    size = image_size(path)
    if size is None or path.suffix != ".png":
        return None
    with open(path, "rb") as f:
        width_px = struct.unpack(">I", f.read(24)[16:20])[0]
    return width_px / size[0]


def image_size(path: Path) -> tuple[float, float] | None:
    """(width, height) in inches of a PNG (from its pHYs resolution) or an SVG (from its width and height)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        width, height = struct.unpack(">II", data[16:24])
        ppi_x = ppi_y = DEFAULT_PPI
        offset = 8
        while offset + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[offset:offset + 8])
            if kind == b"pHYs":
                per_x, per_y, unit = struct.unpack(">IIB", data[offset + 8:offset + 17])
                if unit == 1 and per_x and per_y:  # pixels per metre
                    ppi_x, ppi_y = per_x * 0.0254, per_y * 0.0254
                break
            if kind in (b"IDAT", b"IEND"):
                break  # pHYs must come before the image data
            offset += 12 + length
        return width / ppi_x, height / ppi_y
    if path.suffix == ".svg":
        head = data[:4000].decode("utf-8", "replace")
        tag = re.search(r"<svg\b[^>]*>", head)
        if tag:
            sizes = [_svg_length(re.search(rf'\b{name}="([^"]+)"', tag.group(0))) for name in ("width", "height")]
            if None not in sizes:
                return sizes[0], sizes[1]
    return None


_UNITS_PER_INCH = {"in": 1, "pt": 72, "px": 96, "cm": 2.54, "mm": 25.4, "": 96}


def _svg_length(match) -> float | None:
    parsed = match and re.fullmatch(r"\s*([\d.]+)\s*(in|pt|px|cm|mm|)\s*", match.group(1))
    return float(parsed.group(1)) / _UNITS_PER_INCH[parsed.group(2)] if parsed else None
