"""The built-in synthetic segmentation datasets, generated on first use.

Procedural RGB images of textured shapes on cluttered, textured backgrounds, drawn with
`wss.data.drawing`. Three variants:

* `shapes` (the demo's set, generator version 4): ten foreground classes, the products of five
  shapes (disk, square, triangle, ring, cross) and two axis-aligned textures (stripes,
  horizontal or vertical; checker), 96 x 96 images, 512 train and 128 val. Each shape has a
  hue family (its two textured colours share a hue within +-0.04, with random saturation and
  brightness) shared by both of its texture classes, so colour narrows a pixel down to two
  classes but never identifies one: the texture (and the outline) must be recognised.
  Background clutter: straight lines and an irregular dotted blob.
* `random_colours` (the second set, version 1): eight foreground classes, four other shapes
  (hexagon, star, ellipse, crescent) times two textures at any orientation (stripes, dots),
  with both colours of every object drawn at random, so colour tells nothing; 64 x 64 images,
  1600 train and 300 val. Background clutter: lines and a checkered blob (a texture that is no
  class here).
* `held_out` (version 1): a set for checking that a recipe holds on data it was not tuned to,
  written after the demo's recipe was fixed and never used to choose it. Eight foreground
  classes, four shapes (disk, square, triangle, cross) times two textures at any orientation
  (grid, checker), colours random per object as in `random_colours`; 80 x 80 images (a size
  neither of the others has), 1 to 4 objects of radius 15-33% of the side, a dotted blob as
  clutter; 1200 train and 300 val. `python -m wss.data.synthetic --variant held_out --seed 7
  --output_dir DIR` writes the copy measured in the README.

In all three, objects vary in scale, overlap (later objects occlude earlier ones, and the mask
follows) and are cut by the image border.

Generation is deterministic: image `i` of a split is drawn from `numpy.random.default_rng`
seeded by `(seed, split, i)`, and images are PNG-encoded, so the same seed gives the same
bytes. A dataset is written in the project's TFRecord schema (`wss.data.records`) together
with split files (one image id per line) for the labelled subsets 1/2, 1/4, 1/8 and 1/16 of the
train set (each containing every class) and their complements (the unlabelled or
image-labelled stream).

Run `python -m wss.data.synthetic --output_dir DIR [--variant random_colours]` to write one
somewhere explicit; training configs call `ensure_synthetic_dataset()` (gin:
`@synthetic_dataset_dir()`), which generates it once into a cache directory
(`$WSS_CACHE_DIR/` or `~/.cache/wss/`).
"""

import colorsys
import dataclasses
import functools
import json
import os

import numpy as np

from wss import cache
from wss.data import drawing

SHAPES = ("disk", "square", "triangle", "ring", "cross")
TEXTURES = ("stripes", "checker")
CLASS_NAMES = ("background",) + tuple(f"{s}_{t}" for s in SHAPES for t in TEXTURES)
NUM_CLASSES = len(CLASS_NAMES)  # 11: background + 10 foreground classes.
LABELLED_FRACTIONS = (2, 4, 8, 16)
# Bump when the generator changes so that cached copies are regenerated. (Version 2 was an
# experiment that never shipped; it is skipped so that no stale cache can match.)
GENERATOR_VERSION = 4
# Object radius as a fraction of the image's shorter side.
OBJECT_RADIUS = (0.15, 0.35)


def _shape_colour_pair(rng, shape):
    """The two RGB colours (float, 0..255) of an object: its shape's hue, light and dark."""
    hue = (SHAPES.index(shape) / len(SHAPES) + rng.uniform(-0.04, 0.04)) % 1.0
    saturation = rng.uniform(0.6, 1.0)
    light = colorsys.hsv_to_rgb(hue, saturation, rng.uniform(0.85, 1.0))
    dark = colorsys.hsv_to_rgb(hue, saturation, rng.uniform(0.25, 0.45))
    return np.array(light) * 255, np.array(dark) * 255


