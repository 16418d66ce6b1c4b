"""Segments image files with an exported SavedModel; writes palette PNG masks and overlays.

    python -m wss.predict --saved_model=DIR --input=a.jpg,b.png --output_dir=OUT
                          [--palette=pascal|cityscapes]

For each input `NAME.ext` it writes `OUT/NAME.png` (an 8-bit palette PNG whose pixel values are
class ids, the format of VOC's masks) and `OUT/NAME_overlay.png` (the coloured mask blended over
the image). Only TensorFlow is needed to load the SavedModel.
"""

import os
import sys

import tensorflow as tf
from absl import app, flags

from wss import visualize

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's command-line flags."""
    flags.DEFINE_string("saved_model", None, "SavedModel directory from wss.export.")
    flags.DEFINE_list("input", None, "Comma-separated image files (JPEG or PNG).")
    flags.DEFINE_string("output_dir", None, "Where to write masks and overlays.")
    flags.DEFINE_enum("palette", "pascal", ["pascal", "cityscapes"], "Colour palette.")
    flags.mark_flags_as_required(["saved_model", "input", "output_dir"])


def predict_files(saved_model_dir, paths, output_dir, palette="pascal"):
    """Runs the SavedModel on image files and writes masks and overlays.

    Args:
      saved_model_dir: a SavedModel written by `wss.export`.
      paths: image file paths.
      output_dir: output directory (created).
      palette: palette name.

    Returns:
      list of (mask path, overlay path).

    Raises:
      FileNotFoundError: naming a missing input file.
      ValueError: naming a file that is not a decodable image.
    """
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"--input: {path} does not exist")
    serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    colours = visualize.get_palette(palette)
    tf.io.gfile.makedirs(output_dir)
    written = []
    for path in paths:
        try:
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(f"--input: cannot decode {path} as an image: {e.message}") from None
        class_map = serve(images=image[tf.newaxis])["class_map"][0]
        stem = os.path.splitext(os.path.basename(path))[0]
        mask_path = os.path.join(output_dir, stem + ".png")
        overlay_path = os.path.join(output_dir, stem + "_overlay.png")
        with tf.io.gfile.GFile(mask_path, "wb") as f:
            f.write(visualize.encode_palette_png(class_map.numpy(), colours))
        overlay = visualize.overlay(image, class_map, colours)
        tf.io.write_file(overlay_path, tf.io.encode_png(overlay))
        written.append((mask_path, overlay_path))
    return written


def main(argv):
    del argv
    for mask_path, overlay_path in predict_files(FLAGS.saved_model, FLAGS.input,
                                                 FLAGS.output_dir, FLAGS.palette):
        print(f"wrote {mask_path} and {overlay_path}")


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=sys.argv)
