"""wss's DeepLabv3+ against the reference's own TF1 model code: outputs and gradients.

    python benchmarks/check_reference_outputs.py --reference_dir=/tmp/wss_ref \
        [--sizes 129x129,65x49] [--batch 2]

Builds the network of the reference's `train_wss.py` with its own code (`core/model.py`'s
`multi_scale_logits` and DeepLab's `extract_features` with the 20-way image classifier; see
`benchmarks/bench_reference_step.py` for how the checkout is imported), Xception-65, output
stride 16, ASPP rates 6/12/18, decoder stride 4. Its variables get slim's random initial
values plus random BatchNorm parameters and statistics; they are saved with a
`tf.compat.v1` Saver and loaded into `wss.models.build_deeplab` with
`load_deeplab_checkpoint`. On the same random batch it then compares, as
`max |wss - reference| / max |reference|` per tensor:

* inference mode (moving statistics): decoder logits, classifier logits and every backbone
  endpoint both sides name;
* training mode (batch statistics; dropout made the identity on both sides, since the two
  draw different masks): the same tensors, and the gradients of a fixed random linear
  function of the classifier logits (the backbone's backward pass), and of one of the
  decoder logits (the whole network's), with respect to every variable, by kind (conv
  kernels, BatchNorm gamma, beta, biases), each relative to the largest gradient of its
  kind. The decoder's is ill-conditioned at small batches: the image-pooling branch's
  BatchNorm normalises `batch` values per channel (2 by default), which amplifies round-off
  on both sides alike. At random initialisation the gradients grow about a thousandfold from
  the last layer to the first, and so does any round-off: the `round-off floor` column is
  how much wss's own gradients change when the images change by 1e-7 (relative), the size
  of a float32 rounding; errors of that order are round-off, not a different computation.

At 129 x 129 the ASPP rates 12 and 18 exceed the 9 x 9 feature map, so the centre-tap
depthwise path of `SeparableConvBN` is compared too. It prints a table and asserts nothing.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_reference_step  # noqa: E402

from wss.models import build_deeplab, load_deeplab_checkpoint  # noqa: E402

NUM_CLASSES = bench_reference_step.NUM_CLASSES


def relative_error(ours, theirs):
    """`max |ours - theirs| / max |theirs|` (0 when both are zero)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.max(np.abs(theirs))
    return float(np.max(np.abs(ours - theirs)) / scale) if scale else float(
        np.max(np.abs(ours)))


def reference_graph(reference, images, training, weights):
    """The reference network on `images`: (logits, cls logits, endpoints, losses)."""
    common = reference.modules["third_party.deeplab.common"]
    model = reference.modules["core.model"]
    extractor = reference.modules["third_party.deeplab.core.feature_extractor"]
    height, width = images.shape[1:3]
    options = common.ModelOptions(outputs_to_num_classes={"semantic": NUM_CLASSES},
                                  crop_size=[height, width], atrous_rates=[6, 12, 18],
                                  output_stride=16)
    outputs, endpoints = model.multi_scale_logits(
        images, model_options=options, image_pyramid=None, weight_decay=4e-5,
        is_training=training, fine_tune_batch_norm=True, output_end_points=True)
    logits = outputs["semantic"][model.MERGED_LOGITS_SCOPE]
    _, cls_endpoints = extractor.extract_features(
        images, output_stride=16, multi_grid=None, model_variant="xception_65",
        weight_decay=4e-5, reuse=tf.compat.v1.AUTO_REUSE, is_training=training,
        fine_tune_batch_norm=True, global_pool=True, num_classes=NUM_CLASSES - 1)
    cls_logits = tf.reshape(cls_endpoints["xception_65/logits"], [-1, NUM_CLASSES - 1])
    losses = {"decoder": tf.reduce_sum(logits * weights[0]),
              "classifier": tf.reduce_sum(cls_logits * weights[1])}
    return logits, cls_logits, endpoints, losses


def randomise_batch_norm(session, rng):
    """Random gamma, beta and moving statistics for every BatchNorm of the TF1 graph."""
    for variable in tf.compat.v1.global_variables():
        name, shape = variable.op.name, variable.shape.as_list()
        values = {"gamma": rng.uniform(0.5, 1.5, shape), "beta": rng.normal(0, 0.2, shape),
                  "moving_mean": rng.normal(0, 0.2, shape),
                  "moving_variance": rng.uniform(0.5, 1.5, shape)}
        suffix = name.rsplit("/", 1)[-1]
        if "BatchNorm" in name and suffix in values:
            variable.load(values[suffix].astype(np.float32), session)


