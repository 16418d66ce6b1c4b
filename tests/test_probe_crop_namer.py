"""benchmarks/probe_crop_namer.py: the objects it cuts out of a set's masks."""

import os

import numpy as np
import pytest
from script_loading import load_script

from wss.data import records

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def probe():
    return load_script("benchmarks/probe_crop_namer.py")


def _write_set(directory):
    """Two 12 x 12 images: `a` with objects of classes 1 (two regions) and 2, `b` with 3."""
    rng = np.random.default_rng(0)
    masks = {"a": np.zeros((12, 12), np.uint8), "b": np.zeros((12, 12), np.uint8)}
    masks["a"][0:3, 0:3] = 1  # 9 pixels.
    masks["a"][8:12, 8:12] = 1  # 16 pixels, not touching the first region.
    masks["a"][0:2, 6:12] = 2  # 12 pixels.
    masks["b"][4:9, 3:7] = 3  # 20 pixels.
    masks["b"][11, 11] = records.IGNORE_LABEL
    examples = []
    for name, mask in masks.items():
        image = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
        present = sorted(int(c) for c in np.unique(mask) if 0 < c < records.IGNORE_LABEL)
        examples.append(records.encode_example(image, name, mask=mask, class_labels=present,
                                               image_format="png", num_classes=NUM_CLASSES))
    records.write_records(examples, os.path.join(directory, "train"), num_shards=1)
    with open(os.path.join(directory, "labelled.txt"), "w") as f:
        f.write("b\n")


def test_every_connected_object_is_cut_out_with_its_class_and_size(probe, tmp_path):
    _write_set(str(tmp_path))
    crops, classes, sizes = probe.object_crops(str(tmp_path), "train-*.tfrecord", None,
                                               NUM_CLASSES, (8, 8), min_pixels=1, margin=1.0)
    assert crops.shape == (4, 8, 8, 3)
    assert sorted(zip(classes.tolist(), sizes.tolist())) == [(1, 9), (1, 16), (2, 12), (3, 20)]
    # min_pixels drops the small region; the split file keeps only its images.
    _, classes, sizes = probe.object_crops(str(tmp_path), "train-*.tfrecord", None, NUM_CLASSES,
                                           (8, 8), min_pixels=10, margin=1.0)
    assert sorted(zip(classes.tolist(), sizes.tolist())) == [(1, 16), (2, 12), (3, 20)]
    _, classes, sizes = probe.object_crops(str(tmp_path), "train-*.tfrecord", "labelled.txt",
                                           NUM_CLASSES, (8, 8), min_pixels=1, margin=1.0)
    assert classes.tolist() == [3] and sizes.tolist() == [20]


def test_a_set_without_objects_fails_naming_it(probe, tmp_path):
    _write_set(str(tmp_path))
    with pytest.raises(ValueError, match="no object of 50 pixels"):
        probe.object_crops(str(tmp_path), "train-*.tfrecord", None, NUM_CLASSES, (8, 8),
                           min_pixels=50, margin=1.0)
