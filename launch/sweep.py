"""Grid sweeps over gin parameters: one `wss.train` run per combination, then a summary table.

    python launch/sweep.py --gin_file=voc_semi.gin --root_dir=runs/sweep_voc \\
        --sweep='PseudoLabelConfig.gamma=[0.3, 0.5, 0.7]' \\
        --sweep='PseudoLabelConfig.temperature=[0.5, 0.7, 1.0]' \\
        [--gin_bindings='X.y = z' ...] [--max_parallel=N] [--dry_run] [-- WSS_TRAIN_ARGS...]
    python launch/sweep.py --summarize --root_dir=runs/sweep_voc

Each trial trains with `python -m wss.train` (which evaluates the final checkpoint) in its own
directory, named after its bindings, e.g.
`ROOT/PseudoLabelConfig.gamma=0.3,PseudoLabelConfig.temperature=0.7/`, which holds
`trial.json` (the bindings, the command, status, attempts, times) and `train.log` (the run's
output). Values are gin literals (numbers, 'strings', True/False/None, tuples, @references);
the swept bindings come after `--gin_bindings`, so they win.

Rerunning the same command skips finished trials (`train_result.json` says finished and the
final checkpoint's `ckpt-N.eval.json` exists), evaluates trained but unevaluated ones, and
retries failed or interrupted ones (training resumes from their last checkpoint). A trial
directory recorded with other gin files, bindings or training arguments is an error: use
another `--root_dir`.

`--dry_run` writes the trial directories and `trial.json` files and prints one command per
unfinished trial (with its `--logdir`) on stdout, for a cluster scheduler; `--summarize` then
collects the results. At the end of a sweep, and with `--summarize`, every trial's final
metrics go to `ROOT/summary.csv` and `ROOT/summary.md` (a markdown table), and, when two
parameters were swept and matplotlib is installed (`pip install -e ".[plots]"`), a heatmap of
`--metric` to `ROOT/summary_heatmap.png`.

Everything after `--` goes to every `wss.train` command (e.g. `-- --strategy=one_device`).
With `--gpus=0,1,2,3 --gpus_per_trial=1`, up to four trials run at once, each with its own
`CUDA_VISIBLE_DEVICES`. This script imports nothing but the standard library, `wss.run_files`
(the run-file names; it imports nothing, so no TensorFlow starts here) and matplotlib for the
heatmap; it launches subprocesses. It is the command line; its parts are in `launch/sweeps/`:
`grid` (the `--sweep` flags), `trials` (a trial directory), `scheduler` (running trials),
`results`, `summary` (the tables) and `plots` (the heatmap).
"""

import argparse
import os
import sys

LAUNCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(LAUNCH_DIR)
# The `sweeps` package lives next to this script, which is not always run as a script (the
# tests load it by path); a checkout's `wss` is importable without installing it, as it is in
# the trials' environment (`scheduler._child_environment`).
if os.path.isdir(os.path.join(REPO, "wss")) and REPO not in sys.path:
    sys.path.insert(0, REPO)
if LAUNCH_DIR not in sys.path:
    sys.path.insert(0, LAUNCH_DIR)

from sweeps import SweepError  # noqa: E402
from sweeps.grid import (  # noqa: E402
    make_grid,
    parse_sweep,
    parse_sweeps,
    split_values,
    trial_name,
    value_label,
)
from sweeps.plots import HEATMAP_PNG, write_heatmap  # noqa: E402
from sweeps.results import collect  # noqa: E402
from sweeps.scheduler import PREEMPTED_EXIT_CODE, run_trials, shell_join, shell_quote  # noqa: E402
from sweeps.summary import SUMMARY_CSV, SUMMARY_MD, write_summary  # noqa: E402
from sweeps.trials import LOG_FILE, TRIAL_FILE, Trial, trial_results  # noqa: E402

# What this module offered before its parts moved to `sweeps/`.
__all__ = [
    "HEATMAP_PNG", "LOG_FILE", "PREEMPTED_EXIT_CODE", "REPO", "SUMMARY_CSV", "SUMMARY_MD",
    "TRIAL_FILE", "SweepError", "Trial", "collect", "main", "make_grid", "parse_args",
    "parse_sweep", "parse_sweeps", "run_trials", "shell_join", "shell_quote", "split_values",
    "trial_name", "trial_results", "value_label", "write_heatmap", "write_summary",
]


