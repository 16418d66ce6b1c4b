"""Bit-identical reruns: TensorFlow's op determinism with Grappler's graph rewriting off.

`train.deterministic = True` (and `pretrain.deterministic`) turns on
`tf.config.experimental.enable_op_determinism` and turns off Grappler's meta optimizer for
the run. Op determinism alone did not make two processes of one seeded config train the same
numbers on the CPU: with Grappler's rewriting on (how it differs between processes is not
identified) the runs parted by one float32 ulp within a few steps (measured 2026-12-06 with
`benchmarks/rerun_agreement.py`, `demo_supervised.gin`, 20 steps: 8 of 13 pairs agreed with one
op at a time and oneDNN off, none with two ops at once; with Grappler off 3 of 3 pairs agreed
with TensorFlow's oneDNN kernels and two ops at once, as `wss.train` runs by default, and 3 of
3 of the paper's semi loop; 300 steps took 35.3-38.4 s against 36.2-36.5 s with Grappler on).
On GPUs Grappler's layout and fusion passes matter more; the cost there is not measured.
"""

import tensorflow as tf
from absl import logging
from tensorflow.python.framework import config as tf_config  # No public switch back.

_GRAPPLER_OFF = {"disable_meta_optimizer": True}


def op_determinism_enabled():
    """Whether TensorFlow's op determinism is on in this process."""
    return bool(tf_config.is_op_determinism_enabled())


def enable():
    """Turns op determinism on and Grappler's rewriting off for the functions traced next.

    Returns:
      A function of no arguments that restores both as they were.
    """
    op_determinism_before = op_determinism_enabled()
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options(_GRAPPLER_OFF)
    logging.info("Deterministic run: TensorFlow op determinism on, Grappler's graph "
                 "rewriting off (docs/reliability.md, 'Reproducible runs')")

    def restore():
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": previous.get("disable_meta_optimizer", False)})
        if not op_determinism_before:
            tf_config.disable_op_determinism()

    return restore
