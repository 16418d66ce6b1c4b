"""Probe: do a run's BatchNorm moving statistics cost it accuracy?

In a PseudoSeg step the network runs in training mode on three batches (the labelled images, the
unlabelled images' weak view and their strong view, colour-jittered and cut out), and every
pass moves the BatchNorm moving averages that evaluation uses. If the strong view's statistics
pulled them away from those of plain images, re-estimating them on plain training images
would raise the validation mIoU of PseudoSeg runs more than that of supervised ones.

For each run directory the probe evaluates the last checkpoint as trained, then sets every
BatchNorm layer's moving mean and variance to the average of its per-batch statistics over
every record of the run's labelled stream (`train.labelled_pattern`, its split file not
applied; whole images, no augmentation, in training mode: "precise BN") and evaluates again.
It changes no files; the checkpoint on disk is not touched.

Run: `python benchmarks/probe_batch_norm.py RUN [RUN ...] [--batch_size 16]`.
"""

import argparse

import gin
import keras
import tensorflow as tf

from wss import experiment
from wss.data import pipeline
from wss.evaluation import evaluator


def batch_norm_layers(model):
    """Every BatchNormalization layer of a Keras model, nested ones included."""
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def reestimate_batch_norm(model, batches):
    """Sets each BatchNorm's moving statistics to the mean of its statistics over `batches`.

    Batch k (from 0) is run in training mode with every layer's momentum at k / (k + 1), so
    after the last batch the moving mean and variance are the plain averages of the per-batch
    means and (population) variances. The layers' momentum is restored afterwards.

    Args:
      model: a Keras model called as `model(images, training=True)`.
      batches: an iterable of image batches.

    Returns:
      The number of batches used.

    Raises:
      ValueError: when the model has no BatchNorm layer or `batches` is empty.
    """
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError("the model has no BatchNormalization layer")
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for images in batches:
            for layer in layers:
                layer.momentum = count / (count + 1.0)
            model(images, training=True)
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not count:
        raise ValueError("no batches to re-estimate the BatchNorm statistics on")
    return count


def probe_run(run_dir, batch_size):
    """Validation mIoU of a run's last checkpoint before and after re-estimating BatchNorm.

    Args:
      run_dir: a training log directory with its `config.gin`.
      batch_size: images per re-estimation batch.

    Returns:
      dict with `checkpoint`, `batches`, `before` and `after` (mIoU, %).
    """
    experiment.parse_experiment_config(run_dir)
    num_classes = gin.get_bindings("build_models")["num_classes"]
    val_spec = evaluator.configured_eval_spec()
    if val_spec is None:
        raise ValueError(f"{run_dir}/config.gin binds no evaluate_checkpoint.pattern")
    model, _ = experiment.build_models(num_classes=num_classes, with_sgc_head=False)
    checkpoint = experiment.restore_models(run_dir, model)
    val = pipeline.eval_dataset(val_spec, num_classes=num_classes)
    before = evaluator.evaluate_model(model, val, num_classes)["miou"]
    # Every record of the labelled stream's pattern, its split file not applied.
    train_spec = pipeline.make_spec(gin.get_bindings("train")["labelled_pattern"])
    train = pipeline.eval_dataset(train_spec, num_classes=num_classes)
    images = tf.concat([batch["image"] for batch in train], axis=0)
    count = reestimate_batch_norm(
        model, (images[i:i + batch_size] for i in range(0, int(images.shape[0]), batch_size)))
    after = evaluator.evaluate_model(model, val, num_classes)["miou"]
    return {"checkpoint": checkpoint, "batches": count, "before": 100 * before,
            "after": 100 * after}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="training log directories")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()
    rows = [probe_run(run_dir, args.batch_size) for run_dir in args.run_dirs]
    print("| run | mIoU as trained | mIoU, BatchNorm re-estimated | change |")
    print("| --- | --- | --- | --- |")
    for run_dir, row in zip(args.run_dirs, rows):
        print(f"| {run_dir} | {row['before']:.2f} | {row['after']:.2f} | "
              f"{row['after'] - row['before']:+.2f} |")


if __name__ == "__main__":
    main()
