"""The crop scorers of the offline labels' object naming (`wss.method.crop_classifier`).

The augmentation is checked against exact flips, the fine-tuned scorer on a task a random
tiny classifier's features cannot solve without fine-tuning its head (coloured squares), and
its scores for being mirror-invariant and leaving the checkpoint unchanged.
"""

import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from wss.method import crop_classifier
from wss.models import build_image_classifier, save_tf1_checkpoint

COLOURS = {1: (230.0, 40.0, 40.0), 2: (40.0, 200.0, 40.0), 3: (40.0, 40.0, 230.0)}


def _crops(rng, count):
    """Grey 17 x 17 crops, each with a square of one class's colour; and their classes."""
    crops = np.full((count, 17, 17, 3), 128.0, np.float32)
    classes = rng.integers(1, 4, size=count)
    for crop, class_id in zip(crops, classes):
        side = int(rng.integers(6, 12))
        top, left = rng.integers(0, 17 - side, size=2)
        crop[top:top + side, left:left + side] = COLOURS[int(class_id)]
    return crops, classes


@pytest.fixture
def tiny_checkpoint(tmp_path):
    bindings = ["build_image_classifier.width_multiplier = 0.0625",
                "build_image_classifier.middle_flow_units = 1"]
    gin.parse_config(bindings)
    keras.utils.set_random_seed(0)  # Passes on seeds 0-5 (2026-12-06); fixed, so not flaky.
    # A "pretrained" classifier: random weights, and BatchNorm statistics of one batch (with
    # the initial moving statistics the random network's features vanish, ~1e-9).
    classifier = build_image_classifier(num_logits=5, batch_norm_decay=0.0)
    classifier(tf.random.stateless_uniform([16, 17, 17, 3], (0, 1), 0.0, 255.0), training=True)
    return save_tf1_checkpoint(classifier, str(tmp_path / "tf1" / "model.ckpt"))


def test_augmentation_without_crops_or_jitter_only_flips():
    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 255, size=(16, 9, 9, 3)).astype(np.float32)
    out = crop_classifier.augment_crops(crops, tf.random.Generator.from_seed(1), min_scale=1.0,
                                        jitter=0.0).numpy()
    kinds = set()
    for crop, augmented in zip(crops, out):
        candidates = {"none": crop, "lr": crop[:, ::-1], "ud": crop[::-1], "both": crop[::-1, ::-1]}
        matches = [name for name, candidate in candidates.items()
                   if np.allclose(candidate, augmented, atol=1e-3)]
        assert len(matches) == 1, matches
        kinds.add(matches[0])
    assert len(kinds) >= 3  # 16 crops: the flips are drawn per crop.
    jittered = crop_classifier.augment_crops(crops, tf.random.Generator.from_seed(1)).numpy()
    assert jittered.shape == crops.shape
    assert jittered.min() >= 0.0 and jittered.max() <= 255.0
    assert not np.allclose(jittered, out)


def test_fine_tuned_scorer_learns_the_crops_classes(tiny_checkpoint):
    rng = np.random.default_rng(0)
    train, train_classes = _crops(rng, 24)
    test, test_classes = _crops(rng, 30)
    before = tf.train.load_checkpoint(tiny_checkpoint)
    names = [name for name in before.get_variable_to_shape_map() if name.endswith("weights")]
    scorer = crop_classifier.FineTunedScorer(tiny_checkpoint, num_classes=4, steps=150,
                                             learning_rate=1e-3, batch_size=16, seed=0)
    loss = scorer.fit(train, train_classes)
    assert loss < 0.5  # ln 3 = 1.10 before it learns.
    scores = scorer(test)
    assert scores.shape == (30, 4)
    np.testing.assert_array_equal(scores[:, 0], 0.0)  # Background is not scored.
    assert (scores[:, 1:].argmax(1) + 1 == test_classes).mean() >= 0.9
    # The score of a crop is the mean of it and its mirror image's: mirror-invariant.
    np.testing.assert_allclose(scorer(test[:, :, ::-1]), scores, rtol=1e-4, atol=1e-4)
    # The checkpoint's classifier is fine-tuned in a copy; the file is left as it was.
    after = tf.train.load_checkpoint(tiny_checkpoint)
    for name in names:
        np.testing.assert_array_equal(after.get_tensor(name), before.get_tensor(name))


def test_ridge_scorer_describes_its_features():
    scorer = crop_classifier.RidgeScorer(lambda crops: np.asarray(crops).mean((1, 2)), 4,
                                         l2=0.5, description="mean colours")
    rng = np.random.default_rng(1)
    crops, classes = _crops(rng, 40)
    scorer.fit(crops, classes)
    assert scorer.description == "a ridge regression (penalty 0.5) on the mean colours"
    assert (scorer(crops)[:, 1:].argmax(1) + 1 == classes).mean() == 1.0


def test_fine_tuned_scorer_is_cached_and_loaded_exactly(tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(2)
    train, train_classes = _crops(rng, 12)
    test, _ = _crops(rng, 6)
    cache_dir = str(tmp_path / "cache")

    def fitted(crops, classes):
        scorer = crop_classifier.FineTunedScorer(tiny_checkpoint, num_classes=4, steps=3,
                                                 learning_rate=1e-3, batch_size=4, seed=0,
                                                 reuse=True, cache_dir=cache_dir)
        loss = scorer.fit(crops, classes)
        return scorer, loss

    first, first_loss = fitted(train, train_classes)
    assert first.loaded_from is None
    second, second_loss = fitted(train, train_classes)
    assert second.loaded_from is not None and second.loaded_from.startswith(cache_dir)
    assert second_loss == first_loss
    np.testing.assert_array_equal(second(test), first(test))
    # Fine-tuning moved the weights: a scorer that loaded nothing would score 0 everywhere.
    assert np.abs(first(test)[:, 1:]).max() > 0
    # Other crops (or classes) are another entry, fine-tuned anew.
    other_classes = train_classes.copy()
    other_classes[0] = 1 + other_classes[0] % 3
    third, _ = fitted(train, other_classes)
    assert third.loaded_from is None
    assert len([name for name in os.listdir(cache_dir)
                if name.startswith("crop_scorer_") and "." not in name]) == 2
