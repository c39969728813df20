"""Quarto's book features, done on pandoc's JSON AST.

Pandoc parses the markdown; this module then numbers sections and figures
per chapter (Figure 2.3, Section 2.1), resolves `@sec-` and `@fig-`
cross-references across chapters, and turns callouts and folded code into
HTML, Typst or the EPUB's XHTML. The same AST feeds every output, so the
website, the PDF and the EPUB agree on every number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape

import pypandoc

# Quarto's format names for `.content-visible when-format=...`, by the output they select here.
# Quarto counts an EPUB as HTML too, but not as "html:js" (an e-reader runs no scripts).
FORMAT_ALIASES = {"html": {"html", "html5", "html:js"}, "typst": {"pdf", "typst", "latex"},
                  "epub": {"epub", "epub3", "html"}}
# An apostrophe right after a digit ("GPT-2's"): pandoc's typst writer turns ’ back into ', which Typst's smart
# quotes then print as a prime (2′s). Written as a raw ’ it stays an apostrophe.
_DIGIT_APOSTROPHE = re.compile(r"(?<=\d)’")
# Control characters (a model's sample may print one) are invalid in XML and invisible in a PDF.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CALLOUT_TITLES = {"note": "Note", "tip": "Tip", "warning": "Warning", "important": "Important", "caution": "Caution"}


def parse(markdown: str) -> dict:
    return json.loads(pypandoc.convert_text(markdown, "json", format="markdown"))


def convert(doc: dict, to: str, extra_args: list[str] | None = None) -> str:
    return pypandoc.convert_text(json.dumps(doc), to, format="json", extra_args=extra_args or [])


@dataclass(frozen=True)
class Target:
    """Something a cross-reference can point to."""

    kind: str  # "Chapter", "Appendix", "Section", "Figure" or "Table"
    number: str
    page: str  # the HTML page that holds it

    def text(self) -> str:
        return f"{self.kind} {self.number}"


# --- walking the AST -------------------------------------------------------

def walk(node, fn):
    """Apply fn to every dict node bottom-up; fn returns a replacement, a list to splice, or None."""
    if isinstance(node, list):
        out = []
        for item in node:
            new = walk(item, fn)
            if isinstance(item, dict) and isinstance(new, list):
                out.extend(new)
            else:
                out.append(new)
        return out
    if isinstance(node, dict):
        node = {k: walk(v, fn) for k, v in node.items()}
        if "t" in node:
            result = fn(node)
            return node if result is None else result
    return node


def stringify(node) -> str:
    parts = []

    def visit(n):
        if n.get("t") == "Str":
            parts.append(n["c"])
        elif n.get("t") in ("Space", "SoftBreak", "LineBreak"):
            parts.append(" ")
        elif n.get("t") == "Code":
            parts.append(n["c"][1])

    walk(node, visit)
    return "".join(parts)


def text_inlines(text: str) -> list[dict]:
    inlines = []
    for i, word in enumerate(text.split(" ")):
        if i:
            inlines.append({"t": "Space"})
        inlines.append({"t": "Str", "c": word})
    return inlines


def raw(fmt: str, text: str, inline: bool = False) -> dict:
    return {"t": "RawInline" if inline else "RawBlock", "c": [fmt, text]}


# --- numbering -------------------------------------------------------------

def number_chapter(doc: dict, chapter_number: int | str | None, page: str) -> dict[str, Target]:
    """Number headers and figures in place; return the chapter's cross-reference targets.

    Headers get a `number` attribute (rendered by `finish`); figures get
    "Figure N.k: " prepended to their caption, and tables with an id
    "Table N.k: ". Callout titles are not
    headers of the document and are skipped, as Quarto does.
    """
    targets: dict[str, Target] = {}
    counters = [0] * 6
    floats = {"Figure": 0, "Table": 0}

    def visit_blocks(blocks, in_callout=False):
        for index, block in enumerate(blocks):
            t = block.get("t")
            if t == "Header":
                if in_callout and index == 0:
                    continue
                level, (ident, classes, attrs), _ = block["c"]
                if chapter_number is None or "unnumbered" in classes:
                    if ident and level == 1:
                        targets[ident] = Target("Chapter", "", page)
                    continue
                if level == 1:
                    counters[:] = [chapter_number] + [0] * 5
                else:
                    counters[level - 1] += 1
                    counters[level:] = [0] * (6 - level)
                number = ".".join(str(n) for n in counters[:level])
                attrs.append(["number", number])
                if ident:
                    title_kind = "Appendix" if isinstance(chapter_number, str) else "Chapter"
                    targets[ident] = Target(title_kind if level == 1 else "Section", number, page)
            elif t in ("Figure", "Table"):  # a table is numbered when it has an id: `: Caption {#tbl-id}`
                ident = block["c"][0][0]
                if ident:
                    kind = "Figure" if t == "Figure" else "Table"
                    floats[kind] += 1
                    number = f"{chapter_number}.{floats[kind]}" if chapter_number else str(floats[kind])
                    targets[ident] = Target(kind, number, page)
                    caption_blocks = block["c"][1][1]
                    prefix = [{"t": "Strong", "c": text_inlines(f"{kind} {number}:")}, {"t": "Space"}]
                    if caption_blocks and caption_blocks[0]["t"] in ("Plain", "Para"):
                        caption_blocks[0]["c"][:0] = prefix
            elif t == "Div":
                classes = block["c"][0][1]
                visit_blocks(block["c"][1], in_callout=any(c.startswith("callout") for c in classes))

    visit_blocks(doc["blocks"])
    return targets


# --- cross-references, callouts and output-specific blocks ------------------

class UnresolvedReference(Exception):
    pass


def finish(doc: dict, targets: dict[str, Target], fmt: str) -> dict:
    """Resolve references and lower book constructs for fmt ("html", "typst" or "epub")."""
    missing = []

    def link_to(target: Target, ident: str, text: str) -> dict:
        url = f"{target.page}#{ident}" if fmt == "html" else f"#{ident}"
        return {"t": "Link", "c": [["", ["xref"], []], text_inlines(text), [url, ""]]}

    def fn(node):
        t = node["t"]
        if t == "Cite":
            citations = node["c"][0]
            if not all(c["citationId"] in targets for c in citations):
                missing.extend(c["citationId"] for c in citations if c["citationId"] not in targets
                               and c["citationId"].split("-")[0] in ("fig", "sec", "tbl"))
                return None
            links = []
            for c in citations:
                target = targets[c["citationId"]]
                text = target.number if c["citationMode"]["t"] == "SuppressAuthor" else target.text()
                links.append(link_to(target, c["citationId"], text))
            return _join(links)
        if t == "Header":
            return _header(node, fmt)
        if t == "Div":
            return _div(node, fmt)
        if t == "CodeBlock" and fmt == "typst" and "cell-output" in node["c"][0][1]:
            return _typst_output(node)
        if t == "Str" and fmt == "typst" and _DIGIT_APOSTROPHE.search(node["c"]):
            return _typst_apostrophes(node["c"])
        return None

    doc = walk(doc, fn)
    if missing:
        raise UnresolvedReference(", ".join(f"@{m}" for m in dict.fromkeys(missing)))
    return doc


def _join(links: list[dict]) -> list[dict]:
    """[a] -> a; [a, b] -> a and b; [a, b, c] -> a, b and c."""
    out = []
    for i, link in enumerate(links):
        if i == len(links) - 1 and i:
            out.extend([{"t": "Space"}, {"t": "Str", "c": "and"}, {"t": "Space"}])
        elif i:
            out.extend([{"t": "Str", "c": ","}, {"t": "Space"}])
        out.append(link)
    return out


def _visible(classes: list[str], attrs: dict, fmt: str) -> bool:
    """Quarto's conditional content: `.content-visible` or `.content-hidden`, `when-format` or `unless-format`."""
    names = FORMAT_ALIASES[fmt]
    if "when-format" in attrs:
        matches = attrs["when-format"] in names
    else:
        matches = attrs.get("unless-format") not in names
    return matches if "content-visible" in classes else not matches


