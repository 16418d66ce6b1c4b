"""A small plain segmentation CNN trained from scratch: what a dataset allows a simple network.

Is a recipe's low score the recipe's fault or the data's? This script trains the reference
network that issue 12 describes on any dataset in the project's schema, with the project's own
input pipeline and evaluation, so that its mIoU can sit beside `wss.train`'s on the same
images. The network (about 150k parameters): a 3 x 3 convolution stem at stride 2 with 32
channels; separable-convolution blocks (64, 96, 128 channels) down to output stride 8, the last
two dilated by 2 and 4; a three-branch ASPP of separable convolutions at rates 1, 2, 3; a
decoder that joins the stride-2 stem features; bilinear upsampling to the input. Every
convolution is followed by BatchNorm and ReLU. It trains with Adam at 2e-3 and pixel
cross-entropy (`wss.method.losses.pixel_cross_entropy`) on flips and crops only
(`wss.data.pipeline.labelled_dataset` at scale 1), and is scored by
`wss.evaluation.evaluator.evaluate_model` on the validation records.

Run (one row per labelled split file, each from scratch):

    python benchmarks/reference_cnn.py --data_dir DIR --num_classes 9 --crop 65 \
        --splits train.txt,labelled_1_16.txt [--steps 1500] [--batch_size 16] [--seed 0]

`--data_dir` holds `train-*.tfrecord`, `val-*.tfrecord` and the split files, as the built-in
synthetic sets do (`python -m wss.data.synthetic --variant random_colours --output_dir DIR`).
Prints a table of validation mIoU and pixel accuracy per split; `--output_json` also writes
the rows with per-class IoU. Results: `benchmarks/RESULTS.md`, "eleventh session".
"""

import argparse
import json
import os
import time

import keras
import tensorflow as tf

from wss import resize
from wss.data import pipeline
from wss.evaluation import evaluator
from wss.method import losses


