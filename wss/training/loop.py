"""The custom training loop: one `tf.distribute` loop for every task.

`run(task, logdir, options)` drives a `wss.training.task.Task`: it sets the dtype policy and
seeds, lets the task prepare what its streams need (`Task.prepare`, e.g. offline pseudo
labels), builds the task's streams and models under the strategy, resumes from the latest
checkpoint in `logdir` (or warm-starts from `options.init_checkpoint` when there is none), and
runs the task's replica step under `tf.function` until `options.num_steps`.

Checkpoints are written by `tf.train.CheckpointManager`: the data files first, then the small
`checkpoint` index file, which TensorFlow replaces atomically, so a crash while saving leaves
the previous checkpoint as the latest. SIGTERM (preemption) saves a checkpoint before exiting
(the command-line tools then exit with `PREEMPTED_EXIT_CODE`). A non-finite loss stops
training with an error and writes no checkpoint of the broken state. Multi-worker runs: only
the chief writes the config, the result file and the checkpoints of record; other workers save
to a private directory that they remove at the end.

Reliability (docs/reliability.md): a run holds its directory's lock (`rundir.LogdirLock`) from
before it reads anything there until it returns, so a second trainer fails at once naming the
holder; it first removes the temporaries of interrupted saves, resumes from the newest
checkpoint that reads in full (`checkpointing.newest_intact_checkpoint`), fails naming the
configuration when a checkpoint does not fit the model, writes run files by temp-and-rename,
and turns anonymous input errors into ones that name the stream, file and record.
"""

import dataclasses
import hashlib
import json
import math
import os
import signal
import time
from typing import Callable, Optional, Union

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from wss import run_files
from wss.training import checkpointing, determinism, optim, rundir
from wss.training import strategy as strategy_lib

CONFIG_FILENAME = "config.gin"
OPERATIVE_CONFIG_FILENAME = "operative_config.gin"
RESULT_FILENAME = run_files.RESULT_FILENAME
# Exit status of `wss.train` / `wss.pretrain` after a SIGTERM (preemption) that saved a
# checkpoint (75, sysexits.h's EX_TEMPFAIL); defined in `wss.run_files` for the launchers.
PREEMPTED_EXIT_CODE = run_files.PREEMPTED_EXIT_CODE


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


@dataclasses.dataclass
class LoopOptions:
    """How long to train and how often to log, summarise and save.

    Attributes:
      num_steps: total optimizer steps (also the learning-rate decay length).
      log_every: steps between progress lines.
      summary_every: steps between TensorBoard scalar summaries.
      image_summary_every: steps between image summaries (0 disables them).
      checkpoint_every: steps between checkpoints.
      max_to_keep: checkpoints kept.
      init_checkpoint: checkpoint to warm-start from when `logdir` has none yet, or a function
        of no arguments that returns its path (gin: `@pretrained_checkpoint`, without
        parentheses). A function is called only when the run warm-starts: after the task's
        split and input checks, and never on resume, so a cached pretraining that still has
        to run does not delay a config error or a resumed run.
      seed: global random seed (weights, augmentation, shuffling); with a seed a resumed run
        continues the data streams where they stopped.
      deterministic: bit-identical reruns of a seeded config: TensorFlow op determinism on
        and Grappler's graph rewriting off for the run (`wss.training.determinism`).
      mixed_precision_policy: None, `mixed_bfloat16` (TPU) or `mixed_float16` (GPU); Keras's
        global policy during the run only.
      steps_per_run: stop this invocation after this many steps (with a checkpoint).
      strategy: a `tf.distribute.Strategy`; None builds `make_strategy()` (gin).
      scope: the gin scope of these options (`train`, `pretrain`), named in errors.
    """

    num_steps: int = 30000
    log_every: int = 10
    summary_every: int = 50
    image_summary_every: int = 500
    checkpoint_every: int = 1000
    max_to_keep: int = 3
    init_checkpoint: Optional[Union[str, Callable[[], str]]] = None
    seed: Optional[int] = None
    deterministic: bool = False
    mixed_precision_policy: Optional[str] = None
    steps_per_run: Optional[int] = None
    strategy: Optional[tf.distribute.Strategy] = None
    scope: str = "train"


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


def is_chief(strategy):
    """Whether this process is the chief of a (multi-worker) strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def _worker_dir(logdir, strategy):
    """Non-chief workers of MultiWorkerMirroredStrategy save to a private directory."""
    if is_chief(strategy):
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
    rundir.write_atomic(path, json.dumps(result, indent=2))


def _step_of(optimizer):
    """The optimizer's step count as a Python int (it is a mirrored variable)."""
    return int(tf.convert_to_tensor(optimizer.iterations.value).numpy())