def visible_controls(text: str) -> str:
    """Control characters as their Unicode pictures (U+001A as ␚), for the PDF and the EPUB."""
    return _CONTROL.sub(lambda m: chr(0x2421 if m.group() == "\x7f" else 0x2400 + ord(m.group())), text)


def _typst_output(node) -> dict:
    """A cell's output as a Typst `output` block (defined in book.typ), so it looks unlike code."""
    (_, classes, _), text = node["c"]
    text = visible_controls(text)
    kind = next((c for c in ("stderr", "error") if c in classes), "stdout")
    literal = text.replace("\\", "\\\\").replace('"', '\\"')
    return raw("typst", f'#output(kind: "{kind}", "{literal}")')


def _typst_apostrophes(text: str) -> list[dict]:
    pieces = _DIGIT_APOSTROPHE.split(text)
    out = [{"t": "Str", "c": pieces[0]}] if pieces[0] else []
    for piece in pieces[1:]:
        out.append(raw("typst", "’", inline=True))
        if piece:
            out.append({"t": "Str", "c": piece})
    return out


def _header(node, fmt):
    level, (ident, classes, attrs), inlines = node["c"]
    number = dict(attrs).get("number")
    if not number:
        return None
    attrs = [a for a in attrs if a[0] != "number"]
    if fmt in ("html", "epub"):
        span = {"t": "Span", "c": [["", ["header-section-number"], []], [{"t": "Str", "c": number}]]}
        inlines = [span, {"t": "Space"}] + inlines
    else:
        inlines = [{"t": "Str", "c": number}, {"t": "Space"}, {"t": "Space"}] + inlines
    return {"t": "Header", "c": [level, [ident, classes, attrs], inlines]}


