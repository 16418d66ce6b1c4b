"""The gamma x T grid of PseudoSeg's pseudo labels, run through `launch/sweep.py`.

One sweep per dataset and sweep seed: `launch/sweep.py` with demo.gin at 1/16, the grid's
bindings (`grids.bindings`: dataset, steps, seed, no export) as `--gin_bindings` and
`PseudoLabelConfig.gamma` x `PseudoLabelConfig.temperature` as its two `--sweep` flags, in
`GRID_ROOT/<dataset>/sweep_gamma_temperature/seed_<n>/`. The sweep script owns everything about
the trials: their directories and `trial.json`, skipping finished ones and retrying failed ones
on a rerun, `summary.csv` / `summary.md` / `summary_heatmap.png`. This module builds its
command, asks its modules (`sweeps.grid`, `sweeps.trials`, `sweeps.results`) which trials
exist and what they scored, and averages the seeds for the report's heatmap.

The values bracket the demo's (gamma 0.5, T 0.1): T 0.05 sharper, 0.5 the paper's value.
"""

import functools
import importlib.util
import math
import os
import subprocess
import sys

from . import grids

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWEEP_SCRIPT = os.path.join(REPO, "launch", "sweep.py")

GAMMA = "PseudoLabelConfig.gamma"
TEMPERATURE = "PseudoLabelConfig.temperature"
GAMMAS = ("0.3", "0.5", "0.7")
TEMPERATURES = ("0.05", "0.1", "0.5")
DEMO_VALUES = ("0.5", "0.1")  # demo.gin's (gamma, T).
# The cell whose hyperparameters are swept.
METHOD, SPLIT = "pseudoseg", "1_16"


@functools.cache
def sweep_module():
    """`launch/sweep.py` as a module (it puts `launch/` on sys.path for its `sweeps` parts)."""
    spec = importlib.util.spec_from_file_location("wss_launch_sweep", SWEEP_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep_dir(root, dataset, seed):
    """The sweep directory of a dataset and seed under a grid root."""
    return os.path.join(root, dataset, "sweep_gamma_temperature", f"seed_{seed}")


def sweep_flags():
    """The two `--sweep` flags of `launch/sweep.py`."""
    return [f"--sweep={GAMMA}=[{', '.join(GAMMAS)}]",
            f"--sweep={TEMPERATURE}=[{', '.join(TEMPERATURES)}]"]


def sweep_argv(root, dataset, seed, num_steps, parallel, python):
    """The `launch/sweep.py` command of one sweep.

    Args:
      root: the grid root.
      dataset: the dataset.
      seed: the seed of every trial.
      num_steps: the grid's training steps.
      parallel: trials at once (`--max_parallel`).
      python: the interpreter of the trials (`--python`); the sweep script itself runs with
        this process's interpreter.

    Returns:
      The argument list.
    """
    gin_file = grids.METHODS[METHOD][0]
    bindings = grids.bindings(dataset, METHOD, SPLIT, seed, num_steps)
    return ([sys.executable, SWEEP_SCRIPT, f"--root_dir={sweep_dir(root, dataset, seed)}",
             f"--gin_file={gin_file}"] + [f"--gin_bindings={b}" for b in bindings]
            + sweep_flags() + [f"--max_parallel={parallel}", f"--python={python}"])


def trial_states(root, dataset, seed):
    """{trial name: state} of a sweep's trials, read without writing anything.

    States are `launch/sweeps/trials.trial_results`'s: `finished`, `trained`, `stopped` or
    `new` (also for a trial whose directory does not exist yet).
    """
    sweep = sweep_module()
    directory = sweep_dir(root, dataset, seed)
    grid = sweep.make_grid(sweep.parse_sweeps([flag.split("=", 1)[1] for flag in sweep_flags()]))
    return {name: sweep.trial_results(os.path.join(directory, name))["state"]
            for name, _ in grid}


def run_sweep(root, dataset, seed, num_steps, parallel, python):
    """Runs (or resumes) one sweep; returns `launch/sweep.py`'s exit status."""
    argv = sweep_argv(root, dataset, seed, num_steps, parallel, python)
    print("[sweep] " + sweep_module().shell_join(argv), flush=True)
    return subprocess.run(argv, stdin=subprocess.DEVNULL).returncode


def read_results(root, dataset, seeds):
    """The finished trials' mIoU by (gamma, T), over the sweeps of `seeds`.

    Args:
      root: the grid root.
      dataset: the dataset.
      seeds: the sweep seeds.

    Returns:
      {(gamma text, T text): [mIoU of each seed whose trial finished]}; every grid point is a
      key, with [] when no seed has it.
    """
    values = {(g, t): [] for g in GAMMAS for t in TEMPERATURES}
    sweep = sweep_module()
    for seed in seeds:
        directory = sweep_dir(root, dataset, seed)
        if not os.path.isdir(directory):
            continue
        _, rows = sweep.collect(directory)
        for row in rows:
            key = (row["swept"].get(GAMMA), row["swept"].get(TEMPERATURE))
            miou = row["eval"].get("miou")
            if (row["status"] == "finished" and key in values
                    and isinstance(miou, (int, float)) and not math.isnan(miou)):
                values[key].append(float(miou))
    return values
