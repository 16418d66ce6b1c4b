"""Runs the trials of a sweep: subprocesses on this machine, at most N at once.

Finished trials are skipped, trained but unevaluated ones are evaluated, and stopped, failed
or interrupted ones are retrained (`wss.train` resumes from their last checkpoint). Each
concurrent slot may own a group of GPUs (its `CUDA_VISIBLE_DEVICES`). A trial that exits with
`wss.run_files.PREEMPTED_EXIT_CODE` stopped (it saved a checkpoint); it did not fail.
"""

import collections
import datetime
import os
import re
import shlex
import subprocess
import time

from wss import cpu_share
from wss.run_files import PREEMPTED_EXIT_CODE

from .trials import LOG_FILE, trial_results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A running trial: its place in the sweep, slot (GPU group or None), start time, the kind of
# command (`train` or `evaluate`) and the open log file.
_Job = collections.namedtuple("_Job", ["index", "trial", "slot", "start", "kind", "log"])


def shell_quote(arg):
    """`shlex.quote`, but double quotes around args whose only special characters are spaces,
    `=` and single quotes (gin strings), which keeps printed commands readable.

    Args:
      arg: one command-line argument.

    Returns:
      The argument as a shell word.
    """
    if "'" in arg and not re.search(r"[\"$`\\!]", arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell_join(command):
    """A command list as one shell line (see `shell_quote`)."""
    return " ".join(shell_quote(arg) for arg in command)


def _now():
    """The local time in ISO format, to the second."""
    return datetime.datetime.now().isoformat(timespec="seconds")


def _child_environment(gpus, processes=1):
    """The environment of a trial: a checkout's `wss` importable, and its GPUs if any.

    Args:
      gpus: the CUDA_VISIBLE_DEVICES string of the slot, or None to leave it as it is.
      processes: trials running at once; CPU trials (no GPUs) share the cores' thread pools
        among them (`wss.cpu_share`).

    Returns:
      A copy of this process's environment.
    """
    env = dict(os.environ)
    if gpus is None:
        env = cpu_share.shared_cpu_environment(processes, env)
    if os.path.isdir(os.path.join(REPO, "wss")):  # A checkout: make `wss` importable.
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if REPO not in paths:
            env["PYTHONPATH"] = os.pathsep.join([REPO, *paths])
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def _tail(path, lines=15):
    """The last `lines` lines of a text file ("" if it does not exist)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except FileNotFoundError:
        return ""


def _metric_text(logdir):
    """The final mIoU of a trial as `mIoU 12.34%`, or `no evaluation`."""
    evaluation = trial_results(logdir)["eval"]
    if evaluation and isinstance(evaluation.get("miou"), (int, float)):
        return f"mIoU {evaluation['miou'] * 100:.2f}%"
    return "no evaluation"


def _unfinished(trials):
    """Reports the finished trials as skipped (marking their records) and queues the others.

    Args:
      trials: `Trial`s whose records are loaded.

    Returns:
      A deque of (index, trial) of the trials still to run; indices count from 1.
    """
    total = len(trials)
    pending = collections.deque()
    for index, trial in enumerate(trials, 1):
        kind, _ = trial.next_command()
        if kind is None:
            print(f"[{index}/{total}] skip {trial.name}: finished ({_metric_text(trial.logdir)})",
                  flush=True)
            if trial.record.get("status") != "finished":
                trial.save_record(status="finished")
        else:
            pending.append((index, trial))
    return pending


def _start(index, total, trial, slot, processes=1):
    """Starts the next command of a trial, its output appended to the trial's log.

    Args:
      index: the trial's place in the sweep (from 1).
      total: the number of trials of the sweep.
      trial: the `Trial`.
      slot: its CUDA_VISIBLE_DEVICES string, or None.
      processes: trials running at once (see `_child_environment`).

    Returns:
      (the Popen, its `_Job`).
    """
    kind, command = trial.next_command()
    os.makedirs(trial.logdir, exist_ok=True)
    log = open(os.path.join(trial.logdir, LOG_FILE), "a")
    log.write(f"\n=== {_now()} attempt {trial.record.get('attempts', 0) + 1} "
              f"({kind}): {shell_join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=_child_environment(slot, processes),
                               stdin=subprocess.DEVNULL)
    trial.save_record(status="running", attempts=trial.record.get("attempts", 0) + 1,
                      started=_now(), command=command)
    gpus = f" on GPUs {slot}" if slot is not None else ""
    print(f"[{index}/{total}] {kind} {trial.name}{gpus} (log {log.name})", flush=True)
    return process, _Job(index, trial, slot, time.time(), kind, log)


def _finish(process, job, total, pending, failed):
    """Records how a trial's command ended and reports it.

    A trained trial whose training did not evaluate it goes back to the front of `pending` (to
    be evaluated); a failed one is added to `failed`.

    Args:
      process: the ended Popen.
      job: its `_Job`.
      total: the number of trials of the sweep.
      pending: the deque of (index, trial) still to run.
      failed: the list of the names of the failed trials.
    """
    index, trial, kind, log = job.index, job.trial, job.kind, job.log
    log.close()
    seconds = round(time.time() - job.start, 1)
    state = trial_results(trial.logdir)["state"]
    stopped_ok = process.returncode in (0, PREEMPTED_EXIT_CODE)
    if not stopped_ok or (kind == "evaluate" and state != "finished"):
        failed.append(trial.name)
        trial.save_record(status="failed", returncode=process.returncode, ended=_now(),
                          seconds=seconds)
        reason = (f"exited with {process.returncode}" if process.returncode else
                  "wrote no evaluation of the final checkpoint")
        print(f"[{index}/{total}] FAILED {trial.name} ({kind} {reason} after "
              f"{seconds:.0f} s); last lines of {log.name}:\n{_tail(log.name)}", flush=True)
    elif state == "trained" and kind == "train":  # Evaluation was switched off.
        pending.appendleft((index, trial))
        trial.save_record(status="trained", returncode=0, ended=_now())
    else:
        status = "finished" if state == "finished" else "stopped"
        trial.save_record(status=status, returncode=process.returncode, ended=_now(),
                          seconds=seconds)
        detail = (_metric_text(trial.logdir) if status == "finished" else
                  "stopped before the last step; rerun to continue")
        print(f"[{index}/{total}] {status} {trial.name} in {seconds:.0f} s: {detail}",
              flush=True)


def _stop(running):
    """Terminates the running trials (SIGTERM: they save a checkpoint) and waits for them.

    A trial that has not stopped after 120 s is killed; every one is recorded as interrupted.

    Args:
      running: {Popen: `_Job`} of the running trials.
    """
    print("Interrupted: stopping the running trials (SIGTERM saves a checkpoint)...",
          flush=True)
    for process in running:
        process.terminate()
    for process, job in running.items():
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        job.log.close()
        job.trial.save_record(status="interrupted", ended=_now())


def run_trials(trials, max_parallel=1, gpu_groups=None, poll_s=0.5):
    """Runs every unfinished trial, at most `max_parallel` at once.

    Args:
      trials: `Trial`s whose records are loaded.
      max_parallel: concurrent subprocesses.
      gpu_groups: optional list of CUDA_VISIBLE_DEVICES strings, one per concurrent slot.
      poll_s: seconds between polls.

    Returns:
      The names of the trials that failed (non-zero exit).

    Raises:
      KeyboardInterrupt: after stopping the running trials.
    """
    total = len(trials)
    pending = _unfinished(trials)
    free_slots = list(gpu_groups) if gpu_groups else [None] * max_parallel
    processes = len(free_slots)
    running = {}  # Popen -> _Job
    failed = []
    try:
        while pending or running:
            while pending and free_slots:
                index, trial = pending.popleft()
                process, job = _start(index, total, trial, free_slots.pop(0), processes)
                running[process] = job
            time.sleep(poll_s)
            for process in [p for p in running if p.poll() is not None]:
                job = running.pop(process)
                free_slots.append(job.slot)
                _finish(process, job, total, pending, failed)
    except KeyboardInterrupt:
        _stop(running)
        raise
    return failed
