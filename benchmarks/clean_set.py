"""Probe data: a random-colour segmentation set without background clutter.

The built-in random-colour sets (`random_colours`, `held_out`) draw a textured blob and lines
in the background and let objects fall partly outside the image. A small plain network learns
them far less well (`benchmarks/reference_cnn.py`: 30-40% mIoU with all labels) than the set of
this kind that issue 12 describes (71.2%). This set leaves the clutter out and keeps objects
mostly inside the image, to come closer to that one: 1-3 objects per image, each a shape from
`--shapes` with a texture from `--textures` at any orientation, both colours random per object,
on `wss.data.drawing`'s smooth noisy background; 64 x 64 images, 1600 train and 300 val, in the
project's schema with the same split files as the built-in sets (`wss.data.synthetic`). It is a
probe, not a built-in set: nothing in the demo's recipe was chosen on it.

Run: `python benchmarks/clean_set.py --output_dir DIR [--seed 13]` (the defaults write the set
measured in `benchmarks/RESULTS.md`, "eleventh session"), then train on it with the bindings a
user of another set gives, e.g. `python -m wss.train --gin_file=demo_supervised.gin
--gin_bindings="DATA_DIR = 'DIR'" --gin_bindings="NUM_CLASSES = 9" ...`.
"""

import argparse
import functools

from wss.data import drawing, synthetic


def render_clean_scene(rng, height, width, shapes, textures, num_objects=(1, 3),
                       radius_range=(0.2, 0.35), centre_range=(0.15, 0.85)):
    """Draws textured objects with random colours on a smooth background, without clutter.

    `wss.data.synthetic.render_random_colour_scene` (the built-in random-colour sets' renderer)
    without its blob and lines.

    Args:
      rng: numpy Generator; the example depends on nothing else.
      height: image height in pixels.
      width: image width in pixels.
      shapes: shape names (`wss.data.drawing.SHAPES`).
      textures: texture names (`wss.data.drawing.TEXTURES`).
      num_objects: `(fewest, most)` objects.
      radius_range: object radius range as fractions of the shorter side.
      centre_range: object centre range as fractions of the height and the width.

    Returns:
      (image uint8 `[H, W, 3]`, mask uint8 `[H, W]`); class `k >= 1` is shape
      `shapes[(k - 1) // len(textures)]` with texture `textures[(k - 1) % len(textures)]`.
    """
    return synthetic.render_random_colour_scene(
        rng, height, width, shapes, textures, num_objects=num_objects,
        radius_range=radius_range, centre_range=centre_range, blob_texture=None)


def clean_variant(shapes=("disk", "square", "triangle", "star"), textures=("stripes", "checker"),
                  num_train=1600, num_val=300, size=64, num_objects=(1, 3),
                  radius_range=(0.2, 0.35)):
    """The set as a `wss.data.synthetic.Variant` (named `clean`).

    `num_objects` and `radius_range` are `render_clean_scene`'s (the defaults write the set of
    the eleventh session; `--num_objects 1,2 --radius_range 0.25,0.4` the thirteenth
    session's `large`).

    Raises:
      ValueError: naming a shape or texture that `wss.data.drawing` cannot draw.
    """
    for kind, names, known in (("--shapes", shapes, drawing.SHAPES),
                               ("--textures", textures, drawing.TEXTURES)):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"{kind}: cannot draw {unknown}; known: {list(known)}")
    class_names = ("background",) + tuple(f"{s}_{t}" for s in shapes for t in textures)
    render = functools.partial(render_clean_scene, shapes=tuple(shapes),
                               textures=tuple(textures), num_objects=tuple(num_objects),
                               radius_range=tuple(radius_range))
    return synthetic.Variant("clean", 1, class_names, render, size, size, num_train, num_val)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--shapes", default="disk,square,triangle,star")
    parser.add_argument("--textures", default="stripes,checker")
    parser.add_argument("--num_train", type=int, default=1600)
    parser.add_argument("--num_val", type=int, default=300)
    parser.add_argument("--num_objects", default="1,3", help="fewest,most objects per image")
    parser.add_argument("--radius_range", default="0.2,0.35",
                        help="object radius range, fractions of the image side")
    args = parser.parse_args(argv)
    variant = clean_variant(args.shapes.split(","), args.textures.split(","), args.num_train,
                            args.num_val, num_objects=[int(n) for n in args.num_objects.split(",")],
                            radius_range=[float(r) for r in args.radius_range.split(",")])
    metadata = synthetic.generate(args.output_dir, seed=args.seed, variant=variant)
    print(f"Wrote {args.output_dir}: {metadata['num_train']} train / {metadata['num_val']} val "
          f"images, classes {', '.join(metadata['class_names'])}")
    return metadata


if __name__ == "__main__":
    main()
