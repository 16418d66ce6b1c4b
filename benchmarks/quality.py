"""Quality benchmark: the demo's methods on the built-in synthetic sets, over seeds.

Runs `python -m wss.train` for every (dataset, method, seed) cell, with the demo configs and
nothing else than the bindings a user of another dataset would give (data directory, number
of classes, class names, split files, crop size), skips cells that already finished, and
writes a markdown report with the validation mIoU (mean and min-max over seeds), the share of
the gap between supervised 1/16 and supervised with all labels that each method closes, and
the expected calibration error of the decoder, SGC and fused pseudo labels.

    python benchmarks/quality.py --root_dir=runs/quality [--datasets=shapes,random_colours]
        [--methods=supervised_1_16,...] [--seeds=0,1,2] [--parallel=2] [--report_only]

Every cell's command is printed before it runs and stored in its log directory
(`command.txt`), so each figure of the report can be reproduced alone.

The self-training cell of a dataset and seed uses the `supervised_1_16` cell of the same
dataset and seed as its teacher (`TEACHERS`): that cell is added when missing and runs first,
a student starts only once its teacher has finished, and a student whose teacher failed is
skipped (and counted as failed).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

DATASETS = {
    # The demo's own set: demo.gin as it is.
    "shapes": [],
    # The second set: random colours per object, other shapes, 64 x 64 images.
    "random_colours": [
        "DATA_DIR = @synthetic_dataset_dir()",
        "synthetic_dataset_dir.variant = 'random_colours'",
        "NUM_CLASSES = 9",
        "evaluate_checkpoint.class_names = ('background', 'hexagon_stripes', 'hexagon_dots', "
        "'star_stripes', 'star_dots', 'ellipse_stripes', 'ellipse_dots', 'crescent_stripes', "
        "'crescent_dots')",
        "train.crop_size = (65, 65)",
    ],
}

METHODS = {
    "supervised_1_16": ("demo_supervised.gin", []),
    "supervised_all": ("demo_supervised.gin", ["labelled_split/join_path.name = 'train.txt'"]),
    "pseudoseg": ("demo.gin", []),
    "pseudoseg_image_labels": ("demo_weak.gin", []),
    "decoder_only": ("demo.gin", ["PseudoLabelConfig.source = 'decoder'"]),
    "sgc_only": ("demo.gin", ["PseudoLabelConfig.source = 'sgc'"]),
    "self_training": ("demo_self_training.gin", []),
}

# Method -> the method whose cell (same dataset and seed) is its teacher
# (`train.teacher_checkpoint` = that cell's log directory).
TEACHERS = {"self_training": "supervised_1_16"}

REPORT_ROWS = (
    ("supervised_1_16", "supervised, 1/16 of the labels"),
    ("supervised_all", "supervised, all labels"),
    ("pseudoseg", "PseudoSeg, 1/16 + unlabelled images (fusion)"),
    ("self_training", "self-training (teacher: supervised 1/16)"),
    ("pseudoseg_image_labels", "PseudoSeg, 1/16 + image-level labels"),
    ("decoder_only", "pseudo labels from the decoder only"),
    ("sgc_only", "pseudo labels from SGC only"),
)


def cell_dir(root, dataset, method, seed):
    return os.path.join(root, dataset, method, f"seed_{seed}")


def teacher_cell(cell):
    """The (dataset, method, seed) cell whose run teaches `cell`, or None."""
    dataset, method, seed = cell
    teacher = TEACHERS.get(method)
    return None if teacher is None else (dataset, teacher, seed)


def with_teachers(methods):
    """`methods` with the teachers they need, each teacher before its first student."""
    ordered = []
    for method in methods:
        teacher = TEACHERS.get(method)
        if teacher is not None and teacher not in ordered:
            ordered.append(teacher)
        if method not in ordered:
            ordered.append(method)
    return ordered


def command(root, dataset, method, seed):
    gin_file, bindings = METHODS[method]
    bindings = DATASETS[dataset] + bindings + [f"train.seed = {seed}",
                                               "after_training.export = False"]
    teacher = teacher_cell((dataset, method, seed))
    if teacher is not None:
        teacher_dir = os.path.abspath(cell_dir(root, *teacher))
        bindings.append(f"train.teacher_checkpoint = '{teacher_dir}'")
    return [sys.executable, "-m", "wss.train", f"--gin_file={gin_file}",
            f"--logdir={cell_dir(root, dataset, method, seed)}"] + [
        f"--gin_bindings={b}" for b in bindings]


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cell_result(root, dataset, method, seed):
    """The finished cell's figures, or None: mIoU, seconds, pseudo-label ECE and accuracy."""
    directory = cell_dir(root, dataset, method, seed)
    train = _read_json(os.path.join(directory, "train_result.json"))
    if not train or not train.get("finished"):
        return None
    evaluation = _read_json(os.path.join(directory, f"ckpt-{train['step']}.eval.json"))
    if not evaluation:
        return None
    result = {"miou": evaluation["miou"], "seconds": train.get("seconds")}
    result.update(train.get("pseudo_labels", {}))
    return result


