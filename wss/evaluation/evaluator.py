"""Semantic segmentation evaluation: mIoU over a whole validation set at full resolution.

Each image is predicted at its own size (optionally at several scales and flipped, the
probabilities averaged at the original resolution), and a confusion matrix is accumulated
over all images; pixels labelled 255 are ignored.

Best and last: results go next to each checkpoint (`ckpt-N.eval.json`). `track_best` records
each evaluation and keeps the checkpoint with the highest validation mIoU in `LOGDIR/best/`
(a copy, so `train.max_to_keep` never deletes it; with its results and `config.gin`, so
`wss.evaluate` and `wss.export` take `--checkpoint_dir=LOGDIR/best`), and `best_and_last`
reports both it and the last checkpoint. On PASCAL VOC the validation set is the test set:
choosing the best checkpoint on it is optimistic, and the paper's protocol reports the last
checkpoint.
"""

import glob
import json
import math
import os
import shutil
import time

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from wss import run_files
from wss.evaluation import metrics
from wss.models.inference import full_resolution_logits
from wss.resize import resize_bilinear


def predict_probabilities(model, images, scales=(1.0,), flip=False):
    """Class probabilities at the input resolution, averaged over scales and flips.

    Args:
      model: a DeepLab model.
      images: float32 `[B, H, W, 3]` in [0, 255].
      scales: image scales to evaluate (DeepLab: 0.5 .. 1.75 for multi-scale).
      flip: also evaluate the left-right flipped image.

    Returns:
      float32 `[B, H, W, C]` probabilities.
    """
    size = tf.shape(images)[1:3]
    total = None
    for scale in scales:
        scaled = images
        if scale != 1.0:
            scaled_size = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
            scaled = resize_bilinear(images, scaled_size, align_corners=True)
        variants = [(scaled, False)] + ([(tf.reverse(scaled, [2]), True)] if flip else [])
        for inputs, flipped in variants:
            logits = full_resolution_logits(model, inputs)
            if scale != 1.0:
                logits = resize_bilinear(logits, size, align_corners=True)
            probs = tf.nn.softmax(logits, axis=-1)
            if flipped:
                probs = tf.reverse(probs, [2])
            total = probs if total is None else total + probs
    return total / float(len(scales) * (2 if flip else 1))


@gin.configurable(denylist=["model", "dataset", "num_classes"])
def evaluate_model(model, dataset, num_classes, scales=(1.0,), flip=False, class_names=None,
                   max_images=None):
    """Evaluates a model over a dataset of `{'image', 'label'}` batches.

    Args:
      model: a DeepLab model.
      dataset: a `tf.data.Dataset` of batch dicts (`image` float32 [B, H, W, 3], `label` int32
        [B, H, W]); images may differ in size between batches.
      num_classes: classes including background.
      scales: evaluation scales.
      flip: add flipped inputs.
      class_names: optional names for the per-class report.
      max_images: stop after this many images (None: the whole dataset).

    Returns:
      dict with `miou`, `per_class_iou` (name -> IoU, NaN for classes absent from both
      labels and predictions), `pixel_accuracy`, `num_images` and `confusion_matrix`.
    """
    spec = {"image": tf.TensorSpec([None, None, None, 3], tf.float32),
            "label": tf.TensorSpec([None, None, None], tf.int32)}

    @tf.function(input_signature=[spec])
    def confusion(batch):
        probs = predict_probabilities(model, batch["image"], scales, flip)
        predictions = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return metrics.confusion_matrix(batch["label"], predictions, num_classes)

    matrix = np.zeros((num_classes, num_classes), np.float64)
    num_images = 0
    start = time.time()
    for batch in dataset:
        matrix += confusion({"image": batch["image"], "label": batch["label"]}).numpy()
        num_images += int(batch["image"].shape[0])
        if max_images is not None and num_images >= max_images:
            break
    ious = np.asarray(metrics.per_class_iou(matrix), np.float64)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    total = matrix.sum()
    return {
        "miou": float(metrics.mean_iou(matrix)),
        "per_class_iou": {names[i]: float(ious[i]) for i in range(num_classes)},
        "pixel_accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "num_images": num_images,
        "seconds": time.time() - start,
        "confusion_matrix": matrix.astype(np.int64).tolist(),
    }