def _parser():
    """The argument parser (the flags before `--`)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `python launch/sweep.py --help` for the flags; see launch/README.md.")
    parser.add_argument("--root_dir", required=True, help="One subdirectory per trial.")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="Gin file or packaged config name (repeatable).")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="A binding for every trial, e.g. 'train.num_steps = 1000'.")
    parser.add_argument("--sweep", action="append", default=[],
                        help="PARAM=[v1, v2, ...] (repeatable; the grid is their product).")
    parser.add_argument("--max_parallel", type=int, default=None,
                        help="Trials run at once (default 1, or one per --gpus group).")
    parser.add_argument("--gpus", default=None,
                        help="GPU ids to share out, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES).")
    parser.add_argument("--gpus_per_trial", type=int, default=1,
                        help="GPUs per trial with --gpus.")
    parser.add_argument("--dry_run", action="store_true",
                        help="Write trial.json files and print the commands; run nothing.")
    parser.add_argument("--summarize", action="store_true",
                        help="Only write the summary of ROOT_DIR's trials.")
    parser.add_argument("--metric", default="miou",
                        help="Evaluation key for the best trial and the heatmap.")
    parser.add_argument("--heatmap_params", default=None,
                        help="Two swept parameters A,B for the heatmap (default: the two "
                             "varied ones).")
    parser.add_argument("--python", default=sys.executable,
                        help="Interpreter of the trials (default: this one).")
    return parser


def _gpu_groups(args, parser):
    """Splits `--gpus` into `--gpus_per_trial` groups, at most `--max_parallel` of them.

    Args:
      args: the parsed flags.
      parser: for errors.

    Returns:
      The CUDA_VISIBLE_DEVICES strings of the groups, or None without `--gpus`.
    """
    if not args.gpus:
        return None
    ids = [g.strip() for g in args.gpus.split(",") if g.strip()]
    if args.gpus_per_trial < 1 or len(ids) % args.gpus_per_trial:
        parser.error(f"--gpus={args.gpus}: {len(ids)} GPU(s) do not split into groups of "
                     f"--gpus_per_trial={args.gpus_per_trial}")
    groups = [",".join(ids[i:i + args.gpus_per_trial])
              for i in range(0, len(ids), args.gpus_per_trial)]
    if args.max_parallel is not None and args.max_parallel > len(groups):
        parser.error(f"--max_parallel={args.max_parallel} exceeds the "
                     f"{len(groups)} GPU group(s) of --gpus={args.gpus}")
    if args.max_parallel:
        groups = groups[:args.max_parallel]
    return groups


def _check_sweep_args(args, parser):
    """Checks the flags of a sweep (not `--summarize`) and adds `gpu_groups` and `grid`.

    Args:
      args: the parsed flags, with `train_args`.
      parser: for errors (which exit with status 2).
    """
    if not args.gin_file:
        parser.error("--gin_file is required (unless --summarize)")
    if not args.sweep:
        parser.error("give at least one --sweep='PARAM=[v1, v2, ...]' (or --summarize)")
    for arg in args.train_args:
        if arg.startswith(("--logdir", "--gin_file", "--gin_bindings")):
            parser.error(f"training argument {arg!r} after `--`: the sweep sets --logdir; put "
                         "--gin_file and --gin_bindings before `--`")
    args.gpu_groups = _gpu_groups(args, parser)
    if args.max_parallel is None:
        args.max_parallel = len(args.gpu_groups) if args.gpu_groups else 1
    if args.max_parallel < 1:
        parser.error(f"--max_parallel={args.max_parallel} must be at least 1")
    try:
        args.grid = make_grid(parse_sweeps(args.sweep))
    except SweepError as error:
        parser.error(str(error))


def parse_args(argv):
    """Parses the flags; everything after `--` is kept as `train_args`.

    Args:
      argv: the command-line arguments (without the program name).

    Returns:
      The flags as an `argparse.Namespace`; for a sweep (not `--summarize`) also with
      `gpu_groups` and `grid` (see `sweeps.grid.make_grid`).
    """
    argv = list(argv)
    train_args = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1:]
    parser = _parser()
    args = parser.parse_args(argv)
    args.train_args = train_args
    args.root_dir = os.path.abspath(args.root_dir)
    if args.heatmap_params:
        args.heatmap_params = [p.strip() for p in args.heatmap_params.split(",")]
    if not args.summarize:
        _check_sweep_args(args, parser)
    return args


def _summarize(args):
    """Writes and prints the summary of `args.root_dir`."""
    markdown, heatmap_message = write_summary(args.root_dir, args.metric, args.heatmap_params)
    print(markdown)
    print(heatmap_message)
    print(f"Summary: {os.path.join(args.root_dir, SUMMARY_CSV)}, "
          f"{os.path.join(args.root_dir, SUMMARY_MD)}")


def _dry_run(trials, root_dir):
    """Writes the trial records and prints the command of every unfinished trial.

    Args:
      trials: the `Trial`s, records loaded.
      root_dir: the sweep directory (for the header line).
    """
    print(f"# {len(trials)} trial(s) under {root_dir}; commands of the unfinished "
          "ones follow (one per line)", file=sys.stderr)
    for trial in trials:
        trial.save_record()
        kind, command = trial.next_command()
        if kind is None:
            print(f"# skip {trial.name}: finished", file=sys.stderr)
        else:
            print(shell_join(command))


def _sweep(args, trials):
    """Runs the unfinished trials, then writes the summary.

    Args:
      args: the parsed flags.
      trials: the `Trial`s, records loaded.

    Returns:
      The exit status: 0, 1 when a trial failed, 130 when interrupted.
    """
    print(f"Sweep of {len(trials)} trial(s) under {args.root_dir}, "
          f"{args.max_parallel} at a time", flush=True)
    for trial in trials:
        if not os.path.exists(trial.record_path):
            trial.save_record()
    try:
        failed = run_trials(trials, args.max_parallel, args.gpu_groups)
    except KeyboardInterrupt:
        print("Interrupted; rerun the same command to continue.", file=sys.stderr)
        return 130
    _summarize(args)
    if failed:
        print(f"{len(failed)} trial(s) failed: {', '.join(failed)}; their logs are "
              f"{LOG_FILE} in their directories. Rerun the same command to retry them.",
              file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    """Runs the command line.

    Args:
      argv: the arguments (default: `sys.argv[1:]`).

    Returns:
      The exit status: 0, 1 when a trial failed, 2 for an error, 130 when interrupted.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.summarize:
            _summarize(args)
            return 0
        trials = [Trial(args.root_dir, name, swept, args.gin_file, args.gin_bindings,
                        args.train_args, args.python) for name, swept in args.grid]
        for trial in trials:
            trial.load_record()
        if args.dry_run:
            _dry_run(trials, args.root_dir)
            return 0
        return _sweep(args, trials)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
