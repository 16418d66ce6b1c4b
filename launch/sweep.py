"""Grid sweeps over gin parameters: one `wss.train` run per combination, then a summary table.

    python launch/sweep.py --gin_file=voc_semi.gin --root_dir=runs/sweep_voc \\
        --sweep='make_pseudo_labels.gamma=[0.3, 0.5, 0.7]' \\
        --sweep='make_pseudo_labels.temperature=[0.5, 0.7, 1.0]' \\
        [--gin_bindings='X.y = z' ...] [--max_parallel=N] [--dry_run] [-- WSS_TRAIN_ARGS...]
    python launch/sweep.py --summarize --root_dir=runs/sweep_voc

Each trial trains with `python -m wss.train` (which evaluates the final checkpoint) in its own
directory, named after its bindings, e.g.
`ROOT/make_pseudo_labels.gamma=0.3,make_pseudo_labels.temperature=0.7/`, which holds
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
`CUDA_VISIBLE_DEVICES`. This script imports nothing but the standard library (and matplotlib
for the heatmap); it launches subprocesses.
"""

import argparse
import collections
import csv
import datetime
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIAL_FILE = "trial.json"
LOG_FILE = "train.log"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
HEATMAP_PNG = "summary_heatmap.png"
_PARAM_RE = re.compile(r"^[A-Za-z_][\w.]*(/[A-Za-z_][\w.]*)*$")
_SAFE_RE = re.compile(r"[^A-Za-z0-9._+-]")
_MAX_NAME = 200
# trial.json keys that must match for a trial directory to be reused.
_CONFIG_KEYS = ("gin_files", "gin_bindings", "train_args")
# wss.train's exit status after SIGTERM saved a checkpoint (wss.training.loop, not imported
# here to keep TensorFlow out of this process): the trial stopped, it did not fail.
PREEMPTED_EXIT_CODE = 75


class SweepError(ValueError):
    """A malformed flag or an inconsistent sweep directory; the message names the culprit."""


# ---------------------------------------------------------------------------- the grid


def split_values(text, flag):
    """Splits `v1, v2, ...` at top-level commas (not inside brackets or quotes).

    Args:
      text: the text between the outer brackets of a `--sweep` list.
      flag: the whole flag, for error messages.

    Returns:
      The stripped value texts.

    Raises:
      SweepError: for unbalanced brackets or quotes, or an empty value.
    """
    values, depth, quote, start = [], [], None, 0
    pairs = {")": "(", "]": "[", "}": "{"}
    for i, char in enumerate(text):
        if quote:
            if char == "\\":
                continue
            if char == quote and (i == 0 or text[i - 1] != "\\"):
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth.append(char)
        elif char in ")]}":
            if not depth or depth.pop() != pairs[char]:
                raise SweepError(f"{flag}: unbalanced {char!r} in the value list")
        elif char == "," and not depth:
            values.append(text[start:i])
            start = i + 1
    if quote:
        raise SweepError(f"{flag}: unterminated {quote} quote in the value list")
    if depth:
        raise SweepError(f"{flag}: unclosed {depth[-1]!r} in the value list")
    values.append(text[start:])
    values = [v.strip() for v in values]
    if len(values) > 1 and not values[-1]:  # A trailing comma.
        values.pop()
    if not all(values):
        raise SweepError(f"{flag}: empty value in the list (two commas in a row?)")
    return values


def parse_sweep(text):
    """Parses one `--sweep='PARAM=[v1, v2, ...]'` flag.

    Returns:
      (param, [value texts]).

    Raises:
      SweepError: naming the flag when it is malformed.
    """
    flag = f"--sweep={text!r}"
    if "=" not in text:
        raise SweepError(f"{flag} is not PARAM=[v1, v2, ...], e.g. "
                         "--sweep='make_pseudo_labels.gamma=[0.3, 0.5]'")
    param, values = (part.strip() for part in text.split("=", 1))
    if not _PARAM_RE.match(param):
        raise SweepError(f"{flag}: {param!r} is not a gin parameter name "
                         "(configurable.parameter, scope/configurable.parameter or MACRO)")
    if not (values.startswith("[") and values.endswith("]")):
        raise SweepError(f"{flag}: the values must be a bracketed list, e.g. {param}=[0.3, 0.5]")
    if not values[1:-1].strip():
        raise SweepError(f"{flag}: the value list is empty")
    values = split_values(values[1:-1], flag)
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise SweepError(f"{flag}: {', '.join(duplicates)} listed more than once")
    return param, values