def _checkpoint_step(path):
    """The step of a `ckpt-N` checkpoint path (0 for None)."""
    return int(path.rsplit("-", 1)[1]) if path else 0


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _write_text(path, text):
    rundir.write_atomic(path, text)


def _make_step_function(task, strategy, optimizer, with_images):
    """The traced step: one batch of each stream, the task's replica step, reductions.

    `with_images` is fixed for the whole run: when image summaries are on, every step returns
    the (small) summary images and the loop writes those of the steps that are due. A Python
    flag that changed from step to step would make `tf.function` trace the whole step a second
    time at the first image step (measured: about a minute of a 2-core machine, longer when it
    is shared, in every run).
    """
    num_replicas = strategy.num_replicas_in_sync

    def replica_fn(batches):
        out = task.replica_step(optimizer, batches, num_replicas, with_images)
        return out.losses, out.stats, out.images

    # The iterators are arguments, not closure captures: a traced graph that captured them
    # would keep their tf.data resources alive after `run` returns (the traced graph outlives
    # it), until interpreter exit, where destroying each one waits for its pipeline's
    # autotuning thread to wake, up to a minute apiece.
    def step_fn(iterators):
        batches = {name: next(iterator) for name, iterator in iterators.items()}
        losses, stats, images = strategy.run(replica_fn, args=(batches,))
        losses = {k: strategy.reduce("MEAN", v, axis=None) for k, v in losses.items()}
        stats = {k: strategy.reduce("SUM", v, axis=None) for k, v in stats.items()}
        images = {k: strategy.experimental_local_results(v)[0] for k, v in images.items()}
        return losses, stats, images

    return tf.function(step_fn)


class _Progress:
    """Progress lines, TensorBoard scalars and the logged history of a run."""

    def __init__(self, task, optimizer, options, writer, step, global_batch):
        self.task, self.optimizer, self.options, self.writer = task, optimizer, options, writer
        self.start_step, self.start_time = step, time.time()
        self.last_step, self.last_time = step, self.start_time
        self.global_batch = global_batch
        self.accumulated, self.history = {}, []
        # Stats of the last quarter of training, for the task's run summary.
        self.final_from = options.num_steps - max(options.num_steps // 4, 1)
        self.final = {}

    def record(self, step, losses, stats, images):
        """Accumulates stats; logs, summarises and writes images when they are due."""
        for key, value in stats.items():
            value = value.numpy()
            self.accumulated[key] = self.accumulated.get(key, 0.0) + value
            if step > self.final_from:
                self.final[key] = self.final.get(key, 0.0) + value
        options, num_steps = self.options, self.options.num_steps
        learning_rate = float(self.optimizer.learning_rate)
        if step % options.log_every == 0 or step == num_steps:
            self.history.append({"step": step, **losses})
            now = time.time()
            rate = (step - self.last_step) * self.global_batch / max(now - self.last_time, 1e-9)
            per_step = (now - self.start_time) / max(step - self.start_step, 1)
            text = " ".join(f"{k}={v:.4f}" for k, v in sorted(losses.items()))
            print(f"step {step}/{num_steps} {text} lr={learning_rate:.5f} {rate:.1f} img/s "
                  f"eta {_format_eta(per_step * (num_steps - step))}", flush=True)
            self.last_time, self.last_step = now, step
        with self.writer.as_default(step=step):
            if step % options.summary_every == 0 or step == num_steps:
                for key, value in losses.items():
                    tf.summary.scalar(f"losses/{key}", value)
                tf.summary.scalar("learning_rate", learning_rate)
                if self.accumulated:
                    self.task.write_scalar_summaries(self.accumulated)
                self.accumulated = {}
            if images:
                self.task.write_image_summaries(images)


def _restore_or_warm_start(task, checkpoint, resume_path, optimizer, init_checkpoint, logdir,
                           scope="train"):
    """Resumes, or starts the task from an earlier run it chose, or warm-starts it, or not.

    Raises:
      ValueError: naming `{scope}.init_checkpoint` when the warm start cannot restore it.
    """
    if resume_path:
        hint = f"see {os.path.join(logdir, CONFIG_FILENAME)}"
        checkpointing.restore_checkpoint(checkpoint, resume_path, config_hint=hint)
        print(f"Resumed from {resume_path} (step {_step_of(optimizer)})", flush=True)
        return
    started = task.start_from_run()
    if started:
        print(f"Started from every weight of {started}"
              + (" (not the warm start train.init_checkpoint)" if init_checkpoint else ""),
              flush=True)
    elif init_checkpoint:
        if callable(init_checkpoint):  # E.g. the cached pretraining, built on first use.
            init_checkpoint = init_checkpoint()
        try:
            summary = task.warm_start(init_checkpoint)
        except ValueError as error:
            raise ValueError(f"{scope}.init_checkpoint={init_checkpoint!r}: {error}") from error
        print(f"Warm start from {init_checkpoint}: {summary}", flush=True)


def check_options(options, scope):
    """Validates `LoopOptions` read from gin, naming the binding `scope.field` at fault.

    Raises:
      ValueError: for a count that is not a positive integer (`image_summary_every` may be 0,
        `steps_per_run` and `seed` None), or an `init_checkpoint` that is neither a path nor
        a function.
    """
    from wss import config as config_lib

    init = options.init_checkpoint
    if init is not None and not isinstance(init, str) and not callable(init):
        raise ValueError(f"{scope}.init_checkpoint={init!r}: expected a checkpoint path or a "
                         f"function that returns one (e.g. @pretrained_checkpoint)")

    for field in ("num_steps", "log_every", "summary_every", "checkpoint_every", "max_to_keep"):
        config_lib.check_int(f"{scope}.{field}", getattr(options, field), minimum=1)
    config_lib.check_int(f"{scope}.image_summary_every", options.image_summary_every, 0)
    if options.steps_per_run is not None:
        config_lib.check_int(f"{scope}.steps_per_run", options.steps_per_run, minimum=1)
    if options.seed is not None:
        config_lib.check_int(f"{scope}.seed", options.seed, minimum=0)


def _check_inputs(task):
    """Fails naming the stream when one has no record at all."""
    from wss.data import pipeline

    for name, (spec, num_classes) in task.input_specs().items():
        pipeline.check_stream_not_empty(name, spec, num_classes)


def _next_step(step_function, iterators, task):
    """Runs one step; an input error is re-raised naming the stream, file and record."""
    try:
        return step_function(iterators)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
            tf.errors.OutOfRangeError) as error:
        specs = task.input_specs()
        if specs and (isinstance(error, tf.errors.DataLossError) or _from_input(error)):
            from wss.data import pipeline

            print(f"Input error ({type(error).__name__}); re-reading the records to find the "
                  "culprit", flush=True)
            pipeline.locate_input_error(specs, error)
        raise


