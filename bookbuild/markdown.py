"""Turn an executed chapter notebook into pandoc markdown.

This is where Quarto's cell options take effect in the embedded render:
`echo`, `include`, `output`, `eval`, `code-fold`, `fig-cap`, `warning`.
Images are written next to the page and referenced from the markdown.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import yaml

from .execute import figure_name

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cell_options(source: str) -> tuple[dict, str]:
    """Split a notebook cell's leading `#|` lines from its code."""
    lines = source.splitlines()
    options = []
    while lines and lines[0].startswith("#|"):
        options.append(lines.pop(0)[2:].strip())
    return (yaml.safe_load("\n".join(options)) or {}) if options else {}, "\n".join(lines)


def chapter_markdown(nb: nbformat.NotebookNode, stem: str, out_dir: Path) -> str:
    """Markdown for one chapter; figures are written under out_dir/figures/<stem>/."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.cell_type == "code":
            parts.append(_code_cell(cell, stem, out_dir))
    return "\n\n".join(p for p in parts if p) + "\n"


def _code_cell(cell, stem: str, out_dir: Path) -> str:
    options, code = cell_options(cell.source)
    if options.get("include") is False:
        return ""
    label = options.get("label") or f"cell-{cell.metadata.get('book', {}).get('line', 'x')}"
    blocks = []
    if options.get("echo", True) is not False and code.strip():
        block = _fenced(code.strip("\n"), "{.python .cell-code}")
        if options.get("code-fold"):
            block = f'::: {{.code-fold summary="{options.get("code-summary", "Code")}"}}\n{block}\n:::'
        blocks.append(block)
    if options.get("output", True) is not False and options.get("eval", True) is not False:
        blocks.extend(_outputs(cell, options, label, stem, out_dir))
    return "\n\n".join(blocks)


def _outputs(cell, options: dict, label: str, stem: str, out_dir: Path) -> list[str]:
    blocks, image_index = [], 0
    for output in _merged_streams(cell.get("outputs", [])):
        kind = output["output_type"]
        if kind == "stream":
            if output["name"] == "stderr" and options.get("warning") is False:
                continue
            text = _clean(output["text"])
            if text.strip():
                blocks.append(_fenced(text.rstrip("\n"), f"{{.cell-output .{output['name']}}}"))
        elif kind == "error":
            blocks.append(_fenced(_clean("\n".join(output["traceback"])), "{.cell-output .error}"))
        else:
            data = output.get("data", {})
            if "image/png" in data:
                blocks.append(_image(data["image/png"], options, label, image_index, stem, out_dir))
                image_index += 1
            elif "text/markdown" in data:
                blocks.append(data["text/markdown"])
            elif "text/html" in data:
                html = _fenced(data["text/html"], "{=html}")
                plain = _fenced(data.get("text/plain", ""), "{.cell-output}")
                blocks.append(f"::: {{.only-html}}\n{html}\n:::\n\n::: {{.only-pdf}}\n{plain}\n:::")
            elif "text/plain" in data:
                blocks.append(_fenced(_clean(data["text/plain"]), "{.cell-output}"))
    return blocks


def _image(data: str, options: dict, label: str, index: int, stem: str, out_dir: Path) -> str:
    name = figure_name(label, index)
    rel = Path("figures") / stem / name
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / rel).write_bytes(base64.b64decode(data))
    caption = options.get("fig-cap")
    if label.startswith("fig-") and index == 0 and caption:
        alt = options.get("fig-alt")
        attrs = f'#{label}' + (f' fig-alt="{_attr(alt)}"' if alt else "")
        return f"![{caption}]({rel.as_posix()}){{{attrs}}}"
    return f"![]({rel.as_posix()})"


def _attr(text: str) -> str:
    return str(text).replace('"', "&quot;")


def _merged_streams(outputs):
    """Join consecutive stream outputs of the same name, as Jupyter front ends show them."""
    merged = []
    for output in outputs:
        if (output["output_type"] == "stream" and merged and merged[-1]["output_type"] == "stream"
                and merged[-1]["name"] == output["name"]):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + output["text"]}
        else:
            merged.append(output)
    return merged


def _clean(text: str) -> str:
    """Drop ANSI colours and keep only the last redraw of carriage-return lines (progress bars)."""
    text = _ANSI.sub("", text)
    return "\n".join(line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
                     for line in text.split("\n"))


def _fenced(text: str, info: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"
