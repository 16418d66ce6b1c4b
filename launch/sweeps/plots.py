"""The heatmap of a sweep: a metric over two swept parameters (`summary_heatmap.png`).

Needs matplotlib (`pip install -e ".[plots]"`), imported only when a heatmap is drawn; without
it the summary says so and carries on.
"""

import math
import os

from . import SweepError
from .results import number, sort_key

HEATMAP_PNG = "summary_heatmap.png"


def _heatmap_axes(params, rows, heatmap_params):
    """The two parameters to plot against each other.

    Args:
      params: the swept parameters.
      rows: the trial rows (`results.collect`).
      heatmap_params: two parameters the user chose, or None for the two varied ones.

    Returns:
      (axes, varied, message): the [y, x] parameters (None when there is no heatmap to draw,
      `message` then says why), and the parameters with several values.

    Raises:
      SweepError: when `heatmap_params` are not two swept parameters.
    """
    varied = [p for p in params if len({r["swept"].get(p) for r in rows}) > 1]
    if heatmap_params:
        unknown = [p for p in heatmap_params if p not in params]
        if len(heatmap_params) != 2 or unknown:
            raise SweepError(f"--heatmap_params={','.join(heatmap_params)}: give two swept "
                             f"parameters out of {', '.join(params)}")
        return list(heatmap_params), varied, None
    if len(varied) == 2:
        return varied, varied, None
    return None, varied, (
        f"No heatmap: it needs two swept parameters with several values (this sweep "
        f"varies {len(varied)}); choose two with --heatmap_params=A,B.")


def _best_grid(rows, axes, metric):
    """The best `metric` per (y, x) value pair, NaN where no trial has it.

    Args:
      rows: the trial rows.
      axes: the [y, x] parameters.
      metric: an evaluation key.

    Returns:
      (y_values, x_values, grid) with grid[i][j] for y_values[i], x_values[j].
    """
    y_values = sorted({r["swept"].get(axes[0]) for r in rows}, key=sort_key)
    x_values = sorted({r["swept"].get(axes[1]) for r in rows}, key=sort_key)
    grid = [[math.nan] * len(x_values) for _ in y_values]
    for r in rows:
        value = number(r["eval"].get(metric))
        if value is None or math.isnan(value):
            continue
        i = y_values.index(r["swept"].get(axes[0]))
        j = x_values.index(r["swept"].get(axes[1]))
        if math.isnan(grid[i][j]) or value > grid[i][j]:
            grid[i][j] = value
    return y_values, x_values, grid


def write_heatmap(root_dir, params, rows, metric, heatmap_params=None):
    """Plots `metric` over two swept parameters (the best over any others) if matplotlib is
    installed.

    Args:
      root_dir: the sweep directory; the plot goes to `ROOT_DIR/summary_heatmap.png`.
      params: the swept parameters.
      rows: the trial rows (`results.collect`).
      metric: the evaluation key to plot.
      heatmap_params: the two parameters to plot, or None for the two varied ones.

    Returns:
      A message saying what was written or why not.

    Raises:
      SweepError: when `heatmap_params` are not two swept parameters.
    """
    axes, varied, message = _heatmap_axes(params, rows, heatmap_params)
    if axes is None:
        return message
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("No heatmap: matplotlib is not installed (pip install matplotlib, or "
                "pip install -e \".[plots]\").")
    y_values, x_values, grid = _best_grid(rows, axes, metric)
    figure, axis = plt.subplots(figsize=(1.2 * len(x_values) + 2.5, 0.9 * len(y_values) + 1.8))
    image = axis.imshow(grid, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(x_values)), [str(v) for v in x_values])
    axis.set_yticks(range(len(y_values)), [str(v) for v in y_values])
    axis.set_xlabel(axes[1])
    axis.set_ylabel(axes[0])
    others = [p for p in varied if p not in axes]
    axis.set_title(metric + (f" (best over {', '.join(others)})" if others else ""))
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                axis.text(j, i, f"{value:.4f}", ha="center", va="center", color="white")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    path = os.path.join(root_dir, HEATMAP_PNG)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"Heatmap: {path}"
