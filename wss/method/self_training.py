"""Self-training (the PseudoSeg paper's table 6 baseline): offline hard pseudo labels.

The self-training baseline of Zoph et al. (2020), as the PseudoSeg paper compares with it: a
teacher trained on the labelled images only (`train.mode = 'supervised'`) predicts every
unlabelled image once, at full resolution; its argmax is kept where its softmax confidence is
above `self_training.threshold` (0.5) and the other pixels get the ignore label. A student
(`train.mode = 'self_training'`, `wss.tasks.segmentation`) then trains like the supervised
baseline on the labelled images and these pseudo-labelled ones (`wss.method.objective`).

Files, in `LOGDIR/pseudo_labels/` (`pseudo_label_dir`):

* `train-0000i-of-0000N.tfrecord`: one record per unlabelled image in the project's schema
  (`wss.data.records`): the unlabelled record's image bytes and `image/filename` as they were,
  the pseudo label as the mask (`image/segmentation/class/encoded`, 255 = ignore), and no
  `image/class/label`, so nothing of the unlabelled records' own masks or image labels reaches
  the student;
* `complete.json` (`MARKER_FILENAME`), written last and atomically: the settings the labels were
  made with (teacher binding and checkpoint, threshold, scales, flip, unlabelled images) and
  how many images and pixels were kept (and, where the unlabelled records have masks, how many
  kept pixels are right).

A directory with the marker is reused as it is (a resumed run); one without it is the remnant
of an interrupted write, removed and written again. Reusing labels made with other settings
fails naming the differences.
"""

import json
import os
import time

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from wss import config as config_lib
from wss.data import pipeline, records
from wss.data.records import IGNORE_LABEL
from wss.training import rundir

PSEUDO_LABEL_DIRNAME = "pseudo_labels"
MARKER_FILENAME = "complete.json"
RECORD_PREFIX = "train"


def pseudo_label_dir(logdir):
    """Where a self-training run keeps its pseudo labels: `LOGDIR/pseudo_labels`."""
    return os.path.join(logdir, PSEUDO_LABEL_DIRNAME)


def pseudo_label_spec(directory):
    """The `DatasetSpec` of the pseudo-labelled records in `directory`."""
    return pipeline.DatasetSpec(os.path.join(directory, f"{RECORD_PREFIX}-*.tfrecord"))


def read_marker(directory):
    """The completion marker of `directory` (a dict), or None when the labels are incomplete."""
    path = os.path.join(directory, MARKER_FILENAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


def hard_pseudo_labels(probabilities, threshold):
    """The teacher's argmax where its confidence is above `threshold`, else the ignore label.

    Args:
      probabilities: float `[B, H, W, C]` class probabilities.
      threshold: a pixel is kept when its largest probability is strictly above this.

    Returns:
      (int32 `[B, H, W]` labels with `IGNORE_LABEL` where not kept, bool `[B, H, W]` kept).
    """
    probabilities = tf.convert_to_tensor(probabilities)
    confidence = tf.reduce_max(probabilities, axis=-1)
    keep = confidence > tf.cast(threshold, confidence.dtype)
    labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.where(keep, labels, tf.fill(tf.shape(labels), IGNORE_LABEL)), keep


def background_log_ratio(probabilities):
    """log p(background) - log max p(foreground) per pixel (probabilities floored at 1e-12).

    Args:
      probabilities: float `[..., C]` class probabilities (class 0 the background).

    Returns:
      float `[...]` of the same dtype: positive where the argmax is the background.
    """
    probabilities = tf.convert_to_tensor(probabilities)
    tiny = tf.constant(1e-12, probabilities.dtype)
    return (tf.math.log(tf.maximum(probabilities[..., 0], tiny))
            - tf.math.log(tf.maximum(tf.reduce_max(probabilities[..., 1:], axis=-1), tiny)))


def background_log_ratios(probabilities, max_pixels=4096):
    """log p(background) - log max p(foreground) of (a strided sample of) an image's pixels.

    A pixel is labelled background exactly when its ratio is above the background bias
    (`with_background_bias`), so the background share of labels made with bias `b` is the
    share of ratios above `b`.

    Args:
      probabilities: float `[H, W, C]` class probabilities (class 0 the background).
      max_pixels: at most about this many pixels, taken on a regular grid.

    Returns:
      float64 `[N]`.
    """
    probabilities = np.asarray(probabilities, np.float64)
    height, width = probabilities.shape[:2]
    stride = max(1, int(np.ceil(np.sqrt(height * width / max_pixels))))
    sample = probabilities[::stride, ::stride].reshape(-1, probabilities.shape[-1])
    return background_log_ratio(sample).numpy()


def background_bias_for_share(log_ratios, share):
    """The background bias whose labels have `share` background pixels (over the sample).

    Args:
      log_ratios: float `[N]` from `background_log_ratios`.
      share: the wanted background share, in (0, 1).

    Returns:
      float: `b` such that the share of ratios above `b` is `share`: positive when the
      teacher labels more background than that, negative when less.
    """
    return float(np.quantile(np.asarray(log_ratios, np.float64), 1.0 - share))


def with_background_bias(probabilities, bias):
    """Probabilities with the background's divided by `exp(bias)`, renormalised.

    Args:
      probabilities: float `[..., C]` (class 0 the background).
      bias: a float scalar (0 leaves them unchanged).

    Returns:
      float `[..., C]` of the same dtype.
    """
    probabilities = tf.convert_to_tensor(probabilities)
    dtype = probabilities.dtype
    bias = tf.cast(bias, dtype) if tf.is_tensor(bias) else tf.constant(bias, dtype)
    scale = tf.exp(-bias)
    num_classes = tf.shape(probabilities)[-1]
    factors = tf.concat([scale[None], tf.ones([num_classes - 1], probabilities.dtype)], 0)
    scaled = probabilities * factors
    return scaled / tf.reduce_sum(scaled, axis=-1, keepdims=True)


def _encoded_image(serialized):
    parsed = tf.io.parse_single_example(serialized, {
        records.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string, ""),
        records.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, "")})
    return parsed[records.IMAGE_ENCODED], parsed[records.IMAGE_FILENAME]


