"""launch/sweep.py: grid parsing, --dry_run, a 2 x 2 sweep of tiny runs, resume and summary.

The sweep runs `python -m wss.train` subprocesses (two steps of the tiny supervised
configuration on the CPU, evaluated at the end), two at a time. A rerun must skip finished
trials without starting TensorFlow, evaluate a trial whose evaluation is missing and retry a
failed one.
"""

import csv
import json
import os
import subprocess
import sys
import time

import pytest
from script_loading import load_script
from tiny_runs import tiny_bindings

from wss.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "launch", "sweep.py")
LR, SEED = "make_optimizer.base_learning_rate", "train.seed"
GRID = [f"--sweep={LR}=[0.01, 0.05]", f"--sweep={SEED}=[1, 2]"]
NAMES = [f"{LR}={lr},{SEED}={seed}" for lr in ("0.01", "0.05") for seed in ("1", "2")]


def _load_sweep():
    return load_script("launch/sweep.py")


def _run(args, timeout=300):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, SWEEP, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("sweep_data") / "synthetic")
    synthetic.generate(directory, seed=3, num_train=64, num_val=6, height=40, width=40)
    return directory


def _common_args(data_dir, mode="supervised"):
    bindings = tiny_bindings(data_dir, mode=mode, steps=2, extra=[
        "train.image_summary_every = 0", "make_strategy.devices = None",
        "after_training.export = False"])
    return ["--gin_file=demo.gin", *(f"--gin_bindings={b}" for b in bindings)]


def test_grid_names_and_malformed_sweeps():
    sweep = _load_sweep()
    grid = sweep.make_grid(sweep.parse_sweeps([
        "PseudoLabelConfig.gamma=[0.3, 0.5]",
        "PseudoLabelConfig.source=['decoder', 'sgc']",
        "train.crop_size = [(33, 33), (65, 65)]"]))
    assert len(grid) == 8
    name, swept = grid[1]
    assert name == ("PseudoLabelConfig.gamma=0.3,PseudoLabelConfig.source=decoder,"
                    "train.crop_size=65_65")
    assert swept["train.crop_size"] == "(65, 65)"
    assert swept["PseudoLabelConfig.source"] == "'decoder'"
    # Values that differ only in characters a directory name drops get a digest.
    names = [n for n, _ in sweep.make_grid(sweep.parse_sweeps(["a.b=['x y', 'xy']"]))]
    assert len(set(names)) == 2 and all(n.startswith("a.b=xy~") for n in names)
    for bad, message in [
            ("gamma", "is not PARAM="),
            ("PseudoLabelConfig.gamma=0.3", "must be a bracketed list"),
            ("PseudoLabelConfig.gamma=[]", "is empty"),
            ("PseudoLabelConfig.gamma=[0.3,,0.5]", "empty value"),
            ("PseudoLabelConfig.gamma=[0.3, 0.3]", "0.3 listed more than once"),
            ("PseudoLabelConfig.source=['a, 'b']", "unterminated"),
            ("train.crop_size=[(33, 33]", "unclosed '\\('"),
            ("make pseudo.gamma=[1]", "is not a gin parameter name")]:
        with pytest.raises(sweep.SweepError, match=f"--sweep=.*{message}"):
            sweep.parse_sweep(bad)
    with pytest.raises(sweep.SweepError, match="a.b swept by more than one"):
        sweep.parse_sweeps(["a.b=[1]", "a.b=[2]"])