def _from_input(error):
    """Whether an op error was raised by the input pipeline (not by the model)."""
    text = f"{error.message} {getattr(error, 'op', None) and error.op.name}"
    return isinstance(error, tf.errors.OutOfRangeError) or "IteratorGetNext" in text or (
        "Record " in error.message)


def _check_finite(step, losses, manager):
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"step {step}: non-finite {', '.join(f'{k}={losses[k]}' for k in bad)}; "
            f"stopping. The last good checkpoint is {manager.latest_checkpoint}")


def run(task, logdir, options):
    """Trains `task` and returns the final step's losses and the run's bookkeeping.

    Args:
      task: a `wss.training.task.Task`.
      logdir: checkpoints, TensorBoard events (`train/`), `config.gin` and the result file.
      options: a `LoopOptions`.

    Returns:
      dict of the last step's named losses (floats), `step`, `history` (the logged steps),
      `preempted`, `finished`, `chief` and `skipped_updates` (loss-scale overflows).

    Raises:
      NonFiniteLossError: if a loss becomes NaN or infinite.
      ValueError / FileNotFoundError: for bad configuration, before any training step.
      rundir.LogdirLockedError: when another process trains into `logdir`.
      checkpointing.CheckpointError: when no listed checkpoint is intact, or the newest does
        not fit the model (`CheckpointMismatchError`).
      wss.data.records.RecordError: naming the file and record of an unreadable record.
    """
    previous_policy = keras.mixed_precision.global_policy()
    iterators = {}
    restore_grappler = None
    try:
        if options.mixed_precision_policy:
            keras.mixed_precision.set_global_policy(options.mixed_precision_policy)
        if options.seed is not None:
            keras.utils.set_random_seed(options.seed)
        if options.deterministic:
            restore_grappler = determinism.enable()
        strategy = options.strategy or strategy_lib.make_strategy()
        save_dir = _worker_dir(logdir, strategy)
        with rundir.LogdirLock(save_dir):
            return _run_locked(task, logdir, save_dir, strategy, options, iterators)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if restore_grappler is not None:
            restore_grappler()
        # Also on errors, whose traceback keeps this frame: free the input pipelines now
        # rather than at interpreter exit. Destroying a stream's iterator waits for its
        # tf.data autotuning thread to wake (up to a minute); a single local CPU replica's
        # streams run without one (`pipeline.make_distributed`), distributed ones still wait.
        iterators.clear()