def background_band(probabilities, bias):
    """The pixels whose argmax the background bias changes (to or from the background).

    Args:
      probabilities: float `[..., C]` (class 0 the background), not biased.
      bias: a float scalar (`background_bias_for_share`).

    Returns:
      bool `[...]`: where `log p_0 - log max_{c>0} p_c` lies between 0 and `bias`.
    """
    ratio = background_log_ratio(probabilities)
    bias = tf.cast(bias, ratio.dtype)
    return (ratio > tf.minimum(bias, 0.0)) & (ratio <= tf.maximum(bias, 0.0))


def _background_bias(predict, spec, num_classes, share, prior_images):
    """The background bias that gives `predict`'s labels `share` background (first pass).

    Args:
      predict: `write_pseudo_labels`'s prediction function of (images, bias).
      spec: the images to label.
      num_classes: classes including background.
      share: the wanted background share, in (0, 1).
      prior_images: at most this many images, evenly spaced over `spec`.

    Returns:
      The bias, a float.
    """
    start = time.time()
    count = int(pipeline.read_records(spec, check_ids=False).reduce(
        np.int64(0), lambda total, _: total + 1))
    step = max(1, count // max(1, prior_images))
    dataset = pipeline.eval_dataset(spec, num_classes=num_classes, batch_size=1).shard(step, 0)
    ratios = [background_log_ratios(predict(batch["image"], tf.constant(0.0))[2][0].numpy())
              for batch in dataset.take(prior_images)]
    bias = background_bias_for_share(np.concatenate(ratios), share) if ratios else 0.0
    print(f"Pseudo labels: background bias {bias:+.3f} for a {share:.1%} background share "
          f"(the teacher's argmax on {len(ratios)} images, {time.time() - start:.1f} s)",
          flush=True)
    return bias


def write_pseudo_labels(model, spec, num_classes, output_dir, threshold=0.5, scales=(1.0,),
                        flip=False, num_shards=4, log_every=500, relabel=None,
                        background_share=None, background_mode="bias", prior_images=256):
    """Predicts every image of `spec` with `model` and writes the hard pseudo labels.

    Images are read by `wss.data.pipeline.eval_dataset` and predicted at full resolution by
    `wss.evaluation.evaluator.predict_probabilities` (as evaluation does, one image at a time); each
    record keeps its image bytes and `image/filename` and gets the pseudo label as its mask.
    The shards are written by `wss.data.records.write_records` (temporary files renamed at the
    end). No completion marker is written here (see `prepare_pseudo_labels`).

    Args:
      model: the teacher, a DeepLab model (`model(images, training=False)['logits']`).
      spec: the unlabelled images (a `DatasetSpec` or a source).
      num_classes: classes including background.
      output_dir: the directory of the shards (`RECORD_PREFIX-0000i-of-0000N.tfrecord`).
      threshold: keep a pixel when the teacher's largest probability is above this.
      scales: inference scales (`predict_probabilities`).
      flip: also predict the flipped images.
      num_shards: output files.
      log_every: print progress every this many images.
      relabel: None, or a function of (image `[H, W, 3]`, teacher probabilities `[H, W, C]`)
        that returns the labels `[H, W]` to keep instead of the teacher's argmax (the kept
        pixels are still those of `threshold`; `wss.method.object_naming.CropNamer`).
      background_share: None, or the share of background the labels should have (e.g. that
        of the labelled masks): a first pass over up to `prior_images` of the images, evenly
        spaced, finds the background bias that gives the teacher's argmax this share
        (`background_bias_for_share`), and every image's probabilities are divided by it
        (`with_background_bias`) before the argmax, the threshold and `relabel`
        (`background_mode` 'bias'), or the pixels whose argmax it would change get the
        ignore label after them (`background_band`; 'ignore').
      background_mode: 'bias' or 'ignore', as above.
      prior_images: images of that first pass.

    Returns:
      dict with `num_images`, `num_pixels`, `kept_pixels`, `kept_fraction` and, over the kept
      pixels of records that have a mask, `scored_pixels` and `accuracy` (None without masks);
      with `relabel` also `teacher_accuracy` (the teacher's argmax on the same pixels) and,
      over the foreground pixels of the masks, `foreground_accuracy` and
      `teacher_foreground_accuracy`; with `background_share` also `background_bias` and
      `background_share_target`.

    Raises:
      RuntimeError: if the image stream and the records fall out of step (never expected).
    """
    from wss.evaluation import evaluator as evaluation

    config_lib.check_choice("background_mode", background_mode, ("bias", "ignore"))
    biased = background_share is not None and background_mode == "bias"
    banded = background_share is not None and background_mode == "ignore"

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                  tf.TensorSpec([], tf.float32)])
    def predict(images, bias):
        probabilities = evaluation.predict_probabilities(model, images, scales, flip)
        # The band only matters in 'ignore' mode: skip its ops on the default path.
        band = background_band(probabilities, bias) if banded else tf.zeros([], tf.bool)
        if biased:  # Else exactly the teacher's probabilities.
            probabilities = with_background_bias(probabilities, bias)
        labels, keep = hard_pseudo_labels(probabilities, threshold)
        return labels, keep, probabilities, band

    images = pipeline.eval_dataset(spec, num_classes=num_classes, batch_size=1)
    bias = tf.constant(0.0)
    if background_share is not None:
        bias = tf.constant(_background_bias(predict, spec, num_classes, background_share,
                                            prior_images), tf.float32)
    encoded = pipeline.read_records(spec, check_ids=False).map(
        tf.autograph.experimental.do_not_convert(_encoded_image))
    counts = {"num_images": 0, "num_pixels": 0, "kept_pixels": 0, "scored_pixels": 0,
              "correct_pixels": 0, "teacher_correct_pixels": 0, "foreground_pixels": 0,
              "foreground_correct": 0, "teacher_foreground_correct": 0}

    def examples():
        for batch, (image_bytes, filename) in tf.data.Dataset.zip((images, encoded)):
            filename = filename.numpy().decode("utf-8")
            if batch["filename"][0].numpy().decode("utf-8") != filename:
                raise RuntimeError(f"pseudo labels: the image stream is at "
                                   f"{batch['filename'][0].numpy()!r}, the records at "
                                   f"{filename!r}")
            labels, keep, probabilities, band = predict(batch["image"], bias)
            labels, keep = labels[0].numpy(), keep[0].numpy()
            teacher_labels, teacher_keep = labels, keep
            if relabel is not None:
                teacher_labels = np.where(keep, labels, IGNORE_LABEL)
                renamed = relabel(batch["image"][0].numpy(), probabilities[0].numpy())
                labels = np.where(keep, renamed, IGNORE_LABEL).astype(labels.dtype)
                keep = labels != IGNORE_LABEL  # The renaming may leave regions unnamed.
            if banded:
                labels = np.where(band[0].numpy(), IGNORE_LABEL, labels).astype(labels.dtype)
                keep = labels != IGNORE_LABEL
            counts["num_images"] += 1
            counts["num_pixels"] += keep.size
            counts["kept_pixels"] += int(keep.sum())
            if bool(batch["has_mask"][0]):
                truth = batch["label"][0].numpy()
                scored = keep & (truth != IGNORE_LABEL)
                counts["scored_pixels"] += int(scored.sum())
                counts["correct_pixels"] += int((labels[scored] == truth[scored]).sum())
                counts["teacher_correct_pixels"] += int(
                    (teacher_labels[scored] == truth[scored]).sum())
                # Over the teacher's kept foreground, so unnamed regions count as not right.
                foreground = teacher_keep & (truth != IGNORE_LABEL) & (truth > 0)
                counts["foreground_pixels"] += int(foreground.sum())
                counts["foreground_correct"] += int(
                    (labels[foreground] == truth[foreground]).sum())
                counts["teacher_foreground_correct"] += int(
                    (teacher_labels[foreground] == truth[foreground]).sum())
            if counts["num_images"] % log_every == 0:
                print(f"Pseudo labels: {counts['num_images']} images", flush=True)
            yield records.encode_example(image_bytes.numpy(), filename,
                                         mask=labels.astype(np.uint8), num_classes=num_classes)

    records.write_records(examples(), os.path.join(output_dir, RECORD_PREFIX), num_shards)
    summary = {key: counts[key] for key in ("num_images", "num_pixels", "kept_pixels",
                                            "scored_pixels")}
    summary["kept_fraction"] = counts["kept_pixels"] / max(counts["num_pixels"], 1)
    summary["accuracy"] = (counts["correct_pixels"] / counts["scored_pixels"]
                           if counts["scored_pixels"] else None)
    if background_share is not None:
        summary["background_share_target"] = float(background_share)
        summary["background_bias"] = float(bias)
        summary["background_mode"] = background_mode
    if relabel is not None:
        scored, foreground = counts["scored_pixels"], counts["foreground_pixels"]
        summary["teacher_accuracy"] = (counts["teacher_correct_pixels"] / scored
                                       if scored else None)
        summary["foreground_accuracy"] = (counts["foreground_correct"] / foreground
                                          if foreground else None)
        summary["teacher_foreground_accuracy"] = (
            counts["teacher_foreground_correct"] / foreground if foreground else None)
    return summary


