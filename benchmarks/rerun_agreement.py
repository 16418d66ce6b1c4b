"""Whether two reruns of one seeded config train the same numbers, step by step.

    python benchmarks/rerun_agreement.py [--gin_file demo_supervised.gin] [--steps 20]
        [--pairs 3] [--onednn on|off] [--threads default|one] [--gin_bindings ...]
        [--workdir DIR]

For each pair, two `python -m wss.train` processes of the same config run side by side with
`train.deterministic = True`, a loss line every step and no export; the table gives, per pair,
the first step whose logged losses differ, the loss that differed first and the largest loss
difference over the run. `--onednn off` starts the processes with `TF_ENABLE_ONEDNN_OPTS=0`;
`--threads one` gives each one thread per op and one op at a time, pinned to its own core where
`taskset` exists (`default`: `wss.train`'s own CPU pools). The data, the pretraining and any
teacher come from the cache (`WSS_CACHE_DIR`), so run the config once before. With
`train.deterministic = True` every pair agrees (docs/reliability.md, "Reproducible runs"); add
`--gin_bindings="train.deterministic = False"` to see runs part.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_parting(history_a, history_b):
    """Where two runs' logged losses first differ.

    Args:
      history_a: `train_result.json`'s `history` of one run (a list of dicts with `step`).
      history_b: the other run's.

    Returns:
      (first step whose losses differ or None, the loss names that differ there, the largest
      absolute difference of any loss over the steps both logged).

    Raises:
      ValueError: if the two runs did not log the same steps.
    """
    steps_a = [row["step"] for row in history_a]
    steps_b = [row["step"] for row in history_b]
    if steps_a != steps_b:
        raise ValueError(f"the runs logged different steps: {steps_a} and {steps_b}")
    first, names, largest = None, (), 0.0
    for row_a, row_b in zip(history_a, history_b):
        differ = sorted(key for key in row_a
                        if key != "step" and row_a[key] != row_b.get(key))
        for key in differ:
            largest = max(largest, abs(row_a[key] - row_b[key]))
        if differ and first is None:
            first, names = row_a["step"], tuple(differ)
    return first, names, largest


def _environment(onednn, threads, core):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if onednn == "off":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if threads == "one":
        env.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    prefix = []
    if threads == "one" and shutil.which("taskset"):
        prefix = ["taskset", "-c", str(core % (os.cpu_count() or 1))]
    return env, prefix


def run_pair(args, workdir, pair):
    """Trains the config twice side by side; returns both `train_result.json` histories."""
    bindings = [f"train.num_steps = {args.steps}", "train.deterministic = True",
                "train.log_every = 1", "after_training.export = False",
                "train.share_as_teacher = False", *args.gin_bindings]
    processes, logdirs = [], []
    for member in range(2):
        logdir = os.path.join(workdir, f"pair{pair}_{'ab'[member]}")
        shutil.rmtree(logdir, ignore_errors=True)
        env, prefix = _environment(args.onednn, args.threads, member)
        command = prefix + [sys.executable, "-m", "wss.train", f"--gin_file={args.gin_file}",
                            f"--logdir={logdir}"]
        command += [f"--gin_bindings={binding}" for binding in bindings]
        with open(logdir + ".log", "w") as log:  # The child keeps its own descriptor.
            processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                              stderr=subprocess.STDOUT))
        logdirs.append(logdir)
    failed = [logdir for process, logdir in zip(processes, logdirs) if process.wait() != 0]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed; see their .log files")
    histories = []
    for logdir in logdirs:
        with open(os.path.join(logdir, "train_result.json")) as f:
            histories.append(json.load(f)["history"])
    return histories


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", default="demo_supervised.gin")
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--onednn", choices=("on", "off"), default="on")
    parser.add_argument("--threads", choices=("one", "default"), default="default")
    parser.add_argument("--workdir", default=None,
                        help="where the runs go (default: a temporary directory, removed)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="rerun_agreement_")
    os.makedirs(workdir, exist_ok=True)
    print(f"{args.gin_file}, {args.steps} steps, oneDNN {args.onednn}, threads {args.threads}")
    print("| pair | first step that differs | losses that differ there | largest difference |")
    print("| --- | --- | --- | --- |")
    agreed = 0
    try:
        for pair in range(args.pairs):
            first, names, largest = first_parting(*run_pair(args, workdir, pair))
            agreed += first is None
            print(f"| {pair} | {first if first is not None else 'none'} | "
                  f"{', '.join(names) or '-'} | {largest:.3g} |", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{agreed} of {args.pairs} pairs agreed bit for bit")


if __name__ == "__main__":
    main()
