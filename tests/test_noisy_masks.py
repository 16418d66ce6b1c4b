"""benchmarks/noisy_masks.py: the probe dataset whose unlabelled masks confuse whole objects."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from script_loading import load_script

from wss.data import records

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def noisy_masks():
    return load_script("benchmarks/noisy_masks.py")


def _mask(objects):
    """An 8 x 8 mask with `(class_id, row, col)` 2 x 2 objects; one ignore pixel."""
    mask = np.zeros((8, 8), np.uint8)
    for class_id, row, col in objects:
        mask[row:row + 2, col:col + 2] = class_id
    mask[7, 7] = records.IGNORE_LABEL
    return mask


MASKS = {
    "lab": _mask([(1, 0, 0), (2, 4, 4)]),
    "un1": _mask([(1, 0, 0), (1, 4, 4)]),  # Two objects of one class.
    "un2": _mask([(3, 2, 2)]),
}


def _write_dataset(directory):
    image = np.zeros((8, 8, 3), np.uint8)
    examples = []
    for name, mask in MASKS.items():
        present = sorted(int(c) for c in np.unique(mask) if 0 < c < records.IGNORE_LABEL)
        examples.append(records.encode_example(image, name, mask=mask, class_labels=present,
                                               image_format="png", num_classes=NUM_CLASSES))
    records.write_records(examples, os.path.join(directory, "train"), num_shards=2)
    with open(os.path.join(directory, "labelled_1_16.txt"), "w") as f:
        f.write("lab\n")
    with open(os.path.join(directory, "metadata.json"), "w") as f:
        json.dump({"num_classes": NUM_CLASSES}, f)


def _read(directory):
    found = records.read_examples(os.path.join(directory, "train-*.tfrecord"), NUM_CLASSES)
    return {records.image_id(e["filename"]): e for e in found}


def _mask_and_labels(example):
    mask = np.asarray(example["label"])
    return mask.reshape(mask.shape[:2]), np.flatnonzero(example["class_labels"]) + 1


def test_rate_one_relabels_every_unlabelled_object_and_nothing_else(noisy_masks, tmp_path):
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    _write_dataset(source)
    counts = noisy_masks.write_noisy_copy(source, target, rate=1.0, seed=3)
    assert counts["objects"] == 3 and counts["relabelled"] == 3
    assert counts["foreground"] == 12 and counts["foreground_right"] == 0
    assert sorted(os.listdir(target)) == sorted(os.listdir(source))
    examples = _read(target)
    mask, labels = _mask_and_labels(examples["lab"])
    np.testing.assert_array_equal(mask, MASKS["lab"])
    for name in ("un1", "un2"):
        mask, labels = _mask_and_labels(examples[name])
        true = MASKS[name]
        np.testing.assert_array_equal(mask == 0, true == 0)  # Background stays.
        np.testing.assert_array_equal(mask == records.IGNORE_LABEL,
                                      true == records.IGNORE_LABEL)
        foreground = (true > 0) & (true != records.IGNORE_LABEL)
        assert np.all(mask[foreground] != true[foreground])
        assert np.all((mask[foreground] >= 1) & (mask[foreground] < NUM_CLASSES))
        for row, col in ((0, 0), (4, 4), (2, 2)):  # Each object keeps a single class.
            assert len(np.unique(mask[row:row + 2, col:col + 2])) == 1
        np.testing.assert_array_equal(
            labels, sorted(int(c) for c in np.unique(mask[foreground])))


def test_rate_zero_copies_the_masks(noisy_masks, tmp_path):
    source, target = str(tmp_path / "in"), str(tmp_path / "out")
    _write_dataset(source)
    counts = noisy_masks.write_noisy_copy(source, target, rate=0.0)
    assert counts["relabelled"] == 0 and counts["foreground_right"] == counts["foreground"]
    for name, example in _read(target).items():
        np.testing.assert_array_equal(_mask_and_labels(example)[0], MASKS[name])


def test_objects_are_relabelled_independently(noisy_masks):
    rng = np.random.default_rng(0)
    mask = np.zeros((4, 200), np.uint8)
    mask[1:3, 1::3] = 1  # 67 separate objects of class 1.
    noisy, objects, relabelled = noisy_masks.relabel_objects(mask, NUM_CLASSES, 0.5, rng)
    assert objects == 67 and 20 < relabelled < 47
    assert set(np.unique(noisy[1, 1::3])) == {1, 2, 3}  # Both other classes drawn.


def test_bad_arguments_are_named(noisy_masks, tmp_path):
    source = str(tmp_path / "in")
    _write_dataset(source)
    with pytest.raises(ValueError, match="--rate"):
        noisy_masks.write_noisy_copy(source, str(tmp_path / "out"), rate=1.5)
    with pytest.raises(ValueError, match="--output_dir"):
        noisy_masks.write_noisy_copy(source, source, rate=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        noisy_masks.write_noisy_copy(source, str(tmp_path / "out"), rate=0.5, num_classes=2)


def test_teacher_labels_replace_the_unlabelled_masks_only(noisy_masks, tmp_path):
    source, target, labels_dir = (str(tmp_path / name) for name in ("in", "out", "labels"))
    _write_dataset(source)
    teacher = {"un1": np.full((8, 8), 2, np.uint8), "un2": MASKS["un2"]}
    os.makedirs(labels_dir)
    image = np.zeros((8, 8, 3), np.uint8)
    records.write_records([records.encode_example(image, name, mask=mask, image_format="png",
                                                  num_classes=NUM_CLASSES)
                           for name, mask in teacher.items()],
                          os.path.join(labels_dir, "train"), num_shards=1)
    masks = noisy_masks.read_teacher_masks(labels_dir)
    assert sorted(masks) == ["un1", "un2"]
    counts = noisy_masks.write_noisy_copy(source, target, rate=0.0, teacher_masks=masks)
    # un1: 8 foreground pixels, none of class 2; un2: 4, all right.
    assert counts["foreground"] == 12 and counts["foreground_right"] == 4
    examples = _read(target)
    np.testing.assert_array_equal(_mask_and_labels(examples["lab"])[0], MASKS["lab"])
    mask, labels = _mask_and_labels(examples["un1"])
    np.testing.assert_array_equal(mask, teacher["un1"])
    np.testing.assert_array_equal(labels, [2])  # The image labels follow the new mask.
    with pytest.raises(ValueError, match="teacher_labels"):
        noisy_masks.read_teacher_masks(str(tmp_path / "in" / "missing"))


class _LinearModel:
    """A fake DeepLab model (no output stride: run on the image as it is): per-pixel logits
    `image @ weights + column ramp * slope`, so the mirror image's logits differ."""

    def __init__(self, weights, slope):
        self.weights = np.asarray(weights, np.float32)
        self.slope = np.asarray(slope, np.float32)

    def logits(self, images):
        """The float64 numpy logits of `[B, H, W, 3]` images."""
        ramp = np.arange(images.shape[2], dtype=np.float64)[None, None, :, None]
        return images.astype(np.float64) @ self.weights + ramp * self.slope

    def __call__(self, images, training=False):
        del training
        return {"logits": tf.constant(self.logits(np.asarray(images)), tf.float32)}


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_teacher_runs_label_with_the_ensembles_mirrored_mean_softmax(noisy_masks, tmp_path,
                                                                     monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    probe = load_script("benchmarks/probe_teacher_ensemble.py")
    monkeypatch.setitem(sys.modules, "probe_teacher_ensemble", probe)
    rng = np.random.default_rng(0)
    models = [_LinearModel(rng.normal(size=(3, NUM_CLASSES)) / 40, rng.normal(size=NUM_CLASSES))
              for _ in range(2)]
    monkeypatch.setattr(probe, "restore_ensemble", lambda runs: (models, NUM_CLASSES, None, runs))
    source = str(tmp_path / "in")
    images = {name: rng.integers(0, 256, (8, 8, 3)).astype(np.uint8) for name in MASKS}
    records.write_records([records.encode_example(images[name], name, mask=mask,
                                                  image_format="png", num_classes=NUM_CLASSES)
                           for name, mask in MASKS.items()],
                          os.path.join(source, "train"), num_shards=2)
    with open(os.path.join(source, "labelled_1_16.txt"), "w") as f:
        f.write("lab\n")

    labelled_by = {}
    for mirror in (False, True):
        masks = noisy_masks.ensemble_teacher_masks(source, ["a", "b"], mirror=mirror)
        labelled_by[mirror] = masks
        assert sorted(masks) == ["un1", "un2"]  # The labelled image keeps its mask.
        for name, encoded in masks.items():
            image = images[name][None].astype(np.float64)
            probs = 0.0
            for model in models:
                probs = probs + _softmax(model.logits(image))
                if mirror:
                    probs = probs + _softmax(model.logits(image[:, :, ::-1]))[:, :, ::-1]
            expected = probs[0].argmax(axis=-1)
            got = tf.io.decode_png(encoded, channels=1)[..., 0].numpy()
            np.testing.assert_array_equal(got, expected)
            assert len(np.unique(got)) > 1  # The labels are not one class everywhere.
    assert labelled_by[False] != labelled_by[True]  # The mirror changed some pixel.
