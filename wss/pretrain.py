"""Pretrains a backbone on image-level labels: `python -m wss.pretrain --gin_file=NAME.gin`.

    python -m wss.pretrain --gin_file=NAME.gin [--gin_bindings='X.y = z' ...] [--logdir=DIR]
                           [--strategy=mirrored|tpu|multi_worker|one_device] [--tpu=ADDRESS]

The stand-in for ImageNet pretraining: trains the backbone and its pooled image classifier
(`wss.models.ImageClassifier`) on TFRecords with `image/class/label` (multi-label, the
project's schema, or single-label ImageNet-style records) with the same loop as `wss.train`
(strategies, checkpoints, resume, logs). At the end it writes the weights under DeepLab's TF1
variable names to `LOGDIR/tf1/model.ckpt`, which `train.init_checkpoint` takes as it takes
DeepLab's own ImageNet checkpoints. Rerunning the same command resumes. Exit status as
`wss.train`'s: 75 (`wss.training.loop.PREEMPTED_EXIT_CODE`) after a SIGTERM that saved.
"""

import os
import sys

from absl import app, flags

from wss import experiment
from wss import strategy as strategy_lib
from wss.tasks import pretraining
from wss.training import loop

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's command-line flags."""
    flags.DEFINE_multi_string("gin_file", None, "Gin config files or packaged config names.")
    flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'pretrain.num_steps = 10'.")
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
    result = pretraining.pretrain(logdir)
    if not result["finished"]:
        reason = "by SIGTERM" if result["preempted"] else "(pretrain.steps_per_run)"
        print(f"Stopped {reason} at step {result['step']}; rerun the same command to resume.")
        return loop.PREEMPTED_EXIT_CODE if result["preempted"] else 0
    if "tf1_checkpoint" in result:
        print(f"\nInitial checkpoint: {os.path.abspath(result['tf1_checkpoint'])}")
        print(f"Use it with --gin_bindings=\"train.init_checkpoint = "
              f"'{os.path.abspath(result['tf1_checkpoint'])}'\"")


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=sys.argv)
