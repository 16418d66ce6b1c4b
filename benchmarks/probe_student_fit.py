"""Probe: how much of its offline labels' quality a `demo.gin` student reaches on their images.

`demo.gin`'s student trains on a teacher's renamed labels of the unlabelled images
(`train.offline_pseudo_labels`). This probe scores, against the images' true masks (which a
synthetic set has and training never reads), the labels of a run's last round and the run's
final student on the same images, and for each round before it (`LOGDIR/round_N`) its labels
and its student. It also splits the foreground by what the labels say (right, another class,
background) and reports what the student predicts there: whether it fixes the labels' wrong
names, follows them, or loses names the labels had right. A student far below its own labels on
the images it trained on does not learn all its labels teach; one level with them is bounded by
them.

Run: `python benchmarks/probe_student_fit.py --run_dir RUN --masks 'DIR/train-*.tfrecord'`
(`--masks`: the set's records with the true masks; the images are read from the labels'
records, `RUN/pseudo_labels`). `--compare RUN2 [RUN3 ...]` scores other runs of the same set
on the same images (e.g. the supervised runs with 1/16 and all labels).
"""

import argparse
import os

import gin
import numpy as np
import tensorflow as tf

from wss import experiment
from wss.data import pipeline, records
from wss.data.records import IGNORE_LABEL
from wss.evaluation import evaluator, metrics
from wss.method import self_training


def fit_report(masks, labels, predictions, num_classes):
    """Scores labels and a model's predictions against true masks.

    Args:
      masks: int `[N]` true classes (`IGNORE_LABEL` where unknown).
      labels: int `[N]` offline labels (`IGNORE_LABEL` where left out), or None.
      predictions: int `[N]` the model's argmax, or None.
      num_classes: classes including background.

    Returns:
      A dict of shares (fractions) and mIoUs (fractions): `labels_miou` (left-out pixels
      counted as background), `student_miou`, and with both labels and predictions
      `label_right`, `label_other_class`, `label_background` (shares of the true foreground),
      `student_right_where_label_right`, `student_right_where_label_other`,
      `student_follows_label_other`, `student_right_where_label_background`.
    """
    masks = np.asarray(masks).ravel()
    known = masks != IGNORE_LABEL
    foreground = known & (masks > 0)
    report = {}
    if labels is not None:
        labels = np.asarray(labels).ravel()
        as_prediction = np.where(labels == IGNORE_LABEL, 0, labels)
        report["labels_miou"] = metrics.mean_iou(np.asarray(metrics.confusion_matrix(
            masks, as_prediction, num_classes)))
    if predictions is not None:
        predictions = np.asarray(predictions).ravel()
        report["student_miou"] = metrics.mean_iou(np.asarray(metrics.confusion_matrix(
            masks, predictions, num_classes)))
    if labels is None or predictions is None:
        return report

    def share(part, whole):
        return float(part.sum() / max(whole.sum(), 1))

    right = foreground & (labels == masks)
    other = foreground & (labels > 0) & (labels != IGNORE_LABEL) & (labels != masks)
    background = foreground & (labels == 0)
    student_right = predictions == masks
    report.update({
        "label_right": share(right, foreground),
        "label_other_class": share(other, foreground),
        "label_background": share(background, foreground),
        "student_right_where_label_right": share(student_right & right, right),
        "student_right_where_label_other": share(student_right & other, other),
        "student_follows_label_other": share((predictions == labels) & other, other),
        "student_right_where_label_background": share(student_right & background, background),
    })
    return report


def read_masks(pattern, num_classes):
    """`{image id: int [H, W] mask}` of every example of `pattern`."""
    masks = {}
    for example in records.read_examples(pattern, num_classes, validate=False):
        label = np.asarray(example["label"])
        masks[records.image_id(example["filename"])] = label.reshape(label.shape[:2])
    return masks


def predict(model, checkpoint_dir, spec, masks, num_classes):
    """A run's argmax on the images of `spec`, with their true masks and `spec`'s labels.

    Args:
      model: a DeepLab model built by the run's config (its weights are restored here).
      checkpoint_dir: a log directory whose latest checkpoint is restored (a run, or a round
        `round_N` inside one).
      spec: the images (a round's `pseudo_labels/` records, whose labels are returned too).
      masks: `read_masks` of the set.
      num_classes: classes including background.

    Returns:
      Flat int arrays `(masks, labels, predictions)` over the images of `spec`.

    Raises:
      SystemExit: when an image of `spec` has no true mask in `--masks`.
    """
    experiment.restore_models(experiment.latest_checkpoint_path(checkpoint_dir), model)
    true, labels, predictions = [], [], []
    for batch in pipeline.eval_dataset(spec, num_classes=num_classes, batch_size=1):
        image_id = records.image_id(batch["filename"][0].numpy())
        if image_id not in masks:
            raise SystemExit(f"{spec.file_pattern}: image {image_id} has no mask in --masks")
        probabilities = evaluator.predict_probabilities(model, batch["image"])
        true.append(masks[image_id].ravel())
        labels.append(np.squeeze(batch["label"][0].numpy()).ravel())
        predictions.append(tf.argmax(probabilities[0], -1).numpy().ravel())
    return np.concatenate(true), np.concatenate(labels), np.concatenate(predictions)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="a demo.gin (offline labels) run")
    parser.add_argument("--masks", required=True, help="records with the true masks")
    parser.add_argument("--compare", nargs="*", default=(), help="other runs of the same set")
    args = parser.parse_args()

    experiment.parse_experiment_config(checkpoint_dir=args.run_dir)
    num_classes = gin.query_parameter("%NUM_CLASSES")
    masks = read_masks(args.masks, num_classes)
    model, _ = experiment.build_models(num_classes=num_classes, with_sgc_head=False)
    rounds = sorted((name for name in os.listdir(args.run_dir) if name.startswith("round_")),
                    key=lambda name: int(name.split("_")[1]))
    print("| round | labels' mIoU | student's mIoU | labels right / other class / background "
          "(of the foreground) | student right where the labels are right | where they name "
          "another class: right, following them | where they say background: right |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in rounds + ["final"]:
        round_dir = args.run_dir if name == "final" else os.path.join(args.run_dir, name)
        label_dir = self_training.pseudo_label_dir(round_dir)
        if self_training.read_marker(label_dir) is None:
            raise SystemExit(f"{round_dir}: no complete offline labels (pseudo_labels/)")
        spec = self_training.pseudo_label_spec(label_dir)
        r = fit_report(*predict(model, round_dir, spec, masks, num_classes), num_classes)
        print(f"| {name} | {100 * r['labels_miou']:.2f} | {100 * r['student_miou']:.2f} | "
              f"{100 * r['label_right']:.1f} / {100 * r['label_other_class']:.1f} / "
              f"{100 * r['label_background']:.1f}% | "
              f"{100 * r['student_right_where_label_right']:.1f}% | "
              f"{100 * r['student_right_where_label_other']:.1f}%, "
              f"{100 * r['student_follows_label_other']:.1f}% | "
              f"{100 * r['student_right_where_label_background']:.1f}% |")
    for run_dir in args.compare:  # On the last round's images (`spec`).
        experiment.parse_experiment_config(checkpoint_dir=run_dir)
        other, _ = experiment.build_models(num_classes=num_classes, with_sgc_head=False)
        true, _, predictions = predict(other, run_dir, spec, masks, num_classes)
        r = fit_report(true, None, predictions, num_classes)
        print(f"{run_dir}: mIoU {100 * r['student_miou']:.2f} on the same images")


if __name__ == "__main__":
    main()
