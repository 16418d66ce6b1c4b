"""The custom training loop: tf.distribute strategy, train step, checkpoints, summaries.

`train()` is the gin-configurable entry: it builds the strategy, the models, the optimizer and
the input streams, resumes from the latest checkpoint in `logdir` (or warm-starts from a DeepLab
`init_checkpoint` when there is none), and runs `PseudoSegObjective` through `strategy.run`.

Checkpoints are written by `tf.train.CheckpointManager`: the data files first, then the small
`checkpoint` index file, which TensorFlow replaces atomically, so a crash while saving leaves
the previous checkpoint as the latest. SIGTERM (preemption) saves a checkpoint before exiting.
A non-finite loss stops training with an error and writes no checkpoint of the broken state.
"""

import hashlib
import json
import math
import os
import signal
import time

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from wss import evaluation, experiment, metrics, optim, visualize
from wss import strategy as strategy_lib
from wss.data import pipeline
from wss.objective import MODES, PseudoSegObjective


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


class _SigtermFlag:
    """Records SIGTERM (preemption) so that the loop can save and stop between steps."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread: leave signals alone.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def _worker_dir(logdir, strategy):
    """Non-chief workers of MultiWorkerMirroredStrategy save to a private directory."""
    if _is_chief(strategy):
        return logdir
    resolver = strategy.cluster_resolver
    return os.path.join(logdir, f".worker_{resolver.task_type}_{resolver.task_id}")


def _write_worker_result(logdir, strategy, step, variables):
    """Multi-worker runs: each worker writes its step and digests of its final weights.

    `LOGDIR/worker_results/<task_type>_<task_id>.json` holds `step` and the sha256 of the
    worker's local copy of the trainable `variables` (in order), so that a test or a user can
    check that every worker of a MultiWorkerMirroredStrategy run ended with the same weights.
    The non-trainable ones (BatchNorm moving statistics) get their own digest: Keras creates
    them without a cross-replica aggregation, so each replica averages its own batches and the
    chief's are the ones saved (as DeepLab kept the first clone's). Single-host runs write
    nothing.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return
    result = {"step": step}
    for key, trainable in (("trainable", True), ("non_trainable", False)):
        digest = hashlib.sha256()
        chosen = [v for v in variables if bool(v.trainable) == trainable]
        for variable in chosen:
            value = np.ascontiguousarray(tf.convert_to_tensor(variable).numpy())
            digest.update(str((value.dtype.str, value.shape)).encode())
            digest.update(value.tobytes())
        result[f"num_{key}"] = len(chosen)
        result[f"sha256_{key}"] = digest.hexdigest()
    directory = os.path.join(logdir, "worker_results")
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, f"{resolver.task_type}_{resolver.task_id}.json")
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(result, f, indent=2)


def _step_of(optimizer):
    """The optimizer's step count as a Python int (it is a mirrored variable)."""
    return int(tf.convert_to_tensor(optimizer.iterations.value).numpy())


