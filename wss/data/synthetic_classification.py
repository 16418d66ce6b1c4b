"""The built-in synthetic classification set, the demo's stand-in for ImageNet pretraining.

Object-centric images of textured shapes, one category per image as in ImageNet: every
category is a (shape, texture) pair over all the shapes and textures `wss.data.drawing` can
draw (14 x 5 = 70 categories), so the categories include the classes of both synthetic
segmentation sets (`wss.data.synthetic`) and many more, as ImageNet's 1000 categories include
VOC's 20. Each image shows one large object near the centre with random colours (two per
object), size, rotation, texture orientation and texture scale, on a smooth noisy background
with clutter (up to two straight lines and an irregular blob of any texture) and, as
photographs show their subject among other things, 0-2 other objects of any category beside
it, partly in view, behind it or (three times in ten) in front of its edge. The label is the
central object's category. Version 1 drew 1-3 smaller objects per image with multi-label
targets; the demo network learned next to nothing from it within its pretraining budget.
Version 2 showed the object alone with line clutter; this version's context lifts what the
segmentation runs get from the pretraining by several points (measured: see the README,
"Pretraining").

The set is generated independently of the segmentation sets (its own seed stream and salt), so
no image is shared with them. Records use the project's schema (`wss.data.records`): an image
and `image/class/label` (category ids 1..70; id 0 is reserved, as the background class of a
segmentation set, so the record's `num_classes` is 71), no mask: the layout of ImageNet records
for `pretrain.loss = 'softmax'`. Files: `train-*.tfrecord`,
`val-*.tfrecord`, `metadata.json` (category names). Generated on first use into the cache
(`wss.cache`), like the segmentation sets; `python -m wss.data.synthetic_classification
--output_dir DIR` writes it somewhere explicit.
"""

import json
import os

import numpy as np

from wss import cache
from wss.data import drawing

VERSION = 3
CATEGORY_NAMES = tuple(f"{s}_{t}" for s in drawing.SHAPES for t in drawing.TEXTURES)
# Records' class ids are 1..len(CATEGORY_NAMES); 0 stays free as in a segmentation set.
NUM_CLASSES = len(CATEGORY_NAMES) + 1
# Salt of the per-image seeds, so that no image coincides with a segmentation set's.
_SALT = 7349


def render_example(rng, height=64, width=64):
    """Draws one classification image and its category.

    Args:
      rng: numpy Generator; the example depends on nothing else.
      height: image height in pixels.
      width: image width in pixels.

    Returns:
      (image uint8 `[H, W, 3]`, category id in 1..70).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = drawing.textured_background(rng, height, width)
    side = min(height, width)
    drawing.draw_clutter(rng, image, yy, xx, blob_texture=str(rng.choice(drawing.TEXTURES)),
                         blob_scale=side / 64.0)
    category = int(rng.integers(1, NUM_CLASSES))
    radius = rng.uniform(0.33, 0.48) * side
    cy = rng.uniform(0.4, 0.6) * height
    cx = rng.uniform(0.4, 0.6) * width
    # Context: 0-2 other objects of any category beside the central one, partly in view, each
    # drawn behind it or (three times in ten) in front of its edge.
    behind, in_front = [], []
    for _ in range(int(rng.integers(0, 3))):
        other_radius = rng.uniform(0.2, 0.4) * side
        angle = rng.uniform(0, 2 * np.pi)
        distance = radius + other_radius * rng.uniform(0.3, 1.0)
        other = (int(rng.integers(1, NUM_CLASSES)), other_radius,
                 cy + distance * np.sin(angle), cx + distance * np.cos(angle))
        (in_front if rng.uniform() < 0.3 else behind).append(other)
    for object_category, object_radius, oy, ox in behind + [(category, radius, cy, cx)] + in_front:
        shape = drawing.SHAPES[(object_category - 1) // len(drawing.TEXTURES)]
        texture = drawing.TEXTURES[(object_category - 1) % len(drawing.TEXTURES)]
        region = drawing.shape_mask(shape, yy, xx, oy, ox, object_radius,
                                    rng.uniform(0, 2 * np.pi))
        a, b = drawing.random_colour_pair(rng)
        pattern = drawing.texture(rng, texture, yy, xx, scale=rng.uniform(0.7, 1.4))
        image[region & pattern] = a
        image[region & ~pattern] = b
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), category


def generate(output_dir, seed=0, num_train=8000, num_val=500, height=64, width=64,
             num_shards=4):
    """Writes the classification set (records and metadata) to `output_dir`.

    Args:
      output_dir: directory to create; it must not exist or be empty.
      seed: the seed that determines every byte.
      num_train: number of train images.
      num_val: number of validation images.
      height: image height.
      width: image width.
      num_shards: TFRecord shards of the train split (val has one).

    Returns:
      The metadata dict written to `output_dir/metadata.json`.

    Raises:
      FileExistsError: if `output_dir` exists and is not empty.
    """
    from wss.data import records  # TensorFlow-importing module, imported lazily.

    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"--output_dir {output_dir} exists and is not empty")
    os.makedirs(output_dir, exist_ok=True)
    counts = np.zeros(NUM_CLASSES, np.int64)
    for split_code, (split, count, shards) in enumerate(
            (("train", num_train, num_shards), ("val", num_val, 1))):
        examples = []
        for index in range(count):
            rng = np.random.default_rng([seed, _SALT, split_code, index])
            image, category = render_example(rng, height, width)
            if split == "train":
                counts[category] += 1
            examples.append(records.encode_example(
                image, filename=f"{split}_{index:06d}", class_labels=[category],
                image_format="png", num_classes=NUM_CLASSES))
        records.write_records(examples, os.path.join(output_dir, split), num_shards=shards)
    metadata = {
        "name": "synthetic_classification",
        "generator_version": VERSION,
        "seed": seed,
        "num_classes": NUM_CLASSES,
        "category_names": list(CATEGORY_NAMES),
        "image_size": [height, width],
        "num_train": num_train,
        "num_val": num_val,
        "train_pattern": "train-*.tfrecord",
        "val_pattern": "val-*.tfrecord",
        "train_images_per_category": counts[1:].tolist(),
    }
    with open(os.path.join(output_dir, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
    return metadata


def ensure_classification_dataset(cache_dir=None, seed=0, num_train=8000, num_val=500):
    """Returns the directory of the classification set, generating it on first use.

    Args:
      cache_dir: the cache root (default: `wss.cache.default_cache_dir()`).
      seed: generator seed.
      num_train: number of train images.
      num_val: number of validation images.

    Returns:
      The dataset directory.
    """
    name = f"synthetic_classification_v{VERSION}_seed{seed}_train{num_train}_val{num_val}"
    return cache.ensure_cached(
        name, lambda directory: generate(directory, seed=seed, num_train=num_train,
                                         num_val=num_val),
        marker="metadata.json", cache_dir=cache_dir)


def main(argv=None):
    """Command line: `python -m wss.data.synthetic_classification --output_dir DIR`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train", type=int, default=8000)
    parser.add_argument("--num_val", type=int, default=500)
    args = parser.parse_args(argv)
    metadata = generate(args.output_dir, seed=args.seed, num_train=args.num_train,
                        num_val=args.num_val)
    print(f"wrote {metadata['num_train']} train and {metadata['num_val']} val images "
          f"({len(CATEGORY_NAMES)} categories) to {args.output_dir}")


if __name__ == "__main__":
    main()