def test_dry_run_prints_one_command_per_trial(tmp_path):
    root = tmp_path / "sweep"
    result = _run(["--gin_file=demo.gin", "--gin_bindings=train.num_steps = 5", *GRID,
                   f"--root_dir={root}", "--dry_run", "--", "--strategy=one_device"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    for name, line in zip(NAMES, lines):
        lr, seed = (part.split("=")[1] for part in name.split(","))
        assert line.startswith(f"{sys.executable} -m wss.train --gin_file=demo.gin ")
        assert f"--logdir={root / name}" in line and line.endswith(" --strategy=one_device")
        assert f"'--gin_bindings={LR} = {lr}'" in line
        assert f"'--gin_bindings={SEED} = {seed}'" in line
        record = json.loads((root / name / "trial.json").read_text())
        assert record["swept"] == {LR: lr, SEED: seed}
        assert record["gin_bindings"] == ["train.num_steps = 5", f"{LR} = {lr}",
                                          f"{SEED} = {seed}"]
        assert record["status"] == "planned"
        assert not (root / name / "train_result.json").exists()
    # The same directory with other common bindings is refused.
    result = _run(["--gin_file=demo.gin", "--gin_bindings=train.num_steps = 6", *GRID,
                   f"--root_dir={root}", "--dry_run"])
    assert result.returncode == 2 and "use another --root_dir" in result.stderr
    # A malformed --sweep is named.
    result = _run(["--gin_file=demo.gin", f"--root_dir={root}", f"--sweep={LR}=0.01"])
    assert result.returncode == 2
    assert f"--sweep='{LR}=0.01': the values must be a bracketed list" in result.stderr


@pytest.mark.slow
def test_sweep_runs_skips_finished_and_summarizes(sweep_data, tmp_path):
    root = tmp_path / "sweep"
    args = [*_common_args(sweep_data), *GRID, f"--root_dir={root}", "--max_parallel=2"]
    first = _run(args)
    assert first.returncode == 0, first.stdout + first.stderr
    for name in NAMES:
        trial = root / name
        record = json.loads((trial / "trial.json").read_text())
        assert record["status"] == "finished" and record["attempts"] == 1
        assert json.loads((trial / "train_result.json").read_text())["finished"]
        assert (trial / "ckpt-2.eval.json").exists()
        assert "Validation mIoU" in (trial / "train.log").read_text()

    with open(root / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == NAMES
    assert [(r[LR], r[SEED]) for r in rows] == [("0.01", "1"), ("0.01", "2"),
                                                  ("0.05", "1"), ("0.05", "2")]
    for r in rows:
        assert r["status"] == "finished" and r["step"] == "2"
        evaluation = json.loads((root / r["trial"] / "ckpt-2.eval.json").read_text())
        assert float(r["miou"]) == pytest.approx(evaluation["miou"])
        assert 0.0 <= float(r["pixel_accuracy"]) <= 1.0 and "loss_total" in r
    markdown = (root / "summary.md").read_text()
    assert f"| {LR} | {SEED} | status | step | mIoU (%) | pixel acc. (%) |" in markdown
    assert markdown.count("| finished | 2 |") == 4 and "4 of 4 trials finished" in markdown
    try:
        import matplotlib  # noqa: F401
        assert (root / "summary_heatmap.png").stat().st_size > 0
    except ImportError:
        assert "No heatmap: matplotlib is not installed" in first.stdout

    # Rerun: nothing retrains. Drop one trial's evaluation and mark another as failed (with
    # its results intact): the first is only evaluated, the second is found finished.
    checkpoints = {n: (root / n / "ckpt-2.index").stat().st_mtime_ns for n in NAMES}
    (root / NAMES[0] / "ckpt-2.eval.json").unlink()
    record_path = root / NAMES[1] / "trial.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps(dict(record, status="failed")))
    start = time.time()
    second = _run(args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("skip ") == 3
    assert f"evaluate {NAMES[0]}" in second.stdout
    assert "] train " not in second.stdout
    assert {n: (root / n / "ckpt-2.index").stat().st_mtime_ns for n in NAMES} == checkpoints
    assert (root / NAMES[0] / "ckpt-2.eval.json").exists()
    assert json.loads(record_path.read_text())["status"] == "finished"
    assert time.time() - start < 120

    summary = _run(["--summarize", f"--root_dir={root}"])
    assert summary.returncode == 0 and "4 of 4 trials finished" in summary.stdout


@pytest.mark.slow
def test_failed_trial_is_reported_and_retried(sweep_data, tmp_path):
    root = tmp_path / "sweep"
    # A mode that does not exist fails after gin parsing, before any model is built.
    args = [*_common_args(sweep_data), "--sweep=train.mode=['no_such_mode']",
            f"--root_dir={root}"]
    for attempt in (1, 2):
        result = _run(args)
        assert result.returncode == 1
        assert "FAILED train.mode=no_such_mode (train exited with 1" in result.stdout
        assert "no_such_mode" in result.stdout  # The log's last lines name the cause.
        assert "1 trial(s) failed: train.mode=no_such_mode" in result.stderr
        record = json.loads((root / "train.mode=no_such_mode" / "trial.json").read_text())
        assert record["status"] == "failed" and record["attempts"] == attempt
    log = (root / "train.mode=no_such_mode" / "train.log").read_text()
    assert log.count("=== ") == 2 and "train.mode='no_such_mode'" in log
    assert "| failed |" in (root / "summary.md").read_text()