def _run_locked(task, logdir, save_dir, strategy, options, iterators):
    """`run` once it holds the lock of `save_dir`; fills `iterators` (cleared by `run`)."""
    rundir.remove_stale_temporaries(save_dir)
    task.prepare(logdir, is_chief(strategy))
    if options.seed is not None:
        # `prepare` may have drawn random numbers (a teacher model's initial weights): reseed,
        # so that a run starts the same whether or not it had anything to prepare.
        keras.utils.set_random_seed(options.seed)
    resume_path = checkpointing.newest_intact_checkpoint(save_dir)
    # Distributed iterators cannot be checkpointed; with a seed the streams are a pure
    # function of their position, so a resumed run skips the batches it trained on.
    resume_step = _checkpoint_step(resume_path)
    streams = task.make_streams(strategy, options.seed,
                                resume_step if options.seed is not None else 0)
    _check_inputs(task)
    iterators.update({name: iter(stream) for name, stream in streams.items()})
    with strategy.scope():
        task.build()
        optimizer = optim.make_optimizer(options.num_steps)
        optimizer.build(task.trainable_variables)
    checkpoint = tf.train.Checkpoint(optimizer=optimizer, **task.checkpoint_objects())
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=options.max_to_keep)
    _restore_or_warm_start(task, checkpoint, resume_path, optimizer, options.init_checkpoint,
                           logdir, options.scope)
    if is_chief(strategy):
        _write_text(os.path.join(logdir, CONFIG_FILENAME), gin.config_str())
    result = _train_steps(task, strategy, optimizer, manager, iterators, logdir, save_dir,
                          options)
    if is_chief(strategy):
        _write_text(os.path.join(logdir, OPERATIVE_CONFIG_FILENAME), gin.operative_config_str())
        _write_text(os.path.join(logdir, RESULT_FILENAME), json.dumps(result, indent=2))
    if save_dir != logdir:  # Non-chief workers remove their private copies.
        tf.io.gfile.rmtree(save_dir)
    _write_worker_result(logdir, strategy, result["step"], task.variables)
    return result


def _train_steps(task, strategy, optimizer, manager, iterators, logdir, save_dir, options):
    """The loop proper: steps until `num_steps` (or `steps_per_run`, or SIGTERM)."""
    every = options.image_summary_every
    step_function = _make_step_function(task, strategy, optimizer, with_images=bool(every))
    writer = tf.summary.create_file_writer(os.path.join(save_dir, "train"))
    step = _step_of(optimizer)
    num_replicas = strategy.num_replicas_in_sync
    progress = _Progress(task, optimizer, options, writer, step,
                         num_replicas * task.images_per_step)
    stop_step = options.num_steps
    if options.steps_per_run:
        stop_step = min(options.num_steps, step + options.steps_per_run)
    print(f"Training {task.name} for {options.num_steps} steps on {num_replicas} replica(s); "
          f"logdir {logdir}", flush=True)
    losses, skipped_updates = {}, 0
    with _SigtermFlag() as sigterm:
        while step < stop_step:
            images_due = bool(every) and (step + 1) % every == 0
            named, stats, images = _next_step(step_function, iterators, task)
            previous_step, step = step, _step_of(optimizer)
            losses = {k: float(v) for k, v in named.items()}
            _check_finite(step, losses, manager)
            if step == previous_step and not sigterm.received:
                # A LossScaleOptimizer skipped the update (non-finite scaled gradients) and
                # lowered its scale; nothing is due for a step that did not happen.
                skipped_updates += 1
                logging.info("step %d: gradients overflowed; update skipped", step)
                continue
            progress.record(step, losses, stats, images if images_due else {})
            if step % options.checkpoint_every == 0 or sigterm.received or step == stop_step:
                manager.save(checkpoint_number=step)
            if sigterm.received:
                break
    if not sigterm.received and (manager.latest_checkpoint is None
                                 or not manager.latest_checkpoint.endswith(f"-{step}")):
        manager.save(checkpoint_number=step)
    writer.flush()
    result = dict(losses, step=step, preempted=sigterm.received,
                  finished=step >= options.num_steps, history=progress.history,
                  chief=is_chief(strategy), skipped_updates=skipped_updates,
                  seconds=round(time.time() - progress.start_time, 1))
    result.update(task.run_summary(progress.final))
    return result
