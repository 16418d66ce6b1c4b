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

from absl import app

from wss.tasks import pretraining
from wss.training import cli


def main(argv):
    del argv
    result, _, exit_code = cli.run_from_flags(pretraining.pretrain, "pretrain.steps_per_run")
    if exit_code is not None:
        return exit_code
    if "tf1_checkpoint" in result:
        print(f"\nInitial checkpoint: {os.path.abspath(result['tf1_checkpoint'])}")
        print(f"Use it with --gin_bindings=\"train.init_checkpoint = "
              f"'{os.path.abspath(result['tf1_checkpoint'])}'\"")


if __name__ == "__main__":
    cli.define_flags("pretrain.num_steps = 10")
    app.run(main, argv=sys.argv)
