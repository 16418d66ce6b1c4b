"""Speed of the full-size DeepLabv3+ (Xception-65 by default) on this machine's CPU.

    python benchmarks/bench_models.py [--backbone=xception_65] [--size=513] [--batch_size=1]
                                      [--repeats=3] [--output_stride=16]

Times, in one process and after a warm-up call each:

  matmul            float32 2048 x 2048 matmul, the machine's reference GFLOP/s;
  forward           `model(images, training=False)` in a `tf.function`;
  forward+backward  gradients of `sum(logits) + sum(cls_logits)` w.r.t. all trainable
                    variables, `training=True` (BatchNorm in training mode, dropout on).

FLOPs of the forward pass are counted analytically (2 x multiply-adds of every convolution
and the classifier at the shapes of this input); forward+backward is counted as 3 x forward
(one pass for input gradients, one for weight gradients). Element-wise ops, BatchNorm and
resizes are not counted, so GFLOP/s is slightly pessimistic. XLA is off (slower on CPU).
"""

import argparse
import collections
import os
import time

import keras
import numpy as np
import tensorflow as tf

from wss.models import build_deeplab
from wss.models.layers import ConvBN, SeparableConvBN


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 matmul rate over `repeats` runs, in GFLOP/s."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def traced_shapes(model, layers, images):
    """Input and output shapes of `layers` in one inference pass of `model` over `images`.

    Returns:
      `{id(layer): (input shape, output shape)}` (tuples) for each layer that ran.
    """
    shapes, originals = {}, []
    for layer in layers:
        original = layer.call

        def wrapped(inputs, *args, _layer=layer, _original=original, **kwargs):
            result = _original(inputs, *args, **kwargs)
            shapes[id(_layer)] = (tuple(inputs.shape), tuple(result.shape))
            return result

        layer.call = wrapped
        originals.append((layer, original))
    try:
        model(images, training=False)
    finally:
        for layer, original in originals:
            layer.call = original
    return shapes


def conv_flops(model, images):
    """2 x multiply-adds of one forward pass: `{(part, kind): flops}`.

    Counted from the layers' kernels and output shapes as the network defines them, whatever
    op computes them (wss runs 1x1 convolutions as matrix products and a depthwise kernel
    whose other taps read only padding by its centre tap; the count is the reference's).
    `part` is `backbone` or `head` (ASPP, decoder, logits, classifier), `kind` is
    `convolution` (including 1x1) or `depthwise convolution`.
    """
    inner = {id(layer.conv) for layer in model._flatten_layers() if isinstance(layer, ConvBN)}
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, (ConvBN, SeparableConvBN))
              or (isinstance(layer, keras.layers.Conv2D) and id(layer) not in inner)]
    backbone = {id(layer) for layer in model.backbone._flatten_layers()}
    shapes = traced_shapes(model, layers, images)
    flops = collections.Counter()
    for layer in layers:
        b, h, w, _ = shapes[id(layer)][1]
        part = "backbone" if id(layer) in backbone else "head"
        if isinstance(layer, SeparableConvBN):  # Its depthwise part; the pointwise is a ConvBN.
            k_h, k_w, depth, _ = layer.depthwise.kernel.shape
            flops[(part, "depthwise convolution")] += 2.0 * b * h * w * k_h * k_w * depth
        else:
            kernel = layer.kernel.shape  # [k, k, C_in, C_out]
            macs = b * h * w * kernel[0] * kernel[1] * kernel[2] * kernel[3]
            flops[(part, "convolution")] += 2.0 * macs
    return flops


def forward_flops(model, images) -> float:
    """2 x multiply-adds of every convolution of one forward pass (`conv_flops`, summed)."""
    return float(sum(conv_flops(model, images).values()))


def time_call(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="xception_65")
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--output_stride", type=int, default=16)
    parser.add_argument("--num_classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = build_deeplab(args.backbone, num_classes=args.num_classes,
                          output_stride=args.output_stride)
    images = tf.random.uniform([args.batch_size, args.size, args.size, 3], 0.0, 255.0)
    flops = forward_flops(model, images)

    @tf.function
    def forward(x):
        out = model(x, training=False)
        return tf.reduce_sum(out["logits"]) + tf.reduce_sum(out["cls_logits"])

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_sum(out["logits"]) + tf.reduce_sum(out["cls_logits"])
        grads = tape.gradient(loss, model.trainable_variables)
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    reference = matmul_gflops()
    forward_s = time_call(lambda: forward(images).numpy(), args.repeats)
    backward_s = time_call(lambda: forward_backward(images).numpy(), args.repeats)

    print(f"DeepLabv3+ {args.backbone}, {args.size}x{args.size}, batch {args.batch_size}, "
          f"OS {args.output_stride}, {cores} CPU cores, TF {tf.__version__}")
    print(f"{'measurement':<18} {'time (s)':>10} {'GFLOP':>9} {'GFLOP/s':>9}")
    print(f"{'matmul 2048^3':<18} {2 * 2048**3 / reference / 1e9:>10.4f} "
          f"{2 * 2048**3 / 1e9:>9.1f} {reference:>9.1f}")
    for name, seconds, count in (("forward", forward_s, flops),
                                 ("forward+backward", backward_s, 3 * flops)):
        print(f"{name:<18} {seconds:>10.3f} {count / 1e9:>9.1f} {count / seconds / 1e9:>9.1f}")


if __name__ == "__main__":
    main()
