"""Trains PseudoSeg from a gin file: `python -m wss.train --gin_file=voc_semi.gin`.

    python -m wss.train --gin_file=NAME.gin [--gin_bindings='X.y = z' ...] [--logdir=DIR]
                        [--strategy=mirrored|tpu|multi_worker|one_device] [--tpu=ADDRESS]

`--gin_file` takes a path or the name of a packaged config (see gin_configs/). Rerunning the
same command resumes from the latest checkpoint in the log directory. After training, the
latest checkpoint is evaluated on the validation set and, when `after_training.export` is
set, exported as a SavedModel.

Exit status: 0 when training finished (or stopped at `train.steps_per_run`), 75
(`wss.training.loop.PREEMPTED_EXIT_CODE`) when SIGTERM stopped it after saving a checkpoint
(rerun to resume), 1 on errors. A second process on the same `--logdir` fails at once.
"""

import os
import sys

from absl import app, flags

from wss import experiment, trainer
from wss import strategy as strategy_lib
from wss.training import loop, rundir

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's command-line flags."""
    flags.DEFINE_multi_string("gin_file", None, "Gin config files or packaged config names.")
    flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'train.num_steps = 10'.")
    flags.DEFINE_string("logdir", None, "Log directory (default: runs/<first gin file name>).")
    flags.DEFINE_enum("strategy", None, list(strategy_lib.STRATEGIES),
                      "Distribution strategy (overrides make_strategy.name).")
    flags.DEFINE_string("tpu", None, "TPU address for --strategy=tpu ('local' on a TPU VM).")
    flags.mark_flag_as_required("gin_file")


def main(argv):
    del argv
    try:
        bindings = list(FLAGS.gin_bindings) + strategy_lib.flag_bindings(FLAGS.strategy,
                                                                          FLAGS.tpu)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    experiment.parse_experiment_config(None, FLAGS.gin_file, bindings)
    logdir = FLAGS.logdir or os.path.join(
        "runs", os.path.splitext(os.path.basename(FLAGS.gin_file[0]))[0])
    result = trainer.train(logdir)
    if not result["finished"]:
        reason = "by SIGTERM" if result["preempted"] else "(train.steps_per_run)"
        print(f"Stopped {reason} at step {result['step']}; rerun the same command to resume.")
        return loop.PREEMPTED_EXIT_CODE if result["preempted"] else 0
    if not result["chief"]:  # Only the chief evaluates and exports, after its final save.
        return
    with rundir.LogdirLock(logdir):  # Evaluation and export write there too.
        summary = trainer.after_training(logdir)
    print("")
    if summary["miou"] is not None:
        print(f"Validation mIoU: {summary['miou'] * 100:.2f}%")
    print(f"Checkpoints:     {os.path.abspath(logdir)}")
    print(f"TensorBoard:     tensorboard --logdir {os.path.abspath(logdir)}")
    if summary["export_dir"]:
        print(f"SavedModel:      {os.path.abspath(summary['export_dir'])}")


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=sys.argv)