def _next_ready(pending, running, root, failed):
    """Removes and returns the first pending cell whose teacher (if any) has finished.

    A cell whose teacher is neither finished nor pending nor running (it failed) is removed,
    reported and added to `failed`. None when no pending cell can start now.
    """
    running_cells = [item[0] for item in running]
    for cell in list(pending):
        teacher = teacher_cell(cell)
        if teacher is None or cell_result(root, *teacher) is not None:
            pending.remove(cell)
            return cell
        if teacher in pending or teacher in running_cells:
            continue  # Wait for the teacher.
        pending.remove(cell)
        failed.append(cell)
        print(f"[skipped] {'/'.join(map(str, cell))}: its teacher "
              f"{'/'.join(map(str, teacher))} did not finish", flush=True)
    return None


def _code_version():
    """The git commit of the code that runs the cells (`+dirty` with local changes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty.strip() else "")


def cell_listing(root, datasets, methods, seeds):
    """Markdown list of every finished cell: mIoU, seconds, date, commit and exact command."""
    lines = ["| dataset | method | seed | mIoU | seconds | finished (UTC) | commit |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    commands = []
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
                result = cell_result(root, dataset, method, seed)
                if result is None:
                    continue
                directory = cell_dir(root, dataset, method, seed)
                finished = time.strftime("%Y-%m-%d %H:%M", time.gmtime(os.path.getmtime(
                    os.path.join(directory, "train_result.json"))))
                commit = (_read_text(os.path.join(directory, "commit.txt")) or "-").strip()
                seconds = result.get("seconds")
                lines.append(f"| {dataset} | {method} | {seed} | {result['miou'] * 100:.2f} | "
                             f"{seconds if seconds is not None else '-'} | {finished} | "
                             f"{commit} |")
                text = (_read_text(os.path.join(directory, "command.txt")) or "").strip()
                commands.append(f"- `{dataset}/{method}/seed_{seed}`: `{text}`")
    return "\n".join(lines + ["", "Commands:", ""] + commands)


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def run_cells(cells, root, parallel):
    """Runs the unfinished cells, `parallel` at a time; returns the failed ones.

    A cell with a teacher (`TEACHERS`) starts only after its teacher has finished and is
    skipped if the teacher failed.
    """
    pending = [c for c in cells if cell_result(root, *c) is None]
    running, failed = [], []
    while pending or running:
        while pending and len(running) < parallel:
            cell = _next_ready(pending, running, root, failed)
            if cell is None:
                break
            directory = cell_dir(root, *cell)
            os.makedirs(directory, exist_ok=True)
            argv = command(root, *cell)
            text = " ".join(shlex.quote(a) for a in argv)
            with open(os.path.join(directory, "command.txt"), "w") as f:
                f.write(text + "\n")
            with open(os.path.join(directory, "commit.txt"), "w") as f:
                f.write(_code_version() + "\n")
            print(f"[run] {text}", flush=True)
            log = open(os.path.join(directory, "log.txt"), "w")
            running.append((cell, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT),
                            log, time.time()))
        time.sleep(2)
        for item in list(running):
            cell, process, log, start = item
            if process.poll() is None:
                continue
            log.close()
            running.remove(item)
            status = "done" if process.returncode == 0 else f"FAILED ({process.returncode})"
            print(f"[{status}] {'/'.join(map(str, cell))} in {time.time() - start:.0f} s",
                  flush=True)
            if process.returncode != 0:
                failed.append(cell)
    return failed


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return float(np.mean(values)), float(np.min(values)), float(np.max(values)), len(values)


def _fmt(stats, scale=100.0, digits=2):
    if stats is None:
        return "-"
    mean, low, high, n = stats
    text = f"{mean * scale:.{digits}f}"
    if n > 1:
        text += f" ({low * scale:.{digits}f}-{high * scale:.{digits}f})"
    return text


def report(root, datasets, methods, seeds):
    """The markdown report of the finished cells."""
    lines = ["# Quality on the built-in synthetic sets", "",
             f"Seeds {', '.join(map(str, seeds))}; validation mIoU in %, mean (min-max); "
             "'gap closed' is (method - supervised 1/16) / (supervised all - supervised 1/16) "
             "of the means.", ""]
    for dataset in datasets:
        results = {m: [cell_result(root, dataset, m, s) for s in seeds] for m in methods}
        miou = {m: _stats([r and r["miou"] for r in rs]) for m, rs in results.items()}
        low = miou.get("supervised_1_16")
        high = miou.get("supervised_all")
        lines += [f"## {dataset}", "",
                  "| method | mIoU | gap closed | ECE decoder | ECE SGC | ECE fused | runs |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for method, title in REPORT_ROWS:
            if method not in methods:
                continue
            stats = miou[method]
            gap = "-"
            if stats and low and high and high[0] > low[0]:
                gap = f"{(stats[0] - low[0]) / (high[0] - low[0]) * 100:.0f}%"
            ece = [_fmt(_stats([r and r.get(f"ece_{k}") for r in results[method]]), 100, 1)
                   for k in ("decoder", "sgc", "fused")]
            count = stats[3] if stats else 0
            lines.append(f"| {title} | {_fmt(stats)} | {gap} | {' | '.join(ece)} | "
                         f"{count}/{len(seeds)} |")
        lines.append("")
    return "\n".join(lines)


def write_plots(root, datasets, methods, seeds):
    """PNG plots next to the report; returns their paths ([] without matplotlib).

    `miou.png`: validation mIoU per method and dataset, mean with min-max bars over seeds.
    `reliability_<dataset>.png`: reliability diagrams of the decoder, SGC and fused pseudo
    labels of the PseudoSeg runs (paper figure 5a), pixels pooled over seeds.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plots]'): no plots written")
        return []
    paths = []
    rows = [(m, t) for m, t in REPORT_ROWS if m in methods]
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        means, errors, labels = [], [[], []], []
        for method, _ in rows:
            stats = _stats([r and r["miou"] for r in
                            (cell_result(root, dataset, method, s) for s in seeds)])
            mean, low, high = (stats[:3] if stats else (np.nan,) * 3)
            means.append(mean * 100)
            errors[0].append((mean - low) * 100)
            errors[1].append((high - mean) * 100)
            labels.append(method)
        axis.bar(range(len(rows)), means, yerr=errors, capsize=4, color="tab:blue")
        axis.set_xticks(range(len(rows)), labels, rotation=35, ha="right", fontsize=8)
        axis.set_ylabel("validation mIoU (%)")
        axis.set_title(dataset)
    figure.tight_layout()
    paths.append(os.path.join(root, "miou.png"))
    figure.savefig(paths[-1], dpi=100)
    plt.close(figure)
    for dataset in datasets:
        pooled = {}
        for seed in seeds:
            result = cell_result(root, dataset, "pseudoseg", seed) or {}
            for source, bins in (result.get("reliability") or {}).items():
                count = np.asarray(bins["count"], np.float64)
                confidence = np.nan_to_num(np.asarray(bins["confidence"], np.float64))
                accuracy = np.nan_to_num(np.asarray(bins["accuracy"], np.float64))
                sums = pooled.setdefault(source, np.zeros((3, count.size)))
                sums += np.stack([count, confidence * count, accuracy * count])
        if not pooled:
            continue
        figure, axes = plt.subplots(1, len(pooled), figsize=(4 * len(pooled), 4), squeeze=False)
        for axis, (source, (count, confidence, correct)) in zip(axes[0], pooled.items()):
            edges = np.linspace(0, 1, count.size + 1)
            accuracy = np.divide(correct, count, out=np.zeros_like(count), where=count > 0)
            ece = np.abs(correct - confidence).sum() / max(count.sum(), 1)
            axis.bar(edges[:-1], accuracy, width=1 / count.size, align="edge",
                     edgecolor="black", label="accuracy")
            axis.plot([0, 1], [0, 1], "r--", label="perfect calibration")
            axis.set_title(f"{source}: ECE {ece * 100:.1f}%")
            axis.set_xlabel("confidence")
            axis.set_ylabel("accuracy")
            axis.legend(loc="upper left", fontsize=8)
        figure.suptitle(f"{dataset}: pseudo labels on the unlabelled images")
        figure.tight_layout()
        paths.append(os.path.join(root, f"reliability_{dataset}.png"))
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root_dir", default="runs/quality")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for name, known in (("dataset", DATASETS), ("method", METHODS)):
        unknown = [x for x in (datasets if name == "dataset" else methods) if x not in known]
        if unknown:
            parser.error(f"unknown --{name}s {unknown}; choose from {sorted(known)}")
    methods = with_teachers(methods)
    failed = []
    if not args.report_only:
        cells = [(d, m, s) for d in datasets for s in seeds for m in methods]
        failed = run_cells(cells, args.root_dir, args.parallel)
    text = report(args.root_dir, datasets, methods, seeds)
    os.makedirs(args.root_dir, exist_ok=True)
    with open(os.path.join(args.root_dir, "report.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.root_dir, "cells.md"), "w") as f:
        f.write(cell_listing(args.root_dir, datasets, methods, seeds) + "\n")
    print(text)
    for path in write_plots(args.root_dir, datasets, methods, seeds):
        print(f"wrote {path}")
    if failed:
        print(f"{len(failed)} cell(s) failed: {failed}; see their log.txt", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
