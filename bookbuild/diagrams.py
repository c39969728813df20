"""Helpers for the book's conceptual diagrams: boxes, arrows and matrices drawn with matplotlib.

Plots show data; diagrams show how the pieces fit together (the BPE merge
loop, queries and keys, the KV cache). Drawing them in code keeps them in the
repository, rebuilt, numbered and cross-referenced like every other figure,
and lets a diagram take its numbers from the chapter's own tensors.

Coordinates are in inches. `canvas(6, 2.5)` gives a figure 6 inches wide and
2.5 high whose data coordinates run from (0, 0) at the lower left to (6, 2.5),
so a box 1.2 wide is 1.2 inches on the page and font sizes (in points) relate
to it directly: at the default 10 pt, a line of text is about 0.14 inch high
and a character about 0.08 inch wide. Every shape is placed by its lower-left
corner, as in matplotlib.

A chapter draws a diagram in a figure cell:

    from bookbuild.diagrams import canvas, box, arrow
    fig, ax = canvas(4, 1)
    a = box(ax, 0.1, 0.3, 1.2, 0.4, "text", color="blue")
    b = box(ax, 2.7, 0.3, 1.2, 0.4, "tokens", color="orange")
    arrow(ax, a.right, b.left, "encode")

`box` and `matrix` return a `Box` whose `left`, `right`, `top`, `bottom` and
`center` are the points where arrows attach, so layouts need little
arithmetic; `row` lays boxes side by side (a sequence of tokens) and returns
them all, and `visible` shows a token's spaces and newlines. Colours are
named from `PALETTE`; `tint` makes the light fills. The figure face is white,
so a diagram reads the same in the light and the dark theme of the website.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

# Okabe and Ito's colour-blind-safe colours, a little muted; each reads on white
# as an edge or as text, and `tint` of it as a fill under dark text.
PALETTE = {
    "blue": "#0072B2",
    "orange": "#D98C00",
    "green": "#009E73",
    "red": "#C8553D",
    "purple": "#9A5FA8",
    "sky": "#4FA3D9",
    "grey": "#7A7A7A",
}
INK = "#222222"  # text and arrows: softer than pure black on the white face
FONTSIZE = 10    # points; close to the body text at the book's figure widths


def rgb(name: str) -> tuple[float, float, float]:
    """An RGB colour from a palette name, or from any colour matplotlib understands."""
    return to_rgb(PALETTE.get(name, name))


def tint(name: str, amount: float = 0.22) -> tuple[float, float, float]:
    """The colour mixed with white: `amount` 0 is white, 1 is the full colour. Fills use light tints."""
    full = np.array(rgb(name))
    return tuple(1 - amount * (1 - full))


@dataclass(frozen=True)
class Box:
    """A placed rectangle (lower-left corner, width, height) and the points where arrows attach."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self):
        return (self.x, self.y + self.h / 2)

    @property
    def right(self):
        return (self.x + self.w, self.y + self.h / 2)

    @property
    def top(self):
        return (self.x + self.w / 2, self.y + self.h)

    @property
    def bottom(self):
        return (self.x + self.w / 2, self.y)

    @property
    def center(self):
        return (self.x + self.w / 2, self.y + self.h / 2)


def canvas(width: float, height: float):
    """A figure of `width` x `height` inches with no axes, whose data units are inches.

    Size the canvas to the diagram's own shape: the page scales the figure to
    the text width, so a canvas much wider than about 6.5 inches shrinks its text.
    """
    fig = plt.figure(figsize=(width, height), facecolor="white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig, ax


def label(ax, x: float, y: float, text: str, *, size: float = FONTSIZE, ha: str = "center",
          va: str = "center", color: str = INK, **kwargs):
    """Text at (x, y), centred by default, in the diagram's ink and size."""
    return ax.text(x, y, text, ha=ha, va=va, fontsize=size, color=rgb(color), **kwargs)


def box(ax, x: float, y: float, w: float, h: float, text: str = "", *, color: str = "blue",
        fill: float = 0.22, size: float = FONTSIZE, rounded: bool = True, dashed: bool = False,
        **text_kwargs) -> Box:
    """A rectangle with a coloured edge, a light fill of the same colour and centred text.

    `fill` is the tint of the fill (0 for none); `text_kwargs` go to `label`
    (e.g. `weight="bold"`, `family="monospace"`).
    """
    edge = rgb(color)
    style = "round,pad=0,rounding_size=0.06" if rounded else "square,pad=0"
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, facecolor=tint(color, fill),
                                edgecolor=edge, linewidth=1.2, linestyle="--" if dashed else "-"))
    placed = Box(x, y, w, h)
    if text:
        label(ax, *placed.center, text, size=size, **text_kwargs)
    return placed


def row(ax, x: float, y: float, texts, *, w: float = 0.4, h: float = 0.32, widths=None, color="blue",
        colors=None, fill=0.22, size: float = FONTSIZE, rounded: bool = False, **text_kwargs) -> list[Box]:
    """Boxes side by side from (x, y), one per text: a sequence of tokens, bytes or positions.

    Each box is `w` wide, or `widths[i]` (e.g. a token's length in bytes times a byte's width);
    `colors[i]` overrides `color` per box, and `fill` may be a list too. Returns the boxes, to attach
    arrows or labels to.
    """
    widths = [w] * len(texts) if widths is None else list(widths)
    colors = [color] * len(texts) if colors is None else list(colors)
    fills = list(fill) if isinstance(fill, (list, tuple)) else [fill] * len(texts)
    placed = []
    for text, width, box_color, box_fill in zip(texts, widths, colors, fills):
        placed.append(box(ax, x, y, width, h, text, color=box_color, fill=box_fill, size=size, rounded=rounded,
                          **text_kwargs))
        x += width
    return placed


