"""report.md and cells.md of a plan.

report.md, per dataset, lays the rows out like the paper's tables 5 (pixel labels + unlabelled
images: supervised, self-training, the source ablation, PseudoSeg) and 6 (pixel labels +
image-level labels), with a column per label fraction (1/16, 1/8): validation mIoU, mean
(min-max) over seeds, and the gap closed between supervised at the same fraction and
supervised with all labels. Then the pseudo labels' ECE (figure 5a), the gamma x T grid, the
paper's orderings checked against these numbers, and the plots. cells.md lists every finished
cell with its mIoU, time, date, commit and exact command.
"""

import os
import time

from . import gamma_t, grids, orderings, runner, tables

TABLE_5 = (
    ("supervised", "supervised, the fraction's labels only"),
    ("self_training", "self-training (teacher: supervised at the fraction)"),
    ("one_stage", "PseudoSeg, the paper's one-stage loop (the student's fused labels)"),
    ("decoder_only", "PseudoSeg, frozen teacher, pseudo labels from the decoder only"),
    ("sgc_only", "PseudoSeg, frozen teacher, pseudo labels from SGC only"),
    ("fusion", "PseudoSeg, frozen teacher, fusion of decoder and SGC"),
    ("pseudoseg", "PseudoSeg as demo.gin has it (frozen teacher, decoder, hard labels)"),
    ("ground_truth_ceiling", "ceiling: the unlabelled images' masks as pseudo labels "
                             "(diagnostic)"),
)
TABLE_6 = (
    ("supervised", "supervised, the fraction's labels only"),
    ("pseudoseg", "PseudoSeg, unlabelled images"),
    ("pseudoseg_image_labels", "PseudoSeg, image-level labels"),
)
ALL_LABELS_TITLE = "supervised, all labels"
ECE_ROWS = (
    ("pseudoseg", "PseudoSeg (demo.gin: frozen teacher, decoder)"),
    ("one_stage", "PseudoSeg, the paper's loop (fusion)"),
    ("fusion", "frozen teacher, fusion"),
    ("pseudoseg_image_labels", "PseudoSeg, image-level labels"),
    ("decoder_only", "decoder only"),
    ("sgc_only", "SGC only"),
)


def _miou_cell(results, plan, dataset, method, split):
    """`mean (min-max)`, with `[k/n seeds]` when only k of the n seeds finished."""
    figure = results.figure(dataset, method, split)
    text = tables.fmt(figure)
    count = results.count(dataset, method, split)
    if figure is not None and count < len(plan.seeds):
        text += f" [{count}/{len(plan.seeds)} seeds]"
    return text


def _percent(value):
    return "-" if value is None else f"{value * 100:.0f}%"


