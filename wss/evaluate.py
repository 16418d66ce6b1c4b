"""Evaluates checkpoints: mIoU and per-class IoU over the whole validation set.

    python -m wss.evaluate --checkpoint_dir=LOGDIR [--gin_file=...] [--continuous]

Without `--gin_file` the `config.gin` saved by training in LOGDIR is used. Results are written
as JSON next to each checkpoint (`ckpt-N.eval.json`). `--continuous` waits for and evaluates
each new checkpoint until the last training step's checkpoint has been evaluated.
"""

import sys

import gin
import tensorflow as tf
from absl import app, flags, logging

from wss import evaluation, experiment

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's command-line flags."""
    flags.DEFINE_string("checkpoint_dir", None, "Training log directory or checkpoint path.")
    flags.DEFINE_multi_string("gin_file", [], "Gin files (default: CHECKPOINT_DIR/config.gin).")
    flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
    flags.DEFINE_bool("continuous", False, "Evaluate every new checkpoint as it appears.")
    flags.DEFINE_integer("timeout_secs", 3600,
                         "--continuous: stop after this long without a new checkpoint.")
    flags.mark_flag_as_required("checkpoint_dir")


def main(argv):
    del argv
    experiment.parse_experiment_config(FLAGS.checkpoint_dir, FLAGS.gin_file, FLAGS.gin_bindings)
    if not FLAGS.continuous:
        results, path = evaluation.evaluate_checkpoint(FLAGS.checkpoint_dir)
        print(evaluation.format_results(results))
        print(f"results written to {path}")
        return
    final_step = gin.query_parameter("train.num_steps")
    for checkpoint_path in tf.train.checkpoints_iterator(
            FLAGS.checkpoint_dir, timeout=FLAGS.timeout_secs):
        if evaluation.evaluated(checkpoint_path):
            continue
        results, path = evaluation.evaluate_checkpoint(checkpoint_path)
        logging.info("%s: mIoU %.4f", checkpoint_path, results["miou"])
        print(f"{checkpoint_path}: mIoU {results['miou'] * 100:.2f} ({path})", flush=True)
        if checkpoint_path.endswith(f"-{final_step}"):
            break


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=sys.argv)
