"""benchmarks/crop_relabel.py: a teacher's objects renamed by a crop classifier."""

import os
import sys

import numpy as np
import pytest
from script_loading import REPO, load_script


@pytest.fixture(scope="module")
def crop_relabel():
    pytest.importorskip("scipy")
    # The script imports its sibling scripts (noisy_masks, probe_teacher_ensemble).
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        yield load_script("benchmarks/crop_relabel.py")
    finally:
        sys.path.remove(os.path.join(REPO, "benchmarks"))


def test_class_regions_splits_classes_and_components(crop_relabel):
    prediction = np.zeros((8, 8), np.int64)
    prediction[0:2, 0:2] = 1          # One object of class 1 ...
    prediction[5:7, 5:7] = 1          # ... and another, not connected to it.
    prediction[2:4, 2:4] = 2          # Class 2 touches the first one diagonally.
    prediction[7, 0] = 2              # A one-pixel region, below min_pixels.
    regions = crop_relabel.class_regions(prediction, num_classes=3, min_pixels=2)
    sizes = [(int(prediction[region][0]), int(region.sum())) for region in regions]
    assert sizes == [(1, 4), (1, 4), (2, 4)]
    # 8-connectivity: the class-1 square at (0, 0) and one at (2, 2) would be one region.
    prediction[2:4, 2:4] = 1
    assert len(crop_relabel.class_regions(prediction, 3, min_pixels=2)) == 2


def test_square_box_centres_the_region(crop_relabel):
    region = np.zeros((10, 20), bool)
    region[2:5, 4:10] = True  # Rows 2-4, columns 4-9: centre (3, 6.5), half side 2.5.
    box = crop_relabel.square_box(region, margin=1.0)
    np.testing.assert_allclose(box, [(3 - 3.5) / 10, (6.5 - 3.5) / 20, (3 + 3.5) / 10,
                                     (6.5 + 3.5) / 20])


def test_fit_ridge_matches_the_normal_equations(crop_relabel):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 4)) * [1.0, 2.0, 0.5, 3.0] + [1.0, -2.0, 0.0, 5.0]
    classes = rng.integers(0, 3, 30)
    ridge = crop_relabel.fit_ridge(features, classes, num_classes=3, l2=2.0)
    scores = crop_relabel.ridge_scores(features, ridge)
    # Reference: the minimiser of |X w - Y|^2 + 2 |w|^2 as an augmented least-squares problem.
    standard = (features - features.mean(0)) / (features.std(0) + 1e-6)
    design = np.concatenate([standard, np.ones((30, 1))], 1)
    augmented = np.concatenate([design, np.sqrt(2.0) * np.eye(5)])
    targets = np.concatenate([np.eye(3)[classes], np.zeros((5, 3))])
    weights = np.linalg.lstsq(augmented, targets, rcond=None)[0]
    np.testing.assert_allclose(scores, design @ weights, atol=1e-8)


def test_relabel_regions_multiplies_teacher_and_crop(crop_relabel):
    probabilities = np.zeros((4, 4, 3))
    probabilities[..., 0] = 1.0                      # Background everywhere ...
    probabilities[0:2, 0:2] = [0.1, 0.5, 0.4]        # ... but an object the teacher calls 1,
    probabilities[0, 0] = [0.1, 0.3, 0.6]            # one of its pixels 2.
    regions = [probabilities.argmax(-1) > 0]
    # Crop scores favour class 2 by 0.1: at T = 0.1 the softmax is (0.269, 0.731) for (1, 2),
    # times the teacher's mean (0.45, 0.45) -> class 2 for the whole region.
    labels = crop_relabel.relabel_regions(probabilities, regions,
                                          np.array([[9.0, 0.2, 0.3]]), temperature=0.1)
    expected = np.zeros((4, 4), np.int64)
    expected[0:2, 0:2] = 2
    np.testing.assert_array_equal(labels, expected)
    # A flat crop softmax (high temperature) leaves the teacher's region mean to decide:
    # class 1 (0.5 against 0.4).
    probabilities[0:2, 0:2] = [0.1, 0.5, 0.4]
    labels = crop_relabel.relabel_regions(probabilities, regions, np.array([[0.0, 0.2, 0.3]]),
                                          temperature=1e6)
    expected[0:2, 0:2] = 1
    np.testing.assert_array_equal(labels, expected)
