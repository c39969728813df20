"""Diagrams of the modern-model chapter: two blocks side by side, RoPE's rotating pairs, a sliding window and its
rolling cache. Built from the helpers of bookbuild.diagrams, with the same units (inches) and palette."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from bookbuild.diagrams import INK, arrow, box, canvas, label, matrix, rgb, row


def draw_block_comparison(old: list[str], new: list[str], changed: list[bool]):
    """Two columns of boxes, bottom to top: GPT-2's parts (`old`) and the modern ones (`new`); entries whose
    `changed` flag is set are drawn orange in the new column. Entries 1-4 form the block (drawn framed)."""
    fig, ax = canvas(6.5, 4.85)
    heights = [0.42, 0.32, 0.5, 0.32, 0.42, 0.32, 0.42]
    ys, y = [], 0.25
    for i, h in enumerate(heights):
        ys.append(y)
        y += h + (0.32 if i in (0, 4) else 0.2)
    colours = ["blue", "green", "sky", "green", "sky", "green", "blue"]
    for column, (x, title, parts) in enumerate([(0.2, "GPT-2 (2019)", old), (3.45, "modern (2024)", new)]):
        w = 2.6
        frame_bottom, frame_top = ys[1] - 0.12, ys[4] + heights[4] + 0.12
        box(ax, x - 0.12, frame_bottom, w + 0.24, frame_top - frame_bottom, color="purple", fill=0.06, dashed=True)
        label(ax, x + w + 0.22, (frame_bottom + frame_top) / 2, "\u00d7 n_layer", rotation=90, size=8,
              color="purple")
        label(ax, x + w / 2, ys[-1] + heights[-1] + 0.18, title, weight="bold", va="bottom")
        boxes = []
        for i, (text, y0, h) in enumerate(zip(parts, ys, heights)):
            colour = "orange" if column == 1 and changed[i] else colours[i]
            boxes.append(box(ax, x, y0, w, h, text, color=colour, size=8.5, fill=0.3 if colour == "orange" else 0.18))
        for lower, upper in zip(boxes, boxes[1:]):
            arrow(ax, lower.top, upper.bottom)
    return fig


def draw_rope_pairs(frequencies: list[float], positions):
    """One unit circle per pair: the same 2-d vector rotated by position * frequency for each of `positions`."""
    positions = list(positions)
    fig, ax = canvas(6.5, 3.1)
    for panel, frequency in enumerate(frequencies):
        cx, cy, r = 1.65 + panel * 3.25, 1.5, 1.1
        ax.add_patch(plt.Circle((cx, cy), r, fill=False, edgecolor=rgb("grey"), linewidth=0.8, linestyle=":"))
        base = 0.35  # the vector's own angle at position 0
        for p in positions:
            angle = base + p * frequency
            shade = 0.35 + 0.65 * p / max(positions[-1], 1)
            colour = tuple(1 - shade * (1 - c) for c in rgb("blue"))
            end = (cx + r * math.cos(angle), cy + r * math.sin(angle))
            arrow(ax, (cx, cy), end, color=colour)
            if frequency > 0.3 or p in (positions[0], positions[-1]):  # slow pairs: label the ends only
                label(ax, cx + 1.2 * r * math.cos(angle), cy + 1.2 * r * math.sin(angle), str(p), size=8)
        label(ax, cx, 0.12, f"pair with {frequency:.2f} rad per position", size=9)
    return fig


def draw_window(mask: np.ndarray, slot_positions: list[int]):
    """A boolean attention mask (True = visible) beside the ring of cache slots and the positions they hold."""
    n = mask.shape[0]
    fig, ax = canvas(6.5, 3.3)
    cell = 0.26
    matrix(ax, 0.55, 0.2, mask.astype(float), mask=~mask, cell=cell, color="blue", fmt=None,
           row_labels=[str(i) for i in range(n)], col_labels=[str(i) for i in range(n)], size=8)
    label(ax, 0.55 + n * cell / 2, 0.2 + n * cell + 0.32, "keys", size=9)
    label(ax, 0.12, 0.2 + n * cell / 2, "queries", rotation=90, size=9)
    x0, y0 = 3.9, 1.5
    label(ax, x0 + 1.0, y0 + 1.05, "rolling cache, 4 slots", weight="bold", size=9)
    slots = row(ax, x0, y0, [f"pos {p}" for p in slot_positions], w=0.5, h=0.45, color="orange", size=8)
    for i, slot in enumerate(slots):
        label(ax, slot.center[0], y0 + 0.6, f"slot {i}", size=8)
    newest = max(slot_positions)
    nxt = (newest + 1) % len(slot_positions)
    arrow(ax, (slots[nxt].center[0], y0 - 0.55), slots[nxt].bottom, f"position {newest + 1} goes here", size=8,
          offset=(0, -0.35))
    label(ax, x0 + 1.0, 0.45, f"position p \u2192 slot p mod {len(slot_positions)}", size=9, color=INK)
    return fig
