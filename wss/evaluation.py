"""Semantic segmentation evaluation: mIoU over a whole validation set at full resolution.

Each image is predicted at its own size (optionally at several scales and flipped, the
probabilities averaged at the original resolution), and a confusion matrix is accumulated
over all images; pixels labelled 255 are ignored.
"""

import json
import os
import time

import gin
import numpy as np
import tensorflow as tf

from wss import metrics
from wss.resize import resize_bilinear


def predict_probabilities(model, images, scales=(1.0,), flip=False):
    """Class probabilities at the input resolution, averaged over scales and flips.

    Args:
      model: a DeepLab model.
      images: float32 `[B, H, W, 3]` in [0, 255].
      scales: image scales to evaluate (DeepLab: 0.5 .. 1.75 for multi-scale).
      flip: also evaluate the left-right flipped image.

    Returns:
      float32 `[B, H, W, C]` probabilities.
    """
    size = tf.shape(images)[1:3]
    total = None
    for scale in scales:
        scaled = images
        if scale != 1.0:
            scaled_size = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
            scaled = resize_bilinear(images, scaled_size, align_corners=True)
        variants = [(scaled, False)] + ([(tf.reverse(scaled, [2]), True)] if flip else [])
        for inputs, flipped in variants:
            logits = tf.cast(model(inputs, training=False)["logits"], tf.float32)
            logits = resize_bilinear(logits, size, align_corners=True)
            probs = tf.nn.softmax(logits, axis=-1)
            if flipped:
                probs = tf.reverse(probs, [2])
            total = probs if total is None else total + probs
    return total / float(len(scales) * (2 if flip else 1))


@gin.configurable(denylist=["model", "dataset", "num_classes"])
def evaluate_model(model, dataset, num_classes, scales=(1.0,), flip=False, class_names=None,
                   max_images=None):
    """Evaluates a model over a dataset of `{'image', 'label'}` batches.

    Args:
      model: a DeepLab model.
      dataset: a `tf.data.Dataset` of batch dicts (`image` float32 [B, H, W, 3], `label` int32
        [B, H, W]); images may differ in size between batches.
      num_classes: classes including background.
      scales: evaluation scales.
      flip: add flipped inputs.
      class_names: optional names for the per-class report.
      max_images: stop after this many images (None: the whole dataset).

    Returns:
      dict with `miou`, `per_class_iou` (name -> IoU, NaN for classes absent from both
      labels and predictions), `pixel_accuracy`, `num_images` and `confusion_matrix`.
    """
    spec = {"image": tf.TensorSpec([None, None, None, 3], tf.float32),
            "label": tf.TensorSpec([None, None, None], tf.int32)}

    @tf.function(input_signature=[spec])
    def confusion(batch):
        probs = predict_probabilities(model, batch["image"], scales, flip)
        predictions = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return metrics.confusion_matrix(batch["label"], predictions, num_classes)

    matrix = np.zeros((num_classes, num_classes), np.float64)
    num_images = 0
    start = time.time()
    for batch in dataset:
        matrix += confusion({"image": batch["image"], "label": batch["label"]}).numpy()
        num_images += int(batch["image"].shape[0])
        if max_images is not None and num_images >= max_images:
            break
    ious = np.asarray(metrics.per_class_iou(matrix), np.float64)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    total = matrix.sum()
    return {
        "miou": float(metrics.mean_iou(matrix)),
        "per_class_iou": {names[i]: float(ious[i]) for i in range(num_classes)},
        "pixel_accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "num_images": num_images,
        "seconds": time.time() - start,
        "confusion_matrix": matrix.astype(np.int64).tolist(),
    }


def write_results(results, checkpoint_path):
    """Writes evaluation results as JSON next to the checkpoint; returns the file path."""
    path = f"{checkpoint_path}.eval.json"
    temp = path + ".tmp"
    with tf.io.gfile.GFile(temp, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(temp, path, overwrite=True)
    return path


def format_results(results):
    """A short human-readable table of the results."""
    lines = [f"mIoU {results['miou'] * 100:.2f}  pixel accuracy "
             f"{results['pixel_accuracy'] * 100:.2f}  ({results['num_images']} images)"]
    for name, iou in results["per_class_iou"].items():
        lines.append(f"  {name:>24s} {'n/a' if np.isnan(iou) else f'{iou * 100:6.2f}'}")
    return "\n".join(lines)


def results_path(checkpoint_path):
    """Where `write_results` puts the results of `checkpoint_path`."""
    return f"{checkpoint_path}.eval.json"


def evaluated(checkpoint_path):
    """Whether `checkpoint_path` already has results."""
    return os.path.exists(results_path(checkpoint_path))


@gin.configurable(denylist=["checkpoint_path"])
def evaluate_checkpoint(checkpoint_path, pattern=gin.REQUIRED, split_file=None,
                        num_classes=gin.REQUIRED, class_names=None, max_images=None):
    """Restores one checkpoint and evaluates it on the validation records.

    Args:
      checkpoint_path: a checkpoint prefix (or a log directory: its latest checkpoint).
      pattern: TFRecord pattern of the validation set.
      split_file: optional file of image ids to evaluate.
      num_classes: classes including background.
      class_names: optional class names for the report.
      max_images: evaluate only this many images.

    Returns:
      (results dict, results JSON path).
    """
    from wss import experiment as experiment_lib
    from wss.data import pipeline

    checkpoint_path = experiment_lib.latest_checkpoint_path(checkpoint_path)
    dataset = pipeline.eval_dataset(pipeline.DatasetSpec(pattern, split_file),
                                    num_classes=num_classes)
    model, _ = experiment_lib.build_models(num_classes=num_classes, with_sgc_head=False)
    experiment_lib.restore_models(checkpoint_path, model)
    results = evaluate_model(model, dataset, num_classes, class_names=class_names,
                                        max_images=max_images)
    results["checkpoint"] = checkpoint_path
    return results, write_results(results, checkpoint_path)
