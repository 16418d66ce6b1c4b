"""Exports a trained model as a SavedModel with a serving signature.

    python -m wss.export --checkpoint_dir=LOGDIR --export_dir=OUT [--gin_file=...]

The SavedModel holds a `tf.Module` whose `serve` function takes `uint8 [B, H, W, 3]` images of
any size and returns `class_map` (int32 `[B, H, W]`) and `probabilities` (float32
`[B, H, W, C]`) at the input resolution. It loads with plain
`tf.saved_model.load(path).signatures['serving_default']` in a process without `wss`.

The signature declares `images` of unknown shape and checks it at run time before anything
else runs: another rank, another number of channels, an empty batch or an image of zero height
or width fails with an `InvalidArgumentError` that says what was expected and what was given.
(A loaded signature does not check shapes itself: with a declared `[None, None, None, 3]`, a
rank-3 tensor reached the kernels and aborted the serving process.)

The export is written to `<export_dir>.tmp-export/` and renamed into place; a leftover
temporary directory (an interrupted export, or one in progress) is reported, not removed.
"""

import contextlib
import os
import sys

import tensorflow as tf
from absl import app, flags, logging

from wss import experiment
from wss.models.inference import full_resolution_logits


class SegmentationServingModule(tf.Module):
    """A `tf.Module` wrapping a DeepLab model for serving.

    Args:
      model: a model from `wss.models.build_deeplab`.
      name: the module name.
    """

    def __init__(self, model, name="wss_segmentation"):
        super().__init__(name=name)
        self.model = model
        self.num_classes = model.num_classes

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serve(self, images):
        """Segments a batch of uint8 images; returns class_map and probabilities."""
        images = checked_images(images)
        logits = full_resolution_logits(self.model, tf.cast(images, tf.float32))
        probabilities = tf.nn.softmax(logits, axis=-1)
        class_map = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"class_map": class_map, "probabilities": probabilities}


def checked_images(images):
    """`images` with static shape `[None, None, None, 3]` once run-time checks pass.

    Raises (when run):
      tf.errors.InvalidArgumentError: unless `images` is `[B, H, W, 3]` with B, H, W > 0.
    """
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]
    valid = tf.logical_and(tf.equal(tf.size(shape), 4), tf.equal(padded[3], 3))
    valid = tf.logical_and(valid, tf.reduce_all(padded[:3] > 0))
    check = tf.debugging.Assert(valid, [
        "serving_default: `images` must be uint8 [batch, height, width, 3] with batch, "
        "height and width > 0; got shape", shape])
    with tf.control_dependencies([check]):
        images = tf.identity(images)
    return tf.ensure_shape(images, [None, None, None, 3])


def export_saved_model(model, export_dir):
    """Writes `model` as a SavedModel with a `serving_default` signature.

    The SavedModel is written to a temporary sibling directory and renamed into place, so an
    interrupted export never leaves a half-written model at `export_dir`.

    Args:
      model: a built DeepLab model.
      export_dir: the output directory; it must not exist yet.

    Returns:
      `export_dir`.

    Raises:
      FileExistsError: if `export_dir` exists, or its temporary directory
        `<export_dir>.tmp-export` (an interrupted export, or one in progress).
    """
    if tf.io.gfile.exists(export_dir):
        raise FileExistsError(f"--export_dir {export_dir} exists; remove it or choose another")
    module = SegmentationServingModule(model)
    temp_dir = export_dir.rstrip("/") + ".tmp-export"
    if tf.io.gfile.exists(temp_dir):
        raise FileExistsError(
            f"{temp_dir} exists: an interrupted export to --export_dir {export_dir}, or one "
            "still running. Remove it if no export is running, then rerun.")
    # Saving retraces the Keras layers at the shape they were built with (a dummy batch, not
    # a crop the model serves): no ASPP warning about that size.
    rates_quiet = (model.aspp.rate_warnings_off() if hasattr(model, "aspp")
                   else contextlib.nullcontext())
    with rates_quiet:
        tf.saved_model.save(module, temp_dir, signatures={"serving_default": module.serve})
    tf.io.gfile.rename(temp_dir, export_dir)
    return export_dir


def export_from_checkpoint(checkpoint_dir, export_dir, gin_files=(), gin_bindings=()):
    """Builds the experiment's model, restores the latest checkpoint, exports it.

    Args:
      checkpoint_dir: a training log directory (or a checkpoint path).
      export_dir: the SavedModel directory to create.
      gin_files: gin files; default: the `config.gin` saved in `checkpoint_dir`.
      gin_bindings: extra bindings.

    Returns:
      (export_dir, checkpoint path restored).
    """
    experiment.parse_experiment_config(checkpoint_dir, gin_files, gin_bindings)
    model, _ = experiment.build_models(with_sgc_head=False)
    path = experiment.restore_models(checkpoint_dir, model=model)
    export_saved_model(model, export_dir)
    return export_dir, path


FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's command-line flags."""
    flags.DEFINE_string("checkpoint_dir", None, "Training log directory or checkpoint path.")
    flags.DEFINE_string("export_dir", None, "Where to write the SavedModel (must not exist).")
    flags.DEFINE_multi_string("gin_file", [], "Gin files (default: CHECKPOINT_DIR/config.gin).")
    flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
    flags.mark_flags_as_required(["checkpoint_dir", "export_dir"])


def main(argv):
    del argv
    export_dir, path = export_from_checkpoint(
        FLAGS.checkpoint_dir, FLAGS.export_dir, FLAGS.gin_file, FLAGS.gin_bindings)
    logging.info("Exported %s to %s", path, export_dir)
    print(f"SavedModel of {path} written to {os.path.abspath(export_dir)}")


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=sys.argv)
