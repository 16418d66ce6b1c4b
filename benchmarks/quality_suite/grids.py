"""What the quality benchmark runs: datasets, methods, label splits, grid sizes and cells.

A cell is one `python -m wss.train` run: (dataset, method, split, seed). Its directory is
`GRID_ROOT/<dataset>/<run name>/seed_<n>`, where the run name is the method, with the split as
a suffix except for the non-supervised methods at 1/16 (the names the benchmark used before
it had splits, so that finished 1/16 cells keep being found):

| method | 1/16 | 1/8 | all labels |
| --- | --- | --- | --- |
| supervised | `supervised_1_16` | `supervised_1_8` | `supervised_all` |
| pseudoseg (and the others) | `pseudoseg` | `pseudoseg_1_8` | - |

`GRID_ROOT` is `--root_dir` itself for the `full` grid (the demo's 1500 steps) and
`ROOT/<grid>_<steps>_steps` for the shorter ones, so a short run is never taken for a full one.
"""

import collections
import dataclasses
import os
import sys

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

# demo.gin's online frozen teacher (before its offline labels, `train.offline_pseudo_labels`).
ONLINE_TEACHER = ["train.offline_pseudo_labels = False", "train.ema_teacher_decay = 1.0"]

# Method -> (gin file, the method's own bindings).
METHODS = {
    "supervised": ("demo_supervised.gin", []),
    "pseudoseg": ("demo.gin", []),
    "pseudoseg_image_labels": ("demo_weak.gin", []),
    "self_training": ("demo_self_training.gin", []),
    # The pseudo-label source ablation, on online labels (demo.gin's frozen teacher made them
    # online before its offline renamed labels, which have no source to ablate).
    "decoder_only": ("demo.gin", ONLINE_TEACHER + ["PseudoLabelConfig.source = 'decoder'"]),
    "sgc_only": ("demo.gin", ONLINE_TEACHER + ["PseudoLabelConfig.source = 'sgc'"]),
    "fusion": ("demo.gin", ONLINE_TEACHER + ["PseudoLabelConfig.source = 'fusion'",
                                             "PseudoSegObjective.teacher_mirror = False"]),
    # The paper's one-stage loop: the model being trained makes its fused, sharpened labels.
    "one_stage": ("demo.gin", ["train.offline_pseudo_labels = False",
                               "train.ema_teacher_decay = 0.0", "train.teacher_checkpoint = None",
                               "PseudoSegObjective.teacher_mirror = False",
                               "PseudoLabelConfig.source = 'fusion'",
                               "PseudoLabelConfig.soft = True"]),
    # A diagnostic: the unlabelled images' own masks as pseudo labels, the ceiling of the
    # unlabelled path (strong view + L_u) that every real pseudo-label source is bounded by.
    "ground_truth_ceiling": ("demo.gin", ONLINE_TEACHER
                             + ["PseudoLabelConfig.source = 'ground_truth'"]),
}
# Methods that run only when `--methods` names them: diagnostics and the extra ablation rows.
OPT_IN_METHODS = ("ground_truth_ceiling", "fusion", "one_stage")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in OPT_IN_METHODS)

# Label split -> its bindings. The synthetic sets ship labelled_1_<n>.txt and
# unlabelled_1_<n>.txt for n in 2, 4, 8, 16; demo.gin reads the 1/16 files.
SPLITS = {
    "1_16": [],
    "1_8": ["labelled_split/join_path.name = 'labelled_1_8.txt'",
            "unlabelled_split/join_path.name = 'unlabelled_1_8.txt'"],
    "all": ["labelled_split/join_path.name = 'train.txt'"],
}
SPLIT_TITLES = {"1_16": "1/16", "1_8": "1/8", "all": "all labels"}
# The splits of the tables' columns; `all` is the upper bound, run by `supervised` only.
FRACTIONS = ("1_16", "1_8")
ALL_LABELS = "all"

# Method -> the method whose cell (same dataset, split and seed) is its teacher
# (`train.teacher_checkpoint` = that cell's log directory).
TEACHERS = {"self_training": "supervised"}

DEMO_STEPS = 1500
# demo.gin's intervals for its 1500 steps; shorter grids keep them in proportion.
DEMO_INTERVALS = (("train.log_every", 50), ("train.summary_every", 50),
                  ("train.image_summary_every", 250), ("train.checkpoint_every", 500))

Cell = collections.namedtuple("Cell", ["dataset", "method", "split", "seed"])


@dataclasses.dataclass(frozen=True)
class Grid:
    """A grid size: what it runs by default and for how many steps.

    Attributes:
      name: `quick`, `default` or `full`.
      num_steps: training steps of every run (`DEMO_STEPS` is the demo configs' own).
      datasets: the datasets.
      seeds: the seeds of every cell.
      sweep_seeds: one gamma x T sweep per dataset and seed of these.
      trade_off: one sentence on what the grid gives up to fit its budget.
    """

    name: str
    num_steps: int
    datasets: tuple
    seeds: tuple
    sweep_seeds: tuple
    trade_off: str


GRIDS = {
    "quick": Grid(
        "quick", 150, ("random_colours",), (0,), (0,),
        "every row, both splits and the 3 x 3 gamma x T grid on random_colours with one seed, "
        "at a tenth of the demo's steps (a check that every part runs and which way it "
        "leans, not a measurement)"),
    "default": Grid(
        "default", 500, ("random_colours",), (0, 1, 2), (0,),
        "every row and both splits on random_colours with 3 seeds, the gamma x T grid with "
        "seed 0, at a third of the demo's steps (shapes' semi-supervised runs cost 1.6 times "
        "more per step and would not fit)"),
    "full": Grid(
        "full", DEMO_STEPS, ("random_colours", "shapes"), (0, 1, 2), (0, 1, 2),
        "the README's setting: the demo configs' 1500 steps, both datasets, 3 seeds, the "
        "gamma x T grid with 3 seeds"),
}


