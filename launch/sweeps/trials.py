"""One trial of a sweep: its directory, `trial.json` record, commands and result state.

A trial directory `ROOT/NAME/` holds `trial.json` (the bindings, the command, status,
attempts, times), `train.log` (the output of its runs) and what `wss.train` writes there:
`train_result.json` and, per evaluated checkpoint, `ckpt-N.eval.json` (the names come from
`wss.run_files`). A trial is finished when training finished and its final checkpoint was
evaluated.
"""

import json
import os
import sys

from wss.run_files import EVAL_SUFFIX, RESULT_FILENAME

from . import SweepError

TRIAL_FILE = "trial.json"
LOG_FILE = "train.log"
# trial.json keys that must match for a trial directory to be reused.
_CONFIG_KEYS = ("gin_files", "gin_bindings", "train_args")


def read_json(path):
    """Reads a JSON file.

    Args:
      path: the file.

    Returns:
      Its value, or None when the file does not exist or does not parse (with a warning on
      stderr).
    """
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as error:
        print(f"warning: cannot parse {path}: {error}", file=sys.stderr)
        return None


def write_json(path, value):
    """Writes `value` as indented JSON by temp-and-rename, so a reader never sees half a file.

    Args:
      path: the file.
      value: a JSON-serialisable value.
    """
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(temporary, path)


def trial_results(logdir):
    """What a trial directory holds: train result and final evaluation.

    Args:
      logdir: the trial directory.

    Returns:
      dict with `train` (train_result.json or None), `eval` (the final checkpoint's
      ckpt-N.eval.json or None), `eval_path`, and `state`: `finished` (trained and evaluated),
      `trained` (not evaluated), `stopped` (training did not reach its last step) or `new`.
    """
    train = read_json(os.path.join(logdir, RESULT_FILENAME))
    result = {"train": train, "eval": None, "eval_path": None, "state": "new"}
    if train is None:
        return result
    if not train.get("finished"):
        result["state"] = "stopped"
        return result
    path = os.path.join(logdir, f"ckpt-{train['step']}{EVAL_SUFFIX}")
    evaluation = read_json(path)
    result.update(eval=evaluation, eval_path=path,
                  state="finished" if evaluation is not None else "trained")
    return result


class Trial:
    """One combination: its directory, bindings, command and trial.json record.

    Attributes:
      name: the directory name (see `grid.make_grid`).
      logdir: `ROOT_DIR/NAME`.
      swept: ordered {param: value text} of this trial.
      record: what trial.json holds (after `load_record`, also status and attempts).
      train_command: the `wss.train` command (its bindings end with the swept ones).
      evaluate_command: the `wss.evaluate` command for a trained, unevaluated trial.
    """

    def __init__(self, root_dir, name, swept, gin_files, gin_bindings, train_args, python):
        """Describes the trial; reads and writes nothing.

        Args:
          root_dir: the sweep directory.
          name: the trial's directory name.
          swept: ordered {param: value text}.
          gin_files: `--gin_file`s of every trial.
          gin_bindings: `--gin_bindings` of every trial (the swept ones follow them).
          train_args: further `wss.train` arguments (after `--`).
          python: the interpreter that runs the trials.
        """
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
        """The trial's trial.json."""
        return os.path.join(self.logdir, TRIAL_FILE)

    def load_record(self):
        """Merges an existing trial.json (status, attempts) after checking its config.

        Raises:
          SweepError: when the directory was used with other gin files, bindings or args.
        """
        old = read_json(self.record_path)
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
        """Updates the record and writes trial.json (creating the trial directory).

        Args:
          **updates: record keys to set first (status, attempts, times, ...).
        """
        self.record.update(updates)
        os.makedirs(self.logdir, exist_ok=True)
        write_json(self.record_path, self.record)

    def next_command(self):
        """(kind, command) to bring the trial to `finished`, or (None, None) when it is."""
        state = trial_results(self.logdir)["state"]
        if state == "finished":
            return None, None
        if state == "trained":
            return "evaluate", self.evaluate_command
        return "train", self.train_command
