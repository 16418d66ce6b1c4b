"""The wall time of a plan, from run costs measured on the benchmark's machine.

Measured (benchmarks/RESULTS.md) on 2 cores of an AMD EPYC, no GPU, with two runs sharing the
cores (`--parallel=2`), pretraining cached, after the train step was traced once per run
(commit f1ea318): the wall time of each run from its command to its evaluation file, mean over
the runs of a kind (`random_colours`; the semi kind is PseudoSeg, image-level labels, decoder or
SGC only, and gamma x T trials):

| steps | supervised | semi | self-training | runs measured | where |
| --- | --- | --- | --- | --- | --- |
| 150 | 60 s | 99 s | 139 s | 3 + 17 + 2 | the quick grid, 2026-12-02 (18.7 min in all) |
| 500 | 130 s | 242 s | 225 s | 22 cells | the default grid, 2026-12-01/02 |
| 1500 | 338 s | 573 s | - | 2 + 2 | probes, 2026-12-02 |

A run of a kind costs `start + steps * per_step`, the least-squares line through its points
(start: process start, graph tracing, evaluation; self-training's also includes labelling the
unlabelled images once with its teacher). The lines give the points back within 12 s (the
worst: semi at 500 steps, 230 s against 242 s). `shapes` was measured after the fix for
PseudoSeg only (1500 steps: 829-949 s, mean 888 s), which gives its semi cost per step; its
supervised and self-training costs per step are random_colours' times the ratio of the two
sets' supervised costs measured before the fix (0.194 / 0.147 s per step). The batch sizes do
not depend on the split, so 1/8 and all labels cost what 1/16 costs, and a gamma x T trial
costs what PseudoSeg costs.

Two runs sharing 2 cores each take about twice as long as one alone (the demo: 407 s alone,
816 s shared), so the machine finishes the same work in the same time at `--parallel` 1 or 2;
the wall time of a plan is the sum of its runs' shared times divided by `MEASURED_PARALLEL`.
Single runs vary by about 20% with what shares the machine. On another machine the estimate
scales with its speed.
"""

MEASURED_PARALLEL = 2
_SHAPES_SUPERVISED_RATIO = 0.194 / 0.147  # Per-step cost, shapes / random_colours.

# (dataset, kind) -> (start seconds, seconds per step) of one run while another shares the cores.
COSTS = {
    ("random_colours", "supervised"): (28.1, 0.2064),
    ("random_colours", "semi"): (56.2, 0.3467),
    ("random_colours", "self_training"): (102.1, 0.2457),
    ("shapes", "supervised"): (28.1, 0.2064 * _SHAPES_SUPERVISED_RATIO),
    ("shapes", "semi"): (56.2, 0.5545),  # (888 - 56.2) / 1500
    ("shapes", "self_training"): (102.1, 0.2457 * _SHAPES_SUPERVISED_RATIO),
}

# Method -> its kind, the second key of COSTS (`sweep` is a gamma x T trial: PseudoSeg).
KINDS = {
    "supervised": "supervised",
    "pseudoseg": "semi",
    "pseudoseg_image_labels": "semi",
    "decoder_only": "semi",
    "sgc_only": "semi",
    "fusion": "semi",
    "one_stage": "semi",
    "ground_truth_ceiling": "semi",
    "self_training": "self_training",
    "sweep": "semi",
}


def run_seconds(dataset, method, num_steps):
    """The estimated wall time of one run (sharing the machine with another), in seconds.

    Args:
      dataset: a dataset of `COSTS`.
      method: a method of `KINDS` (`sweep` for a gamma x T trial).
      num_steps: its training steps.
    """
    start, per_step = COSTS[(dataset, KINDS[method])]
    return start + per_step * num_steps


def wall_seconds(runs, num_steps):
    """The estimated wall time of a plan on the measured machine, in seconds.

    Args:
      runs: (dataset, method) of every run (`sweep` for a gamma x T trial).
      num_steps: the training steps of every run.
    """
    return sum(run_seconds(d, m, num_steps) for d, m in runs) / MEASURED_PARALLEL


def format_duration(seconds):
    """`42 min` or `7 h 49 min`."""
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