def render_example(rng, height=96, width=96, min_objects=1, max_objects=4):
    """Draws one synthetic image and its segmentation mask.

    Args:
      rng: numpy Generator; the example depends on nothing else.
      height: image height in pixels.
      width: image width in pixels.
      min_objects: fewest foreground objects.
      max_objects: most foreground objects.

    Returns:
      (image uint8 [H, W, 3], mask uint8 [H, W] with values in 0..NUM_CLASSES-1).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = drawing.textured_background(rng, height, width)
    # Clutter belonging to the background: one dotted blob, up to two lines.
    drawing.draw_clutter(rng, image, yy, xx, blob_texture="dots")
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        class_id = int(rng.integers(1, NUM_CLASSES))
        shape = SHAPES[(class_id - 1) // len(TEXTURES)]
        texture = TEXTURES[(class_id - 1) % len(TEXTURES)]
        radius = rng.uniform(*OBJECT_RADIUS) * min(height, width)
        cy = rng.uniform(-0.1, 1.1) * height
        cx = rng.uniform(-0.1, 1.1) * width
        region = drawing.shape_mask(shape, yy, xx, cy, cx, radius, rng.uniform(0, 2 * np.pi))
        if region.sum() < 12:
            continue
        a, b = _shape_colour_pair(rng, shape)
        pattern = drawing.texture(rng, texture, yy, xx, axis_aligned=True)
        image[region & pattern] = a
        image[region & ~pattern] = b
        mask[region] = class_id
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


RANDOM_COLOUR_SHAPES = ("hexagon", "star", "ellipse", "crescent")
RANDOM_COLOUR_TEXTURES = ("stripes", "dots")
RANDOM_COLOUR_CLASS_NAMES = ("background",) + tuple(
    f"{s}_{t}" for s in RANDOM_COLOUR_SHAPES for t in RANDOM_COLOUR_TEXTURES)


def render_random_colour_scene(rng, height, width, shapes, textures, num_objects,
                               radius_range, centre_range, blob_texture):
    """Draws textured objects with colours random per object on a cluttered background.

    The common renderer of `random_colours` and `held_out`: class `k >= 1` is shape
    `shapes[(k - 1) // len(textures)]` with texture `textures[(k - 1) % len(textures)]`.

    Args:
      rng: numpy Generator; the example depends on nothing else.
      height: image height in pixels.
      width: image width in pixels.
      shapes: shape names (`wss.data.drawing.SHAPES`).
      textures: texture names (`wss.data.drawing.TEXTURES`), drawn at any orientation.
      num_objects: `(fewest, most)` foreground objects.
      radius_range: object radius range as fractions of the shorter side.
      centre_range: object centre range as fractions of the height and the width.
      blob_texture: texture of the background clutter's blob; None draws no clutter (no blob,
        no lines; `benchmarks/clean_set.py`).

    Returns:
      (image uint8 [H, W, 3], mask uint8 [H, W] with values in 0..len(shapes) * len(textures)).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = drawing.textured_background(rng, height, width)
    if blob_texture is not None:
        drawing.draw_clutter(rng, image, yy, xx, blob_texture=blob_texture,
                             blob_scale=min(height, width) / 64.0)
    mask = np.zeros((height, width), np.uint8)
    num_textures = len(textures)
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        class_id = int(rng.integers(1, len(shapes) * num_textures + 1))
        shape = shapes[(class_id - 1) // num_textures]
        texture = textures[(class_id - 1) % num_textures]
        radius = rng.uniform(*radius_range) * min(height, width)
        cy = rng.uniform(*centre_range) * height
        cx = rng.uniform(*centre_range) * width
        region = drawing.shape_mask(shape, yy, xx, cy, cx, radius, rng.uniform(0, 2 * np.pi))
        if region.sum() < 12:
            continue
        a, b = drawing.random_colour_pair(rng)
        pattern = drawing.texture(rng, texture, yy, xx)
        image[region & pattern] = a
        image[region & ~pattern] = b
        mask[region] = class_id
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


HELD_OUT_SHAPES = ("disk", "square", "triangle", "cross")
HELD_OUT_TEXTURES = ("grid", "checker")
HELD_OUT_CLASS_NAMES = ("background",) + tuple(
    f"{s}_{t}" for s in HELD_OUT_SHAPES for t in HELD_OUT_TEXTURES)


# The two random-colour sets differ only in these parameters of one renderer.
render_random_colour_example = functools.partial(
    render_random_colour_scene, shapes=RANDOM_COLOUR_SHAPES, textures=RANDOM_COLOUR_TEXTURES,
    num_objects=(1, 3), radius_range=(0.2, 0.4), centre_range=(-0.05, 1.05),
    blob_texture="checker")
render_held_out_example = functools.partial(
    render_random_colour_scene, shapes=HELD_OUT_SHAPES, textures=HELD_OUT_TEXTURES,
    num_objects=(1, 4), radius_range=(0.15, 0.33), centre_range=(0.0, 1.0), blob_texture="dots")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One synthetic segmentation set: its classes, renderer and default sizes.

    Attributes:
      name: the variant's name (`shapes`, `random_colours`, `held_out`).
      version: generator version, part of the cache key (bump when the renderer changes).
      class_names: class names, background first.
      render: `render(rng, height, width) -> (image, mask)`.
      height: default image height.
      width: default image width.
      num_train: default number of train images.
      num_val: default number of validation images.
    """

    name: str
    version: int
    class_names: tuple
    render: object
    height: int
    width: int
    num_train: int
    num_val: int

    @property
    def num_classes(self):
        return len(self.class_names)


VARIANTS = {
    "shapes": Variant("shapes", GENERATOR_VERSION, CLASS_NAMES, render_example, 96, 96, 512,
                      128),
    "random_colours": Variant("random_colours", 1, RANDOM_COLOUR_CLASS_NAMES,
                              render_random_colour_example, 64, 64, 1600, 300),
    "held_out": Variant("held_out", 1, HELD_OUT_CLASS_NAMES, render_held_out_example, 80, 80,
                        1200, 300),
}


def get_variant(name):
    """The `Variant` called `name`; a `Variant` itself is returned as it is.

    Args:
      name: a key of `VARIANTS`, or a `Variant` (a set defined outside this module, such as
        `benchmarks/clean_set.py`'s).

    Raises:
      ValueError: naming the unknown variant and the known ones.
    """
    if isinstance(name, Variant):
        return name
    if name not in VARIANTS:
        raise ValueError(f"Unknown synthetic dataset variant {name!r}; choose one of "
                         f"{sorted(VARIANTS)}")
    return VARIANTS[name]


def _example_rng(seed, split, index):
    split_code = {"train": 0, "val": 1}[split]
    return np.random.default_rng([seed, split_code, index])


def _write_split(output_dir, spec, seed, split, count, height, width, num_shards):
    """Renders and writes the records and id file of one split.

    Image `index` is drawn from its own generator, `_example_rng(seed, split, index)`.

    Returns:
      For the train split, image id -> sorted foreground class ids present; else empty.
    """
    from wss.data import records  # TensorFlow-importing module, imported lazily.

    class_sets = {}
    examples = []
    for index in range(count):
        image, mask = spec.render(_example_rng(seed, split, index), height, width)
        image_id = f"{split}_{index:05d}"
        if split == "train":
            class_sets[image_id] = sorted(int(c) for c in np.unique(mask) if c != 0)
        examples.append(records.encode_example(
            image, filename=image_id, mask=mask, image_format="png",
            num_classes=spec.num_classes))
    records.write_records(examples, os.path.join(output_dir, split), num_shards=num_shards)
    _write_ids(os.path.join(output_dir, f"{split}.txt"),
               [f"{split}_{i:05d}" for i in range(count)])
    return class_sets


def _write_labelled_splits(output_dir, spec, seed, class_sets):
    """Writes the labelled subsets (each holding every class) and their complements.

    Returns:
      The `splits` entry of the metadata: `1/N` -> file names and number labelled.
    """
    from wss.data import splits  # TensorFlow-importing module, imported lazily.

    train_ids = sorted(class_sets)
    split_files = {}
    for fraction in LABELLED_FRACTIONS:
        labelled = splits.sample_labelled_split(
            train_ids, class_sets, 1.0 / fraction, seed=seed,
            required_classes=range(1, spec.num_classes))
        rest = sorted(set(train_ids) - set(labelled))
        _write_ids(os.path.join(output_dir, f"labelled_1_{fraction}.txt"), labelled)
        _write_ids(os.path.join(output_dir, f"unlabelled_1_{fraction}.txt"), rest)
        split_files[f"1/{fraction}"] = {"labelled": f"labelled_1_{fraction}.txt",
                                        "unlabelled": f"unlabelled_1_{fraction}.txt",
                                        "num_labelled": len(labelled)}
    return split_files


def generate(output_dir, seed=0, num_train=None, num_val=None, height=None, width=None,
             num_shards=2, variant="shapes"):
    """Writes a synthetic dataset (records, split files, metadata) to `output_dir`.

    Args:
      output_dir: directory to create; it must not exist or be empty.
      seed: the seed that determines every byte.
      num_train: number of train images (labelled subsets and unlabelled stream); None takes
        the variant's default.
      num_val: number of validation images (None: the variant's default).
      height: image height (None: the variant's default).
      width: image width (None: the variant's default).
      num_shards: TFRecord shards per split.
      variant: `shapes`, `random_colours` or `held_out` (see the module docstring), or a
        `Variant`.

    Returns:
      The metadata dict written to `output_dir/metadata.json`.

    Raises:
      FileExistsError: if `output_dir` exists and is not empty.
      ValueError: for an unknown variant, or if `num_train` is too small to hold every class in
        the 1/16 subset.
    """
    spec = get_variant(variant)
    num_train = spec.num_train if num_train is None else num_train
    num_val = spec.num_val if num_val is None else num_val
    height = spec.height if height is None else height
    width = spec.width if width is None else width
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"--output_dir {output_dir} exists and is not empty")
    smallest = num_train // max(LABELLED_FRACTIONS)
    if smallest < 4:
        raise ValueError(f"num_train={num_train} leaves {smallest} images in the 1/16 split")
    os.makedirs(output_dir, exist_ok=True)

    class_sets = _write_split(output_dir, spec, seed, "train", num_train, height, width,
                              num_shards)
    _write_split(output_dir, spec, seed, "val", num_val, height, width, num_shards)
    metadata = {
        "name": "synthetic_shapes" if spec.name == "shapes" else f"synthetic_{spec.name}",
        "variant": spec.name,
        "generator_version": spec.version,
        "seed": seed,
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "ignore_label": 255,
        "image_size": [height, width],
        "num_train": num_train,
        "num_val": num_val,
        "train_pattern": "train-*.tfrecord",
        "val_pattern": "val-*.tfrecord",
        "splits": _write_labelled_splits(output_dir, spec, seed, class_sets),
    }
    with open(os.path.join(output_dir, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
    return metadata


def _write_ids(path, ids):
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))


def ensure_synthetic_dataset(cache_dir=None, seed=0, num_train=None, num_val=None,
                             variant="shapes"):
    """Returns the directory of a synthetic dataset, generating it on first use.

    Generation writes to a temporary sibling directory that is renamed into place, so an
    interrupted run never leaves a half-written dataset behind.

    Args:
      cache_dir: the cache root (default: `wss.cache.default_cache_dir()`).
      seed: generator seed.
      num_train: number of train images (None: the variant's default).
      num_val: number of validation images (None: the variant's default).
      variant: `shapes`, `random_colours` or `held_out`.

    Returns:
      The dataset directory (containing metadata.json, records and split files).
    """
    spec = get_variant(variant)
    num_train = spec.num_train if num_train is None else num_train
    num_val = spec.num_val if num_val is None else num_val
    prefix = "synthetic" if variant == "shapes" else f"synthetic_{variant}"
    name = f"{prefix}_v{spec.version}_seed{seed}_train{num_train}_val{num_val}"
    return cache.ensure_cached(
        name, lambda directory: generate(directory, seed=seed, num_train=num_train,
                                         num_val=num_val, variant=variant),
        marker="metadata.json", cache_dir=cache_dir)


def main(argv=None):
    """Command line: `python -m wss.data.synthetic --output_dir DIR [--variant V] [--seed N]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="directory to write")
    parser.add_argument("--variant", default="shapes", choices=sorted(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train", type=int, default=None)
    parser.add_argument("--num_val", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args(argv)
    metadata = generate(args.output_dir, seed=args.seed, num_train=args.num_train,
                        num_val=args.num_val, height=args.height, width=args.width,
                        variant=args.variant)
    print(f"wrote {metadata['num_train']} train and {metadata['num_val']} val images "
          f"({metadata['num_classes']} classes) to {args.output_dir}")
    for fraction, info in metadata["splits"].items():
        print(f"  labelled {fraction}: {info['num_labelled']} images ({info['labelled']})")


if __name__ == "__main__":
    main()
