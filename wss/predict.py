"""Segments image files with an exported SavedModel; writes palette PNG masks and overlays.

    python -m wss.predict --saved_model=DIR --input=a.jpg,b.png --output_dir=OUT
                          [--palette=pascal|cityscapes] [--max_pixels=N]

For each input `NAME.ext` it writes `OUT/NAME.png` (an 8-bit palette PNG whose pixel values are
class ids, the format of VOC's masks) and `OUT/NAME_overlay.png` (the coloured mask blended over
the image). Only TensorFlow is needed to load the SavedModel.

Output names are unique: inputs that share a name (`a.png`, `a.jpg`, or `x/a.png`, `y/a.png`)
get `NAME_EXT` and then a counter (`a_png.png`, `a_jpg.png`, `a_png_1.png`). No output may be
one of the inputs: the tool refuses before writing anything. Images larger than `--max_pixels`
(height x width, read from the file header before decoding) are refused, since the model's
memory grows with the image (a 3000 x 4000 image took 2.3 GB with the demo model).
"""

import collections
import os
import struct
import sys

import tensorflow as tf
from absl import app, flags

from wss import visualize

FLAGS = flags.FLAGS
DEFAULT_MAX_PIXELS = 2048 * 2048


def define_flags():
    """Defines this tool's command-line flags."""
    flags.DEFINE_string("saved_model", None, "SavedModel directory from wss.export.")
    flags.DEFINE_list("input", None, "Comma-separated image files (JPEG or PNG).")
    flags.DEFINE_string("output_dir", None, "Where to write masks and overlays.")
    flags.DEFINE_enum("palette", "pascal", ["pascal", "cityscapes"], "Colour palette.")
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS,
                         "Refuse images with more pixels (height x width) than this.",
                         lower_bound=1)
    flags.mark_flags_as_required(["saved_model", "input", "output_dir"])


def output_names(paths):
    """Unique output stems for input paths, in order (see the module docstring).

    A stem is unique when neither its mask `STEM.png` nor its overlay `STEM_overlay.png`
    collides with another input's mask or overlay.
    """
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = collections.Counter(stems)
    used, names = set(), []
    for path, stem in zip(paths, stems):
        base = stem
        if counts[stem] > 1:
            extension = os.path.splitext(path)[1].lstrip(".").lower()
            base = f"{stem}_{extension}" if extension else stem
        name, number = base, 0
        while f"{name}.png" in used or f"{name}_overlay.png" in used:
            number += 1
            name = f"{base}_{number}"
        used.update((f"{name}.png", f"{name}_overlay.png"))
        names.append(name)
    return names


def image_size(data):
    """(height, width) from a JPEG or PNG header without decoding, or None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data[:3] == b"\xff\xd8\xff":
        try:
            shape = tf.io.extract_jpeg_shape(data)
        except tf.errors.InvalidArgumentError:
            return None
        return int(shape[0]), int(shape[1])
    return None


def _plan(paths, output_dir):
    """(input, mask path, overlay path) per input; refuses to overwrite an input."""
    inputs = {os.path.realpath(p): p for p in paths}
    plan = []
    for path, name in zip(paths, output_names(paths)):
        mask_path = os.path.join(output_dir, name + ".png")
        overlay_path = os.path.join(output_dir, name + "_overlay.png")
        for out in (mask_path, overlay_path):
            if os.path.realpath(out) in inputs:
                raise ValueError(
                    f"--output_dir={output_dir}: writing {out} would overwrite the input "
                    f"{inputs[os.path.realpath(out)]}; choose another --output_dir")
        plan.append((path, mask_path, overlay_path))
    return plan


def predict_files(saved_model_dir, paths, output_dir, palette="pascal",
                  max_pixels=DEFAULT_MAX_PIXELS):
    """Runs the SavedModel on image files and writes masks and overlays.

    Args:
      saved_model_dir: a SavedModel written by `wss.export`.
      paths: image file paths.
      output_dir: output directory (created).
      palette: palette name.
      max_pixels: refuse images with more pixels than this.

    Returns:
      list of (mask path, overlay path).

    Raises:
      FileNotFoundError: naming a missing input file.
      ValueError: naming a file that is not a decodable image, an image over `max_pixels`,
        or an output that would overwrite an input.
    """
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"--input: {path} does not exist")
    plan = _plan(paths, output_dir)
    for path in paths:  # Before writing anything: sizes from the file headers.
        size = image_size(tf.io.read_file(path).numpy())
        if size is not None and size[0] * size[1] > max_pixels:
            raise ValueError(f"--input: {path} is {size[0]} x {size[1]} = {size[0] * size[1]} "
                             f"pixels, more than --max_pixels={max_pixels}; downscale it or "
                             "raise --max_pixels")
    serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    colours = visualize.get_palette(palette)
    tf.io.gfile.makedirs(output_dir)
    written = []
    for path, mask_path, overlay_path in plan:
        try:
            image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                       expand_animations=False)
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(f"--input: cannot decode {path} as an image: {e.message}") from None
        if int(image.shape[0]) * int(image.shape[1]) > max_pixels:  # Not JPEG nor PNG.
            raise ValueError(f"--input: {path} is {image.shape[0]} x {image.shape[1]} pixels, "
                             f"more than --max_pixels={max_pixels}")
        class_map = serve(images=image[tf.newaxis])["class_map"][0]
        with tf.io.gfile.GFile(mask_path, "wb") as f:
            f.write(visualize.encode_palette_png(class_map.numpy(), colours))
        overlay = visualize.overlay(image, class_map, colours)
        tf.io.write_file(overlay_path, tf.io.encode_png(overlay))
        written.append((mask_path, overlay_path))
    return written


def main(argv):
    del argv
    for mask_path, overlay_path in predict_files(FLAGS.saved_model, FLAGS.input,
                                                 FLAGS.output_dir, FLAGS.palette,
                                                 FLAGS.max_pixels):
        print(f"wrote {mask_path} and {overlay_path}")


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=sys.argv)