def _miou_table(results, plan, dataset, rows):
    """A table of rows x fractions: mIoU and gap closed, then supervised with all labels."""
    header = ["method"]
    for split in plan.fractions:
        header += [f"{grids.SPLIT_TITLES[split]} mIoU", "gap closed"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method, title in rows:
        if method not in plan.methods_run:
            continue
        cells = [title]
        for split in plan.fractions:
            cells += [_miou_cell(results, plan, dataset, method, split),
                      _percent(results.gap(dataset, method, split))]
        lines.append("| " + " | ".join(cells) + " |")
    if grids.ALL_LABELS in plan.splits and "supervised" in plan.methods_run:
        upper = _miou_cell(results, plan, dataset, "supervised", grids.ALL_LABELS)
        bound = results.upper_bound(dataset)
        cells = [ALL_LABELS_TITLE]
        for split in plan.fractions:  # 100%, or '-' where the gap itself is noise.
            low = results.figure(dataset, "supervised", split)
            cells += [upper, _percent(tables.gap_closed(bound, low, bound))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ece_table(results, plan):
    """Pseudo-label ECE per dataset, fraction and method (paper figure 5a)."""
    lines = ["| dataset | labels | method | ECE decoder | ECE SGC | ECE fused (before "
             "sharpening) | final targets: confidence / accuracy |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for dataset in plan.datasets:
        for split in plan.fractions:
            for method, title in ECE_ROWS:
                if method not in plan.methods_run or not results.count(dataset, method, split):
                    continue
                ece = [tables.fmt(results.figure(dataset, method, split, f"ece_{s}"), 100, 1)
                       for s in orderings.ECE_SOURCES]
                targets = [results.figure(dataset, method, split, k)
                           for k in ("confidence", "accuracy")]
                final = ("-" if None in targets else
                         f"{targets[0].mean:.2f} / {targets[1].mean:.2f}")
                lines.append(f"| {dataset} | {grids.SPLIT_TITLES[split]} | {title} | "
                             f"{' | '.join(ece)} | {final} |")
    return lines


def _sweep_section(plan, sweep_results):
    """The gamma x T tables: mean mIoU over the sweep seeds, per dataset."""
    lines = ["## gamma x T (PseudoSeg, 1/16, `launch/sweep.py`)", "",
             f"Validation mIoU in %, mean (min-max) over sweep seed(s) "
             f"{', '.join(map(str, plan.sweep_seeds))}; rows gamma "
             f"(`{gamma_t.GAMMA}`, the decoder's weight), columns T (`{gamma_t.TEMPERATURE}`); "
             f"the demo's values are gamma {gamma_t.DEMO_VALUES[0]}, T "
             f"{gamma_t.DEMO_VALUES[1]}. Each sweep's own table: "
             "`<dataset>/sweep_gamma_temperature/seed_<n>/summary.md`.", ""]
    for dataset in plan.datasets:
        values = sweep_results.get(dataset, {})
        lines += [f"### {dataset}", "",
                  "| gamma \\ T | " + " | ".join(gamma_t.TEMPERATURES) + " |",
                  "|" + " --- |" * (len(gamma_t.TEMPERATURES) + 1)]
        best = max(((tables.stats(v), k) for k, v in values.items() if v),
                   key=lambda x: x[0].mean, default=None)
        for gamma in gamma_t.GAMMAS:
            row = []
            for temperature in gamma_t.TEMPERATURES:
                text = tables.fmt(tables.stats(values.get((gamma, temperature), [])))
                if best is not None and (gamma, temperature) == best[1]:
                    text = f"**{text}**"
                row.append(text)
            lines.append(f"| {gamma} | " + " | ".join(row) + " |")
        if best is not None:
            lines += ["", f"Best: gamma {best[1][0]}, T {best[1][1]} ({best[0].mean * 100:.2f}%)."]
        lines.append("")
    lines.append("![gamma x T](gamma_temperature.png)")
    return lines


def _orderings_section(results, plan):
    """The paper's orderings, holds / fails per dataset and fraction."""
    columns = [f"{d} {grids.SPLIT_TITLES[s]}" for d in plan.datasets for s in plan.fractions]
    lines = ["## The paper's orderings on these runs", "",
             "Means of the rows above (mIoU or ECE in %); 'ranges apart' when the seeds' "
             "min-max ranges do not overlap, 'ranges overlap' when the order could flip with "
             "another seed.", "",
             "| claim | " + " | ".join(columns) + " | overall |",
             "|" + " --- |" * (len(columns) + 2)]
    for claim, outcomes in orderings.check_all(results, plan.datasets, plan.fractions):
        lines.append(f"| {claim} | " + " | ".join(text for _, text in outcomes)
                     + f" | {orderings.verdict(outcomes)} |")
    return lines


def _header(plan):
    grid = plan.grid
    lines = [f"# Quality on the built-in synthetic sets: grid `{grid.name}`, "
             f"{grid.num_steps} steps", ""]
    if grid.num_steps != grids.DEMO_STEPS:
        lines += [f"**These figures come from {grid.num_steps}-step runs, not the demo "
                  f"configs' {grids.DEMO_STEPS}: they are not the README's figures** and are "
                  "not comparable with them.", ""]
    lines += [f"Grid `{grid.name}`: {grid.trade_off}.", "",
              f"Datasets {', '.join(plan.datasets)}; seeds {', '.join(map(str, plan.seeds))}. "
              "Validation mIoU in %, mean (min-max) over seeds (`[k/n seeds]`: only k "
              "finished); 'gap closed' is (method - supervised at the same fraction) / "
              "(supervised, all labels - supervised at the same fraction) of the means, '-' "
              "where that gap is within noise (under 2 points, or the two rows' min-max "
              "ranges overlap).", ""]
    return lines


def report(plan, results, sweep_results):
    """The markdown report.

    Args:
      plan: the `grids.Plan`.
      results: its `tables.Results`.
      sweep_results: {dataset: `gamma_t.read_results`} (empty without sweeps).

    Returns:
      The text of report.md (plots referred to by their file names next to it).
    """
    lines = _header(plan)
    for dataset in plan.datasets:
        lines += [f"## {dataset}", "",
                  "### Pixel labels + unlabelled images (the paper's table 5)", ""]
        lines += _miou_table(results, plan, dataset, TABLE_5)
        lines += ["", "### Pixel labels + image-level labels (the paper's table 6)", ""]
        lines += _miou_table(results, plan, dataset, TABLE_6) + [""]
    lines += ["## Calibration of the pseudo labels (the paper's figure 5a)", "",
              "ECE (%) of the pseudo labels on the unlabelled images against their masks, "
              "over the last quarter of training; the three distributions are the decoder's "
              "softmax, SGC's and their fusion before sharpening.", ""]
    lines += _ece_table(results, plan) + [""]
    if plan.sweep_seeds:
        lines += _sweep_section(plan, sweep_results) + [""]
    lines += _orderings_section(results, plan) + [""]
    lines += ["## Plots", "", "![validation mIoU per method and fraction](miou.png)", "",
              "Reliability diagrams of PseudoSeg's pseudo labels, pooled over seeds: "
              "`reliability_<dataset>.png` (1/16), `reliability_<dataset>_1_8.png` (1/8).", ""]
    return "\n".join(lines)


def cell_listing(plan):
    """Markdown list of every finished cell: mIoU, seconds, date, commit and exact command."""
    lines = ["| dataset | method | labels | seed | mIoU | seconds | finished (UTC) | commit |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    commands = []
    for cell in sorted(plan.cells, key=lambda c: (c.dataset, c.split, c.method, c.seed)):
        result = runner.cell_result(plan.root, cell, plan.grid.num_steps)
        if result is None:
            continue
        directory = grids.cell_dir(plan.root, cell)
        finished = time.strftime("%Y-%m-%d %H:%M", time.gmtime(os.path.getmtime(
            os.path.join(directory, "train_result.json"))))
        commit = (runner.read_text(os.path.join(directory, "commit.txt")) or "-").strip()
        seconds = result.get("seconds")
        lines.append(f"| {cell.dataset} | {cell.method} | {grids.SPLIT_TITLES[cell.split]} | "
                     f"{cell.seed} | {result['miou'] * 100:.2f} | "
                     f"{seconds if seconds is not None else '-'} | {finished} | {commit} |")
        text = (runner.read_text(os.path.join(directory, "command.txt")) or "").strip()
        commands.append(f"- `{grids.cell_label(cell)}`: `{text}`")
    return "\n".join(lines + ["", "Commands:", ""] + commands)
