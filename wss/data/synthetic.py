"""The built-in synthetic segmentation dataset ("shapes"), generated on first use.

Procedural RGB images of textured shapes on cluttered, textured backgrounds. The ten
foreground classes are the products of five shapes (disk, square, triangle, ring, cross) and
two axis-aligned textures (stripes, horizontal or vertical; checker). Each shape has a hue
family (its two textured colours share a hue within +-0.04, with random saturation and
brightness), and both textures of a shape use the same family, so colour narrows a pixel down
to two classes but never identifies one: the texture (and the outline) must be recognised.
Colour carries this much information on purpose: with colours fully random per object, a
narrow DeepLab trained from scratch for a few thousand steps on two CPU cores does not get past
predicting the background (measured; see the README), so the demo could not show anything;
with randomly oriented textures (version 3) it learned colour but not texture within the
demo's steps, so every model scored alike. Objects vary in scale, overlap (later objects
occlude earlier ones, and the mask follows) and are cut by the image border. The background is
smooth coloured noise with clutter that belongs to the background class: straight lines and an
irregular dotted blob.

Generation is deterministic: image `i` of a split is drawn from `numpy.random.default_rng`
seeded by `(seed, split, i)`, and images are PNG-encoded, so the same seed gives the same
bytes. The dataset is written in the project's TFRecord schema (`wss.data.records`) together
with split files (one image id per line) for the labelled subsets 1/2, 1/4, 1/8 and 1/16 of the
train set (each containing every class) and their complements (the unlabelled or
image-labelled stream).

Run `python -m wss.data.synthetic --output_dir DIR` to write it somewhere explicit; training
configs call `ensure_synthetic_dataset()` which generates it once into a cache directory
(`$WSS_CACHE_DIR/` or `~/.cache/wss/`).
"""

import colorsys
import json
import os
import shutil
import tempfile

import numpy as np

SHAPES = ("disk", "square", "triangle", "ring", "cross")
TEXTURES = ("stripes", "checker")
CLASS_NAMES = ("background",) + tuple(f"{s}_{t}" for s in SHAPES for t in TEXTURES)
NUM_CLASSES = len(CLASS_NAMES)  # 11: background + 10 foreground classes.
LABELLED_FRACTIONS = (2, 4, 8, 16)
# Bump when the generator changes so that cached copies are regenerated. (Version 2 was an
# experiment that never shipped; it is skipped so that no stale cache can match.)
GENERATOR_VERSION = 4
# Texture scales in pixels (at the default 96 x 96), coarse enough to survive the 0.5x scale
# augmentation.
STRIPE_PERIOD = (6.0, 10.0)
CHECKER_SIZE = (5.0, 8.0)
# Object radius as a fraction of the image's shorter side.
OBJECT_RADIUS = (0.15, 0.35)


def _smooth_noise(rng, height, width, cells, channels):
    """Bilinearly upsampled uniform noise: a smooth random field in [0, 1]."""
    grid = rng.random((cells + 1, cells + 1, channels))
    ys = np.linspace(0, cells, height)
    xs = np.linspace(0, cells, width)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _shape_colour_pair(rng, shape):
    """The two RGB colours (float, 0..255) of an object: its shape's hue, light and dark."""
    hue = (SHAPES.index(shape) / len(SHAPES) + rng.uniform(-0.04, 0.04)) % 1.0
    saturation = rng.uniform(0.6, 1.0)
    light = colorsys.hsv_to_rgb(hue, saturation, rng.uniform(0.85, 1.0))
    dark = colorsys.hsv_to_rgb(hue, saturation, rng.uniform(0.25, 0.45))
    return np.array(light) * 255, np.array(dark) * 255


def _random_colour_pair(rng):
    """Two RGB colours (float, 0..255) with a clear luminance difference (clutter)."""
    while True:
        a, b = rng.uniform(0, 255, size=(2, 3))
        if abs(a.mean() - b.mean()) > 60 or np.abs(a - b).max() > 120:
            return a, b


def _texture(rng, name, yy, xx):
    """A binary texture pattern over pixel coordinates.

    Args:
      rng: numpy Generator.
      name: 'stripes', 'checker' or 'dots' (dots are background clutter only).
      yy: float array of row coordinates.
      xx: float array of column coordinates, same shape.

    Returns:
      A bool array of the coordinates' shape.
    """
    # Object textures are axis-aligned (stripes horizontal or vertical): with random
    # orientations the demo model did not learn texture in its step budget (measured; v3).
    angle = rng.uniform(0, np.pi) if name == "dots" else rng.integers(0, 2) * (np.pi / 2)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if name == "stripes":
        period = rng.uniform(*STRIPE_PERIOD)
        return np.mod(u, period) < period / 2
    if name == "checker":
        size = rng.uniform(*CHECKER_SIZE)
        return (np.floor(u / size) + np.floor(v / size)) % 2 == 0
    if name == "dots":
        size = rng.uniform(4.0, 7.0)
        du = np.mod(u, size) - size / 2
        dv = np.mod(v, size) - size / 2
        return du * du + dv * dv < (size / 3.2) ** 2
    raise ValueError(f"unknown texture {name!r}")


