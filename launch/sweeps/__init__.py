"""The parts of `launch/sweep.py`, the grid sweep over gin parameters (its command line).

* `grid`: `--sweep` flags -> the trials of the grid (their names and bindings);
* `trials`: one trial's directory: `trial.json`, its commands, and the state of its results;
* `scheduler`: runs the unfinished trials as subprocesses, several at a time, on GPU groups;
* `results`: reads every trial directory of a sweep into rows;
* `summary`: the rows as `summary.csv` and `summary.md`;
* `plots`: the heatmap of a metric over two swept parameters (matplotlib).

Like the script, these modules import only the standard library, `wss.run_files` (which
imports nothing, so no TensorFlow starts) and, for the heatmap, matplotlib.
"""


class SweepError(ValueError):
    """A malformed flag or an inconsistent sweep directory; the message names the culprit."""