def visible(text: str) -> str:
    """`text` with spaces, newlines and tabs shown as ␣, ↵ and →, so a token's whitespace can be seen."""
    return text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u2192")


def arrow(ax, start, end, text: str | None = None, *, color: str = INK, curve: float = 0.0,
          size: float = FONTSIZE, offset=None, dashed: bool = False, both: bool = False,
          text_kwargs: dict | None = None):
    """An arrow from `start` to `end` (points, e.g. `a.right`), with optional text near its middle.

    `curve` bends it (matplotlib's `arc3` radius: positive bends to the right
    of the direction of travel, 0.3 is a gentle arc); the text follows the
    bend. `offset` (dx, dy) moves the text off the line; by default it sits
    just above a straight arrow and just outside a curved one.
    """
    style = "<|-|>" if both else "-|>"
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=10, color=rgb(color),
                                 linewidth=1.1, linestyle="--" if dashed else "-",
                                 connectionstyle=f"arc3,rad={curve}", shrinkA=1, shrinkB=1))
    if text:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        # The arc's middle lies off the chord by curve * length / 2, to the right of travel.
        dx, dy = end[0] - start[0], end[1] - start[1]
        mx, my = mx + curve * dy / 2, my - curve * dx / 2
        if offset is None and curve:
            length = float(np.hypot(dx, dy))
            offset = (0.12 * np.sign(curve) * dy / length, -0.12 * np.sign(curve) * dx / length)
        dx_text, dy_text = offset if offset is not None else (0.0, 0.1)
        label(ax, mx + dx_text, my + dy_text, text, size=size, **(text_kwargs or {}))


def matrix(ax, x: float, y: float, values=None, *, shape: tuple[int, int] | None = None, cell: float = 0.35,
           color: str = "blue", fmt="{:.2f}", mask=None, row_labels=None, col_labels=None,
           size: float = FONTSIZE, vmin: float | None = None, vmax: float | None = None,
           col_rotation: float = 0) -> Box:
    """A grid of cells, row 0 at the top, with its lower-left corner at (x, y).

    Give `values` (a 2-D array) to shade each cell by its value, light to full
    `color` between `vmin` and `vmax` (the values' range by default), and to
    print it (at 0.9 * `size`) with `fmt`, a format string or a function of
    the value (None prints nothing); or give only `shape` for an empty grid.
    `mask` (booleans, True = hidden) greys out cells, as a causal mask does.
    Labels go left of the rows and above the columns (turned by
    `col_rotation` degrees, e.g. 90 for words over narrow columns).
    """
    if values is not None:
        values = np.asarray(values, dtype=float)
        if values.ndim == 1:
            values = values[None, :]
        shape = values.shape
    if shape is None:
        raise ValueError("matrix needs values or a shape")
    rows, cols = shape
    mask = np.zeros(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if values is not None:
        shown = values[~mask] if (~mask).any() else values.ravel()
        lo = shown.min() if vmin is None else vmin
        hi = shown.max() if vmax is None else vmax
        scale = (values - lo) / (hi - lo) if hi > lo else np.full(shape, 0.5)
    grid_edge = "white" if values is not None else rgb(color)
    for i in range(rows):
        for j in range(cols):
            cx, cy = x + j * cell, y + (rows - 1 - i) * cell
            face, text, ink = "white", "", INK
            if mask[i, j]:
                face = tint("grey", 0.35)
            elif values is not None:
                amount = 0.08 + 0.8 * float(np.clip(scale[i, j], 0, 1))
                face = tint(color, amount)
                text = "" if fmt is None else fmt(values[i, j]) if callable(fmt) else fmt.format(values[i, j])
                ink = "white" if amount > 0.6 else INK  # dark cells take light text
            ax.add_patch(Rectangle((cx, cy), cell, cell, facecolor=face, edgecolor=grid_edge, linewidth=1.0))
            if text:
                label(ax, cx + cell / 2, cy + cell / 2, text, size=size * 0.9, color=ink)
    for i, text in enumerate(row_labels or []):
        label(ax, x - 0.08, y + (rows - 1 - i + 0.5) * cell, text, size=size, ha="right")
    for j, text in enumerate(col_labels or []):
        label(ax, x + (j + 0.5) * cell, y + rows * cell + 0.08, text, size=size, va="bottom",
              rotation=col_rotation)
    return Box(x, y, cols * cell, rows * cell)


def brace(ax, start, end, text: str = "", *, size: float = FONTSIZE, depth: float = 0.08,
          color: str = INK):
    """A square bracket from `start` to `end` with `text` beyond its middle, to name a span of a diagram.

    The arms point to the left of the direction of travel and the text sits on
    the other side: drawn left to right under a row of boxes, the arms point up
    at the row and the text sits below; drawn top to bottom left of a column,
    the arms point right at it and the text sits on the left.
    """
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    length = float(np.hypot(dx, dy))
    nx, ny = -dy / length, dx / length  # unit normal, to the left of travel
    ink = rgb(color)
    ax.plot([x0 + nx * depth, x0, x1, x1 + nx * depth], [y0 + ny * depth, y0, y1, y1 + ny * depth],
            color=ink, linewidth=1.0, solid_joinstyle="miter")
    if text:
        ha = "center" if abs(nx) < 0.5 else ("right" if nx > 0 else "left")
        va = "center" if abs(ny) < 0.5 else ("top" if ny > 0 else "bottom")
        label(ax, (x0 + x1) / 2 - nx * 0.06, (y0 + y1) / 2 - ny * 0.06, text, size=size, ha=ha, va=va, color=color)
