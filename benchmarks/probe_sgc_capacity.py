"""Probe: is a run's SGC head under-trained, or is that all its inputs allow?

The SGC head (`wss.method.sgc`) reads Grad-CAM maps and a hypercolumn of the last two backbone
blocks, under stop-gradient, so its fit can be studied with the backbone frozen. This probe
restores a run's checkpoint, computes the backbone's outputs once (inference mode, images padded
to the aligned size as evaluation pads them) for the labelled images L_sa trains on and for the
validation images, and scores SGC with the true classes choosing the Grad-CAM maps: first the
run's own head, then the same head trained further and a freshly initialised head, each by
`--steps` Adam steps of L_sa on the labelled images alone. If neither refit fits the labelled
images much better than the run's head, the head is limited by its inputs, not by training.

Scores are mIoU and the accuracy on foreground pixels at the decoder's resolution.

`--resolution decoder` refits only a fresh head of that design (`make_sgc_head.resolution`:
attention on the decoder's stride-4 grid with the low-level features), to ask whether finer
inputs lift the limit.

Run: `python benchmarks/probe_sgc_capacity.py --run_dir RUN --pattern 'DIR/train-*.tfrecord'
--split_file DIR/labelled_1_16.txt [--steps 600] [--learning_rate 0.01] [--seed 0]
[--resolution backbone|decoder]`.
"""

import argparse

import keras
import numpy as np
import tensorflow as tf
from probe_pseudo_labels import pad_to_aligned_size, restore_run

from wss.data import pipeline
from wss.data.records import IGNORE_LABEL
from wss.evaluation import metrics
from wss.method import losses, sgc
from wss.resize import resize_labels, resize_like, spatial_size


def backbone_outputs(model, spec, num_classes, batch_size):
    """The frozen network's outputs that SGC reads, for every image of `spec`.

    Returns:
      list of dicts (one per batch) with `final`, `penultimate`, `low_level`, `logits`,
      `label`, `valid` and `class_labels`.
    """
    batches = []
    for batch in pipeline.eval_dataset(spec, num_classes, batch_size=batch_size):
        batch = pad_to_aligned_size(batch, model.output_stride)
        outputs = model(batch["image"], training=False)
        batches.append({"final": outputs["features"]["final"],
                        "penultimate": outputs["features"]["penultimate"],
                        "low_level": outputs["features"].get("low_level"),
                        "logits": tf.cast(outputs["logits"], tf.float32),
                        "label": batch["label"], "valid": batch["valid"],
                        "class_labels": tf.cast(batch["class_labels"], tf.float32)})
    return batches


def head_logits(head, model, batch, training):
    """SGC logits of one batch, the Grad-CAM classes being the true ones."""
    logits, _ = sgc.sgc_logits(head, batch["final"], batch["penultimate"],
                               batch["class_labels"], valid=batch["valid"],
                               classifier_kernel=model.classifier_kernel, training=training,
                               low_level_features=batch["low_level"])
    return logits


def score(head, model, batches, num_classes):
    """(mIoU, foreground accuracy) in % of the head's argmax at the decoder's resolution."""
    matrix = np.zeros((num_classes, num_classes))
    right = total = 0.0
    for batch in batches:
        logits = resize_like(tf.cast(head_logits(head, model, batch, False), tf.float32),
                             batch["logits"])
        labels = tf.cast(resize_labels(batch["label"], spatial_size(batch["logits"])), tf.int32)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        matrix += metrics.confusion_matrix(labels, predicted, num_classes).numpy()
        foreground = tf.logical_and(labels > 0, labels != IGNORE_LABEL)
        right += float(tf.reduce_sum(tf.cast(tf.logical_and(foreground,
                                                            tf.equal(predicted, labels)),
                                             tf.float32)))
        total += float(tf.reduce_sum(tf.cast(foreground, tf.float32)))
    return 100 * metrics.mean_iou(matrix), 100 * right / max(total, 1.0)


def refit(head, model, batches, steps, learning_rate):
    """Trains `head` alone with Adam on L_sa over `batches`, cycling; returns the last loss."""
    optimizer = keras.optimizers.Adam(learning_rate)
    loss = float("nan")
    for step in range(steps):
        batch = batches[step % len(batches)]
        with tf.GradientTape() as tape:
            loss = losses.sgc_loss(head_logits(head, model, batch, True), batch["label"])
        gradients = tape.gradient(loss, head.trainable_variables)
        optimizer.apply_gradients(zip(gradients, head.trainable_variables))
    return float(loss)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="a wss.train log directory")
    parser.add_argument("--pattern", required=True, help="TFRecords of the labelled images")
    parser.add_argument("--split_file", required=True,
                        help="ids of the labelled images (the run's labelled split)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--batch_size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0, help="the fresh head's initialisation")
    parser.add_argument("--resolution", default="backbone", choices=sgc.SGCHead.RESOLUTIONS,
                        help="the fresh head's make_sgc_head.resolution; 'decoder' refits only "
                             "a fresh head (the run's own head has the backbone's)")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    model, head, checkpoint, num_classes, val_spec = restore_run(args.run_dir)
    labelled = backbone_outputs(model, pipeline.make_spec(args.pattern, args.split_file),
                                num_classes, args.batch_size)
    validation = backbone_outputs(model, val_spec, num_classes, args.batch_size)

    print(f"\n{checkpoint}: SGC with the true classes; {args.steps} Adam steps at "
          f"{args.learning_rate} for the refits\n")
    print("| head | final L_sa | labelled mIoU | labelled foreground accuracy | "
          "validation mIoU | validation foreground accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    fresh = sgc.make_sgc_head(num_classes, attention_dim=head.attention_dim,
                              bn_momentum=head.output_bn.momentum, resolution=args.resolution)
    head_logits(fresh, model, labelled[0], False)  # Builds its variables.
    rows = [(f"fresh, resolution '{args.resolution}'", "refit", fresh)]
    if args.resolution == head.resolution:
        rows = [("the run's", None, head), ("the run's, trained further", "refit", head)] + rows
    for name, action, candidate in rows:
        loss = refit(candidate, model, labelled, args.steps, args.learning_rate) if action else None
        lab_miou, lab_fg = score(candidate, model, labelled, num_classes)
        val_miou, val_fg = score(candidate, model, validation, num_classes)
        loss_text = "-" if loss is None else f"{loss:.3f}"
        print(f"| {name} | {loss_text} | {lab_miou:.2f} | {lab_fg:.2f} | {val_miou:.2f} | "
              f"{val_fg:.2f} |")


if __name__ == "__main__":
    main()
