"""Training-step time of wss against the reference's TF1 graphs, in one process.

    python benchmarks/bench_train_step.py [--configs 129:4,321:2] [--reference_dir /tmp/wss_ref]
        [--warmup 2] [--steps 5] [--rounds 2] [--jit_compile] [--mixed_bfloat16] [--small]
        [--extra_rows]

For each configuration `crop:batch` (default: crop 129 with batch 4 + 4, crop 321 with batch
2 + 2) this builds the full Xception-65 DeepLabv3+ (output stride 16, or the demo's narrow one
with `--small`) and times `PseudoSegObjective.train_step` (the trainer's per-replica step:
forward, backward, SGD-momentum update, BatchNorm updates) under `tf.function` on constant
random batches:

* `supervised`: DeepLab alone (L_s + weight decay), as the reference's `train_sup.py`;
* `PseudoSeg`: semi mode (L_s, L_x, L_sa, L_u + weight decay, three backbone passes), as the
  reference's `train_wss.py` with unlabelled images.

With `--reference_dir` (a googleinterns/wss checkout; needs `tf_slim` and `tf_keras`, see
`benchmarks/bench_reference_step.py`) the reference's own TF1 graphs of both steps are built
and timed in the same process, and the table gives wss / reference ratios. Every row gets
`--warmup` untimed steps and then `--steps` timed ones per round; the rows take turns over
`--rounds` rounds (so slow drifts in machine load hit all rows alike), and the table shows the
median over all timed steps of all rounds, with the per-round medians beside it. The issue's
targets: supervised <= 1.0x the reference, PseudoSeg <= 0.7x the reference's PseudoSeg.
`--extra_rows` adds the supervised step with L_x + L_sa, PseudoSeg with the reference's
inference-mode Grad-CAM pass, and weak mode (image-level labels).

`--jit_compile` compiles the wss steps with XLA (meant for GPU / TPU; slow to compile and
slower on CPU), `--mixed_bfloat16` builds the model under Keras' `mixed_bfloat16` policy
(float32 variables, bfloat16 compute); neither applies to the reference rows. Benchmarks print
tables; they assert nothing about absolute times.
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_reference_step import time_steps  # noqa: E402 (same directory)

from wss.method import sgc
from wss.method.objective import PseudoSegObjective  # noqa: E402
from wss.models import build_deeplab  # noqa: E402
from wss.training import optim  # noqa: E402

NUM_CLASSES = 21
# (title, objective mode, SGC head and classifier losses, reference's Grad-CAM pass)
ROWS = {
    "supervised": ("supervised (L_s)", "supervised", False, False),
    "pseudoseg": ("PseudoSeg (semi)", "semi", True, False),
    "supervised_all": ("supervised + L_x + L_sa", "supervised", True, False),
    "pseudoseg_inference": ("PseudoSeg + inference Grad-CAM pass", "semi", True, True),
    "weak": ("weak (image-level labels)", "weak", True, False),
}


def random_batches(batch, crop, num_classes=NUM_CLASSES, seed=0):
    """Constant labelled and unlabelled batch dicts with the pipeline's keys."""
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


def build_models(crop, small=False, dtype=None, num_classes=NUM_CLASSES):
    """Xception-65 DeepLabv3+ (OS 16) and an SGC head with all variables created.

    Args:
        crop: Crop size of the batches (the head is built on features of this size).
        small: The demo's narrow model (width 0.125, 2 middle-flow units).
        dtype: Keras dtype policy of the model (`"mixed_bfloat16"`), None for float32.
        num_classes: Classes including background.

    Returns:
        `(model, sgc_head)`.
    """
    kwargs = dict(width_multiplier=0.125, middle_flow_units=2) if small else {}
    model = build_deeplab(num_classes=num_classes, dtype=dtype, **kwargs)
    head = sgc.make_sgc_head(num_classes)
    features = model(tf.zeros([1, crop, crop, 3]))["features"]
    sgc.sgc_logits(head, features["final"], features["penultimate"],  # Creates its variables.
                   tf.zeros([1, num_classes - 1]), classifier_kernel=model.classifier_kernel)
    return model, head


