"""Tests of the confusion matrix, IoU and calibration metrics (wss.evaluation.metrics)."""

import numpy as np
import tensorflow as tf

from wss.evaluation import metrics


def np_ece(probs, labels, num_bins=15, ignore=255):
    probs = probs.reshape(-1, probs.shape[-1]).astype(np.float64)
    labels = labels.reshape(-1)
    keep = labels != ignore
    probs, labels = probs[keep], labels[keep]
    confidence = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


def test_confusion_matrix_matches_numpy_and_ignores_255():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(2, 7, 9))
    labels[rng.random(labels.shape) < 0.25] = 255
    predictions = rng.integers(0, 4, size=(2, 7, 9))
    matrix = metrics.confusion_matrix(labels, predictions, 4).numpy()
    expected = np.zeros((4, 4), np.int64)
    for t, p in zip(labels.ravel(), predictions.ravel()):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(matrix, expected)


def test_iou_hand_computed_over_two_batches():
    labels = np.array([[0, 0, 1, 1, 2, 255]])
    predictions = np.array([[0, 1, 1, 1, 0, 2]])
    matrix = sum(np.asarray(metrics.confusion_matrix(labels, predictions, 4)) for _ in range(2))
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0 -> 0;
    # class 3 absent -> NaN, left out of the mean.
    iou = metrics.per_class_iou(matrix)
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 0.0])
    assert np.isnan(iou[3])
    np.testing.assert_allclose(metrics.mean_iou(matrix), (1 / 3 + 2 / 3) / 3)
    assert matrix.sum() == 10
    assert np.isnan(metrics.mean_iou(np.zeros((4, 4))))


def test_ece_matches_numpy_on_random_inputs():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.5, size=(2, 6, 8, 5))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 5, size=(2, 6, 8))
    labels[0, :2] = 255
    ece = metrics.expected_calibration_error(probs.astype(np.float32), labels).numpy()
    np.testing.assert_allclose(ece, np_ece(probs, labels), rtol=1e-4, atol=1e-6)


def test_ece_perfectly_calibrated_is_near_zero():
    rng = np.random.default_rng(2)
    n = 100_000
    confidence = rng.uniform(0.5, 1.0, size=n)
    probs = np.stack([confidence, 1.0 - confidence], axis=-1)
    # Class 0 is predicted; it is right with probability equal to the confidence.
    labels = np.where(rng.random(n) < confidence, 0, 1)
    ece = metrics.expected_calibration_error(probs.astype(np.float32), labels).numpy()
    assert ece < 0.01


def test_ece_over_confident_hand_computed():
    # 10 pixels at confidence 0.9 with 6 correct (bin 13: |0.6 - 0.9| = 0.3) and 10 pixels at
    # confidence 0.55 with 5 correct (bin 8: |0.5 - 0.55| = 0.05); ECE = 0.5 * 0.3 + 0.5 * 0.05.
    probs = np.array([[0.9, 0.1]] * 10 + [[0.55, 0.45]] * 10, np.float32)
    labels = np.array([0] * 6 + [1] * 4 + [0] * 5 + [1] * 5)
    ignored_probs = np.concatenate([probs, [[0.99, 0.01]] * 3]).astype(np.float32)
    ignored_labels = np.concatenate([labels, [255] * 3])
    ece = metrics.expected_calibration_error(ignored_probs, ignored_labels).numpy()
    np.testing.assert_allclose(ece, 0.175, rtol=1e-5)
    data = metrics.reliability_data(probs, labels)
    count = data["count"].numpy()
    assert count[13] == 10 and count[8] == 10 and count.sum() == 20
    np.testing.assert_allclose(data["accuracy"].numpy()[[8, 13]], [0.5, 0.6])
    np.testing.assert_allclose(data["confidence"].numpy()[[8, 13]], [0.55, 0.9], rtol=1e-6)


def test_reliability_data_is_additive():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=(2, 50)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 50))
    parts = [metrics.reliability_data(probs[i], labels[i]) for i in range(2)]
    summed = {k: parts[0][k] + parts[1][k] for k in ("count", "correct", "confidence_sum")}
    ece = metrics.ece_from_reliability(**summed).numpy()
    whole = metrics.expected_calibration_error(tf.constant(probs), labels).numpy()
    np.testing.assert_allclose(ece, whole, rtol=1e-5)
