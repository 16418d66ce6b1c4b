"""Cost of Grad-CAM + SGC as a share of one PseudoSeg training step.

A PseudoSeg step is approximated (the trainer is measured separately) as

* forward + backward of the full DeepLab model on the labelled batch and on the strong view of
  the unlabelled batch (gradients of a mean of the outputs, no optimizer update), plus
* a forward pass on the weak view (inference mode, no gradient).

The PseudoSeg core adds, on top of this:

* weak view: closed-form Grad-CAM from `features['final']`, the SGC head (forward), upsampling
  of the SGC logits to the decoder resolution and calibrated fusion with sharpening;
* labelled batch: Grad-CAM, the SGC head forward and backward through `L_sa` (only the head's
  variables receive gradients).

Both are compiled `tf.function`s (no XLA) timed after warm-up, run round-robin; the table
reports the median of `--repeats` runs: the core alone, the step with the core fused in, and
the core's share both ways (isolated time / step time, and (step with core - step) / step with
core). On a loaded machine the difference of two multi-second steps is noisy; the isolated
figure is the stable one.

Crop 513 is too slow for a 2-core CPU; the default uses crop 129 (the DESIGN.md reference point,
decoder 33 x 33, CAM 9 x 9) and batch 4 + 4 on the full Xception-65 at output stride 16. Use
`--crop 257` for a closer look at the CAM-size dependence (attention is quadratic in CAM pixels).

Run: `python benchmarks/bench_sgc.py [--crop 129] [--batch 4] [--repeats 5]`.
"""

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from wss.method import gradcam, losses, pseudo_labels, sgc
from wss.models import build_deeplab


def _run(fn, args):
    start = time.perf_counter()
    out = fn(*args)
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
    return time.perf_counter() - start


def _time_interleaved(calls, repeats):
    """Median seconds of each `(fn, args)`, run round-robin to share machine-load drift."""
    for fn, args in calls:  # trace + warm up
        _run(fn, args)
        _run(fn, args)
    times = [[] for _ in calls]
    for _ in range(repeats):
        for i, (fn, args) in enumerate(calls):
            times[i].append(_run(fn, args))
    return [statistics.median(t) for t in times]


def main():
    """Builds the model, times the three functions and prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=129)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num_classes", type=int, default=21)
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    args = parser.parse_args()

    model = build_deeplab(num_classes=args.num_classes, width_multiplier=args.width_multiplier)
    head = sgc.make_sgc_head(args.num_classes)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.crop, args.crop, 3)
    labelled = tf.constant(rng.uniform(0, 255, shape), tf.float32)
    weak = tf.constant(rng.uniform(0, 255, shape), tf.float32)
    strong = tf.constant(rng.uniform(0, 255, shape), tf.float32)
    labels = tf.constant(rng.integers(0, args.num_classes, shape[:3]), tf.int32)
    class_labels = tf.constant(rng.random((args.batch, args.num_classes - 1)) < 0.2, tf.float32)
    valid = tf.ones(shape[:3], tf.float32)
    # Build the head once.
    feats = model(weak, training=False)["features"]
    cams0 = gradcam.gradcam(feats["final"], class_labels, classifier_kernel=model.classifier_kernel)
    head(cams0, [feats["penultimate"], feats["final"]], valid, training=False)
    variables = model.trainable_variables

    def core(weak_out, labelled_out):
        weak_feats = weak_out["features"]
        image_labels = gradcam.predicted_image_labels(weak_out["cls_logits"])
        cams = gradcam.gradcam(weak_feats["final"], image_labels,
                               classifier_kernel=model.classifier_kernel)
        sgc_weak = head(cams, [weak_feats["penultimate"], weak_feats["final"]], valid,
                        training=True)
        targets, weights = pseudo_labels.make_pseudo_labels(weak_out["logits"], sgc_weak)
        lab_feats = labelled_out["features"]
        with tf.GradientTape() as tape:
            cams_l = gradcam.gradcam(lab_feats["final"], class_labels,
                                     classifier_kernel=model.classifier_kernel)
            sgc_l = head(cams_l, [lab_feats["penultimate"], lab_feats["final"]], valid,
                         training=True)
            loss = losses.sgc_loss(sgc_l, labels)
        grads = tape.gradient(loss, head.trainable_variables)
        return targets, weights, grads

    @tf.function
    def step(with_core):
        with tf.GradientTape() as tape:
            out_l = model(labelled, training=True)
            out_s = model(strong, training=True)
            loss = (tf.reduce_mean(out_l["logits"]) + tf.reduce_mean(out_s["logits"])
                    + tf.reduce_mean(out_l["cls_logits"]))
        grads = tape.gradient(loss, variables)
        out_w = model(weak, training=False)
        extra = core(out_w, out_l) if with_core else ()
        return grads, out_w["logits"], extra

    @tf.function
    def core_only(weak_out, labelled_out):
        return core(weak_out, labelled_out)

    weak_out = model(weak, training=False)
    labelled_out = model(labelled, training=True)
    t_core, t_step, t_step_core = _time_interleaved(
        [(core_only, (weak_out, labelled_out)), (step, (False,)), (step, (True,))],
        args.repeats)

    cam = weak_out["features"]["final"].shape[1]
    dec = weak_out["logits"].shape[1]
    print(f"Xception-65 x{args.width_multiplier}, crop {args.crop}, batch {args.batch} + "
          f"{args.batch}, {args.num_classes} classes, CAM {cam}x{cam}, decoder {dec}x{dec}, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'} threads")
    print(f"{'measure':<44}{'seconds':>10}")
    print(f"{'step without core (fwd+bwd L,S + fwd W)':<44}{t_step:>10.4f}")
    print(f"{'Grad-CAM + SGC + fusion + L_sa (isolated)':<44}{t_core:>10.4f}")
    print(f"{'step with core':<44}{t_step_core:>10.4f}")
    print(f"{'share, isolated / step':<44}{100 * t_core / t_step:>9.2f}%")
    print(f"{'share, (with - without) / with':<44}"
          f"{100 * (t_step_core - t_step) / t_step_core:>9.2f}%")


if __name__ == "__main__":
    main()
