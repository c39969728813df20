"""The diagram helpers place shapes where they are told, in inches."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from bookbuild.diagrams import arrow, box, brace, canvas, matrix, row, tint, visible  # noqa: E402


def test_canvas_data_units_are_inches():
    fig, ax = canvas(5, 2)
    assert tuple(fig.get_size_inches()) == (5, 2)
    assert ax.get_xlim() == (0, 5) and ax.get_ylim() == (0, 2)
    plt.close(fig)


def test_box_lands_at_its_coordinates_and_arrows_attach_to_its_sides():
    fig, ax = canvas(4, 2)
    placed = box(ax, 0.5, 0.25, 1.5, 0.5, "hello")
    (patch,) = ax.patches
    x0, y0, x1, y1 = patch.get_path().get_extents(patch.get_patch_transform()).extents
    assert np.allclose([x0, y0, x1, y1], [0.5, 0.25, 2.0, 0.75])
    assert placed.right == (2.0, 0.5) and placed.top == (1.25, 0.75)
    assert [t.get_text() for t in ax.texts] == ["hello"]
    arrow(ax, placed.right, (3.5, 0.5), "next")
    assert len(ax.patches) == 2 and ax.texts[-1].get_text() == "next"
    plt.close(fig)


def test_matrix_draws_one_cell_per_entry_shaded_by_value_and_masked():
    fig, ax = canvas(3, 3)
    values = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    mask = np.triu(np.ones((2, 3), dtype=bool), k=1)
    grid = matrix(ax, 0.5, 0.5, values, cell=0.4, mask=mask, fmt="{:.0f}", row_labels=["a", "b"])
    cells = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(cells) == 2 * 3
    assert np.allclose((grid.w, grid.h), (1.2, 0.8))
    # Row 0 is drawn at the top; masked cells print no number.
    numbers = sorted(t.get_text() for t in ax.texts if t.get_text().isdigit())
    assert numbers == ["0", "3", "4"]
    top_left = next(c for c in cells if np.allclose(c.get_xy(), (0.5, 0.9)))
    assert np.allclose(top_left.get_facecolor()[:3], tint("blue", 0.08))
    plt.close(fig)


def test_row_lays_boxes_side_by_side_with_their_own_widths():
    fig, ax = canvas(4, 1)
    boxes = row(ax, 0.5, 0.2, ["The", visible(" cat")], widths=[0.6, 0.8])
    assert [(b.x, b.w) for b in boxes] == [(0.5, 0.6), (1.1, 0.8)]
    assert [t.get_text() for t in ax.texts] == ["The", "\u2423cat"]
    plt.close(fig)


def test_brace_arms_point_left_of_travel_and_text_sits_opposite():
    fig, ax = canvas(3, 2)
    brace(ax, (0.5, 0.5), (2.5, 0.5), "span")  # left to right under a row: arms up, text below
    (line,) = ax.lines
    ys = line.get_ydata()
    assert ys[0] > 0.5 and ys[-1] > 0.5 and list(ys[1:3]) == [0.5, 0.5]
    (text,) = ax.texts
    assert text.get_position()[1] < 0.5 and text.get_va() == "top"
    plt.close(fig)