def _conv_bn_relu(x, filters, kernel_size=3, strides=1, dilation_rate=1, separable=True,
                  momentum=0.99):
    """A (separable) convolution without bias, BatchNorm and ReLU."""
    conv = keras.layers.SeparableConv2D if separable else keras.layers.Conv2D
    x = conv(filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
             padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    return keras.layers.ReLU()(x)


class _ResizeLike(keras.layers.Layer):
    """Bilinear resize of the first input to the spatial size of the second."""

    def call(self, inputs):
        tensor, reference = inputs
        return resize.resize_like(tensor, reference)


def build_reference_cnn(num_classes, stem_channels=32, block_channels=(64, 96, 128),
                        aspp_rates=(1, 2, 3), aspp_channels=96, low_level_channels=32,
                        decoder_channels=64, batch_norm_momentum=0.99):
    """The issue's reference network (module docstring).

    Args:
      num_classes: classes including background.
      stem_channels: channels of the stride-2 stem (the decoder's low-level features).
      block_channels: channels of the three separable blocks (strides 4, 8 and dilated 8).
      aspp_rates: dilation rates of the ASPP branches.
      aspp_channels: channels of each ASPP branch and of its projection.
      low_level_channels: channels of the decoder's projection of the stem features.
      decoder_channels: channels of the decoder's two separable convolutions.
      batch_norm_momentum: BatchNorm's moving-average momentum (Keras' default 0.99).

    Returns:
      A `keras.Model` from float images `[B, H, W, 3]` in [0, 255] to `{"logits": [B, H, W,
      num_classes]}`, the output layout `evaluator.evaluate_model` reads.
    """
    def layer(*args, **kwargs):
        return _conv_bn_relu(*args, momentum=batch_norm_momentum, **kwargs)

    images = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
    stem = layer(x, stem_channels, strides=2, separable=False)
    first, second, third = block_channels
    x = layer(stem, first)
    x = layer(x, first, strides=2)
    x = layer(x, second)
    x = layer(x, third, strides=2)
    x = layer(x, third, dilation_rate=2)
    x = layer(x, third, dilation_rate=4)
    branches = [layer(x, aspp_channels, dilation_rate=rate) for rate in aspp_rates]
    x = layer(keras.layers.Concatenate()(branches), aspp_channels, kernel_size=1,
              separable=False)
    x = _ResizeLike()([x, stem])
    low_level = layer(stem, low_level_channels, kernel_size=1, separable=False)
    x = keras.layers.Concatenate()([x, low_level])
    x = layer(x, decoder_channels)
    x = layer(x, decoder_channels)
    logits = _ResizeLike()([keras.layers.Conv2D(num_classes, 1)(x), images])
    return keras.Model(images, {"logits": logits}, name="reference_cnn")


def train_and_evaluate(data_dir, split, num_classes, crop, steps=1500, batch_size=16,
                       learning_rate=2e-3, seed=0, log_every=250, model_kwargs=None):
    """Trains the reference network from scratch on one labelled split and evaluates it.

    Args:
      data_dir: directory with `train-*.tfrecord`, `val-*.tfrecord` and `split`.
      split: file name (in `data_dir`) of the labelled image ids, e.g. `train.txt`.
      num_classes: classes including background.
      crop: square training crop side (`wss.train`'s `train.crop_size`).
      steps: training steps.
      batch_size: images per step.
      learning_rate: Adam's learning rate (constant).
      seed: seeds the weights and the input stream.
      log_every: print the loss every this many steps (0: never).
      model_kwargs: optional keyword arguments of `build_reference_cnn`.

    Returns:
      dict: `split`, `labelled` (number of ids in the split), `steps`, `batch_size`, `params`,
      `miou`, `pixel_accuracy`, `per_class_iou`, `final_loss`, `seconds`.

    Raises:
      FileNotFoundError: naming the split file or the record pattern that is missing.
    """
    split_path = os.path.join(data_dir, split)
    if not os.path.isfile(split_path):
        raise FileNotFoundError(f"--splits: no split file {split_path}")
    with open(split_path) as f:
        labelled = sum(1 for line in f if line.strip())
    keras.utils.set_random_seed(seed)
    model = build_reference_cnn(num_classes, **(model_kwargs or {}))
    spec = pipeline.make_spec(os.path.join(data_dir, "train-*.tfrecord"), split_path)
    dataset = pipeline.labelled_dataset(spec, batch_size, num_classes, crop_size=(crop, crop),
                                        min_scale=1.0, max_scale=1.0, seed=seed)
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            logits = model(batch["image"], training=True)["logits"]
            loss = losses.pixel_cross_entropy(logits, batch["label"], upsample=False)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    start = time.time()
    loss = float("nan")
    for step, batch in enumerate(dataset.take(steps), start=1):
        loss = float(train_step(batch))
        if log_every and step % log_every == 0:
            print(f"  {split} step {step}/{steps} loss {loss:.4f} "
                  f"{time.time() - start:.0f} s", flush=True)
    seconds = time.time() - start
    val = pipeline.eval_dataset(pipeline.make_spec(os.path.join(data_dir, "val-*.tfrecord")),
                                num_classes)
    results = evaluator.evaluate_model(model, val, num_classes)
    return {"split": split, "labelled": labelled, "steps": steps, "batch_size": batch_size,
            "params": int(model.count_params()), "miou": results["miou"],
            "pixel_accuracy": results["pixel_accuracy"],
            "per_class_iou": results["per_class_iou"], "final_loss": loss, "seconds": seconds}


def format_table(data_dir, rows):
    """A markdown table of `train_and_evaluate` rows."""
    lines = [f"Reference CNN from scratch on {data_dir} (validation mIoU in %)", "",
             "| labelled split | images | steps x batch | params | mIoU | pixel accuracy "
             "| final loss | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(
            f"| {row['split']} | {row['labelled']} | {row['steps']} x {row['batch_size']} "
            f"| {row['params']} | {100 * row['miou']:.2f} | {100 * row['pixel_accuracy']:.2f} "
            f"| {row['final_loss']:.3f} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--num_classes", type=int, required=True)
    parser.add_argument("--crop", type=int, required=True, help="square training crop side")
    parser.add_argument("--splits", default="train.txt,labelled_1_16.txt",
                        help="comma-separated labelled split files in --data_dir")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    rows = [train_and_evaluate(args.data_dir, split, args.num_classes, args.crop, args.steps,
                               args.batch_size, args.learning_rate, args.seed)
            for split in args.splits.split(",") if split]
    print(format_table(args.data_dir, rows))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