def write_results(results, checkpoint_path):
    """Writes evaluation results as JSON next to the checkpoint; returns the file path."""
    path = f"{checkpoint_path}{run_files.EVAL_SUFFIX}"
    temp = path + ".tmp"
    with tf.io.gfile.GFile(temp, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(temp, path, overwrite=True)
    return path


def format_results(results):
    """A short human-readable table of the results."""
    lines = [f"mIoU {results['miou'] * 100:.2f}  pixel accuracy "
             f"{results['pixel_accuracy'] * 100:.2f}  ({results['num_images']} images)"]
    for name, iou in results["per_class_iou"].items():
        lines.append(f"  {name:>24s} {'n/a' if np.isnan(iou) else f'{iou * 100:6.2f}'}")
    return "\n".join(lines)


def results_path(checkpoint_path):
    """Where `write_results` puts the results of `checkpoint_path`."""
    return f"{checkpoint_path}{run_files.EVAL_SUFFIX}"


def evaluated(checkpoint_path):
    """Whether `checkpoint_path` already has results."""
    return os.path.exists(results_path(checkpoint_path))


@gin.configurable(denylist=["checkpoint_path"])
def evaluate_checkpoint(checkpoint_path, pattern=gin.REQUIRED, split_file=None,
                        num_classes=gin.REQUIRED, class_names=None, max_images=None):
    """Restores one checkpoint and evaluates it on the validation records.

    Args:
      checkpoint_path: a checkpoint prefix (or a log directory: its latest checkpoint).
      pattern: TFRecord pattern of the validation set, or a source such as
        `@val/tfds_dataset()` (`wss.data.tfds_source`).
      split_file: optional file of image ids to evaluate.
      num_classes: classes including background.
      class_names: optional class names for the report.
      max_images: evaluate only this many images.

    Returns:
      (results dict, results JSON path).
    """
    from wss import experiment as experiment_lib
    from wss.data import pipeline

    checkpoint_path = experiment_lib.latest_checkpoint_path(checkpoint_path)
    dataset = pipeline.eval_dataset(pipeline.make_spec(pattern, split_file),
                                    num_classes=num_classes)
    model, _ = experiment_lib.build_models(num_classes=num_classes, with_sgc_head=False)
    experiment_lib.restore_models(checkpoint_path, model)
    results = evaluate_model(model, dataset, num_classes, class_names=class_names,
                                        max_images=max_images)
    results["checkpoint"] = checkpoint_path
    return results, write_results(results, checkpoint_path)


def configured_eval_spec():
    """The evaluation set that `evaluate_checkpoint`'s gin bindings name, or None.

    None when `evaluate_checkpoint.pattern` is unbound or `after_training.evaluate` is False.
    """
    from wss.data import pipeline

    try:
        if not gin.get_bindings("after_training").get("evaluate", True):
            return None
    except ValueError:  # wss.training.trainer (after_training) not imported: nothing to evaluate.
        return None
    bindings = gin.get_bindings("evaluate_checkpoint")
    if bindings.get("pattern") is None:
        return None
    return pipeline.make_spec(bindings["pattern"], bindings.get("split_file"))


# ----------------------------------------------------------------------------- best and last

BEST_DIRNAME = "best"
BEST_FILENAME = "best.json"
HISTORY_FILENAME = "history.json"


def _step(checkpoint_path):
    try:
        return int(checkpoint_path.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _valid(miou):
    return miou is not None and not (isinstance(miou, float) and math.isnan(miou))


def _read_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _write_json(path, value):
    temp = path + ".tmp"
    with open(temp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(temp, path)


def _write_text(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _replace_file(source, target):
    shutil.copyfile(source, target + ".tmp")
    os.replace(target + ".tmp", target)


def read_best(best_dir):
    """The record in a best directory's `best.json`, or None.

    The record: `checkpoint` (the copy), `source` (the original), `step`, `miou`, `results`.
    """
    return _read_json(os.path.join(best_dir, BEST_FILENAME))


def is_best_dir(directory):
    """Whether `directory` is a best directory (holds `best.json`)."""
    return os.path.exists(os.path.join(directory, BEST_FILENAME))


def track_best(checkpoint_path, results, best_dir=None):
    """Records an evaluation and keeps the checkpoint if its mIoU beats the best so far.

    Every call appends `(step, miou)` to `best_dir/history.json`. A new best checkpoint's
    files and results are copied into `best_dir` (default `LOGDIR/best`, beside the
    checkpoint) under temporary names and renamed; then `best.json` and the directory's
    `checkpoint` index are replaced atomically, and only then are the previous best's files
    removed, so a crash at any point leaves `best.json` naming a complete checkpoint. The log
    directory's `config.gin` is copied too: the best directory works as `--checkpoint_dir` of
    `wss.evaluate` and `wss.export`. Ties keep the earlier checkpoint; a NaN mIoU never wins.

    Args:
      checkpoint_path: the evaluated checkpoint prefix (`LOGDIR/ckpt-N`).
      results: its results (`evaluate_model`'s dict; `miou` is used).
      best_dir: where to keep the best checkpoint.

    Returns:
      The best record after the update (`checkpoint`, `source`, `step`, `miou`, `results`), or
      None while nothing is kept (e.g. the checkpoint was deleted before it could be copied).
    """
    logdir = os.path.dirname(checkpoint_path)
    best_dir = best_dir or os.path.join(logdir, BEST_DIRNAME)
    os.makedirs(best_dir, exist_ok=True)
    name = os.path.basename(checkpoint_path)
    history_path = os.path.join(best_dir, HISTORY_FILENAME)
    history = [h for h in _read_json(history_path, []) if h["checkpoint"] != checkpoint_path]
    history.append({"checkpoint": checkpoint_path, "step": _step(checkpoint_path),
                    "miou": results.get("miou")})
    _write_json(history_path, sorted(history, key=lambda h: (h["step"] is None, h["step"] or 0)))
    best = read_best(best_dir)
    miou = results.get("miou")
    if not _valid(miou) or (best is not None and miou <= best["miou"]):
        return best
    prefix = glob.escape(checkpoint_path)
    files = glob.glob(prefix + ".index") + glob.glob(prefix + ".data-*")
    try:
        if not any(f.endswith(".index") for f in files):
            raise FileNotFoundError(checkpoint_path)
        for path in files:
            _replace_file(path, os.path.join(best_dir, os.path.basename(path)))
    except FileNotFoundError:  # The checkpoint manager deleted it (train.max_to_keep).
        logging.warning("%s was deleted before it could be kept as the best checkpoint",
                        checkpoint_path)
        return best
    kept = os.path.join(best_dir, name)
    _write_json(results_path(kept), dict(results, checkpoint=kept, source=checkpoint_path))
    config = os.path.join(logdir, "config.gin")
    if os.path.exists(config):
        _replace_file(config, os.path.join(best_dir, "config.gin"))
    record = {"checkpoint": kept, "source": checkpoint_path, "step": _step(checkpoint_path),
              "miou": miou, "results": results_path(kept)}
    _write_json(os.path.join(best_dir, BEST_FILENAME), record)
    # The directory's checkpoint index (relative path), so that tf.train.latest_checkpoint and
    # --checkpoint_dir=LOGDIR/best find the copy.
    _write_text(os.path.join(best_dir, "checkpoint"),
                f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    if best is not None and os.path.basename(best["checkpoint"]) != name:
        old = os.path.join(best_dir, os.path.basename(best["checkpoint"]))
        for path in glob.glob(glob.escape(old) + ".*"):
            os.remove(path)
    return record


def best_and_last(logdir):
    """The last checkpoint of `logdir` and the best one kept, with their mIoU.

    Returns:
      dict with `last` and `best`, each `{checkpoint, step, miou}` (the last one's `miou` is
      None when it has no results; `best` is None when nothing was kept), and `history`, the
      evaluations recorded by `track_best` (`[{checkpoint, step, miou}]`, by step).
    """
    last_path = tf.train.latest_checkpoint(logdir)
    last = None
    if last_path is not None:
        results = _read_json(results_path(last_path), {})
        last = {"checkpoint": last_path, "step": _step(last_path), "miou": results.get("miou")}
    best_dir = os.path.join(logdir, BEST_DIRNAME)
    return {"last": last, "best": read_best(best_dir),
            "history": _read_json(os.path.join(best_dir, HISTORY_FILENAME), [])}


def format_best_and_last(report):
    """Two lines: the last checkpoint's validation mIoU and the best one's."""
    def line(label, entry, note=""):
        if entry is None:
            return f"{label} checkpoint: none"
        miou = "not evaluated" if entry["miou"] is None else f"mIoU {entry['miou'] * 100:.2f}%"
        return f"{label} checkpoint: {entry['checkpoint']} (step {entry['step']}), {miou}{note}"

    best = report["best"]
    note = ""
    if best is not None:
        note = (f"; copy of {os.path.basename(best['source'])}, the best of "
                f"{len(report['history'])} evaluated checkpoint(s)")
    return "\n".join([line("Last", report["last"]), line("Best", best, note)])


def report_best_and_last(logdir, last_checkpoint, last_results, evaluate_kept=False):
    """After training: tracks the best checkpoint, prints it and the last one, returns both.

    Args:
      logdir: the training log directory.
      last_checkpoint: the last checkpoint, already evaluated.
      last_results: its results.
      evaluate_kept: also evaluate the other checkpoints still in `logdir` (at most
        `train.max_to_keep`) that have no results yet, oldest first, so that the best is
        chosen among them too.

    Returns:
      `best_and_last(logdir)`.
    """
    state = tf.train.get_checkpoint_state(logdir)
    for path in state.all_model_checkpoint_paths if state else []:
        if path == last_checkpoint:
            continue
        if evaluated(path):
            results = _read_json(results_path(path))
        elif evaluate_kept:
            results, _ = evaluate_checkpoint(path)
            print(f"{path}: mIoU {results['miou'] * 100:.2f}%", flush=True)
        else:
            continue
        track_best(path, results)
    track_best(last_checkpoint, last_results)
    report = best_and_last(logdir)
    print(format_best_and_last(report), flush=True)
    return report