def _settings(teacher_checkpoint, spec, threshold, scales, flip):
    """What the pseudo labels depend on, as stored in (and compared with) the marker."""
    return {"teacher_checkpoint": str(teacher_checkpoint).rstrip("/"),
            "threshold": float(threshold), "scales": [float(s) for s in scales],
            "flip": bool(flip), "unlabelled": pipeline.describe_spec(spec)}


def _check_reusable(directory, marker, settings):
    """Fails naming the settings in which the labels in `directory` differ from this run's."""
    stored = marker.get("settings", {})
    differences = [f"{key} {stored.get(key)!r} (this run: {value!r})"
                   for key, value in settings.items() if stored.get(key) != value]
    # A setting recorded only when set (e.g. offline_match_background) and unset in this run.
    differences += [f"{key} {value!r} (this run: unset)" for key, value in stored.items()
                    if key not in settings]
    if differences:
        raise ValueError(
            f"{directory} holds pseudo labels made with other settings: "
            f"{'; '.join(differences)}. A run reuses its pseudo labels only with the same "
            "train.teacher_checkpoint, self_training.threshold / scales / flip and unlabelled "
            f"images; remove {directory} to make new ones, or train into another --logdir.")


def _describe(summary):
    text = (f"{summary['num_images']} images, {summary['kept_fraction'] * 100:.1f}% of pixels "
            "kept")
    if summary.get("accuracy") is not None:
        text += (f", {summary['accuracy'] * 100:.1f}% of the kept pixels right (against the "
                 "unlabelled records' masks)")
    if summary.get("background_bias") is not None:
        text += (f", background bias {summary['background_bias']:+.3f} (for a "
                 f"{summary['background_share_target'] * 100:.1f}% background share)")
    if summary.get("foreground_accuracy") is not None:
        text += (f"; the foreground named right: {summary['foreground_accuracy'] * 100:.1f}% "
                 f"(the teacher's argmax: "
                 f"{summary['teacher_foreground_accuracy'] * 100:.1f}%)")
    return text


