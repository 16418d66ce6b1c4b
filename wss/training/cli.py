"""The command-line side shared by `python -m wss.train` and `python -m wss.pretrain`.

Both tools take the same flags (gin files and bindings, log directory, strategy, TPU), parse
the gin config the same way, derive the same default log directory and report a run that
stopped early (SIGTERM or `steps_per_run`) the same way; only the run function and what they
print after a finished run differ.
"""

import os

from absl import app, flags

from wss import experiment
from wss.training import loop
from wss.training import strategy as strategy_lib

FLAGS = flags.FLAGS


def define_flags(example_binding):
    """Defines the training tools' command-line flags.

    Args:
      example_binding: a binding shown in the `--gin_bindings` help, e.g. 'train.num_steps = 10'.
    """
    flags.DEFINE_multi_string("gin_file", None, "Gin config files or packaged config names.")
    flags.DEFINE_multi_string("gin_bindings", [], f"Gin bindings, e.g. '{example_binding}'.")
    flags.DEFINE_string("logdir", None, "Log directory (default: runs/<first gin file name>).")
    flags.DEFINE_enum("strategy", None, list(strategy_lib.STRATEGIES),
                      "Distribution strategy (overrides make_strategy.name).")
    flags.DEFINE_string("tpu", None, "TPU address for --strategy=tpu ('local' on a TPU VM).")
    flags.mark_flag_as_required("gin_file")


def run_from_flags(run, steps_per_run_binding):
    """Parses the config the flags name and runs `run(logdir)`.

    Args:
      run: the gin entry point, called with the log directory; returns the loop's result.
      steps_per_run_binding: the binding that stops a run early on purpose (for the message).

    Returns:
      (result, logdir, exit_code): `exit_code` is None for a finished run, else the status to
      exit with (`loop.PREEMPTED_EXIT_CODE` after a SIGTERM, 0 after `steps_per_run`).

    Raises:
      app.UsageError: for a bad `--strategy` / `--tpu` combination.
    """
    try:
        bindings = list(FLAGS.gin_bindings) + strategy_lib.flag_bindings(FLAGS.strategy,
                                                                          FLAGS.tpu)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    experiment.parse_experiment_config(None, FLAGS.gin_file, bindings)
    strategy_lib.configure_cpu_threads()
    logdir = FLAGS.logdir or os.path.join(
        "runs", os.path.splitext(os.path.basename(FLAGS.gin_file[0]))[0])
    result = run(logdir)
    if result["finished"]:
        return result, logdir, None
    reason = "by SIGTERM" if result["preempted"] else f"({steps_per_run_binding})"
    print(f"Stopped {reason} at step {result['step']}; rerun the same command to resume.")
    return result, logdir, loop.PREEMPTED_EXIT_CODE if result["preempted"] else 0
