"""A cell's state on disk, and the runner of the unfinished cells.

A cell is finished when its `train_result.json` says finished at the grid's step count and its
final checkpoint's evaluation exists. A cell that finished at another step count is *foreign*
(written by another grid size or by hand): it is neither reported nor retrained, and the
runner counts it as failed so the user looks at it. Each cell's command and commit go to
`command.txt` and `commit.txt` in its directory, its output to `log.txt`.
"""

import functools
import json
import os
import shlex
import subprocess
import time

from wss import cpu_share

from . import grids

FINISHED, FOREIGN, UNFINISHED = "finished", "foreign", "unfinished"


def read_json(path):
    """A JSON file's value, or None when it is missing or does not parse."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    """A text file's content, or None when it is missing."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cell_state(root, cell, num_steps):
    """What a cell's directory holds.

    Args:
      root: the grid root.
      cell: the `grids.Cell`.
      num_steps: the grid's training steps.

    Returns:
      (state, result): `FINISHED` with the result (mIoU, seconds, the pseudo-label figures of
      train_result.json: ECE, reliability, confidence, accuracy), `FOREIGN` with a message,
      or `UNFINISHED` with None.
    """
    directory = grids.cell_dir(root, cell)
    train = read_json(os.path.join(directory, "train_result.json"))
    if not train or not train.get("finished"):
        return UNFINISHED, None
    if train.get("step") != num_steps:
        return FOREIGN, (f"{directory} finished at step {train.get('step')}, this grid trains "
                         f"{num_steps} steps: not used (move it away to rerun the cell)")
    evaluation = read_json(os.path.join(directory, f"ckpt-{train['step']}.eval.json"))
    if not evaluation:
        return UNFINISHED, None
    result = {"miou": evaluation["miou"], "seconds": train.get("seconds")}
    result.update(train.get("pseudo_labels", {}))
    return FINISHED, result


def cell_result(root, cell, num_steps):
    """The finished cell's result (see `cell_state`), or None."""
    state, result = cell_state(root, cell, num_steps)
    return result if state == FINISHED else None


@functools.cache
def code_version():
    """The git commit of the code that runs the cells (`+dirty` with local changes), read once
    per process."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty.strip() else "")


def _next_ready(pending, running, root, num_steps, failed):
    """Removes and returns the first pending cell whose teacher (if any) has finished.

    A cell whose teacher is neither finished nor pending nor running (it failed) is removed,
    reported and added to `failed`.

    Returns:
      The cell, or None when no pending cell can start now.
    """
    for cell in list(pending):
        teacher = grids.teacher_cell(cell)
        if teacher is None or cell_result(root, teacher, num_steps) is not None:
            pending.remove(cell)
            return cell
        if teacher in pending or teacher in running:
            continue  # Wait for the teacher.
        pending.remove(cell)
        failed.append(cell)
        print(f"[skipped] {grids.cell_label(cell)}: its teacher {grids.cell_label(teacher)} "
              "did not finish", flush=True)
    return None


def _start(root, cell, num_steps, python, parallel=1):
    """Writes command.txt and commit.txt, starts the cell; returns (Popen, log file).

    With `parallel` cells at once, each gets its share of the cores' TensorFlow thread pools
    (`wss.cpu_share`)."""
    directory = grids.cell_dir(root, cell)
    os.makedirs(directory, exist_ok=True)
    argv = grids.command(root, cell, num_steps, python)
    text = " ".join(shlex.quote(a) for a in argv)
    with open(os.path.join(directory, "command.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(directory, "commit.txt"), "w") as f:
        f.write(code_version() + "\n")
    print(f"[run] {text}", flush=True)
    log = open(os.path.join(directory, "log.txt"), "w")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            env=cpu_share.shared_cpu_environment(parallel)), log


def run_cells(cells, root, num_steps, parallel, python, poll_s=0.5):
    """Runs the unfinished cells, `parallel` at a time.

    A cell with a teacher starts only after its teacher has finished and is skipped if the
    teacher failed. Finished cells are not rerun; foreign ones are reported and not run.

    Args:
      cells: the `grids.Cell`s, teachers before students.
      root: the grid root.
      num_steps: the grid's training steps.
      parallel: cells run at once.
      python: the interpreter of the runs.
      poll_s: seconds between polls.

    Returns:
      The cells that failed, were skipped or are foreign.
    """
    pending, failed = [], []
    for cell in cells:
        state, message = cell_state(root, cell, num_steps)
        if state == FOREIGN:
            print(f"[foreign] {message}", flush=True)
            failed.append(cell)
        elif state == UNFINISHED:
            pending.append(cell)
    running = {}  # cell -> (Popen, log, start time)
    while pending or running:
        while pending and len(running) < parallel:
            cell = _next_ready(pending, running, root, num_steps, failed)
            if cell is None:
                break
            process, log = _start(root, cell, num_steps, python, parallel)
            running[cell] = (process, log, time.time())
        time.sleep(poll_s)
        for cell, (process, log, start) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[cell]
            ok = process.returncode == 0 and cell_result(root, cell, num_steps) is not None
            status = "done" if ok else f"FAILED ({process.returncode})"
            print(f"[{status}] {grids.cell_label(cell)} in {time.time() - start:.0f} s",
                  flush=True)
            if not ok:
                failed.append(cell)
    return failed
