"""Segmentation and calibration metrics: confusion matrix, IoU, ECE, reliability data.

* Confusion matrix: `confusion_matrix(labels, predictions, num_classes)` for one batch (rows =
  ground truth, columns = prediction; sum them over a dataset, as `wss.evaluation.evaluator` does);
  pixels labelled `ignore_label` (255) are skipped.
* `per_class_iou` / `mean_iou`: `IoU_c = TP_c / (TP_c + FP_c + FN_c)`; classes that appear
  neither in the labels nor in the predictions have no IoU and are left out of the mean (NaN in
  the per-class vector).
* `expected_calibration_error`: pixels are binned by confidence `max_c p_c` into `num_bins` equal
  bins of (0, 1] (a pixel with confidence `q` goes to bin `ceil(q * num_bins) - 1`), and
  `ECE = sum_b (n_b / n) |acc_b - conf_b|`, where `acc_b` is the fraction of pixels of bin `b`
  whose argmax equals the label and `conf_b` their mean confidence.
* `reliability_data`: the per-bin counts, accuracies and confidences behind a reliability
  diagram; `ece_from_reliability` turns accumulated bins into an ECE.
"""

import numpy as np
import tensorflow as tf

from wss.data.records import IGNORE_LABEL


def _flatten_valid(labels, ignore_label):
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    return labels, tf.not_equal(labels, ignore_label)


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """Confusion matrix of one batch.

    Args:
      labels: int `[...]` ground truth, `ignore_label` skipped.
      predictions: int `[...]` predicted class ids, same shape.
      num_classes: number of classes `C`.
      ignore_label: label value to skip.

    Returns:
      int64 `[C, C]`, rows = ground truth, columns = prediction.
    """
    labels, keep = _flatten_valid(labels, ignore_label)
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    labels = tf.boolean_mask(labels, keep)
    predictions = tf.boolean_mask(predictions, keep)
    indices = labels * num_classes + predictions
    counts = tf.math.bincount(indices, minlength=num_classes * num_classes,
                              maxlength=num_classes * num_classes, dtype=tf.int64)
    return tf.reshape(counts, [num_classes, num_classes])


def per_class_iou(matrix):
    """Per-class IoU from a confusion matrix.

    Args:
      matrix: `[C, C]` array, rows = ground truth, columns = prediction.

    Returns:
      float64 numpy `[C]`, NaN where the class is neither labelled nor predicted.
    """
    matrix = np.asarray(matrix, np.float64)
    true_positive = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)


def mean_iou(matrix):
    """Mean IoU over the classes present in labels or predictions.

    Args:
      matrix: `[C, C]` confusion matrix.

    Returns:
      float, NaN if the matrix is empty.
    """
    iou = per_class_iou(matrix)
    if np.all(np.isnan(iou)):
        return float("nan")
    return float(np.nanmean(iou))


def reliability_data(probs, labels, num_bins=15, ignore_label=IGNORE_LABEL):
    """Per-bin statistics of confidence vs accuracy (reliability diagram data).

    Args:
      probs: float `[..., C]` class probabilities.
      labels: int `[...]` ground truth, `ignore_label` skipped.
      num_bins: number of equal-width confidence bins over (0, 1].
      ignore_label: label value to skip.

    Returns:
      dict of tensors: `count` (float32 `[num_bins]`, pixels per bin), `correct` (float32, sum
      of correct predictions per bin), `confidence_sum` (float32, sum of confidences per bin),
      `accuracy` and `confidence` (per-bin means, 0 for empty bins) and `bin_edges`
      (`[num_bins + 1]`). Sums make the result additive across batches.
    """
    probs = tf.cast(probs, tf.float32)
    num_classes = tf.shape(probs)[-1]
    probs = tf.reshape(probs, [-1, num_classes])
    labels, keep = _flatten_valid(labels, ignore_label)
    probs = tf.boolean_mask(probs, keep)
    labels = tf.boolean_mask(labels, keep)
    confidence = tf.reduce_max(probs, axis=-1)
    correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels),
                      tf.float32)
    bins = tf.cast(tf.math.ceil(confidence * num_bins), tf.int32) - 1
    bins = tf.clip_by_value(bins, 0, num_bins - 1)
    count = tf.math.unsorted_segment_sum(tf.ones_like(confidence), bins, num_bins)
    correct_sum = tf.math.unsorted_segment_sum(correct, bins, num_bins)
    confidence_sum = tf.math.unsorted_segment_sum(confidence, bins, num_bins)
    safe = tf.maximum(count, 1.0)
    return {
        "count": count,
        "correct": correct_sum,
        "confidence_sum": confidence_sum,
        "accuracy": correct_sum / safe,
        "confidence": confidence_sum / safe,
        "bin_edges": tf.linspace(0.0, 1.0, num_bins + 1),
    }


def ece_from_reliability(count, correct, confidence_sum):
    """ECE from (possibly accumulated) per-bin sums of `reliability_data`.

    Args:
      count: `[num_bins]` pixels per bin.
      correct: `[num_bins]` correct predictions per bin.
      confidence_sum: `[num_bins]` summed confidences per bin.

    Returns:
      float32 scalar, `sum_b |correct_b - confidence_sum_b| / sum_b count_b` (0 if empty).
    """
    count = tf.cast(count, tf.float32)
    total = tf.reduce_sum(count)
    gap = tf.reduce_sum(tf.abs(tf.cast(correct, tf.float32) - tf.cast(confidence_sum, tf.float32)))
    return tf.cast(total > 0, tf.float32) * gap / tf.maximum(total, 1.0)


def expected_calibration_error(probs, labels, num_bins=15, ignore_label=IGNORE_LABEL):
    """Expected calibration error of a probability map against labels.

    Args:
      probs: float `[..., C]` class probabilities (e.g. `[B, H, W, C]`).
      labels: int `[...]` ground truth (e.g. `[B, H, W]`), `ignore_label` skipped.
      num_bins: number of equal-width confidence bins.
      ignore_label: label value to skip.

    Returns:
      float32 scalar in [0, 1].
    """
    data = reliability_data(probs, labels, num_bins, ignore_label)
    return ece_from_reliability(data["count"], data["correct"], data["confidence_sum"])
