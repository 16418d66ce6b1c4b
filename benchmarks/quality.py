"""Quality benchmark: the paper's tables 5 and 6 on the built-in synthetic sets, over seeds.

    python benchmarks/quality.py --grid=quick   --root_dir=runs/quality --parallel=2  # ~19 min
    python benchmarks/quality.py --grid=default --root_dir=runs/quality --parallel=2  # ~84 min
    python benchmarks/quality.py --grid=full    --root_dir=runs/quality --parallel=2  # ~12 h
        [--datasets=shapes,random_colours] [--methods=supervised,pseudoseg,...]
        [--splits=1_16,1_8,all] [--seeds=0,1,2] [--sweep_seeds=0 (empty: no sweep)]
        [--plan] [--report_only] [--python=INTERPRETER]

Runs `python -m wss.train` for every (dataset, method, label split, seed) cell with the demo
configs and nothing else than the bindings a user of another dataset would give (data
directory, number of classes, class names, split files, crop size), skips cells that already
finished, then the gamma x T grid of PseudoSeg through `launch/sweep.py`, and writes, next to
the cells, `report.md` (the paper's tables 5 and 6 with a column per label fraction, ECE of
the pseudo labels, the gamma x T table, which of the paper's orderings hold), `cells.md` (every
cell's mIoU, date, commit and exact command) and the plots `miou.png`,
`reliability_<dataset>[_1_8].png` and `gamma_temperature.png`. Before running it prints the
planned cells and sweeps and an estimate of the wall time (`quality_suite/costs.py`: per-step
costs measured on this project's 2-core machine with two runs sharing it); `--plan` stops
there and writes nothing.

Methods, at 1/16 and 1/8 of the labels (`labelled_1_<n>.txt` / `unlabelled_1_<n>.txt`):
supervised; PseudoSeg with unlabelled images (`demo.gin`); PseudoSeg with image-level labels
(`demo_weak.gin`); self-training (`demo_self_training.gin`, whose teacher is the supervised
cell of the same dataset, split and seed: it runs first, and a student whose teacher failed is
skipped); the source ablation, pseudo labels from the decoder only or SGC only (the fusion is
the PseudoSeg cell). Supervised with all labels once per dataset and seed (split `all`).
gamma x T: `PseudoLabelConfig.gamma` in 0.3, 0.5, 0.7 x `PseudoLabelConfig.temperature` in
0.05, 0.1, 0.5 around the demo's 0.5 and 0.1, PseudoSeg at 1/16, one sweep per dataset and
sweep seed.

Grid sizes (estimates on 2 cores with the pretraining cached; the trade-off is steps and
coverage, never the recipe):

* `quick` (~19 min; 18.7 min measured): random_colours, seed 0, 150 steps (a tenth of the
  demo's), every row at both fractions (13 cells) and the 9 gamma x T trials. It checks that
  every part runs and shows which way things lean; at 150 steps the figures say little about
  the method.
* `default` (~84 min; about 87 min measured): random_colours, seeds 0, 1, 2, 500 steps, every
  row at both fractions (39 cells), the gamma x T grid with seed 0. Shapes is left out: its
  PseudoSeg runs cost 1.6 times more per step and all of it would not fit 90 minutes at a
  useful length.
* `full` (~12 h from scratch): the README's setting, the demo configs' 1500 steps, both
  datasets, seeds 0, 1, 2 (78 cells) and the gamma x T grid with 3 seeds (54 trials);
  `--sweep_seeds=0` saves 3 h 40 min.

Figures from `quick` and `default` are not the README's (fewer steps: the poly learning-rate
schedule ends sooner, the models are less trained); the report says so at its top. The grids
keep apart: `full` lives in `--root_dir` itself (`ROOT/<dataset>/<run>/seed_<n>`, where the
1/16 runs keep the names `supervised_1_16`, `supervised_all`, `pseudoseg`, ...), the others in
`ROOT/<grid>_<steps>_steps/`; and a cell that finished at another step count is never used.

`--grid` defaults to `full`, so the README's commands still reproduce its figures.
`--parallel=N` runs N cells at once and gives each sweep `--max_parallel=N`. Every cell's
command is printed before it runs and stored in its directory (`command.txt`).
"""

import argparse
import collections
import os
import sys

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCHMARKS_DIR not in sys.path:  # For `quality_suite` when this file is loaded by path.
    sys.path.insert(0, BENCHMARKS_DIR)

from quality_suite import costs, gamma_t, grids, plots, runner, tables  # noqa: E402
from quality_suite import report as report_lib  # noqa: E402


def _list(text, cast=str):
    """A comma-separated flag as a tuple."""
    return tuple(cast(x) for x in text.split(",") if x.strip())


