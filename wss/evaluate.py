"""Evaluates checkpoints: mIoU and per-class IoU over the whole validation set.

    python -m wss.evaluate --checkpoint_dir=LOGDIR [--gin_file=...] [--continuous]

Without `--gin_file` the `config.gin` saved by training in LOGDIR is used. Results are written
as JSON next to each checkpoint (`ckpt-N.eval.json`). `--continuous` waits for and evaluates
each new checkpoint until the last training step's checkpoint has been evaluated. Beside a
running trainer, a checkpoint that the trainer deletes (`train.max_to_keep`) before it could be
read is skipped with a message (results of deleted checkpoints are kept: they are the history).
With `--track_best` (default) the checkpoint with the best mIoU so far is copied to
LOGDIR/best/ (`wss.evaluation.evaluator.track_best`), out of reach of `train.max_to_keep`;
at the end
both it and the last checkpoint are reported. `--checkpoint_dir=LOGDIR/best` evaluates it.
"""

import os
import sys

import gin
import tensorflow as tf
from absl import app, flags, logging

from wss import experiment
from wss.evaluation import evaluator as evaluation
from wss.training import checkpointing

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's command-line flags."""
    flags.DEFINE_string("checkpoint_dir", None, "Training log directory or checkpoint path.")
    flags.DEFINE_multi_string("gin_file", [], "Gin files (default: CHECKPOINT_DIR/config.gin).")
    flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
    flags.DEFINE_bool("continuous", False, "Evaluate every new checkpoint as it appears.")
    flags.DEFINE_bool("track_best", True,
                      "Keep the checkpoint with the best mIoU so far in LOGDIR/best (safe from "
                      "train.max_to_keep) and report it with the last one.")
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
        track_best(results["checkpoint"], results)
        return
    final_step = gin.query_parameter("train.num_steps")
    for checkpoint_path in tf.train.checkpoints_iterator(
            FLAGS.checkpoint_dir, timeout=FLAGS.timeout_secs):
        if not evaluation.evaluated(checkpoint_path):
            results = evaluate_if_present(checkpoint_path)
            if results is not None:
                track_best(checkpoint_path, results)
        if checkpoint_path.endswith(f"-{final_step}"):
            print(evaluation.format_best_and_last(
                evaluation.best_and_last(FLAGS.checkpoint_dir)), flush=True)
            break


def track_best(checkpoint_path, results):
    """Keeps the best checkpoint in LOGDIR/best (`--track_best`) and prints it."""
    directory = os.path.dirname(checkpoint_path)
    if not FLAGS.track_best or evaluation.is_best_dir(directory):
        return None
    best = evaluation.track_best(checkpoint_path, results)
    if best is not None:
        print(f"best so far: {best['source']} (step {best['step']}), mIoU "
              f"{best['miou'] * 100:.2f}%, kept in {os.path.dirname(best['checkpoint'])}",
              flush=True)
    return best


def _exists(checkpoint_path):
    return tf.io.gfile.exists(checkpoint_path + ".index")


def evaluate_if_present(checkpoint_path):
    """Evaluates a checkpoint, or skips it with a message if it was deleted meanwhile.

    Returns:
      The results dict, or None when the checkpoint vanished.
    """
    try:
        results, path = evaluation.evaluate_checkpoint(checkpoint_path)
    except (FileNotFoundError, tf.errors.NotFoundError, checkpointing.CheckpointError):
        if _exists(checkpoint_path):
            raise
        print(f"{checkpoint_path}: skipped, the trainer deleted it before it could be read "
              "(train.max_to_keep)", flush=True)
        return None
    logging.info("%s: mIoU %.4f", checkpoint_path, results["miou"])
    print(f"{checkpoint_path}: mIoU {results['miou'] * 100:.2f} ({path})", flush=True)
    return results


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=sys.argv)
