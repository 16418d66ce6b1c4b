"""The wall time of a plan, from per-step costs measured on the benchmark's machine.

Measured (benchmarks/RESULTS.md, 2026-12-01) on 2 cores of an AMD EPYC, no GPU, with two runs
sharing the cores (`--parallel=2`), 1500 steps, pretraining cached: the wall time of each run
from its command to its evaluation file (mean over the finished cells of the table):

| dataset | runs | mean wall (s) | runs measured |
| --- | --- | --- | --- |
| random_colours | supervised (1/16 and all labels) | 266 | 6 |
| random_colours | PseudoSeg, image-level labels, decoder / SGC only | 523 | 8 |
| random_colours | self-training | 494 | 3 |
| shapes | supervised (1/16 and all labels) | 335 | 6 |
| shapes | PseudoSeg, image-level labels | 816 | 6 |

A run costs `START_S` (process start, graph tracing, the final evaluation: wall minus the
trainer's own `seconds` averaged 41 s) plus its steps times `SECONDS_PER_STEP`, which is
(mean wall - `START_S`) / 1500; self-training also labels the unlabelled images once with its
teacher (`TEACHER_LABELS_S`, 21-26 s in its logs). Shapes' self-training was not measured: its
cost is shapes' supervised cost times random_colours' self-training / supervised ratio. The
batch sizes do not depend on the split, so 1/8 and all labels cost what 1/16 costs (measured
for all labels), and a gamma x T trial costs what PseudoSeg costs.

Two runs sharing 2 cores each take about twice as long as one alone (the demo: 407 s alone,
816 s shared), so the machine finishes the same work in the same time at `--parallel` 1 or 2;
the wall time of a plan is the sum of its runs' shared times divided by `MEASURED_PARALLEL`.
On another machine the estimate scales with its speed.
"""

START_S = 45.0
TEACHER_LABELS_S = 25.0
MEASURED_PARALLEL = 2

# (dataset, kind) -> seconds per step of one run while another run shares the 2 cores.
SECONDS_PER_STEP = {
    ("random_colours", "supervised"): 0.147,  # (266 - 45) / 1500
    ("random_colours", "semi"): 0.319,  # (523 - 45) / 1500
    ("random_colours", "self_training"): 0.282,  # (494 - 45 - 25) / 1500
    ("shapes", "supervised"): 0.194,  # (335 - 45) / 1500
    ("shapes", "semi"): 0.514,  # (816 - 45) / 1500
    ("shapes", "self_training"): 0.372,  # Not measured: 0.194 * 0.282 / 0.147.
}

# Method -> its row of SECONDS_PER_STEP (`sweep` is a gamma x T trial: PseudoSeg).
KINDS = {
    "supervised": "supervised",
    "pseudoseg": "semi",
    "pseudoseg_image_labels": "semi",
    "decoder_only": "semi",
    "sgc_only": "semi",
    "ground_truth_ceiling": "semi",
    "self_training": "self_training",
    "sweep": "semi",
}


def run_seconds(dataset, method, num_steps):
    """The estimated wall time of one run (sharing the machine with another), in seconds.

    Args:
      dataset: a dataset of `SECONDS_PER_STEP`.
      method: a method of `KINDS` (`sweep` for a gamma x T trial).
      num_steps: its training steps.
    """
    kind = KINDS[method]
    seconds = START_S + SECONDS_PER_STEP[(dataset, kind)] * num_steps
    if kind == "self_training":
        seconds += TEACHER_LABELS_S
    return seconds


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
