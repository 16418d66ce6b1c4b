"""A sweep's results as rows: every trial directory under the sweep's root, and the value
helpers that the tables (`summary`) and the heatmap (`plots`) share.
"""

import os

from .trials import TRIAL_FILE, read_json, trial_results


def sort_key(value):
    """Orders value texts numerically where they are numbers, after them as text.

    Args:
      value: a value text (a swept gin literal, a class id).

    Returns:
      A key for `sorted`.
    """
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def number(value):
    """`value` if it is an int or float (not a bool), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _status(record, state):
    """A trial's status for the summary: its result state, unless trial.json knows better.

    Args:
      record: the trial's trial.json.
      state: `trials.trial_results(...)["state"]`.

    Returns:
      `finished`, `trained`, `stopped`, `failed`, `running`, `interrupted` or `not started`.
    """
    if state != "finished" and record.get("status") in ("failed", "running", "interrupted"):
        return record["status"]
    if state == "new":
        return "not started"
    return state


def collect(root_dir):
    """Reads every trial directory under `root_dir` (those with a trial.json).

    Args:
      root_dir: the sweep directory.

    Returns:
      (params, rows): the swept parameters in order of first appearance, and one dict per
      trial with `trial`, `swept`, `status`, `step`, the final losses and the evaluation.
    """
    rows, params = [], []
    for entry in sorted(os.listdir(root_dir)):
        logdir = os.path.join(root_dir, entry)
        if not os.path.isdir(logdir):
            continue
        record = read_json(os.path.join(logdir, TRIAL_FILE))
        if record is None:
            continue
        for param in record.get("swept", {}):
            if param not in params:
                params.append(param)
        results = trial_results(logdir)
        rows.append({"trial": entry, "logdir": logdir, "swept": record.get("swept", {}),
                     "status": _status(record, results["state"]),
                     "train": results["train"] or {}, "eval": results["eval"] or {}})
    rows.sort(key=lambda r: [sort_key(r["swept"].get(p, "")) for p in params])
    return params, rows