def run_name(method, split):
    """The directory name of a method at a split (see the module docstring)."""
    if method == "supervised" or split != "1_16":
        return f"{method}_{split}"
    return method


def grid_root(root, grid):
    """Where a grid's cells, sweeps and report live: `root` for the demo's steps, else
    `root/<grid>_<steps>_steps`."""
    if grid.num_steps == DEMO_STEPS:
        return root
    return os.path.join(root, f"{grid.name}_{grid.num_steps}_steps")


def cell_dir(root, cell):
    """The log directory of a cell under a grid root."""
    return os.path.join(root, cell.dataset, run_name(cell.method, cell.split),
                        f"seed_{cell.seed}")


def cell_label(cell):
    """`dataset/run name/seed_n`, how a cell is named in messages and listings."""
    return f"{cell.dataset}/{run_name(cell.method, cell.split)}/seed_{cell.seed}"


def runs_at(method, split):
    """Whether `method` has a cell at `split` (with all labels only supervised does)."""
    return split != ALL_LABELS or method == "supervised"


def teacher_cell(cell):
    """The cell whose run teaches `cell` (same dataset, split and seed), or None."""
    teacher = TEACHERS.get(cell.method)
    return None if teacher is None else cell._replace(method=teacher)


def plan_cells(datasets, methods, splits, seeds):
    """The cells of a grid, each teacher before its first student.

    Args:
      datasets: dataset names.
      methods: method names (`METHODS`).
      splits: split names (`SPLITS`); at `all` only `supervised` runs.
      seeds: seeds.

    Returns:
      The `Cell`s, by dataset, seed, split and method; a teacher the methods do not name is
      added before its student.
    """
    cells = []
    for dataset in datasets:
        for seed in seeds:
            for split in splits:
                for method in methods:
                    if not runs_at(method, split):
                        continue
                    cell = Cell(dataset, method, split, seed)
                    teacher = teacher_cell(cell)
                    for needed in (teacher, cell):
                        if needed is not None and needed not in cells:
                            cells.append(needed)
    return cells


def step_bindings(num_steps):
    """The bindings of a run shorter than the demo: its steps and demo.gin's intervals scaled.

    Args:
      num_steps: the training steps.

    Returns:
      [] for `DEMO_STEPS` (the demo configs as they are), else `train.num_steps` and the
      logging, summary and checkpoint intervals in the same proportion to the run.
    """
    if num_steps == DEMO_STEPS:
        return []
    return [f"train.num_steps = {num_steps}"] + [
        f"{name} = {max(1, every * num_steps // DEMO_STEPS)}" for name, every in DEMO_INTERVALS]


def bindings(dataset, method, split, seed, num_steps):
    """The gin bindings of a run (without a teacher): dataset, split, method, steps, seed.

    These are the bindings a user of another dataset would give, plus the row's own; the
    gamma x T sweep passes the same ones to `launch/sweep.py`.
    """
    return (DATASETS[dataset] + SPLITS[split] + METHODS[method][1] + step_bindings(num_steps)
            + [f"train.seed = {seed}", "after_training.export = False"])


def command(root, cell, num_steps, python=sys.executable):
    """The `wss.train` command of a cell.

    Args:
      root: the grid root.
      cell: the `Cell`.
      num_steps: the grid's training steps.
      python: the interpreter.

    Returns:
      The argument list; a student's ends with `train.teacher_checkpoint` = its teacher's
      directory (absolute).
    """
    gin_file = METHODS[cell.method][0]
    cell_bindings = bindings(cell.dataset, cell.method, cell.split, cell.seed, num_steps)
    teacher = teacher_cell(cell)
    if teacher is not None:
        teacher_dir = os.path.abspath(cell_dir(root, teacher))
        cell_bindings.append(f"train.teacher_checkpoint = '{teacher_dir}'")
    return [python, "-m", "wss.train", f"--gin_file={gin_file}",
            f"--logdir={cell_dir(root, cell)}"] + [f"--gin_bindings={b}" for b in cell_bindings]


@dataclasses.dataclass(frozen=True)
class Plan:
    """A grid with the user's choices: what to run, where.

    Attributes:
      grid: the `Grid`.
      root: the grid root (`grid_root`).
      datasets, methods, splits, seeds: the cells' axes.
      sweep_seeds: the seeds of the gamma x T sweeps (empty: no sweep).
    """

    grid: Grid
    root: str
    datasets: tuple
    methods: tuple
    splits: tuple
    seeds: tuple
    sweep_seeds: tuple

    @property
    def cells(self):
        """The cells (`plan_cells`)."""
        return plan_cells(self.datasets, self.methods, self.splits, self.seeds)

    @property
    def methods_run(self):
        """The methods with cells: `methods` and the teachers they need."""
        return tuple(dict.fromkeys(c.method for c in self.cells))

    @property
    def fractions(self):
        """The label fractions among `splits` (the tables' columns)."""
        return tuple(s for s in FRACTIONS if s in self.splits)

    @property
    def sweeps(self):
        """(dataset, seed) of every gamma x T sweep."""
        return [(d, s) for d in self.datasets for s in self.sweep_seeds]