def _div(node, fmt):
    (ident, classes, attrs), blocks = node["c"]
    attrs = dict(attrs)
    if "only-html" in classes:
        return blocks if fmt == "html" else []
    if "only-pdf" in classes:  # the plain-text twin of an HTML output: an e-reader gets it too
        return blocks if fmt in ("typst", "epub") else []
    if "content-visible" in classes or "content-hidden" in classes:
        return blocks if _visible(classes, attrs, fmt) else []
    if "code-fold" in classes:
        if fmt != "html":  # paper cannot fold: the code is shown, under its summary when the chapter gave one
            summary = attrs.get("summary", "Code")
            if summary == "Code":
                return blocks
            if fmt == "typst":
                return [raw("typst", f'#code-summary("{_typst_string(summary)}")'), *blocks]
            return [{"t": "Div", "c": [["", ["code-summary"], []], [{"t": "Para", "c": text_inlines(summary)}]]},
                    *blocks]
        summary = escape(attrs.get("summary", "Code"))
        return [raw("html", f'<details class="code-fold"><summary>{summary}</summary>'), *blocks, raw("html", "</details>")]
    kind = next((c.split("-", 1)[1] for c in classes if c.startswith("callout-")), None)
    if kind is None:
        return None
    title = attrs.get("title")
    if blocks and blocks[0]["t"] == "Header":
        title = stringify(blocks[0]["c"][2])
        blocks = blocks[1:]
    title = title or CALLOUT_TITLES.get(kind, kind.title())
    collapsed = attrs.get("collapse") in ("true", "True")
    if fmt == "html":
        if collapsed:
            open_tag = f'<details class="callout callout-{kind}"><summary class="callout-title">{escape(title)}</summary><div class="callout-body">'
            close_tag = "</div></details>"
        else:
            open_tag = (f'<div class="callout callout-{kind}"><div class="callout-title">{escape(title)}</div>'
                        '<div class="callout-body">')
            close_tag = "</div></div>"
        return [raw("html", open_tag), *blocks, raw("html", close_tag)]
    if fmt == "epub":  # e-readers cannot fold: the callout is open, built of plain divs that are always valid XHTML
        heading = {"t": "Div", "c": [["", ["callout-title"], []], [{"t": "Para", "c": text_inlines(title)}]]}
        return {"t": "Div", "c": [[ident, ["callout", f"callout-{kind}"], []], [heading, *blocks]]}
    return [raw("typst", f'#callout(kind: "{kind}", title: "{_typst_string(title)}")['), *blocks, raw("typst", "]")]


def _typst_string(text: str) -> str:
    """text inside a Typst string literal"""
    return text.replace("\\", "\\\\").replace('"', '\\"')
