"""The summary of a sweep: every trial's final metrics as `summary.csv` and `summary.md`.

The CSV has one row per trial: its swept values, status, step, mIoU, pixel accuracy, final
losses and per-class IoU; the markdown table the same without losses and classes, the best
trial in bold, then the best `--metric` and how many trials finished. The heatmap comes from
`plots`.
"""

import csv
import math
import os

from . import SweepError
from .plots import write_heatmap
from .results import collect, number, sort_key
from .trials import TRIAL_FILE

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"


def _format_float(value, scale=1.0, digits=2):
    """`value * scale` with `digits` decimals; "" for a missing or NaN value."""
    value = number(value)
    if value is None or math.isnan(value):
        return ""
    return f"{value * scale:.{digits}f}"


def _write_csv(path, params, rows):
    """Writes the CSV table: swept values, status, step, metrics, losses, per-class IoU.

    Args:
      path: the CSV file.
      params: the swept parameters.
      rows: the trial rows (`results.collect`).
    """
    class_ids = sorted({c for r in rows for c in r["eval"].get("per_class_iou", {})},
                       key=sort_key)
    loss_keys = sorted({k for r in rows for k, v in r["train"].items()
                        if k.startswith("loss") and number(v) is not None})
    header = (["trial", *params, "status", "step", "miou", "pixel_accuracy", *loss_keys]
              + [f"iou_{c}" for c in class_ids])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            writer.writerow(
                [r["trial"], *(r["swept"].get(p, "") for p in params), r["status"],
                 r["train"].get("step", ""), r["eval"].get("miou", ""),
                 r["eval"].get("pixel_accuracy", ""),
                 *(r["train"].get(k, "") for k in loss_keys),
                 *(r["eval"].get("per_class_iou", {}).get(c, "") for c in class_ids)])


def _best(rows, metric):
    """The row with the highest `metric` (a number, not NaN), or None."""
    scored = [r for r in rows if number(r["eval"].get(metric)) is not None
              and not math.isnan(r["eval"][metric])]
    return max(scored, key=lambda r: r["eval"][metric]) if scored else None


def _markdown(root_dir, params, rows, metric):
    """The markdown summary: a table of the trials, the best `metric`, the finished count.

    Args:
      root_dir: the sweep directory (named in the title).
      params: the swept parameters.
      rows: the trial rows (`results.collect`).
      metric: the evaluation key that picks the best trial (bold in the table if `miou`).

    Returns:
      The markdown text.
    """
    best = _best(rows, metric)
    lines = [f"# Sweep summary: {os.path.abspath(root_dir)}", "",
             "| " + " | ".join([*params, "status", "step", "mIoU (%)", "pixel acc. (%)"])
             + " |",
             "|" + "---|" * (len(params) + 4)]
    for r in rows:
        cells = [str(r["swept"].get(p, "")).replace("|", "\\|") for p in params]
        miou = _format_float(r["eval"].get("miou"), 100)
        if r is best and metric == "miou":
            miou = f"**{miou}**"
        cells += [r["status"], str(r["train"].get("step", "")), miou,
                  _format_float(r["eval"].get("pixel_accuracy"), 100)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if best is not None:
        lines.append(f"Best {metric}: {best['eval'][metric]:.4f} ({best['trial']}).")
    unfinished = [r for r in rows if r["status"] != "finished"]
    lines.append(f"{len(rows) - len(unfinished)} of {len(rows)} trials finished.")
    return "\n".join(lines) + "\n"


def write_summary(root_dir, metric="miou", heatmap_params=None):
    """Writes summary.csv, summary.md and (if possible) the heatmap.

    Args:
      root_dir: the sweep directory.
      metric: the evaluation key for the best trial and the heatmap.
      heatmap_params: two swept parameters for the heatmap, or None for the two varied ones.

    Returns:
      (the markdown, the heatmap message of `plots.write_heatmap`).

    Raises:
      SweepError: when `root_dir` holds no trial directories, or `heatmap_params` are not two
        swept parameters.
    """
    params, rows = collect(root_dir)
    if not rows:
        raise SweepError(f"--root_dir={root_dir} holds no trial directories (no {TRIAL_FILE})")
    _write_csv(os.path.join(root_dir, SUMMARY_CSV), params, rows)
    markdown = _markdown(root_dir, params, rows, metric)
    with open(os.path.join(root_dir, SUMMARY_MD), "w") as f:
        f.write(markdown)
    heatmap_message = write_heatmap(root_dir, params, rows, metric, heatmap_params)
    return markdown, heatmap_message