def _shape_mask(shape, yy, xx, cy, cx, radius, angle):
    """Boolean mask of one shape centred at (cy, cx) with the given size and rotation."""
    dy, dx = yy - cy, xx - cx
    ry = dx * np.sin(angle) + dy * np.cos(angle)
    rx = dx * np.cos(angle) - dy * np.sin(angle)
    dist = np.sqrt(dx * dx + dy * dy)
    if shape == "disk":
        return dist <= radius
    if shape == "ring":
        return (dist <= radius) & (dist >= 0.55 * radius)
    if shape == "square":
        half = radius * 0.85
        return (np.abs(rx) <= half) & (np.abs(ry) <= half)
    if shape == "cross":
        arm = radius * 0.33
        return ((np.abs(rx) <= radius) & (np.abs(ry) <= arm)) | (
            (np.abs(ry) <= radius) & (np.abs(rx) <= arm)
        )
    if shape == "triangle":
        # Equilateral triangle: inside all three half-planes at distance radius/2 from centre.
        inside = np.ones_like(dist, dtype=bool)
        for k in range(3):
            theta = 2 * np.pi * k / 3
            inside &= rx * np.cos(theta) + ry * np.sin(theta) <= radius * 0.5
        return inside
    raise ValueError(f"unknown shape {shape!r}")


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
    # Background: two smooth colour fields mixed by a smooth noise field.
    base = _smooth_noise(rng, height, width, int(rng.integers(2, 5)), 3) * 255
    other = _smooth_noise(rng, height, width, int(rng.integers(3, 8)), 3) * 255
    mix = _smooth_noise(rng, height, width, int(rng.integers(2, 6)), 1)
    image = base * mix + other * (1 - mix)
    image += rng.normal(0, 8, size=image.shape)
    # Clutter belonging to the background: one dotted blob, up to two lines.
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    blob = _smooth_noise(rng, height, width, 6, 1)[..., 0]
    radius = rng.uniform(6, 16)
    region = np.hypot(yy - cy, xx - cx) < radius * (0.6 + 0.8 * blob)
    a, b = _random_colour_pair(rng)
    pattern = _texture(rng, "dots", yy, xx)
    image[region & pattern] = a
    image[region & ~pattern] = b
    for _ in range(int(rng.integers(0, 3))):
        y0, x0, y1, x1 = rng.uniform(0, max(height, width), size=4)
        length = max(np.hypot(y1 - y0, x1 - x0), 1e-6)
        dist = np.abs((x1 - x0) * (y0 - yy) - (x0 - xx) * (y1 - y0)) / length
        image[dist < rng.uniform(0.6, 1.8)] = rng.uniform(0, 255, size=3)

    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        class_id = int(rng.integers(1, NUM_CLASSES))
        shape = SHAPES[(class_id - 1) // len(TEXTURES)]
        texture = TEXTURES[(class_id - 1) % len(TEXTURES)]
        radius = rng.uniform(*OBJECT_RADIUS) * min(height, width)
        cy = rng.uniform(-0.1, 1.1) * height
        cx = rng.uniform(-0.1, 1.1) * width
        region = _shape_mask(shape, yy, xx, cy, cx, radius, rng.uniform(0, 2 * np.pi))
        if region.sum() < 12:
            continue
        a, b = _shape_colour_pair(rng, shape)
        pattern = _texture(rng, texture, yy, xx)
        image[region & pattern] = a
        image[region & ~pattern] = b
        mask[region] = class_id
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def _example_rng(seed, split, index):
    split_code = {"train": 0, "val": 1}[split]
    return np.random.default_rng([seed, split_code, index])


def generate(output_dir, seed=0, num_train=512, num_val=128, height=96, width=96,
             num_shards=2):
    """Writes the synthetic dataset (records, split files, metadata) to `output_dir`.

    Args:
      output_dir: directory to create; it must not exist or be empty.
      seed: the seed that determines every byte.
      num_train: number of train images (labelled subsets and unlabelled stream).
      num_val: number of validation images.
      height: image height.
      width: image width.
      num_shards: TFRecord shards per split.

    Returns:
      The metadata dict written to `output_dir/metadata.json`.

    Raises:
      FileExistsError: if `output_dir` exists and is not empty.
      ValueError: if `num_train` is too small to hold every class in the 1/16 subset.
    """
    from wss.data import records, splits  # TensorFlow-importing modules, imported lazily.

    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"--output_dir {output_dir} exists and is not empty")
    smallest = num_train // max(LABELLED_FRACTIONS)
    if smallest < 4:
        raise ValueError(f"num_train={num_train} leaves {smallest} images in the 1/16 split")
    os.makedirs(output_dir, exist_ok=True)

    class_sets = {}
    for split, count in (("train", num_train), ("val", num_val)):
        examples = []
        for index in range(count):
            image, mask = render_example(_example_rng(seed, split, index), height, width)
            image_id = f"{split}_{index:05d}"
            if split == "train":
                class_sets[image_id] = sorted(int(c) for c in np.unique(mask) if c != 0)
            examples.append(records.encode_example(
                image, filename=image_id, mask=mask, image_format="png",
                num_classes=NUM_CLASSES))
        records.write_records(examples, os.path.join(output_dir, split), num_shards=num_shards)
        _write_ids(os.path.join(output_dir, f"{split}.txt"),
                   [f"{split}_{i:05d}" for i in range(count)])

    train_ids = sorted(class_sets)
    split_files = {}
    for fraction in LABELLED_FRACTIONS:
        labelled = splits.sample_labelled_split(
            train_ids, class_sets, 1.0 / fraction, seed=seed,
            required_classes=range(1, NUM_CLASSES))
        rest = sorted(set(train_ids) - set(labelled))
        _write_ids(os.path.join(output_dir, f"labelled_1_{fraction}.txt"), labelled)
        _write_ids(os.path.join(output_dir, f"unlabelled_1_{fraction}.txt"), rest)
        split_files[f"1/{fraction}"] = {"labelled": f"labelled_1_{fraction}.txt",
                                        "unlabelled": f"unlabelled_1_{fraction}.txt",
                                        "num_labelled": len(labelled)}
    metadata = {
        "name": "synthetic_shapes",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "ignore_label": 255,
        "image_size": [height, width],
        "num_train": num_train,
        "num_val": num_val,
        "train_pattern": "train-*.tfrecord",
        "val_pattern": "val-*.tfrecord",
        "splits": split_files,
    }
    with open(os.path.join(output_dir, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
    return metadata


def _write_ids(path, ids):
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))