def _checkpoint_step(path):
    """The step of a `ckpt-N` checkpoint path (0 for None)."""
    return int(path.rsplit("-", 1)[1]) if path else 0


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@gin.configurable(denylist=["logdir"])
def train(logdir, mode="semi", num_steps=30000, labelled_batch_size=4, unlabelled_batch_size=4,
          crop_size=(513, 513), num_classes=gin.REQUIRED, labelled_pattern=gin.REQUIRED,
          labelled_split=None, unlabelled_pattern=None, unlabelled_split=None,
          strategy=None, log_every=10, summary_every=50, image_summary_every=500,
          checkpoint_every=1000, max_to_keep=3, init_checkpoint=None,
          initialize_last_layer=False, seed=None, deterministic=False,
          mixed_precision_policy=None, palette="pascal", steps_per_run=None):
    """Trains PseudoSeg (or its supervised baseline) and returns the final step's losses.

    Batch sizes are per replica: the global batch is `num_replicas * labelled_batch_size`
    labelled plus as many unlabelled images. The learning rate (`make_optimizer`) is per step,
    whatever the number of replicas.

    Args:
      logdir: checkpoints, TensorBoard events and the gin config go here.
      mode: `supervised` (labelled stream only), `semi` (labelled + unlabelled) or `weak`
        (labelled + image-labelled).
      num_steps: total optimizer steps (also the poly decay length).
      labelled_batch_size: labelled images per replica.
      unlabelled_batch_size: unlabelled or image-labelled images per replica.
      crop_size: training crop (height, width).
      num_classes: classes including background.
      labelled_pattern: TFRecord pattern of the labelled stream.
      labelled_split: optional split file of labelled ids.
      unlabelled_pattern: TFRecord pattern of the unlabelled / image-labelled stream.
      unlabelled_split: optional split file of its ids.
      strategy: a `tf.distribute.Strategy`; default `make_strategy()` (gin-configurable).
      log_every: steps between progress lines.
      summary_every: steps between TensorBoard scalar summaries.
      image_summary_every: steps between image summaries (0 disables them).
      checkpoint_every: steps between checkpoints.
      max_to_keep: checkpoints kept.
      init_checkpoint: a DeepLab TF1 checkpoint to warm-start from when `logdir` has no
        checkpoint yet.
      initialize_last_layer: also load the logits layers from `init_checkpoint` (DeepLab's
        flag; False by default, as when the number of classes differs).
      seed: global random seed (weights, augmentation, shuffling).
      deterministic: enable TensorFlow op determinism (slower; for reproducibility tests).
      mixed_precision_policy: None, `mixed_bfloat16` (TPU) or `mixed_float16` (GPU; use with
        `make_optimizer.loss_scale = True`). It is Keras's global policy during this call only;
        the previous one is restored on return or error. Steps whose loss-scaled gradients
        overflow are skipped by the optimizer and not counted.
      palette: colour palette of image summaries (`pascal` or `cityscapes`).
      steps_per_run: stop this invocation after this many steps (with a checkpoint), e.g. to
        fit a job time limit; rerunning continues. None trains to `num_steps`.

    Returns:
      dict of the last step's named losses (floats), `step`, `history` (the logged steps),
      `preempted`, `finished`, `chief` and `skipped_updates` (loss-scale overflows).

    Raises:
      NonFiniteLossError: if a loss becomes NaN or infinite.
      ValueError / FileNotFoundError: for bad configuration, before any training step.
    """
    # The dtype policy is process-global in Keras: set it for this run only.
    previous_policy = keras.mixed_precision.global_policy()
    labelled_iter = unlabelled_iter = None
    try:
        if mixed_precision_policy:
            keras.mixed_precision.set_global_policy(mixed_precision_policy)
        if seed is not None:
            keras.utils.set_random_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        strategy = strategy or strategy_lib.make_strategy()
        num_replicas = strategy.num_replicas_in_sync

        # The input streams come first: a missing path or split fails before any model work.
        if mode not in MODES:
            raise ValueError(f"train.mode={mode!r}; choose one of {MODES}")
        tf.io.gfile.makedirs(logdir)
        save_dir = _worker_dir(logdir, strategy)
        # Distributed iterators cannot be checkpointed; with a seed the streams are a pure function
        # of their position, so a resumed run skips the batches it already trained on instead.
        resume_step = _checkpoint_step(tf.train.latest_checkpoint(save_dir))
        skip_batches = resume_step if seed is not None else 0
        labelled_spec = pipeline.DatasetSpec(labelled_pattern, labelled_split)
        labelled_iter = iter(pipeline.make_distributed(
            strategy, pipeline.labelled_dataset, spec=labelled_spec,
            batch_size=labelled_batch_size * num_replicas, num_classes=num_classes,
            crop_size=crop_size, seed=seed, skip_batches=skip_batches))
        unlabelled_iter = None
        if mode != "supervised":
            if not unlabelled_pattern:
                raise ValueError(f"train.mode={mode!r} needs train.unlabelled_pattern")
            same_records = unlabelled_pattern == labelled_pattern and not unlabelled_split
            unlabelled_spec = pipeline.DatasetSpec(
                unlabelled_pattern, unlabelled_split,
                exclude_file=labelled_split if same_records else None)
            unlabelled_iter = iter(pipeline.make_distributed(
                strategy, pipeline.unlabelled_dataset, spec=unlabelled_spec,
                batch_size=unlabelled_batch_size * num_replicas, num_classes=num_classes,
                crop_size=crop_size, seed=None if seed is None else seed + 1,
                skip_batches=skip_batches))

        with strategy.scope():
            model, sgc_head = experiment.build_models(num_classes=num_classes)
            objective = PseudoSegObjective(model, sgc_head, mode=mode)
            optimizer = optim.make_optimizer(num_steps)
            optimizer.build(objective.trainable_variables)

        checkpoint = experiment.make_checkpoint(model, sgc_head, optimizer)
        manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=max_to_keep)
        restored = manager.restore_or_initialize() if manager.latest_checkpoint else None
        if restored:
            logging.info("Resumed from %s at step %d", restored, _step_of(optimizer))
            print(f"Resumed from {restored} (step {_step_of(optimizer)})", flush=True)
        elif init_checkpoint:
            from wss.models import load_deeplab_checkpoint

            report = load_deeplab_checkpoint(
                model, init_checkpoint, skip_mismatch=True,
                skip_last_layer=not initialize_last_layer)
            logging.info("Warm start from %s:\n%s", init_checkpoint, report)
            print(f"Warm start from {init_checkpoint}: {report.summary()}", flush=True)

        if _is_chief(strategy):
            with tf.io.gfile.GFile(os.path.join(logdir, experiment.CONFIG_FILENAME), "w") as f:
                f.write(gin.config_str())

        # ------------------------------------------------------------------ the step function
        semi = objective.uses_unlabelled_stream

        def replica_step(labelled, unlabelled, with_images):
            named, pseudo, strong = objective.train_step(optimizer, labelled, unlabelled,
                                                         num_replicas)
            stats = objective.diagnostics(unlabelled, pseudo) if semi else {}
            images = {}
            if with_images:
                images = _summary_images(labelled, unlabelled, pseudo, strong)
            return named, stats, images

        # The iterators are arguments, not closure captures: a traced graph that captured them
        # would keep their tf.data resources alive after `train` returns (the traced graph
        # outlives it), until interpreter exit, where destroying each one waits for its
        # pipeline's autotuning thread to wake, up to a minute apiece.
        def step_fn(labelled_iter, unlabelled_iter, with_images):
            labelled = next(labelled_iter)
            unlabelled = next(unlabelled_iter) if semi else None
            named, stats, images = strategy.run(replica_step, args=(labelled, unlabelled,
                                                                     with_images))
            named = {k: strategy.reduce("MEAN", v, axis=None) for k, v in named.items()}
            stats = {k: strategy.reduce("SUM", v, axis=None) for k, v in stats.items()}
            images = {k: strategy.experimental_local_results(v)[0] for k, v in images.items()}
            return named, stats, images

        train_step = tf.function(step_fn)

        # ------------------------------------------------------------------ the loop
        writer = tf.summary.create_file_writer(os.path.join(save_dir, "train"))
        colour_palette = visualize.get_palette(palette)
        step = _step_of(optimizer)
        start_step, start_time = step, time.time()
        last_log_time, last_log_step = start_time, step
        global_batch = num_replicas * (labelled_batch_size + (unlabelled_batch_size if semi else 0))
        accumulated = {}
        logged = {}
        history = []
        skipped_updates = 0
        print(f"Training {objective.mode} for {num_steps} steps on {num_replicas} replica(s); "
              f"logdir {logdir}", flush=True)
        stop_step = num_steps if not steps_per_run else min(num_steps, step + steps_per_run)
        with _SigtermFlag() as sigterm:
            while step < stop_step:
                with_images = bool(image_summary_every) and (step + 1) % image_summary_every == 0
                named, stats, images = train_step(labelled_iter, unlabelled_iter, with_images)
                previous_step, step = step, _step_of(optimizer)
                values = {k: float(v) for k, v in named.items()}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise NonFiniteLossError(
                        f"step {step}: non-finite {', '.join(f'{k}={values[k]}' for k in bad)}; "
                        f"stopping. The last good checkpoint is {manager.latest_checkpoint}")
                for key, value in stats.items():
                    accumulated[key] = accumulated.get(key, 0.0) + value.numpy()
                logged = values
                if step == previous_step and not sigterm.received:
                    # A LossScaleOptimizer skipped the update (non-finite scaled gradients) and
                    # lowered its scale; nothing is due for a step that did not happen.
                    skipped_updates += 1
                    logging.info("step %d: gradients overflowed at loss scale %s; update skipped",
                                 step, float(tf.convert_to_tensor(optimizer.dynamic_scale.value)))
                    continue
                if step % log_every == 0 or step == num_steps:
                    history.append({"step": step, **values})
                    now = time.time()
                    rate = (step - last_log_step) * global_batch / max(now - last_log_time, 1e-9)
                    per_step = (now - start_time) / max(step - start_step, 1)
                    lr = float(optimizer.learning_rate)
                    eta = _format_eta(per_step * (num_steps - step))
                    losses_text = " ".join(f"{k}={v:.4f}" for k, v in sorted(values.items()))
                    print(f"step {step}/{num_steps} {losses_text} lr={lr:.5f} {rate:.1f} img/s "
                          f"eta {eta}", flush=True)
                    last_log_time, last_log_step = now, step
                if step % summary_every == 0 or step == num_steps:
                    with writer.as_default(step=step):
                        for key, value in values.items():
                            tf.summary.scalar(f"losses/{key}", value)
                        tf.summary.scalar("learning_rate", float(optimizer.learning_rate))
                        _write_pseudo_label_summaries(accumulated)
                    accumulated = {}
                if images:
                    with writer.as_default(step=step):
                        _write_image_summaries(images, colour_palette)
                if step % checkpoint_every == 0 or sigterm.received or step == stop_step:
                    manager.save(checkpoint_number=step)
                if sigterm.received:
                    break
        if not sigterm.received and (manager.latest_checkpoint is None
                                     or not manager.latest_checkpoint.endswith(f"-{step}")):
            manager.save(checkpoint_number=step)
        writer.flush()
        if _is_chief(strategy):
            with tf.io.gfile.GFile(
                    os.path.join(logdir, experiment.OPERATIVE_CONFIG_FILENAME), "w") as f:
                f.write(gin.operative_config_str())
        if save_dir != logdir:  # Non-chief workers remove their private copies.
            tf.io.gfile.rmtree(save_dir)
        result = dict(logged)
        result["step"] = step
        result["preempted"] = sigterm.received
        result["finished"] = step >= num_steps
        result["history"] = history
        result["chief"] = _is_chief(strategy)
        result["skipped_updates"] = skipped_updates
        if result["chief"]:
            with tf.io.gfile.GFile(os.path.join(logdir, "train_result.json"), "w") as f:
                json.dump(result, f, indent=2)
        _write_worker_result(logdir, strategy, step,
                             model.variables + (sgc_head.variables if sgc_head else []))
        return result
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        # Also on errors, whose traceback keeps this frame: free the input pipelines now
        # rather than at interpreter exit, where each waits for its autotuning thread.
        labelled_iter = unlabelled_iter = None  # noqa: F841


