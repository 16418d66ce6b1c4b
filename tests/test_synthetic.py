"""The built-in synthetic dataset: determinism, splits and content."""

import colorsys
import hashlib
import json
import os

import numpy as np
import pytest

from wss.data import records, splits, synthetic


def _digest(directory):
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            digest.update(name.encode() + f.read())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = dict(num_train=64, num_val=4, height=32, width=32)
    synthetic.generate(str(tmp_path / "a"), seed=1, **kwargs)
    synthetic.generate(str(tmp_path / "b"), seed=1, **kwargs)
    synthetic.generate(str(tmp_path / "c"), seed=2, **kwargs)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_splits_cover_every_class_and_partition_train(tmp_path):
    directory = str(tmp_path / "d")
    metadata = synthetic.generate(directory, seed=0, num_train=128, num_val=8, height=48,
                                  width=48)
    with open(os.path.join(directory, "metadata.json")) as f:
        assert json.load(f) == metadata
    train_ids = set(splits.read_split_file(os.path.join(directory, "train.txt")))
    assert len(train_ids) == 128
    examples = {e["id"]: e for e in (
        {"id": records.image_id(x["filename"]), "label": x["label"]}
        for x in records.read_examples(os.path.join(directory, "train-*.tfrecord"),
                                       synthetic.NUM_CLASSES))}
    for fraction in synthetic.LABELLED_FRACTIONS:
        labelled = splits.read_split_file(os.path.join(directory, f"labelled_1_{fraction}.txt"))
        rest = splits.read_split_file(os.path.join(directory, f"unlabelled_1_{fraction}.txt"))
        assert len(labelled) == -(-128 // fraction)
        assert set(labelled) | set(rest) == train_ids and not set(labelled) & set(rest)
        present = set()
        for image_id in labelled:
            present |= set(np.unique(np.asarray(examples[image_id]["label"])).tolist())
        assert present == set(range(synthetic.NUM_CLASSES))


def test_colour_narrows_a_class_to_its_shape_but_not_its_texture():
    # Each shape has a hue family shared by its two texture classes: the mean colours of
    # "disk_stripes" and "disk_checker" are indistinguishable (within-class spread dwarfs the
    # difference of the means), while different shapes differ in hue. Every class appears.
    # 200 images: with 60, sampling noise alone put the gap/spread ratio anywhere in 0.2-0.7.
    seen, colours = set(), {}
    for index in range(200):
        image, mask = synthetic.render_example(np.random.default_rng([5, index]), 64, 64)
        assert image.dtype == np.uint8 and mask.shape == (64, 64)
        for class_id in np.unique(mask):
            seen.add(int(class_id))
            if class_id:
                colours.setdefault(int(class_id), []).append(
                    image[mask == class_id].astype(np.float64).mean(axis=0))
    assert seen == set(range(synthetic.NUM_CLASSES))
    num_textures = len(synthetic.TEXTURES)
    for shape_index, shape in enumerate(synthetic.SHAPES):
        stripes, checker = (np.stack(colours[1 + shape_index * num_textures + t])
                            for t in range(num_textures))
        gap = np.linalg.norm(stripes.mean(0) - checker.mean(0))
        spread = np.sqrt(np.concatenate([stripes, checker]).var(0).sum())
        assert gap < 0.5 * spread, (shape, gap, spread)
    hue_of = {c: np.mean([colorsys.rgb_to_hsv(*(m / 255))[0] for m in v])
              for c, v in colours.items()}
    # Square (yellow, hue ~0.2) against ring (blue, hue ~0.6); the disk's red wraps around 0.
    assert abs(hue_of[1 + 1 * num_textures] - hue_of[1 + 3 * num_textures]) > 0.25


@pytest.mark.parametrize("name", sorted(synthetic.VARIANTS))
def test_every_variant_draws_all_its_classes_at_its_size(name):
    spec = synthetic.get_variant(name)
    seen = set()
    for index in range(80):
        image, mask = spec.render(np.random.default_rng([3, index]), spec.height, spec.width)
        assert image.shape == (spec.height, spec.width, 3) and image.dtype == np.uint8
        assert mask.shape == (spec.height, spec.width) and mask.max() < spec.num_classes
        seen |= set(np.unique(mask).tolist())
    assert seen == set(range(spec.num_classes)), name


def test_held_out_variant_writes_a_dataset_in_the_project_schema(tmp_path):
    metadata = synthetic.generate(str(tmp_path / "h"), seed=7, num_train=64, num_val=4,
                                  height=40, width=40, variant="held_out")
    assert metadata["variant"] == "held_out" and metadata["num_classes"] == 9
    assert metadata["class_names"][1:3] == ["disk_grid", "disk_checker"]
    examples = list(records.read_examples(str(tmp_path / "h" / "val-*.tfrecord"), 9))
    assert len(examples) == 4 and np.asarray(examples[0]["label"]).shape == (40, 40)
