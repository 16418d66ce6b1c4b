"""The report's PNG plots (matplotlib, `pip install -e ".[plots]"`; without it, none).

* `miou.png`: validation mIoU per method, one bar per label fraction, mean with min-max bars
  over seeds; supervised with all labels as a dashed line; one panel per dataset.
* `reliability_<dataset>.png` (1/16) and `reliability_<dataset>_1_8.png`: reliability
  diagrams of PseudoSeg's decoder, SGC and fused pseudo labels (paper figure 5a), pooled over
  seeds.
* `gamma_temperature.png`: the gamma x T heatmap of mean mIoU over the sweep seeds, one panel
  per dataset.
"""

import math
import os

import numpy as np

from . import gamma_t, grids, tables

MIOU_PNG = "miou.png"
HEATMAP_PNG = "gamma_temperature.png"


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a message) when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plots]'): no plots written")
        return None
    return plt


def _miou_panel(axis, results, plan, dataset):
    methods = [m for m in ("supervised", "self_training", "one_stage", "decoder_only",
                           "sgc_only", "fusion", "pseudoseg", "pseudoseg_image_labels")
               if m in plan.methods_run]
    width = 0.8 / max(1, len(plan.fractions))
    for k, split in enumerate(plan.fractions):
        figures = [results.figure(dataset, m, split) for m in methods]
        means = [f.mean * 100 if f else np.nan for f in figures]
        errors = [[(f.mean - f.low) * 100 if f else 0 for f in figures],
                  [(f.high - f.mean) * 100 if f else 0 for f in figures]]
        positions = np.arange(len(methods)) + (k - (len(plan.fractions) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=errors, capsize=3,
                 label=f"{grids.SPLIT_TITLES[split]} labels")
    upper = results.upper_bound(dataset)
    if upper is not None:
        axis.axhline(upper.mean * 100, color="black", linestyle="--", label="all labels")
    axis.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("validation mIoU (%)")
    axis.set_title(f"{dataset} ({plan.grid.num_steps} steps)")
    axis.legend(fontsize=8)


def write_miou(plt, results, plan):
    """miou.png; returns its path."""
    figure, axes = plt.subplots(1, len(plan.datasets), figsize=(6.5 * len(plan.datasets), 4.5),
                                squeeze=False)
    for axis, dataset in zip(axes[0], plan.datasets):
        _miou_panel(axis, results, plan, dataset)
    figure.tight_layout()
    path = os.path.join(plan.root, MIOU_PNG)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_reliability(plt, results, plan, dataset, split):
    """A reliability figure of PseudoSeg's pseudo labels; its path, or None without data."""
    pooled = results.pooled_reliability(dataset, "pseudoseg", split)
    if not pooled:
        return None
    figure, axes = plt.subplots(1, len(pooled), figsize=(4 * len(pooled), 4), squeeze=False)
    for axis, (source, (count, confidence, correct)) in zip(axes[0], pooled.items()):
        edges = np.linspace(0, 1, count.size + 1)
        accuracy = np.divide(correct, count, out=np.zeros_like(count), where=count > 0)
        ece = np.abs(correct - confidence).sum() / max(count.sum(), 1)
        axis.bar(edges[:-1], accuracy, width=1 / count.size, align="edge", edgecolor="black",
                 label="accuracy")
        axis.plot([0, 1], [0, 1], "r--", label="perfect calibration")
        axis.set_title(f"{source}: ECE {ece * 100:.1f}%")
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"{dataset}, {grids.SPLIT_TITLES[split]}: pseudo labels on the unlabelled "
                    "images")
    figure.tight_layout()
    suffix = "" if split == "1_16" else f"_{split}"
    path = os.path.join(plan.root, f"reliability_{dataset}{suffix}.png")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_heatmap(plt, plan, sweep_results):
    """gamma_temperature.png from {dataset: {(gamma, T): [mIoU per seed]}}; its path, or None
    when no trial finished."""
    if not any(v for values in sweep_results.values() for v in values.values()):
        return None
    datasets = [d for d in plan.datasets if d in sweep_results]
    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4),
                                squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        grid = np.full((len(gamma_t.GAMMAS), len(gamma_t.TEMPERATURES)), np.nan)
        counts = np.zeros(grid.shape, int)
        for i, gamma in enumerate(gamma_t.GAMMAS):
            for j, temperature in enumerate(gamma_t.TEMPERATURES):
                figure_ = tables.stats(sweep_results[dataset].get((gamma, temperature), []))
                if figure_ is not None:
                    grid[i, j], counts[i, j] = figure_.mean * 100, figure_.count
        image = axis.imshow(grid, cmap="viridis", aspect="auto")
        axis.set_xticks(range(len(gamma_t.TEMPERATURES)), gamma_t.TEMPERATURES)
        axis.set_yticks(range(len(gamma_t.GAMMAS)), gamma_t.GAMMAS)
        axis.set_xlabel("T (PseudoLabelConfig.temperature)")
        axis.set_ylabel("gamma (PseudoLabelConfig.gamma)")
        axis.set_title(f"{dataset}: mIoU (%), mean over seeds")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not math.isnan(grid[i, j]):
                    bright = image.norm(grid[i, j]) > 0.6  # Dark text on the yellow end.
                    axis.text(j, i, f"{grid[i, j]:.1f}\n(n={counts[i, j]})", ha="center",
                              va="center", color="black" if bright else "white", fontsize=8)
        figure.colorbar(image, ax=axis)
    figure.tight_layout()
    path = os.path.join(plan.root, HEATMAP_PNG)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_plots(results, plan, sweep_results):
    """Every plot of the report next to it; returns the paths written ([] without
    matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return []
    paths = [write_miou(plt, results, plan)]
    for dataset in plan.datasets:
        for split in plan.fractions:
            paths.append(write_reliability(plt, results, plan, dataset, split))
    paths.append(write_heatmap(plt, plan, sweep_results))
    return [p for p in paths if p is not None]
