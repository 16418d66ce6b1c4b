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

from absl import app

from wss.training import cli, rundir, trainer


def main(argv):
    del argv
    result, logdir, exit_code = cli.run_from_flags(trainer.train, "train.steps_per_run")
    if exit_code is not None:
        return exit_code
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
    cli.define_flags("train.num_steps = 10")
    app.run(main, argv=sys.argv)
