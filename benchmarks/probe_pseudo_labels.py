"""Probe: how good and how calibrated are a trained run's pseudo labels, source by source?

Offline companion of the training-time diagnostics (figure 5a of the paper). A run's checkpoint
makes pseudo labels for the validation images of its own config (`evaluate_checkpoint.pattern`)
through the training code's `make_pseudo_labels`: the decoder's softmax, the SGC head's softmax
and the calibrated fusion at each `--gammas` value, each sharpened at each `--temperatures`
value, and, with `--image_labels=ground_truth`, also restricted to the image's classes (what
`demo_weak.gin` trains on). Each row is scored against the masks at the decoder's resolution:
pixel accuracy, mIoU, accuracy on foreground pixels, mean confidence and ECE (15 bins). The
probe also scores the image classifier's labels (probability >= 0.5, the labels that choose the
Grad-CAM classes without image-level labels) against the classes present in the masks.

Unlike training, where the weak view passes through the network in training mode, the probe
runs the network in inference mode (moving BatchNorm statistics) on whole validation images
(padded to the aligned size `n * output_stride + 1`, as evaluation pads them),
so its figures describe the checkpoint, not one training step.

Run: `python benchmarks/probe_pseudo_labels.py --run_dir RUN [--image_labels classifier]
[--classifier_threshold 0.5] [--gammas 0.5,0.7] [--temperatures 1,0.5,0.3]`.
"""

import argparse

import gin
import numpy as np
import tensorflow as tf

from wss import experiment
from wss.data import pipeline
from wss.data.records import IGNORE_LABEL
from wss.evaluation import evaluator, metrics
from wss.method import gradcam, pseudo_labels, sgc
from wss.models import inference
from wss.resize import resize_labels, resize_like, spatial_size


def parse_floats(text):
    """A comma-separated command-line list of numbers, as a tuple of floats."""
    return tuple(float(value) for value in text.split(",") if value)


def pad_to_aligned_size(batch, stride):
    """Pads a batch's image, label and valid mask on the bottom and right to the size
    `n * stride + 1` that puts the decoder's logits on its pixels (`wss.models.inference`).

    Args:
      batch: an eval batch dict (`image` `[B, H, W, 3]`, `label` and `valid` `[B, H, W]`).
      stride: the model's output stride.

    Returns:
      the batch with padded `image` (mean pixel), `label` (ignored) and `valid` (0).
    """
    height, width = batch["image"].shape[1:3]
    pad = [[0, 0], [0, inference.aligned_size(height, stride) - height],
           [0, inference.aligned_size(width, stride) - width]]
    return dict(batch, image=tf.pad(batch["image"], pad + [[0, 0]],
                                    constant_values=inference.MEAN_PIXEL),
                label=tf.pad(batch["label"], pad, constant_values=IGNORE_LABEL),
                valid=tf.pad(batch["valid"], pad))


def candidates(decoder_logits, sgc_logits, gammas, temperatures, image_labels, restrict):
    """The pseudo-label distributions to score, by row name.

    Args:
      decoder_logits: `[B, h, w, C]` decoder logits.
      sgc_logits: `[B, h, w, C]` SGC logits at the decoder resolution.
      gammas: fusion weights of the decoder.
      temperatures: sharpening temperatures (1 = none).
      image_labels: `[B, C - 1]` labels that select the Grad-CAM classes.
      restrict: also add each row restricted to `image_labels`.

    Returns:
      dict name -> `[B, h, w, C]` float32 distribution.
    """
    sources = [("decoder", "decoder", 0.5), ("sgc", "sgc", 0.5)]
    sources += [(f"fusion, gamma {gamma:g}", "fusion", gamma) for gamma in gammas]
    rows = {}
    for name, source, gamma in sources:
        for temperature in temperatures:
            for restricted in ((False, True) if restrict else (False,)):
                targets, _ = pseudo_labels.make_pseudo_labels(
                    decoder_logits, sgc_logits, source=source, gamma=gamma,
                    temperature=temperature, soft=True, threshold=0.0, keep_per_class=1.0,
                    restrict_to_image_labels=restricted, image_labels=image_labels)
                label = f"{name}, T {temperature:g}" + (", restricted" if restricted else "")
                rows[label] = targets
    return rows


def score_labels(sums, name, predicted, labels, num_classes):
    """Adds one batch of predicted labels to a row of label scores.

    Args:
      sums: dict of rows, `name -> [confusion matrix, foreground right, foreground pixels]`
        (a missing row is created).
      name: the row.
      predicted: int numpy `[B, h, w]` labels.
      labels: int numpy `[B, h, w]` masks (255 ignored).
      num_classes: classes including background.
    """
    entry = sums.setdefault(name, [0, 0.0, 0.0])
    entry[0] = entry[0] + metrics.confusion_matrix(
        tf.constant(labels), tf.constant(predicted, tf.int32), num_classes).numpy()
    foreground = (labels > 0) & (labels != IGNORE_LABEL)
    entry[1] += float(np.sum((predicted == labels) & foreground))
    entry[2] += float(np.sum(foreground))


def print_label_scores(sums):
    """Prints `score_labels`' rows: pixel accuracy, mIoU and foreground accuracy in %."""
    print("| labels | pixel accuracy | mIoU | foreground accuracy |")
    print("| --- | --- | --- | --- |")
    for name, (matrix, right, total) in sums.items():
        print(f"| {name} | {100 * np.trace(matrix) / matrix.sum():.2f} | "
              f"{100 * metrics.mean_iou(matrix):.2f} | {100 * right / max(total, 1):.2f} |")