def parse_sweeps(texts):
    """Parses every `--sweep` flag; a parameter may be swept once.

    Returns:
      An ordered list of (param, values).
    """
    sweeps = [parse_sweep(text) for text in texts]
    params = [p for p, _ in sweeps]
    duplicates = sorted({p for p in params if params.count(p) > 1})
    if duplicates:
        raise SweepError(f"--sweep: {', '.join(duplicates)} swept by more than one --sweep flag")
    return sweeps


def value_label(value):
    """A filesystem-safe, readable form of a gin value: `'sgc'` -> `sgc`, `(3, 3)` -> `3_3`."""
    text = re.sub(r"\s+", "", value)
    text = re.sub(r"[\"'()\[\]{}]", "", text)
    return _SAFE_RE.sub("_", text.replace(",", "_"))


def trial_name(swept):
    """The directory name of a trial: `param=label,param=label` (see `value_label`)."""
    return ",".join(f"{_SAFE_RE.sub('_', p)}={value_label(v)}" for p, v in swept.items())


def _digest(swept):
    text = json.dumps(list(swept.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def make_grid(sweeps):
    """Every combination of the swept values, as ordered {param: value} dicts with a name.

    Names that would collide after making them filesystem-safe, or that are too long, get a
    short digest of the exact bindings appended.

    Returns:
      A list of (name, swept) pairs in grid order (the last --sweep varies fastest).
    """
    params = [p for p, _ in sweeps]
    combos = [collections.OrderedDict(zip(params, values))
              for values in itertools.product(*(v for _, v in sweeps))]
    names = [trial_name(c) for c in combos]
    counts = collections.Counter(names)
    result = []
    for name, combo in zip(names, combos):
        if counts[name] > 1 or len(name) > _MAX_NAME:
            name = f"{name[:_MAX_NAME]}~{_digest(combo)}"
        result.append((name, combo))
    return result


# ---------------------------------------------------------------------------- trial state


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as error:
        print(f"warning: cannot parse {path}: {error}", file=sys.stderr)
        return None


def _write_json(path, value):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(temporary, path)


def trial_results(logdir):
    """What a trial directory holds: train result and final evaluation.

    Returns:
      dict with `train` (train_result.json or None), `eval` (the final checkpoint's
      ckpt-N.eval.json or None), `eval_path`, and `state`: `finished` (trained and evaluated),
      `trained` (not evaluated), `stopped` (training did not reach its last step) or `new`.
    """
    train = _read_json(os.path.join(logdir, "train_result.json"))
    result = {"train": train, "eval": None, "eval_path": None, "state": "new"}
    if train is None:
        return result
    if not train.get("finished"):
        result["state"] = "stopped"
        return result
    path = os.path.join(logdir, f"ckpt-{train['step']}.eval.json")
    evaluation = _read_json(path)
    result.update(eval=evaluation, eval_path=path,
                  state="finished" if evaluation is not None else "trained")
    return result


# ---------------------------------------------------------------------------- running


class Trial:
    """One combination: its directory, bindings, command and trial.json record."""

    def __init__(self, root_dir, name, swept, gin_files, gin_bindings, train_args, python):
        self.name = name
        self.logdir = os.path.join(root_dir, name)
        self.swept = swept
        self.record = {
            "name": name,
            "logdir": self.logdir,
            "swept": dict(swept),
            "gin_files": list(gin_files),
            "gin_bindings": list(gin_bindings) + [f"{p} = {v}" for p, v in swept.items()],
            "train_args": list(train_args),
        }
        self.train_command = (
            [python, "-m", "wss.train"]
            + [f"--gin_file={f}" for f in gin_files]
            + [f"--gin_bindings={b}" for b in self.record["gin_bindings"]]
            + [f"--logdir={self.logdir}"] + list(train_args))
        self.evaluate_command = [python, "-m", "wss.evaluate", f"--checkpoint_dir={self.logdir}"]

    @property
    def record_path(self):
        return os.path.join(self.logdir, TRIAL_FILE)

    def load_record(self):
        """Merges an existing trial.json (status, attempts) after checking its config.

        Raises:
          SweepError: when the directory was used with other gin files, bindings or args.
        """
        old = _read_json(self.record_path)
        if old is None:
            self.record.update(status="planned", attempts=0)
            return
        for key in _CONFIG_KEYS:
            if old.get(key) != self.record[key]:
                raise SweepError(
                    f"{self.logdir} was run with {key} {old.get(key)!r}, this sweep has "
                    f"{self.record[key]!r}; use another --root_dir (or delete that trial "
                    "directory to retrain it)")
        for key, value in old.items():
            self.record.setdefault(key, value)

    def save_record(self, **updates):
        self.record.update(updates)
        os.makedirs(self.logdir, exist_ok=True)
        _write_json(self.record_path, self.record)

    def next_command(self):
        """(kind, command) to bring the trial to `finished`, or (None, None) when it is."""
        state = trial_results(self.logdir)["state"]
        if state == "finished":
            return None, None
        if state == "trained":
            return "evaluate", self.evaluate_command
        return "train", self.train_command


def shell_quote(arg):
    """`shlex.quote`, but double quotes around args whose only special characters are spaces,
    `=` and single quotes (gin strings), which keeps printed commands readable."""
    if "'" in arg and not re.search(r"[\"$`\\!]", arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell_join(command):
    """A command list as one shell line (see `shell_quote`)."""
    return " ".join(shell_quote(arg) for arg in command)


def _now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def _child_environment(gpus):
    env = dict(os.environ)
    if os.path.isdir(os.path.join(REPO, "wss")):  # A checkout: make `wss` importable.
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if REPO not in paths:
            env["PYTHONPATH"] = os.pathsep.join([REPO, *paths])
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def _tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except FileNotFoundError:
        return ""


def _metric_text(logdir):
    evaluation = trial_results(logdir)["eval"]
    if evaluation and isinstance(evaluation.get("miou"), (int, float)):
        return f"mIoU {evaluation['miou'] * 100:.2f}%"
    return "no evaluation"


def run_trials(trials, max_parallel=1, gpu_groups=None, poll_s=0.5):
    """Runs every unfinished trial, at most `max_parallel` at once.

    Args:
      trials: `Trial`s whose records are loaded.
      max_parallel: concurrent subprocesses.
      gpu_groups: optional list of CUDA_VISIBLE_DEVICES strings, one per concurrent slot.
      poll_s: seconds between polls.

    Returns:
      The names of the trials that failed (non-zero exit).
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
    free_slots = list(gpu_groups) if gpu_groups else [None] * max_parallel
    running = {}  # Popen -> (index, trial, slot, start time, kind, log file)
    failed = []
    try:
        while pending or running:
            while pending and free_slots:
                index, trial = pending.popleft()
                kind, command = trial.next_command()
                slot = free_slots.pop(0)
                os.makedirs(trial.logdir, exist_ok=True)
                log = open(os.path.join(trial.logdir, LOG_FILE), "a")
                log.write(f"\n=== {_now()} attempt {trial.record.get('attempts', 0) + 1} "
                          f"({kind}): {shell_join(command)}\n")
                log.flush()
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           env=_child_environment(slot),
                                           stdin=subprocess.DEVNULL)
                trial.save_record(status="running", attempts=trial.record.get("attempts", 0) + 1,
                                  started=_now(), command=command)
                gpus = f" on GPUs {slot}" if slot is not None else ""
                print(f"[{index}/{total}] {kind} {trial.name}{gpus} (log {log.name})",
                      flush=True)
                running[process] = (index, trial, slot, time.time(), kind, log)
            time.sleep(poll_s)
            for process in [p for p in running if p.poll() is not None]:
                index, trial, slot, start, kind, log = running.pop(process)
                log.close()
                free_slots.append(slot)
                seconds = round(time.time() - start, 1)
                state = trial_results(trial.logdir)["state"]
                stopped_ok = process.returncode in (0, PREEMPTED_EXIT_CODE)
                if not stopped_ok or (kind == "evaluate" and state != "finished"):
                    failed.append(trial.name)
                    trial.save_record(status="failed", returncode=process.returncode,
                                      ended=_now(), seconds=seconds)
                    reason = (f"exited with {process.returncode}" if process.returncode else
                              "wrote no evaluation of the final checkpoint")
                    print(f"[{index}/{total}] FAILED {trial.name} ({kind} {reason} after "
                          f"{seconds:.0f} s); last lines of {log.name}:\n{_tail(log.name)}",
                          flush=True)
                elif state == "trained" and kind == "train":  # Evaluation was switched off.
                    pending.appendleft((index, trial))
                    trial.save_record(status="trained", returncode=0, ended=_now())
                else:
                    status = "finished" if state == "finished" else "stopped"
                    trial.save_record(status=status, returncode=process.returncode, ended=_now(),
                                      seconds=seconds)
                    detail = (_metric_text(trial.logdir) if status == "finished" else
                              "stopped before the last step; rerun to continue")
                    print(f"[{index}/{total}] {status} {trial.name} in {seconds:.0f} s: "
                          f"{detail}", flush=True)
    except KeyboardInterrupt:
        print("Interrupted: stopping the running trials (SIGTERM saves a checkpoint)...",
              flush=True)
        for process in running:
            process.terminate()
        for process, (_, trial, _, _, _, log) in running.items():
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
            trial.save_record(status="interrupted", ended=_now())
        raise
    return failed


# ---------------------------------------------------------------------------- summary


def _sort_key(value):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def collect(root_dir):
    """Reads every trial directory under `root_dir` (those with a trial.json).

    Returns:
      (params, rows): the swept parameters in order of first appearance, and one dict per
      trial with `trial`, `swept`, `status`, `step`, the final losses and the evaluation.
    """
    rows, params = [], []
    for entry in sorted(os.listdir(root_dir)):
        logdir = os.path.join(root_dir, entry)
        if not os.path.isdir(logdir):
            continue
        record = _read_json(os.path.join(logdir, TRIAL_FILE))
        if record is None:
            continue
        for param in record.get("swept", {}):
            if param not in params:
                params.append(param)
        results = trial_results(logdir)
        status = results["state"]
        if status != "finished" and record.get("status") in ("failed", "running",
                                                            "interrupted"):
            status = record["status"]
        elif status == "new":
            status = "not started"
        rows.append({"trial": entry, "logdir": logdir, "swept": record.get("swept", {}),
                     "status": status, "train": results["train"] or {},
                     "eval": results["eval"] or {}})
    rows.sort(key=lambda r: [_sort_key(r["swept"].get(p, "")) for p in params])
    return params, rows


def _format_float(value, scale=1.0, digits=2):
    value = _number(value)
    if value is None or math.isnan(value):
        return ""
    return f"{value * scale:.{digits}f}"


def write_summary(root_dir, metric="miou", heatmap_params=None):
    """Writes summary.csv, summary.md and (if possible) the heatmap; returns the markdown."""
    params, rows = collect(root_dir)
    if not rows:
        raise SweepError(f"--root_dir={root_dir} holds no trial directories (no {TRIAL_FILE})")
    class_ids = sorted({c for r in rows for c in r["eval"].get("per_class_iou", {})},
                       key=_sort_key)
    loss_keys = sorted({k for r in rows for k, v in r["train"].items()
                        if k.startswith("loss") and _number(v) is not None})
    header = (["trial", *params, "status", "step", "miou", "pixel_accuracy", *loss_keys]
              + [f"iou_{c}" for c in class_ids])
    with open(os.path.join(root_dir, SUMMARY_CSV), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            writer.writerow(
                [r["trial"], *(r["swept"].get(p, "") for p in params), r["status"],
                 r["train"].get("step", ""), r["eval"].get("miou", ""),
                 r["eval"].get("pixel_accuracy", ""),
                 *(r["train"].get(k, "") for k in loss_keys),
                 *(r["eval"].get("per_class_iou", {}).get(c, "") for c in class_ids)])

    scored = [r for r in rows if _number(r["eval"].get(metric)) is not None
              and not math.isnan(r["eval"][metric])]
    best = max(scored, key=lambda r: r["eval"][metric]) if scored else None
    lines = [f"# Sweep summary: {os.path.abspath(root_dir)}", "",
             "| " + " | ".join([*params, "status", "step", "mIoU (%)", "pixel acc. (%)"])
             + " |",
             "|" + "---|" * (len(params) + 4)]
    for r in rows:
        cells = [str(r["swept"].get(p, "")).replace("|", "\\|") for p in params]
        miou = _format_float(r["eval"].get("miou"), 100)
        if r is best and metric == "miou":
            miou = f"**{miou}**"
        cells += [r["status"], str(r["train"].get("step", "")), miou,
                  _format_float(r["eval"].get("pixel_accuracy"), 100)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if best is not None:
        lines.append(f"Best {metric}: {best['eval'][metric]:.4f} ({best['trial']}).")
    unfinished = [r for r in rows if r["status"] != "finished"]
    lines.append(f"{len(rows) - len(unfinished)} of {len(rows)} trials finished.")
    markdown = "\n".join(lines) + "\n"
    with open(os.path.join(root_dir, SUMMARY_MD), "w") as f:
        f.write(markdown)
    heatmap_message = write_heatmap(root_dir, params, rows, metric, heatmap_params)
    return markdown, heatmap_message


def write_heatmap(root_dir, params, rows, metric, heatmap_params=None):
    """Plots `metric` over two swept parameters (the best over any others) if matplotlib is
    installed; returns a message saying what was written or why not."""
    varied = [p for p in params if len({r["swept"].get(p) for r in rows}) > 1]
    if heatmap_params:
        unknown = [p for p in heatmap_params if p not in params]
        if len(heatmap_params) != 2 or unknown:
            raise SweepError(f"--heatmap_params={','.join(heatmap_params)}: give two swept "
                             f"parameters out of {', '.join(params)}")
        axes = list(heatmap_params)
    elif len(varied) == 2:
        axes = varied
    else:
        return (f"No heatmap: it needs two swept parameters with several values (this sweep "
                f"varies {len(varied)}); choose two with --heatmap_params=A,B.")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("No heatmap: matplotlib is not installed (pip install matplotlib, or "
                "pip install -e \".[plots]\").")
    y_values = sorted({r["swept"].get(axes[0]) for r in rows}, key=_sort_key)
    x_values = sorted({r["swept"].get(axes[1]) for r in rows}, key=_sort_key)
    grid = [[math.nan] * len(x_values) for _ in y_values]
    for r in rows:
        value = _number(r["eval"].get(metric))
        if value is None or math.isnan(value):
            continue
        i = y_values.index(r["swept"].get(axes[0]))
        j = x_values.index(r["swept"].get(axes[1]))
        if math.isnan(grid[i][j]) or value > grid[i][j]:
            grid[i][j] = value
    figure, axis = plt.subplots(figsize=(1.2 * len(x_values) + 2.5, 0.9 * len(y_values) + 1.8))
    image = axis.imshow(grid, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(x_values)), [str(v) for v in x_values])
    axis.set_yticks(range(len(y_values)), [str(v) for v in y_values])
    axis.set_xlabel(axes[1])
    axis.set_ylabel(axes[0])
    others = [p for p in varied if p not in axes]
    axis.set_title(metric + (f" (best over {', '.join(others)})" if others else ""))
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                axis.text(j, i, f"{value:.4f}", ha="center", va="center", color="white")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    path = os.path.join(root_dir, HEATMAP_PNG)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"Heatmap: {path}"


# ---------------------------------------------------------------------------- command line


def parse_args(argv):
    """Parses the flags; everything after `--` is kept as `train_args`."""
    argv = list(argv)
    train_args = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1:]
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
    args = parser.parse_args(argv)
    args.train_args = train_args
    args.root_dir = os.path.abspath(args.root_dir)
    if args.heatmap_params:
        args.heatmap_params = [p.strip() for p in args.heatmap_params.split(",")]
    if args.summarize:
        return args
    if not args.gin_file:
        parser.error("--gin_file is required (unless --summarize)")
    if not args.sweep:
        parser.error("give at least one --sweep='PARAM=[v1, v2, ...]' (or --summarize)")
    for arg in train_args:
        if arg.startswith(("--logdir", "--gin_file", "--gin_bindings")):
            parser.error(f"training argument {arg!r} after `--`: the sweep sets --logdir; put "
                         "--gin_file and --gin_bindings before `--`")
    args.gpu_groups = None
    if args.gpus:
        ids = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if args.gpus_per_trial < 1 or len(ids) % args.gpus_per_trial:
            parser.error(f"--gpus={args.gpus}: {len(ids)} GPU(s) do not split into groups of "
                         f"--gpus_per_trial={args.gpus_per_trial}")
        args.gpu_groups = [",".join(ids[i:i + args.gpus_per_trial])
                           for i in range(0, len(ids), args.gpus_per_trial)]
        if args.max_parallel is not None and args.max_parallel > len(args.gpu_groups):
            parser.error(f"--max_parallel={args.max_parallel} exceeds the "
                         f"{len(args.gpu_groups)} GPU group(s) of --gpus={args.gpus}")
        if args.max_parallel:
            args.gpu_groups = args.gpu_groups[:args.max_parallel]
    if args.max_parallel is None:
        args.max_parallel = len(args.gpu_groups) if args.gpu_groups else 1
    if args.max_parallel < 1:
        parser.error(f"--max_parallel={args.max_parallel} must be at least 1")
    try:
        args.grid = make_grid(parse_sweeps(args.sweep))
    except SweepError as error:
        parser.error(str(error))
    return args


def _summarize(args):
    markdown, heatmap_message = write_summary(args.root_dir, args.metric, args.heatmap_params)
    print(markdown)
    print(heatmap_message)
    print(f"Summary: {os.path.join(args.root_dir, SUMMARY_CSV)}, "
          f"{os.path.join(args.root_dir, SUMMARY_MD)}")


def main(argv=None):
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
            print(f"# {len(trials)} trial(s) under {args.root_dir}; commands of the unfinished "
                  "ones follow (one per line)", file=sys.stderr)
            for trial in trials:
                trial.save_record()
                kind, command = trial.next_command()
                if kind is None:
                    print(f"# skip {trial.name}: finished", file=sys.stderr)
                else:
                    print(shell_join(command))
            return 0
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
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