def resolve_teacher(teacher_checkpoint):
    """The teacher's checkpoint prefix; a missing one fails naming the binding."""
    from wss import experiment

    try:
        return experiment.latest_checkpoint_path(teacher_checkpoint)
    except FileNotFoundError as error:
        raise ValueError(f"train.teacher_checkpoint={teacher_checkpoint!r}: {error} (give the "
                         "log directory or a checkpoint path of a supervised run)") from None


def restore_teacher(checkpoint, model, sgc_head=None):
    """Restores `train.teacher_checkpoint` into a teacher built with this run's bindings.

    Args:
      checkpoint: the teacher's log directory or checkpoint prefix.
      model: the teacher's DeepLab model, built.
      sgc_head: its SGC head, or None.

    Returns:
      The checkpoint prefix restored.

    Raises:
      wss.training.checkpointing.CheckpointError: naming `train.teacher_checkpoint` when the
        checkpoint does not match the model (or is broken).
    """
    from wss import experiment
    from wss.training import checkpointing

    try:
        return experiment.restore_models(checkpoint, model, sgc_head)
    except checkpointing.CheckpointError as error:
        raise type(error)(f"train.teacher_checkpoint: {error}. The teacher is built with this "
                          "run's model bindings (build_deeplab), so it must have been trained "
                          "with the same model.") from error