def parse_plan(argv):
    """Parses the flags into a `grids.Plan` and the run options.

    Args:
      argv: the command-line arguments (without the program name).

    Returns:
      (plan, args).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=sorted(grids.GRIDS), default="full")
    parser.add_argument("--root_dir", default="runs/quality")
    parser.add_argument("--datasets", help="default: the grid's")
    parser.add_argument("--methods", default=",".join(grids.DEFAULT_METHODS),
                        help="default: every row of the paper's tables; also "
                             f"{', '.join(grids.OPT_IN_METHODS)} (diagnostics)")
    parser.add_argument("--splits", default=",".join(grids.SPLITS))
    parser.add_argument("--seeds", help="default: the grid's")
    parser.add_argument("--sweep_seeds", help="default: the grid's; empty: no gamma x T sweep")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the runs")
    parser.add_argument("--plan", action="store_true",
                        help="print the plan and the estimate, write nothing")
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args(argv)
    grid = grids.GRIDS[args.grid]
    datasets = _list(args.datasets) if args.datasets is not None else grid.datasets
    seeds = _list(args.seeds, int) if args.seeds is not None else grid.seeds
    sweep_seeds = (_list(args.sweep_seeds, int) if args.sweep_seeds is not None
                   else grid.sweep_seeds)
    methods, splits = _list(args.methods), _list(args.splits)
    for flag, values, known in (("datasets", datasets, grids.DATASETS),
                                ("methods", methods, grids.METHODS),
                                ("splits", splits, grids.SPLITS)):
        unknown = [x for x in values if x not in known]
        if unknown:
            parser.error(f"unknown --{flag} {unknown}; choose from {sorted(known)}")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    plan = grids.Plan(grid, grids.grid_root(args.root_dir, grid), datasets, methods, splits,
                      seeds, sweep_seeds)
    return plan, args


# What `plan_runs` lists: a cell (total 1) or a sweep (total: its trials), how many of its
# runs are left, and its state in words.
Runs = collections.namedtuple("Runs", ["label", "dataset", "method", "total", "left", "state"])


def plan_runs(plan):
    """Every cell and sweep of a plan with what is left of it, read without writing.

    Returns:
      A list of `Runs`: one per cell (its state `finished`, `unfinished` or the foreign
      cell's message; a foreign cell is not run, so nothing is left of it), then one per sweep
      (method `sweep`).
    """
    steps = plan.grid.num_steps
    runs = []
    for cell in plan.cells:
        state, message = runner.cell_state(plan.root, cell, steps)
        runs.append(Runs(grids.cell_label(cell), cell.dataset, cell.method, 1,
                         int(state == runner.UNFINISHED),
                         f"foreign: {message}" if state == runner.FOREIGN else state))
    for dataset, seed in plan.sweeps:
        states = gamma_t.trial_states(plan.root, dataset, seed)
        left = sum(state != "finished" for state in states.values())
        runs.append(Runs(os.path.relpath(gamma_t.sweep_dir(plan.root, dataset, seed),
                                         plan.root),
                         dataset, "sweep", len(states), left,
                         f"gamma x T: {left} of {len(states)} trials to run"))
    return runs


def estimate(plan, runs):
    """(seconds left, seconds of the whole plan) on the measured machine (`costs`)."""
    left = [(r.dataset, r.method) for r in runs for _ in range(r.left)]
    everything = [(r.dataset, r.method) for r in runs for _ in range(r.total)]
    steps = plan.grid.num_steps
    return costs.wall_seconds(left, steps), costs.wall_seconds(everything, steps)


def print_plan(plan):
    """Prints every cell and sweep with its state and the estimated wall time.

    Returns:
      (the estimated seconds of what is left, of the whole plan).
    """
    steps = plan.grid.num_steps
    print(f"Grid {plan.grid.name}: {steps} steps, in {plan.root}")
    runs = plan_runs(plan)
    for r in runs:
        each = " each" if r.method == "sweep" else ""
        print(f"  {r.label:50s} ~{costs.run_seconds(r.dataset, r.method, steps):4.0f} s{each}"
              f"  {r.state}")
    left, whole = estimate(plan, runs)
    print(f"Estimated wall time {costs.format_duration(left)} for what is left (the whole "
          f"plan: {costs.format_duration(whole)}) on a 2-core machine like the one measured "
          "(benchmarks/quality_suite/costs.py)", flush=True)
    return left, whole


def run(plan, parallel, python):
    """Runs the unfinished cells, then the sweeps; returns what failed (cells, sweep dirs)."""
    failed = runner.run_cells(plan.cells, plan.root, plan.grid.num_steps, parallel, python)
    for dataset, seed in plan.sweeps:
        status = gamma_t.run_sweep(plan.root, dataset, seed, plan.grid.num_steps, parallel,
                                   python)
        if status != 0:
            failed.append(gamma_t.sweep_dir(plan.root, dataset, seed))
    return failed


def write_outputs(plan):
    """Writes report.md, cells.md and the plots; returns the report's text."""
    results = tables.Results(plan.root, plan.cells, plan.grid.num_steps)
    sweep_results = {d: gamma_t.read_results(plan.root, d, plan.sweep_seeds)
                     for d in plan.datasets} if plan.sweep_seeds else {}
    text = report_lib.report(plan, results, sweep_results)
    os.makedirs(plan.root, exist_ok=True)
    with open(os.path.join(plan.root, "report.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(plan.root, "cells.md"), "w") as f:
        f.write(report_lib.cell_listing(plan) + "\n")
    for path in plots.write_plots(results, plan, sweep_results):
        print(f"wrote {path}")
    return text


def main(argv=None):
    """Runs the command line; returns the exit status (1 when something failed)."""
    plan, args = parse_plan(sys.argv[1:] if argv is None else argv)
    print_plan(plan)
    if args.plan:
        return 0
    failed = [] if args.report_only else run(plan, args.parallel, args.python)
    print(write_outputs(plan))
    if failed:
        names = [grids.cell_label(f) if isinstance(f, grids.Cell) else f for f in failed]
        print(f"{len(failed)} cell(s) or sweep(s) failed: {', '.join(names)}; see their "
              "log.txt / train.log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