def make_step(row, model, head, labelled, unlabelled, jit_compile=False):
    """A `tf.function` running one optimizer step of a `ROWS` entry; returns the total loss.

    Args:
        row: A key of `ROWS`.
        model: The DeepLab model.
        head: The SGC head.
        labelled: Labelled batch dict.
        unlabelled: Unlabelled batch dict (ignored by supervised rows).
        jit_compile: Compile the step with XLA.

    Returns:
        A callable without arguments that runs the step and returns the loss as a float.
    """
    _, mode, with_head, inference_pass = ROWS[row]
    objective = PseudoSegObjective(model, head if with_head else None, mode=mode,
                                   use_classification_loss=with_head,
                                   gradcam_inference_pass=inference_pass)
    optimizer = optim.make_optimizer(1000)
    optimizer.build(objective.trainable_variables)
    second = unlabelled if mode != "supervised" else None

    @tf.function(jit_compile=jit_compile)
    def step():
        named, _, _ = objective.train_step(optimizer, labelled, second)
        return named["loss_total"]

    return lambda: float(step())


def _reference(reference_dir):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_reference_step

    return bench_reference_step.Reference(reference_dir)


def run_config(crop, batch, args, reference=None):
    """Builds and times every row of one configuration; returns `{row: [times per round]}`."""
    policy = "mixed_bfloat16" if args.mixed_bfloat16 else None
    model, head = build_models(crop, args.small, policy)
    labelled, unlabelled = random_batches(batch, crop)
    row_keys = ["supervised", "pseudoseg"]
    if args.extra_rows:
        row_keys += ["supervised_all", "pseudoseg_inference", "weak"]
    steps = {key: make_step(key, model, head, labelled, unlabelled, args.jit_compile)
             for key in row_keys}
    if reference is not None:
        for mode in ("supervised", "pseudoseg"):
            steps[f"reference_{mode}"] = reference.build(mode, crop, batch).run
    times = {key: [] for key in steps}
    for round_index in range(args.rounds):
        for key, step in steps.items():
            times[key].append(time_steps(step, args.warmup, args.steps))
            print(f"  crop {crop} batch {batch} round {round_index + 1}: {key} "
                  f"{statistics.median(times[key][-1]):.3f} s", flush=True)
    return times


def print_table(results, args):
    """Prints the step-time table of every configuration with the ratios."""
    model = "narrow (0.125, 2 middle units)" if args.small else "full"
    extras = [name for name, on in (("XLA", args.jit_compile),
                                    ("mixed_bfloat16", args.mixed_bfloat16)) if on]
    print(f"\nTrain step, {model} Xception-65 DeepLabv3+ OS 16, TF {tf.__version__}, "
          f"{len(os.sched_getaffinity(0))} CPU cores, {args.warmup} warm-up + {args.steps} "
          f"timed steps per row per round, {args.rounds} interleaved rounds"
          f"{', wss with ' + ' + '.join(extras) if extras else ''}\n")
    print("| crop, batch | step | median s | per-round medians | ratio | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (crop, batch), times in results.items():
        medians = {key: statistics.median(t for r in rounds for t in r)
                   for key, rounds in times.items()}
        for key, rounds in times.items():
            per_round = " / ".join(f"{statistics.median(r):.3f}" for r in rounds)
            ratio, target = "", ""
            if key.startswith("reference_"):
                title = f"reference TF1 {key.split('_', 1)[1]}"
            else:
                title = ROWS[key][0]
                reference_key = f"reference_{key}"
                if reference_key in medians:
                    ratio = f"{medians[key] / medians[reference_key]:.2f}x reference"
                    target = "<= 1.00x" if key == "supervised" else "<= 0.70x"
                elif key != "supervised":
                    ratio = f"{medians[key] / medians['supervised']:.2f}x supervised"
            print(f"| {crop}, {batch} + {batch} | {title} | {medians[key]:.3f} | {per_round} "
                  f"| {ratio} | {target} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="129:4,321:2",
                        help="comma-separated crop:batch pairs (batch per stream)")
    parser.add_argument("--reference_dir", default=None,
                        help="googleinterns/wss checkout: also time the reference's TF1 graphs")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jit_compile", action="store_true", help="XLA-compile the wss steps")
    parser.add_argument("--mixed_bfloat16", action="store_true",
                        help="build the wss model under the mixed_bfloat16 policy")
    parser.add_argument("--small", action="store_true", help="the demo's narrow model")
    parser.add_argument("--extra_rows", action="store_true",
                        help="also time supervised + L_x + L_sa, the inference pass, weak mode")
    args = parser.parse_args()
    reference = _reference(args.reference_dir) if args.reference_dir else None
    results = {}
    for config in args.configs.split(","):
        crop, batch = (int(value) for value in config.split(":"))
        results[(crop, batch)] = run_config(crop, batch, args, reference)
    print_table(results, args)


if __name__ == "__main__":
    main()