def _load_teacher(checkpoint, num_classes):
    """The DeepLab model of the current gin bindings with the teacher's weights (float32)."""
    from wss import experiment

    model, _ = experiment.build_models(num_classes=num_classes, with_sgc_head=False)
    restore_teacher(checkpoint, model)
    return model


def _wait_for_marker(directory, wait_secs):
    deadline = time.time() + wait_secs
    while True:
        marker = read_marker(directory)
        if marker is not None:
            return marker
        if time.time() > deadline:
            raise TimeoutError(
                f"waited {wait_secs} s (self_training.wait_secs) for the chief to write "
                f"{os.path.join(directory, MARKER_FILENAME)}; every worker must see the "
                "chief's --logdir")
        time.sleep(min(10.0, max(wait_secs, 0.1)))


def _check_settings(threshold, scales, num_shards):
    """Fails naming the `self_training` binding whose value is out of range."""
    config_lib.check_number("self_training.threshold", threshold, minimum=0.0, maximum=1.0,
                            exclusive_maximum=True)
    if not isinstance(scales, (list, tuple)) or not scales:
        raise ValueError(f"self_training.scales={scales!r}: expected a non-empty tuple")
    for scale in scales:
        config_lib.check_number("self_training.scales", scale, minimum=0.0,
                                exclusive_minimum=True)
    config_lib.check_int("self_training.num_shards", num_shards, minimum=1)


def _label_with_teacher(checkpoint, spec, num_classes, output_dir, threshold, scales, flip,
                        num_shards, relabel_factory=None, background_share=None,
                        background_mode="bias"):
    """Restores the teacher in float32 and writes its labels; the previous policy is restored.

    Returns:
      The counts of `write_pseudo_labels` (and, with `relabel_factory`, what it reports).
    """
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        teacher = _load_teacher(checkpoint, num_classes)
        relabel, report = (None, {}) if relabel_factory is None else relabel_factory()
        summary = write_pseudo_labels(teacher, spec, num_classes, output_dir, threshold, scales,
                                      flip, num_shards, relabel=relabel,
                                      background_share=background_share,
                                      background_mode=background_mode)
        summary.update(report)
        return summary
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _make_pseudo_labels(output_dir, checkpoint, spec, num_classes, settings, threshold, scales,
                        flip, num_shards, relabel_factory=None, background_share=None,
                        background_mode="bias"):
    """The chief's write: clears an incomplete `output_dir`, labels, then writes the marker.

    Returns:
      The marker dict (see `prepare_pseudo_labels`).

    Raises:
      ValueError: `spec` holds no image.
    """
    if tf.io.gfile.exists(output_dir):
        print(f"Removing the incomplete pseudo labels in {output_dir} (an interrupted write)",
              flush=True)
        tf.io.gfile.rmtree(output_dir)
    tf.io.gfile.makedirs(output_dir)
    print(f"Making pseudo labels with the teacher {checkpoint} (confidence > {threshold}) for "
          f"{pipeline.describe_spec(spec)}", flush=True)
    start = time.time()
    summary = _label_with_teacher(checkpoint, spec, num_classes, output_dir, threshold, scales,
                                  flip, num_shards, relabel_factory, background_share,
                                  background_mode)
    if summary["num_images"] == 0:
        raise ValueError(f"no unlabelled image to pseudo-label in "
                         f"{pipeline.describe_spec(spec)}")
    marker = dict(summary, settings=settings, teacher_checkpoint_path=checkpoint,
                  seconds=round(time.time() - start, 1))
    rundir.write_atomic(os.path.join(output_dir, MARKER_FILENAME),
                        json.dumps(marker, indent=2))
    logging.info("Pseudo labels written to %s", output_dir)
    print(f"Pseudo labels in {output_dir}: {_describe(marker)} ({marker['seconds']} s)",
          flush=True)
    return marker