def default_cache_dir():
    """The cache root: `$WSS_CACHE_DIR` if set, else `~/.cache/wss`."""
    return os.environ.get("WSS_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "wss")


def ensure_synthetic_dataset(cache_dir=None, seed=0, num_train=512, num_val=128):
    """Returns the directory of the synthetic dataset, generating it on first use.

    Generation writes to a temporary sibling directory that is renamed into place, so an
    interrupted run never leaves a half-written dataset behind.

    Args:
      cache_dir: the cache root (default: `default_cache_dir()`).
      seed: generator seed.
      num_train: number of train images.
      num_val: number of validation images.

    Returns:
      The dataset directory (containing metadata.json, records and split files).
    """
    cache_dir = cache_dir or default_cache_dir()
    name = f"synthetic_v{GENERATOR_VERSION}_seed{seed}_train{num_train}_val{num_val}"
    final_dir = os.path.join(cache_dir, name)
    if os.path.isfile(os.path.join(final_dir, "metadata.json")):
        return final_dir
    os.makedirs(cache_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=name + ".tmp", dir=cache_dir)
    try:
        generate(tmp_dir, seed=seed, num_train=num_train, num_val=num_val)
        try:
            os.rename(tmp_dir, final_dir)
        except OSError:
            # Another process finished first; its copy is identical.
            if not os.path.isfile(os.path.join(final_dir, "metadata.json")):
                raise
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def main(argv=None):
    """Command line: `python -m wss.data.synthetic --output_dir DIR [--seed N]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train", type=int, default=512)
    parser.add_argument("--num_val", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=96)
    args = parser.parse_args(argv)
    metadata = generate(args.output_dir, seed=args.seed, num_train=args.num_train,
                        num_val=args.num_val, height=args.height, width=args.width)
    print(f"wrote {metadata['num_train']} train and {metadata['num_val']} val images "
          f"({metadata['num_classes']} classes) to {args.output_dir}")
    for fraction, info in metadata["splits"].items():
        print(f"  labelled {fraction}: {info['num_labelled']} images ({info['labelled']})")


if __name__ == "__main__":
    main()