def compare(reference, height, width, batch, seed=0):
    """Rows `(case, tensor group, count, worst relative error, worst tensor)`."""
    rng = np.random.default_rng(seed)
    image_values = rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32)
    logits_height, logits_width = (height - 1) // 4 + 1, (width - 1) // 4 + 1
    weights = [rng.normal(size=(batch, logits_height, logits_width, NUM_CLASSES)),
               rng.normal(size=(batch, NUM_CLASSES - 1))]
    weights = [w.astype(np.float32) for w in weights]
    checkpoint = os.path.join(tempfile.mkdtemp(prefix="wss_crosscheck_"), "model.ckpt")
    results, rows = {}, []
    slim_dropout = reference.slim.dropout
    reference.slim.dropout = lambda inputs, *args, **kwargs: inputs
    try:
        for training in (False, True):
            graph = tf.Graph()
            with graph.as_default():
                tf.compat.v1.set_random_seed(seed)
                images = tf.constant(image_values)
                logits, cls_logits, endpoints, losses = reference_graph(
                    reference, images, training, weights)
                variables = tf.compat.v1.trainable_variables()
                names = [v.op.name for v in variables]
                gradients = {key: dict(zip(names, tf.gradients(loss, variables)))
                             for key, loss in losses.items()}
                with tf.compat.v1.Session(graph=graph) as session:
                    session.run(tf.compat.v1.global_variables_initializer())
                    if not training:
                        randomise_batch_norm(session, rng)
                        tf.compat.v1.train.Saver().save(session, checkpoint)
                    else:
                        tf.compat.v1.train.Saver().restore(session, checkpoint)
                    fetched = session.run({
                        "logits": logits, "cls_logits": cls_logits,
                        "endpoints": {k: v for k, v in endpoints.items()
                                      if k.startswith("xception_65/")},
                        "gradients": {key: {name: value for name, value in grads.items()
                                            if value is not None}
                                      for key, grads in gradients.items()}})
            results[training] = fetched
    finally:
        reference.slim.dropout = slim_dropout
    model = build_deeplab(num_classes=NUM_CLASSES, output_stride=16, atrous_rates=(6, 12, 18),
                          aspp_dropout_rate=0.0, classifier_dropout_rate=0.0)
    report = load_deeplab_checkpoint(model, checkpoint)
    if report.missing or report.unused:
        raise SystemExit(f"checkpoint mismatch: missing {report.missing}, "
                         f"unused {report.unused}")
    names = {id(variable): name for variable, name in model.tf1_variable_table()}
    for training in (False, True):
        theirs = results[training]
        out, gradients = wss_gradients(model, image_values, training, weights, names)
        if training:  # The round-off floor: the gradients for images changed by 1e-7.
            noise = 1.0 + 1e-7 * rng.standard_normal(image_values.shape)
            _, floor = wss_gradients(model, (image_values * noise).astype(np.float32),
                                     training, weights, names)
        case = f"{height}x{width}, {'training' if training else 'inference'} mode"
        groups = {
            "decoder logits": {"logits": (out["logits"], theirs["logits"])},
            "classifier logits": {"cls": (out["cls_logits"], theirs["cls_logits"])},
            "backbone endpoints": {
                name: (out["features"][name[len("xception_65/"):]], value)
                for name, value in theirs["endpoints"].items()
                if name[len("xception_65/"):] in out["features"]},
        }
        for group, pairs in groups.items():
            errors = {name: relative_error(ours, ref) for name, (ours, ref) in pairs.items()}
            worst = max(errors, key=errors.get)
            rows.append((case, group, len(errors), errors[worst], worst, None))
        if training:
            for key in ("classifier", "decoder"):
                rows += gradient_rows(case, key, gradients[key], theirs["gradients"][key],
                                      floor[key])
    return rows


def wss_gradients(model, images, training, weights, names):
    """wss's outputs and the gradients of both losses by TF1 name: (outputs, {loss: grads})."""
    with tf.GradientTape(persistent=True) as tape:
        out = model(tf.constant(images), training=training)
        losses = {"decoder": tf.reduce_sum(out["logits"] * weights[0]),
                  "classifier": tf.reduce_sum(out["cls_logits"] * weights[1])}
    variables = model.trainable_variables
    return out, {key: dict(zip([names[id(v)] for v in variables],
                               tape.gradient(loss, variables)))
                 for key, loss in losses.items()}


def gradient_rows(case, loss, ours, theirs, floor):
    """Gradient errors by kind, each relative to the largest gradient of its kind.

    Per tensor the error would be meaningless where the exact gradient is zero: a BatchNorm
    offset followed by a linear layer and another training-mode BatchNorm has none (the
    batch mean removes it), and both sides return round-off there.
    """
    kinds = {"conv kernels": ("weights", "depthwise_weights"), "BatchNorm gamma": ("gamma",),
             "BatchNorm beta": ("beta",), "biases": ("biases",)}
    rows = []
    for kind, suffixes in kinds.items():
        pairs = {name: (np.asarray(ours[name]), np.asarray(value))
                 for name, value in theirs.items()
                 if value is not None and name in ours and name.rsplit("/", 1)[-1] in suffixes}
        if not pairs:
            continue
        scale = max(np.max(np.abs(value)) for _, value in pairs.values())
        errors = {name: float(np.max(np.abs(a.astype(np.float64) - b)) / scale)
                  for name, (a, b) in pairs.items()}
        floors = [float(np.max(np.abs(np.asarray(floor[name], np.float64) - a))) / scale
                  for name, (a, _) in pairs.items()]
        worst = max(errors, key=errors.get)
        rows.append((case, f"{loss} gradients: {kind}", len(errors), errors[worst], worst,
                     max(floors)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference_dir", required=True)
    parser.add_argument("--sizes", default="129x129,65x49")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    reference = bench_reference_step.Reference(args.reference_dir)
    reference.set_flags("supervised", 129, args.batch, tempfile.mkdtemp(), on_gpu=False)
    rows = []
    for size in args.sizes.split(","):
        height, width = (int(value) for value in size.split("x"))
        rows += compare(reference, height, width, args.batch)
    print("\n| case | tensors | compared | worst relative error | round-off floor "
          "| worst tensor |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, group, count, error, worst, floor in rows:
        floor = "" if floor is None else f"{floor:.1e}"
        print(f"| {case} | {group} | {count} | {error:.1e} | {floor} | `{worst}` |")


if __name__ == "__main__":
    main()