def _write_pseudo_label_summaries(accumulated):
    """Pseudo-label confidence, accuracy against masks and ECE of decoder / SGC / fusion."""
    if not accumulated:
        return
    pixels = accumulated.get("pseudo_pixels", 0.0)
    if pixels > 0:
        tf.summary.scalar("pseudo_labels/confidence",
                          accumulated["pseudo_confidence_sum"] / pixels)
    labelled = accumulated.get("pseudo_labelled_pixels", 0.0)
    if labelled > 0:
        tf.summary.scalar("pseudo_labels/accuracy", accumulated["pseudo_correct"] / labelled)
        for name in ("decoder", "sgc", "fused"):
            ece = metrics.ece_from_reliability(accumulated[f"{name}_count"],
                                               accumulated[f"{name}_correct"],
                                               accumulated[f"{name}_confidence_sum"])
            tf.summary.scalar(f"calibration/ece_{name}", ece)


def _summary_images(labelled, unlabelled, pseudo, strong):
    """The first example's images for TensorBoard (paper figure 2 style)."""
    images = {"labelled/image": labelled["image"][:1], "labelled/label": labelled["label"][:1]}
    if unlabelled is not None:
        images.update({
            "unlabelled/weak": unlabelled["image"][:1],
            "unlabelled/strong": unlabelled["strong"][:1],
            "unlabelled/pseudo_label": tf.argmax(pseudo["targets"][:1], -1, tf.int32),
            "unlabelled/sgc": tf.argmax(pseudo["sgc_logits"][:1], -1, tf.int32),
            "unlabelled/decoder": tf.argmax(pseudo["decoder_logits"][:1], -1, tf.int32),
            "unlabelled/strong_prediction": tf.argmax(strong["logits"][:1], -1, tf.int32),
        })
    return images


