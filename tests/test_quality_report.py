"""benchmarks/quality.py, the reproduction suite, without training.

Grid plans and their estimated wall times, the directory layout (the 1/16 cells keep their
names), teachers per split, resume and skip of finished cells, the gamma x T sweep's command
through `launch/sweep.py` (checked with its `--dry_run`), and report.md / the heatmap from fake
result files. The end-to-end test runs the whole `quick` grid with a fake `python` that writes
the result files a `wss.train` run would.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from script_loading import load_script

from wss import cpu_share

RC = "random_colours"


@pytest.fixture(scope="module")
def quality():
    # Loading it puts benchmarks/ on sys.path for quality_suite.
    return load_script("benchmarks/quality.py", name="quality_benchmark")


@pytest.fixture(scope="module")
def suite(quality):
    del quality
    import quality_suite.costs
    import quality_suite.gamma_t
    import quality_suite.grids
    import quality_suite.orderings
    import quality_suite.plots
    import quality_suite.report
    import quality_suite.runner
    import quality_suite.tables

    return quality_suite


# A stand-in for `python -m wss.train`: records its call, fails when the cell's directory name
# is in $FAKE_FAIL or its teacher has not finished, else writes the finished run's
# train_result.json (at train.num_steps, default 1500) and ckpt-N.eval.json. mIoU: 0.2 + gamma
# / 10 + T / 10 for a gamma x T trial, else $FAKE_MIOU or 0.3.
_FAKE_TRAINER = r'''
import json, os, sys
args = sys.argv[1:]
assert args[:2] == ["-m", "wss.train"], args
logdir = [a.split("=", 1)[1] for a in args if a.startswith("--logdir=")][0]
bindings = [a.split("=", 1)[1] for a in args if a.startswith("--gin_bindings=")]
values = dict(b.split(" = ", 1) for b in bindings)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"logdir": logdir, "bindings": bindings, "threads": [
        os.environ.get("TF_NUM_INTRAOP_THREADS"), os.environ.get("TF_NUM_INTEROP_THREADS")]})
            + "\n")
if os.path.basename(os.path.dirname(logdir)) in os.environ.get("FAKE_FAIL", "").split(","):
    sys.exit(1)
teacher = values.get("train.teacher_checkpoint")
if teacher and not os.path.exists(os.path.join(teacher.strip("'"), "train_result.json")):
    sys.exit(3)
steps = int(values.get("train.num_steps", 1500))
miou = float(os.environ.get("FAKE_MIOU", 0.3))
if "PseudoLabelConfig.gamma" in values:
    miou = 0.2 + float(values["PseudoLabelConfig.gamma"]) / 10 + float(
        values["PseudoLabelConfig.temperature"]) / 10
bins = {"count": [10, 30], "confidence": [0.3, 0.8], "accuracy": [0.4, 0.7]}
os.makedirs(logdir, exist_ok=True)
with open(os.path.join(logdir, "train_result.json"), "w") as f:
    json.dump({"step": steps, "finished": True, "seconds": 0.1, "pseudo_labels": {
        "ece_decoder": 0.1, "ece_sgc": 0.05, "ece_fused": 0.2, "confidence": 0.9,
        "accuracy": 0.8, "reliability": {"decoder": bins, "sgc": bins, "fused": bins}}}, f)
with open(os.path.join(logdir, f"ckpt-{steps}.eval.json"), "w") as f:
    json.dump({"miou": miou}, f)
'''


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    """(path of the fake interpreter, function returning the recorded calls)."""
    script = tmp_path / "fake_python"
    script.write_text(f"#!{sys.executable} -S\n{_FAKE_TRAINER}")  # -S: a fast start.
    script.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)

    def read_calls():
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text().splitlines()]

    return str(script), read_calls


def _fake_cell(suite, root, cell, miou, steps=1500, finished=True, ece=None):
    directory = suite.grids.cell_dir(str(root), cell)
    os.makedirs(directory, exist_ok=True)
    result = {"step": steps, "finished": finished, "seconds": 1.5}
    if ece is not None:
        result["pseudo_labels"] = {f"ece_{k}": v for k, v in ece.items()}
    with open(os.path.join(directory, "train_result.json"), "w") as f:
        json.dump(result, f)
    with open(os.path.join(directory, f"ckpt-{steps}.eval.json"), "w") as f:
        json.dump({"miou": miou}, f)
    with open(os.path.join(directory, "command.txt"), "w") as f:
        f.write(f"python -m wss.train {cell.method} {cell.split} {cell.seed}\n")


def _plan(quality, root, *flags):
    plan, _ = quality.parse_plan([f"--root_dir={root}", *flags])
    return plan


def test_grid_plans_fit_their_budgets(quality, suite, tmp_path):
    grids = suite.grids
    rows = {m: ("1_16", "1_8") for m in grids.DEFAULT_METHODS}
    rows["supervised"] = ("1_16", "1_8", "all")
    expected = {"quick": ((RC,), (0,), 1), "default": ((RC,), (0, 1, 2), 1),
                "full": ((RC, "shapes"), (0, 1, 2), 6)}
    for name, (datasets, seeds, sweeps) in expected.items():
        plan = _plan(quality, tmp_path, f"--grid={name}")
        cells = plan.cells
        assert {(c.dataset, c.seed) for c in cells} == {(d, s) for d in datasets for s in seeds}
        per_seed = {(c.method, c.split) for c in cells if c.dataset == RC and c.seed == 0}
        assert per_seed == {(m, s) for m, splits in rows.items() for s in splits}
        assert len(cells) == 13 * len(datasets) * len(seeds) and len(set(cells)) == len(cells)
        assert len(plan.sweeps) == sweeps
        left, whole = quality.estimate(plan, quality.plan_runs(plan))
        assert left == whole  # Nothing finished under tmp_path.
        if name == "quick":
            assert whole <= 20 * 60 and plan.grid.num_steps < grids.DEMO_STEPS
        if name == "default":
            assert whole <= 90 * 60 and plan.grid.num_steps < grids.DEMO_STEPS
    # One run's estimate: its kind's start-up plus steps times its kind's cost per step; the
    # lines give back the measured means (costs.py's table) within 12 s.
    costs = suite.costs
    assert costs.run_seconds(RC, "pseudoseg", 500) == pytest.approx(56.2 + 0.3467 * 500)
    assert costs.run_seconds(RC, "sweep", 7) == costs.run_seconds(RC, "sgc_only", 7)
    for method, measured in (("supervised", {150: 60, 500: 130, 1500: 338}),
                             ("pseudoseg", {150: 99, 500: 242, 1500: 573}),
                             ("self_training", {150: 139, 500: 225})):
        for steps, seconds in measured.items():
            assert abs(costs.run_seconds(RC, method, steps) - seconds) <= 12.5, (method, steps)
    # Short grids bind their steps and keep demo.gin's intervals in proportion.
    quick = _plan(quality, tmp_path, "--grid=quick")
    cell = grids.Cell(RC, "pseudoseg", "1_8", 0)
    argv = grids.command(quick.root, cell, quick.grid.num_steps)
    for binding in ("train.num_steps = 150", "train.checkpoint_every = 50",
                    "train.log_every = 5", "train.image_summary_every = 25",
                    "labelled_split/join_path.name = 'labelled_1_8.txt'",
                    "unlabelled_split/join_path.name = 'unlabelled_1_8.txt'"):
        assert f"--gin_bindings={binding}" in argv
    full = _plan(quality, tmp_path, "--grid=full")
    assert not any("num_steps" in a or "_every" in a
                   for a in grids.command(full.root, cell, full.grid.num_steps))
    # Narrowing flags; unknown names are refused.
    narrow = _plan(quality, tmp_path, "--grid=full", "--datasets=shapes", "--seeds=2",
                   "--methods=pseudoseg", "--splits=1_8", "--sweep_seeds=")
    assert narrow.cells == [grids.Cell("shapes", "pseudoseg", "1_8", 2)] and not narrow.sweeps
    with pytest.raises(SystemExit):
        _plan(quality, tmp_path, "--splits=1_4")


def test_the_ceiling_runs_only_when_named_and_trains_on_the_masks(quality, suite, tmp_path):
    grids = suite.grids
    default = _plan(quality, tmp_path, "--grid=quick")
    assert "ground_truth_ceiling" not in default.methods_run
    plan = _plan(quality, tmp_path, "--grid=quick", "--methods=supervised,ground_truth_ceiling",
                 "--splits=1_16")
    ceiling = [c for c in plan.cells if c.method == "ground_truth_ceiling"]
    assert len(ceiling) == 1
    command = grids.command(plan.root, ceiling[0], plan.grid.num_steps)
    assert "--gin_file=demo.gin" in command
    assert "--gin_bindings=PseudoLabelConfig.source = 'ground_truth'" in command


def test_paths_keep_the_old_layout(quality, suite, tmp_path):
    grids = suite.grids
    full = _plan(quality, tmp_path, "--grid=full")
    assert full.root == str(tmp_path)  # Without --grid too: the README's commands.
    assert _plan(quality, tmp_path).root == str(tmp_path)
    names = {(m, s): grids.run_name(m, s) for m in grids.METHODS for s in grids.SPLITS
             if grids.runs_at(m, s)}
    assert len(set(names.values())) == len(names)  # No two rows share a directory.
    # The names the benchmark used before splits, at 1/16 and with all labels.
    for method, old in [("supervised", "supervised_1_16"), ("pseudoseg", "pseudoseg"),
                        ("pseudoseg_image_labels", "pseudoseg_image_labels"),
                        ("decoder_only", "decoder_only"), ("sgc_only", "sgc_only"),
                        ("self_training", "self_training")]:
        assert names[(method, "1_16")] == old
        assert names[(method, "1_8")] == old.replace("_1_16", "") + "_1_8"
    assert names[("supervised", "all")] == "supervised_all"
    cell = grids.Cell(RC, "pseudoseg", "1_16", 1)
    assert grids.cell_dir(full.root, cell) == str(tmp_path / RC / "pseudoseg" / "seed_1")
    # A full 1/16 cell's command is the one the finished cells were made with.
    assert grids.command(full.root, cell, 1500, python="py") == [
        "py", "-m", "wss.train", "--gin_file=demo.gin",
        f"--logdir={tmp_path / RC / 'pseudoseg' / 'seed_1'}"] + [
        f"--gin_bindings={b}" for b in grids.DATASETS[RC] + [
            "train.seed = 1", "after_training.export = False"]]
    upper = grids.command(full.root, grids.Cell(RC, "supervised", "all", 0), 1500, "py")
    assert upper[3:5] == ["--gin_file=demo_supervised.gin",
                          f"--logdir={tmp_path / RC / 'supervised_all' / 'seed_0'}"]
    assert upper[-3:] == ["--gin_bindings=labelled_split/join_path.name = 'train.txt'",
                          "--gin_bindings=train.seed = 0",
                          "--gin_bindings=after_training.export = False"]
    # Shorter grids live apart, named with their steps.
    quick = _plan(quality, tmp_path, "--grid=quick")
    default = _plan(quality, tmp_path, "--grid=default")
    assert quick.root == str(tmp_path / "quick_150_steps")
    assert default.root == str(tmp_path / "default_500_steps")
    # An old finished 1/16 cell is found by the full grid and skipped by its runner.
    _fake_cell(suite, tmp_path, cell, 0.25)
    runs = {r.label: r for r in quality.plan_runs(full)}
    assert runs[f"{RC}/pseudoseg/seed_1"].state == "finished"
    assert runs[f"{RC}/pseudoseg/seed_1"].left == 0
    assert runs[f"{RC}/pseudoseg_1_8/seed_1"].left == 1


def test_teachers_per_split(suite, tmp_path, fake_python, monkeypatch):
    grids, runner = suite.grids, suite.runner
    python, calls = fake_python
    cells = grids.plan_cells([RC], ["self_training"], ["1_16", "1_8"], [0])
    assert cells == [grids.Cell(RC, method, split, 0) for split in ("1_16", "1_8")
                     for method in ("supervised", "self_training")]
    student = grids.command(str(tmp_path), cells[3], 150)
    teacher_dir = os.path.abspath(grids.cell_dir(str(tmp_path), cells[2]))
    assert student[-1] == f"--gin_bindings=train.teacher_checkpoint = '{teacher_dir}'"
    assert teacher_dir.endswith(os.path.join("supervised_1_8", "seed_0"))
    # Two at a time, a student never starts before its teacher finished (the fake fails if it
    # did); a student whose teacher failed is skipped.
    monkeypatch.setenv("FAKE_FAIL", "supervised_1_8")
    failed = runner.run_cells(cells, str(tmp_path), 150, parallel=2, python=python, poll_s=0.05)
    assert failed == [cells[2], cells[3]]
    started = [os.path.relpath(c["logdir"], tmp_path) for c in calls()]
    assert sorted(started) == sorted(grids.cell_label(c) for c in cells[:3])
    # Two runs at once share the cores' TensorFlow thread pools (wss.cpu_share).
    share = str(max(1, cpu_share.available_cores() // 2))
    assert {tuple(c["threads"]) for c in calls()} == {(share, share)}
    assert started.index(f"{RC}/supervised_1_16/seed_0") < started.index(
        f"{RC}/self_training/seed_0")
    result = runner.cell_result(str(tmp_path), cells[1], 150)
    assert (result["miou"], result["ece_fused"], result["accuracy"]) == (0.3, 0.2, 0.8)
    assert set(result["reliability"]) == {"decoder", "sgc", "fused"}
    # Rerun once the teacher is fixed: only the 1/8 pair runs, teacher first.
    monkeypatch.delenv("FAKE_FAIL")
    assert runner.run_cells(cells, str(tmp_path), 150, 2, python, poll_s=0.05) == []
    rerun = [os.path.relpath(c["logdir"], tmp_path) for c in calls()][3:]
    assert rerun == [f"{RC}/supervised_1_8/seed_0", f"{RC}/self_training_1_8/seed_0"]


def test_finished_cells_are_skipped_and_foreign_ones_refused(suite, tmp_path, fake_python):
    grids, runner, tables = suite.grids, suite.runner, suite.tables
    python, calls = fake_python
    done = grids.Cell(RC, "pseudoseg", "1_16", 0)
    foreign = grids.Cell(RC, "pseudoseg", "1_8", 0)
    stopped = grids.Cell(RC, "supervised", "1_16", 0)
    _fake_cell(suite, tmp_path, done, 0.4, steps=150)
    _fake_cell(suite, tmp_path, foreign, 0.9, steps=1500)  # A full run in a 150-step root.
    _fake_cell(suite, tmp_path, stopped, 0.9, steps=150, finished=False)
    assert runner.cell_state(str(tmp_path), foreign, 150)[0] == runner.FOREIGN
    assert runner.cell_state(str(tmp_path), stopped, 150) == (runner.UNFINISHED, None)
    failed = runner.run_cells([done, foreign, stopped], str(tmp_path), 150, 2, python,
                              poll_s=0.05)
    assert failed == [foreign]
    assert [os.path.relpath(c["logdir"], tmp_path) for c in calls()] == [
        f"{RC}/supervised_1_16/seed_0"]
    results = tables.Results(str(tmp_path), [done, foreign, stopped], 150)
    assert results.figure(RC, "pseudoseg", "1_16").mean == pytest.approx(0.4)
    assert results.figure(RC, "pseudoseg", "1_8") is None  # The foreign cell is not reported.
    assert results.figure(RC, "supervised", "1_16").mean == pytest.approx(0.3)  # Rerun.


def _fake_tables(suite, root):
    """Seeds 0 and 1 of every row at 1/16 and 1/8, in %: see the assertions."""
    figures = {  # (method, split) -> mIoU of seeds 0, 1
        ("supervised", "1_16"): (0.20, 0.22), ("supervised", "1_8"): (0.30, 0.30),
        ("supervised", "all"): (0.40, 0.42), ("pseudoseg", "1_16"): (0.30, 0.34),
        ("pseudoseg", "1_8"): (0.28, 0.29), ("self_training", "1_16"): (0.25, 0.27),
        ("self_training", "1_8"): (0.33, 0.35), ("pseudoseg_image_labels", "1_16"): (0.33, 0.39),
        ("pseudoseg_image_labels", "1_8"): (0.38, None), ("decoder_only", "1_16"): (0.29, 0.31),
        ("decoder_only", "1_8"): (0.20, 0.20), ("sgc_only", "1_16"): (0.10, 0.10),
        ("sgc_only", "1_8"): (0.10, 0.10), ("fusion", "1_16"): (0.30, 0.34),
        ("fusion", "1_8"): (0.28, 0.29)}
    for (method, split), values in figures.items():
        for seed, miou in enumerate(values):
            if miou is None:
                continue
            ece = ({"decoder": 0.10 + seed / 100, "sgc": 0.03, "fused": 0.40}
                   if method in ("pseudoseg", "fusion") and split == "1_16" else
                   {"decoder": 0.10, "sgc": 0.05, "fused": 0.02}
                   if method in ("pseudoseg", "fusion")
                   else None)
            _fake_cell(suite, root, suite.grids.Cell(RC, method, split, seed), miou, ece=ece)


def test_report_tables_gap_closure_and_orderings(quality, suite, tmp_path):
    _fake_tables(suite, tmp_path)
    methods = ",".join(suite.grids.DEFAULT_METHODS + ("fusion",))
    plan = _plan(quality, tmp_path, "--grid=full", f"--datasets={RC}", "--seeds=0,1",
                 "--sweep_seeds=", f"--methods={methods}")
    results = suite.tables.Results(plan.root, plan.cells, 1500)
    text = suite.report.report(plan, results, {})
    table5, table6 = (text.split(f"(the paper's table {n})")[1].split("\n\n")[1]
                      for n in (5, 6))
    rows5 = {line.split(" | ")[0].lstrip("| "): line for line in table5.splitlines()}
    # Gap closed against supervised at the same fraction: 1/16 (32 - 21) / (41 - 21) = 55%;
    # 1/8 (28.5 - 30) / (41 - 30) = -14%.
    demo_row = "PseudoSeg as demo.gin has it (frozen teacher, decoder, hard labels)"
    assert rows5[demo_row] == (
        f"| {demo_row} | 32.00 (30.00-34.00) | 55% | 28.50 (28.00-29.00) | -14% |")
    assert rows5["supervised, the fraction's labels only"].endswith(
        "| 0% | 30.00 (30.00-30.00) | 0% |")
    assert rows5["supervised, all labels"] == ("| supervised, all labels | 41.00 (40.00-42.00) "
                                               "| 100% | 41.00 (40.00-42.00) | 100% |")
    rows6 = {line.split(" | ")[0].lstrip("| "): line for line in table6.splitlines()}
    assert "| 38.00 [1/2 seeds] | 73% |" in rows6["PseudoSeg, image-level labels"]
    assert "self-training" not in table6 and "self-training" in table5
    assert text.index("## random_colours") < text.index("table 5") < text.index("table 6")
    # ECE in %, the fused distribution before sharpening.
    assert ("| random_colours | 1/16 | PseudoSeg (demo.gin: frozen teacher, decoder) | "
            "10.5 (10.0-11.0) | 3.0 (3.0-3.0) | 40.0 (40.0-40.0) | - |") in text
    # The orderings, per fraction, on the means.
    claims = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
              for line in text.split("## The paper's orderings")[1].splitlines()
              if line.startswith("| ") and "claim" not in line}
    assert claims["PseudoSeg beats supervised"] == [
        "holds: 32.00 > 21.00, ranges apart", "fails: 28.50 < 30.00, ranges apart",
        "holds in 1 of 2 |"]
    assert claims["PseudoSeg beats self-training"][:2] == [
        "holds: 32.00 > 26.00, ranges apart", "fails: 28.50 < 34.00, ranges apart"]
    assert claims["image-level labels beat unlabelled images"][0] == (
        "holds: 36.00 > 32.00, ranges overlap")
    assert claims["fusion beats decoder-only pseudo labels"] == [
        "holds: 32.00 > 30.00, ranges overlap", "holds: 28.50 > 20.00, ranges apart",
        "holds in 2 of 2 |"]
    assert claims["fusion beats SGC-only pseudo labels"][2] == "holds in 2 of 2 |"
    assert claims["fused pseudo labels have the lowest ECE (fusion runs)"] == [
        "fails: fused 40.0 > SGC 3.0, ranges apart", "holds: fused 2.0 < SGC 5.0, ranges apart",
        "holds in 1 of 2 |"]
    assert "not the README's figures" not in text  # A full-length grid.
    quick = _plan(quality, tmp_path, "--grid=quick")
    assert "150-step runs" in suite.report.report(quick, results, {})
    listing = suite.report.cell_listing(plan)
    assert listing.count(f"| {RC} |") == 29  # 15 rows x 2 seeds, one seed missing.
    assert f"`{RC}/pseudoseg_1_8/seed_1`: `python -m wss.train pseudoseg 1_8 1`" in listing


def test_gap_closed_is_undefined_when_the_gap_is_noise(suite):
    tables = suite.tables
    low, figure = tables.Stats([0.24, 0.25]), tables.Stats([0.30, 0.31])
    # (30.5 - 24.5) / (40.5 - 24.5), ranges apart.
    assert tables.gap_closed(figure, low, tables.Stats([0.40, 0.41])) == pytest.approx(0.375)
    # The default grid's case: all labels no higher than 1/16 within its seeds' spread.
    assert tables.gap_closed(figure, low, tables.Stats([0.20, 0.29])) is None
    assert tables.gap_closed(figure, low, tables.Stats([0.25, 0.29])) is None  # Overlap.
    # Single seeds: a gap under 2 points is noise, one of 2 points or more is not.
    one = tables.Stats([0.245])
    assert tables.gap_closed(figure, one, tables.Stats([0.26])) is None
    assert tables.gap_closed(figure, one, tables.Stats([0.265])) == pytest.approx(3.0)
    assert tables.gap_closed(None, low, tables.Stats([0.40, 0.41])) is None


def test_sweep_command_goes_through_launch_sweep(quality, suite, tmp_path):
    gamma_t, grids = suite.gamma_t, suite.grids
    plan = _plan(quality, tmp_path, "--grid=quick")
    argv = gamma_t.sweep_argv(plan.root, RC, 0, 150, parallel=2, python="/some/python")
    assert argv[:2] == [sys.executable, os.path.abspath(gamma_t.SWEEP_SCRIPT)]
    sweep_dir = tmp_path / "quick_150_steps" / RC / "sweep_gamma_temperature" / "seed_0"
    assert argv[2:4] == [f"--root_dir={sweep_dir}", "--gin_file=demo.gin"]
    assert argv[-4:] == ["--sweep=PseudoLabelConfig.gamma=[0.3, 0.5, 0.7]",
                         "--sweep=PseudoLabelConfig.temperature=[0.05, 0.1, 0.5]",
                         "--max_parallel=2", "--python=/some/python"]
    common = grids.bindings(RC, "pseudoseg", "1_16", 0, 150)
    assert [a[len("--gin_bindings="):] for a in argv if a.startswith("--gin_bindings=")] == common
    assert "train.num_steps = 150" in common and "train.seed = 0" in common
    # launch/sweep.py takes the command as it is: 9 trials, each with the common bindings
    # and then its own gamma and T.
    result = subprocess.run(argv + ["--dry_run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 9
    states = gamma_t.trial_states(plan.root, RC, 0)
    assert len(states) == 9 and set(states.values()) == {"new"}
    name = "PseudoLabelConfig.gamma=0.7,PseudoLabelConfig.temperature=0.05"
    record = json.loads((sweep_dir / name / "trial.json").read_text())
    assert record["gin_bindings"] == common + ["PseudoLabelConfig.gamma = 0.7",
                                               "PseudoLabelConfig.temperature = 0.05"]
    assert record["gin_files"] == ["demo.gin"]
    line = [x for x in result.stdout.splitlines() if f"--logdir={sweep_dir / name}" in x]
    assert len(line) == 1 and "'--gin_bindings=PseudoLabelConfig.temperature = 0.05'" in line[0]


def _fake_trial(gamma_t, root, seed, gamma, temperature, miou, finished=True):
    directory = os.path.join(gamma_t.sweep_dir(str(root), RC, seed),
                             f"{gamma_t.GAMMA}={gamma},{gamma_t.TEMPERATURE}={temperature}")
    os.makedirs(directory)
    with open(os.path.join(directory, "trial.json"), "w") as f:
        json.dump({"swept": {gamma_t.GAMMA: gamma, gamma_t.TEMPERATURE: temperature}}, f)
    with open(os.path.join(directory, "train_result.json"), "w") as f:
        json.dump({"step": 150, "finished": finished}, f)
    with open(os.path.join(directory, "ckpt-150.eval.json"), "w") as f:
        json.dump({"miou": miou}, f)


def test_sweep_results_table_and_heatmap(quality, suite, tmp_path):
    gamma_t = suite.gamma_t
    plan = _plan(quality, tmp_path, "--grid=quick", "--sweep_seeds=0,1")
    _fake_trial(gamma_t, plan.root, 0, "0.3", "0.05", 0.20)
    _fake_trial(gamma_t, plan.root, 1, "0.3", "0.05", 0.30)
    _fake_trial(gamma_t, plan.root, 0, "0.7", "0.5", 0.40)
    _fake_trial(gamma_t, plan.root, 1, "0.7", "0.5", 0.90, finished=False)  # Not counted.
    values = gamma_t.read_results(plan.root, RC, [0, 1])
    assert len(values) == 9 and values[("0.3", "0.05")] == [0.20, 0.30]
    assert values[("0.7", "0.5")] == [0.40] and values[("0.5", "0.1")] == []
    text = suite.report.report(plan, suite.tables.Results(plan.root, plan.cells, 150),
                               {RC: values})
    section = text.split("## gamma x T")[1].split("## The paper's orderings")[0]
    assert "| 0.3 | 25.00 (20.00-30.00) | - | - |" in section
    assert "| 0.7 | - | - | **40.00** |" in section
    assert "Best: gamma 0.7, T 0.5 (40.00%)." in section
    assert "![gamma x T](gamma_temperature.png)" in section
    pytest.importorskip("matplotlib")
    os.makedirs(plan.root, exist_ok=True)
    path = suite.plots.write_heatmap(suite.plots._pyplot(), plan, {RC: values})
    assert path == os.path.join(plan.root, "gamma_temperature.png")
    assert os.path.getsize(path) > 1000
    empty = {RC: {k: [] for k in values}}
    assert suite.plots.write_heatmap(suite.plots._pyplot(), plan, empty) is None


def test_quick_grid_end_to_end_with_a_fake_trainer(quality, tmp_path, fake_python, capsys):
    python, calls = fake_python
    args = ["--grid=quick", f"--root_dir={tmp_path}", f"--python={python}", "--parallel=8"]
    assert quality.main(args + ["--plan"]) == 0
    assert "Estimated wall time 19 min" in capsys.readouterr().out
    assert not calls() and not (tmp_path / "quick_150_steps").exists()  # --plan writes nothing.
    assert quality.main(args) == 0
    made = calls()
    assert len(made) == 13 + 9
    assert all("train.num_steps = 150" in c["bindings"] for c in made)
    root = tmp_path / "quick_150_steps"
    sweep = root / RC / "sweep_gamma_temperature" / "seed_0"
    assert sum("sweep_gamma_temperature" in c["logdir"] for c in made) == 9
    assert (sweep / "summary.csv").exists()
    report = (root / "report.md").read_text()
    assert "These figures come from 150-step runs" in report
    assert "| 0.7 | 27.50 | 28.00 | **32.00** |" in report  # 0.2 + gamma / 10 + T / 10.
    # Every cell scored 30%: supervised with all labels is no higher, so no gap is closed.
    assert ("| PseudoSeg as demo.gin has it (frozen teacher, decoder, hard labels) | 30.00 | - | "
            "30.00 | - |") in report
    assert (root / "cells.md").read_text().count(f"| {RC} |") == 13
    for png in ("miou.png", "gamma_temperature.png", f"reliability_{RC}.png",
                f"reliability_{RC}_1_8.png"):
        if importlib.util.find_spec("matplotlib"):
            assert (root / png).stat().st_size > 1000, png
    # Nothing is left: every cell and trial is finished, and a rerun starts no cell (the
    # sweep's own skipping is launch/sweep.py's, tested in test_sweep.py).
    capsys.readouterr()
    assert quality.main(args + ["--plan"]) == 0
    out = capsys.readouterr().out
    assert "Estimated wall time 0 min for what is left" in out
    assert "gamma x T: 0 of 9 trials to run" in out and out.count(" finished\n") == 13
    assert quality.main(args + ["--sweep_seeds="]) == 0
    assert len(calls()) == len(made)