def restore_run(run_dir):
    """Parses a run's config and restores its last checkpoint.

    Args:
      run_dir: a `wss.train` log directory.

    Returns:
      (model, SGC head, checkpoint path, number of classes, the run's validation spec).

    Raises:
      SystemExit: if the run's config binds no `evaluate_checkpoint.pattern`.
    """
    experiment.parse_experiment_config(checkpoint_dir=run_dir)
    num_classes = gin.query_parameter("%NUM_CLASSES")
    spec = evaluator.configured_eval_spec()
    if spec is None:
        raise SystemExit(f"{run_dir}: its config binds no evaluate_checkpoint.pattern")
    model, head = experiment.build_models(num_classes=num_classes)
    checkpoint = experiment.restore_models(run_dir, model, head)
    return model, head, checkpoint, num_classes, spec


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="a wss.train log directory")
    parser.add_argument("--image_labels", default="ground_truth",
                        choices=("ground_truth", "classifier"),
                        help="labels that select the Grad-CAM classes (and the restriction)")
    parser.add_argument("--gammas", type=parse_floats, default=(0.5, 0.7))
    parser.add_argument("--temperatures", type=parse_floats, default=(1.0, 0.5, 0.3))
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--classifier_threshold", type=float, default=0.5,
                        help="probability at which the classifier names a class present (0.5, "
                             "the paper's and `PseudoSegObjective.classifier_threshold`)")
    args = parser.parse_args()

    model, head, checkpoint, num_classes, spec = restore_run(args.run_dir)
    known = args.image_labels == "ground_truth"

    sums = {}
    rms = {"decoder": [], "sgc": []}
    classifier = np.zeros(3)  # true positives, predicted, present
    for batch in pipeline.eval_dataset(spec, num_classes, batch_size=args.batch_size):
        batch = pad_to_aligned_size(batch, model.output_stride)
        outputs = model(batch["image"], training=False)
        decoder_logits = tf.cast(outputs["logits"], tf.float32)
        predicted_labels = gradcam.predicted_image_labels(outputs["cls_logits"],
                                                          args.classifier_threshold)
        image_labels = gradcam.image_level_labels(
            outputs["cls_logits"], batch["class_labels"]) if known else predicted_labels
        predicted, present = predicted_labels.numpy() > 0.5, batch["class_labels"].numpy() > 0.5
        classifier += [np.sum(predicted & present), np.sum(predicted), np.sum(present)]
        features = outputs["features"]
        sgc_logits, _ = sgc.sgc_logits(
            head, features["final"], features["penultimate"], image_labels,
            valid=batch["valid"], classifier_kernel=model.classifier_kernel, training=False)
        sgc_logits = resize_like(tf.cast(sgc_logits, tf.float32), decoder_logits)
        rms["decoder"].append(float(tf.sqrt(tf.reduce_mean(decoder_logits ** 2))))
        rms["sgc"].append(float(tf.sqrt(tf.reduce_mean(sgc_logits ** 2))))
        labels = resize_labels(batch["label"], spatial_size(decoder_logits))
        foreground = tf.logical_and(labels > 0, labels != IGNORE_LABEL)
        rows = candidates(decoder_logits, sgc_logits, args.gammas, args.temperatures,
                          image_labels, restrict=known)
        for name, probs in rows.items():
            entry = sums.setdefault(name, {"matrix": 0, "bins": None, "fg": [0.0, 0.0]})
            predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
            entry["matrix"] = entry["matrix"] + metrics.confusion_matrix(
                labels, predicted, num_classes).numpy()
            data = metrics.reliability_data(probs, labels)
            bins = np.stack([data["count"], data["correct"], data["confidence_sum"]])
            entry["bins"] = bins if entry["bins"] is None else entry["bins"] + bins
            right = tf.boolean_mask(tf.equal(predicted, tf.cast(labels, tf.int32)), foreground)
            entry["fg"][0] += float(tf.reduce_sum(tf.cast(right, tf.float32)))
            entry["fg"][1] += float(tf.size(right))

    print(f"\n{checkpoint}: pseudo labels of the validation images, image labels from the "
          f"{args.image_labels.replace('_', ' ')} (classifier threshold "
          f"{args.classifier_threshold}); RMS of the logits: decoder "
          f"{np.mean(rms['decoder']):.2f}, SGC {np.mean(rms['sgc']):.2f}; the classifier's image "
          f"labels: precision {classifier[0] / max(classifier[1], 1):.3f}, recall "
          f"{classifier[0] / max(classifier[2], 1):.3f}\n")
    print("| pseudo labels | pixel accuracy | mIoU | foreground accuracy | confidence | ECE |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, entry in sums.items():
        matrix = entry["matrix"]
        count, correct, confidence = entry["bins"]
        ece = float(metrics.ece_from_reliability(count, correct, confidence))
        print(f"| {name} | {100 * np.trace(matrix) / matrix.sum():.2f} | "
              f"{100 * metrics.mean_iou(matrix):.2f} | "
              f"{100 * entry['fg'][0] / max(entry['fg'][1], 1):.2f} | "
              f"{confidence.sum() / count.sum():.3f} | {100 * ece:.2f} |")


if __name__ == "__main__":
    main()