def _write_image_summaries(images, palette):
    for key, value in images.items():
        if value.dtype.is_floating:
            picture = tf.cast(tf.clip_by_value(value, 0, 255), tf.uint8)
        else:
            picture = visualize.colorize(value, palette)
        tf.summary.image(key, picture, max_outputs=1)


@gin.configurable
def after_training(logdir, evaluate=True, export=False, export_dir=None):
    """Evaluates (and exports) the final checkpoint; prints where everything is.

    Args:
      logdir: the training log directory.
      evaluate: evaluate the latest checkpoint on the validation set.
      export: export a SavedModel.
      export_dir: SavedModel directory (default LOGDIR/export/ckpt-N).

    Returns:
      dict with `miou` (or None), `checkpoint`, `export_dir` (or None).
    """
    from wss import export as export_lib

    checkpoint = experiment.latest_checkpoint_path(logdir)
    summary = {"checkpoint": checkpoint, "miou": None, "export_dir": None}
    if evaluate:
        results, path = evaluation.evaluate_checkpoint(checkpoint)
        print(evaluation.format_results(results))
        summary["miou"] = results["miou"]
        summary["results"] = path
    if export:
        export_dir = export_dir or os.path.join(logdir, "export",
                                                os.path.basename(checkpoint))
        if os.path.exists(export_dir):
            logging.info("%s exists; not exporting again", export_dir)
        else:
            model, _ = experiment.build_models(with_sgc_head=False)
            experiment.restore_models(checkpoint, model)
            export_lib.export_saved_model(model, export_dir)
        summary["export_dir"] = export_dir
    return summary
