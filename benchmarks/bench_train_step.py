"""Cost of a PseudoSeg training step relative to a supervised step, same labelled batch.

    python benchmarks/bench_train_step.py [--crop 129] [--batch 4] [--steps 5] [--small]

Builds full-size Xception-65 DeepLabv3+ (or the demo's narrow one with --small), and times
`PseudoSegObjective.train_step` (the trainer's per-replica step: forward, backward, SGD update)
in `supervised`, `semi` and `weak` modes on random batches, with and without the Grad-CAM
inference pass of the reference. Prints a table of seconds per step and the ratio to the
supervised step; all figures come from one run, so compare ratios, not absolute times.
Target (project issue): semi / supervised <= 2.5 (the reference design is ~3.7x by op count).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from wss import optim, sgc  # noqa: E402
from wss.models import build_deeplab  # noqa: E402
from wss.objective import PseudoSegObjective  # noqa: E402


def random_batches(batch, crop, num_classes, seed=0):
    rng = np.random.default_rng(seed)

    def images():
        return tf.constant(rng.uniform(0, 255, (batch, crop, crop, 3)), tf.float32)

    labels = tf.constant(rng.integers(0, num_classes, (batch, crop, crop)), tf.int32)
    class_labels = tf.constant(rng.integers(0, 2, (batch, num_classes - 1)), tf.float32)
    ones = tf.ones([batch, crop, crop])
    labelled = {"image": images(), "label": labels, "valid": ones, "class_labels": class_labels}
    unlabelled = {"image": images(), "strong": images(), "label": labels, "valid": ones,
                  "strong_valid": ones, "class_labels": class_labels}
    return labelled, unlabelled


def time_step(mode, model, head, labelled, unlabelled, steps, inference_pass=False):
    objective = PseudoSegObjective(model, head, mode=mode, use_classification_loss=bool(head),
                                   gradcam_inference_pass=inference_pass)
    optimizer = optim.make_optimizer(1000)
    optimizer.build(objective.trainable_variables)

    @tf.function
    def step():
        named, _, _ = objective.train_step(optimizer, labelled,
                                           unlabelled if mode != "supervised" else None)
        return named["loss_total"]

    step().numpy()  # Trace and warm up.
    start = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=129)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="the demo's narrow model")
    args = parser.parse_args()
    num_classes = 21
    kwargs = dict(width_multiplier=0.125, middle_flow_units=2) if args.small else {}
    model = build_deeplab(num_classes=num_classes, **kwargs)
    head = sgc.make_sgc_head(num_classes)
    features = model(tf.zeros([1, args.crop, args.crop, 3]))["features"]
    sgc.sgc_logits(head, features["final"], features["penultimate"],  # Creates its variables.
                   tf.zeros([1, num_classes - 1]), classifier_kernel=model.classifier_kernel)
    labelled, unlabelled = random_batches(args.batch, args.crop, num_classes)
    rows = [("supervised DeepLab (L_s only)", "supervised", None),
            ("supervised (L_s + L_x + L_sa)", "supervised", False),
            ("semi (PseudoSeg, default: 3 backbone passes)", "semi", False),
            ("semi + reference's Grad-CAM inference pass", "semi", True),
            ("weak (image-level labels)", "weak", False)]
    results = []
    for title, mode, inference_pass in rows:
        seconds = time_step(mode, model, None if inference_pass is None else head, labelled,
                            unlabelled, args.steps, bool(inference_pass))
        results.append((title, seconds))
    base = results[0][1]
    print(f"\nTrain step, {'narrow' if args.small else 'full'} Xception-65, crop {args.crop}, "
          f"batch {args.batch} + {args.batch}, {args.steps} timed steps, "
          f"{os.cpu_count()} CPU cores\n")
    print("| step | seconds | ratio to supervised DeepLab |\n| --- | --- | --- |")
    for title, seconds in results:
        print(f"| {title} | {seconds:.3f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