@gin.configurable("self_training",
                  denylist=["output_dir", "teacher_checkpoint", "spec", "num_classes", "chief",
                            "relabel_factory", "extra_settings", "background_share",
                            "background_mode"])
def prepare_pseudo_labels(output_dir, teacher_checkpoint, spec, num_classes, chief=True,
                          threshold=0.5, scales=(1.0,), flip=False, num_shards=4,
                          wait_secs=7200, relabel_factory=None, extra_settings=None,
                          background_share=None, background_mode="bias"):
    """Makes the offline pseudo labels of a self-training run once, or reuses them.

    The chief reuses complete labels in `output_dir` (those with the marker), or removes an
    incomplete directory, restores the teacher (the DeepLab model of the current bindings,
    without the SGC head, in float32) and writes the labels (`write_pseudo_labels`), then the
    marker. Other workers of a multi-worker run wait for the chief's marker. Call it while
    holding the log directory's lock.

    Args:
      output_dir: the pseudo-label directory (`pseudo_label_dir(logdir)`).
      teacher_checkpoint: the teacher's log directory or checkpoint prefix (as
        `wss.experiment.latest_checkpoint_path` takes).
      spec: the unlabelled images.
      num_classes: classes including background.
      chief: whether this process writes (False: wait for the chief).
      threshold: keep the teacher's argmax where its softmax confidence is above this (the
        paper's self-training baseline: 0.5); other pixels are ignored.
      scales: inference scales (DeepLab's multi-scale inference with several).
      flip: also predict the left-right flipped images.
      num_shards: record files.
      wait_secs: how long a non-chief worker waits for the chief's labels.
      relabel_factory: None, or a function called (only when the labels are made, after the
        teacher is restored) that returns `(relabel, report)`: `write_pseudo_labels`'s
        `relabel` and a dict added to the marker (`wss.method.offline_labels`).
      extra_settings: a dict of further settings the labels depend on, stored in the marker
        and compared on reuse like the others.
      background_share: None, or the background share the labels are matched to, and
      background_mode: how ('bias' or 'ignore'; `write_pseudo_labels`;
        `wss.method.offline_labels`'s `match_background`).

    Returns:
      The marker dict: `settings`, `teacher_checkpoint_path` (the checkpoint used) and the
      counts of `write_pseudo_labels`.

    Raises:
      ValueError: for a bad setting (naming the binding), a teacher checkpoint that does not
        exist (naming `train.teacher_checkpoint`), or complete labels made with other settings.
      wss.training.checkpointing.CheckpointMismatchError: the teacher has another model.
      TimeoutError: a non-chief worker waited `wait_secs` in vain.
    """
    _check_settings(threshold, scales, num_shards)
    settings = _settings(teacher_checkpoint, spec, threshold, scales, flip)
    settings.update(extra_settings or {})
    marker = read_marker(output_dir) if chief else _wait_for_marker(output_dir, wait_secs)
    if marker is not None:
        _check_reusable(output_dir, marker, settings)
        print(f"Reusing the pseudo labels in {output_dir} (teacher "
              f"{marker['teacher_checkpoint_path']}): {_describe(marker)}", flush=True)
        return marker
    checkpoint = resolve_teacher(teacher_checkpoint)
    return _make_pseudo_labels(output_dir, checkpoint, spec, num_classes, settings, threshold,
                               scales, flip, num_shards, relabel_factory, background_share,
                               background_mode)
