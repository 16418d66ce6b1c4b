"""`wss.train`'s library side: the gin entry `train()` and `after_training()`.

`train()` builds a `wss.tasks.segmentation.SegmentationTask` (PseudoSeg in supervised, semi or
weak mode, or the self-training baseline) from its gin bindings and runs it with the generic
loop, `wss.training.loop.run`, which owns the strategy, checkpoints, resume, summaries,
preemption and the NaN guard. In self-training mode the loop first has the task make (or
reuse) the teacher's offline pseudo labels in `LOGDIR/pseudo_labels/` (`wss.method.self_training`).
`after_training()` evaluates and exports the final checkpoint.
"""

import functools
import inspect
import os

import gin
from absl import logging

from wss import config as config_lib
from wss import experiment
from wss.evaluation import evaluator as evaluation
from wss.method import offline_labels, self_training, teacher_stage  # noqa: F401 (registers gin)
from wss.method.objective import ONLINE_PSEUDO_LABEL_MODES
from wss.tasks.segmentation import SegmentationTask
from wss.training import loop
from wss.training.loop import NonFiniteLossError  # noqa: F401 (part of this module's API)


@gin.configurable(denylist=["logdir"])
def train(logdir, mode="semi", num_steps=30000, labelled_batch_size=4, unlabelled_batch_size=4,
          crop_size=(513, 513), num_classes=gin.REQUIRED, labelled_pattern=gin.REQUIRED,
          labelled_split=None, unlabelled_pattern=None, unlabelled_split=None,
          strategy=None, log_every=10, summary_every=50, image_summary_every=500,
          checkpoint_every=1000, max_to_keep=3, init_checkpoint=None,
          initialize_last_layer=False, seed=None, deterministic=False,
          mixed_precision_policy=None, palette="pascal", steps_per_run=None,
          teacher_checkpoint=None, ema_teacher_decay=0.0, share_as_teacher=False,
          offline_pseudo_labels=False):
    """Trains PseudoSeg (or a baseline) and returns the final step's losses.

    Args:
      logdir: checkpoints, TensorBoard events and the gin config go here.
      mode: `supervised` (labelled stream only), `semi` (+ unlabelled), `weak` (+ image-
        labelled) or `self_training` (+ the unlabelled images with a supervised teacher's
        offline pseudo labels; `wss.method.self_training`).
      num_steps, log_every, summary_every, image_summary_every, checkpoint_every,
        max_to_keep, seed, deterministic, steps_per_run, strategy: the loop's options, as in
        `wss.training.loop.LoopOptions` (`num_steps` is also the poly decay length).
      labelled_batch_size, unlabelled_batch_size: images per replica of each stream (the
        global batch is the number of replicas times these; the learning rate of
        `make_optimizer` is per step whatever the number of replicas).
      crop_size: training crop (height, width).
      num_classes: classes including background.
      labelled_pattern, unlabelled_pattern: TFRecord patterns of the labelled and unlabelled /
        image-labelled streams, or sources such as `@labelled/tfds_dataset()` (`tfds_source`).
      labelled_split, unlabelled_split: optional split files of their ids.
      init_checkpoint: a DeepLab TF1 checkpoint (DeepLab's ImageNet or model-zoo ones, or
        `wss.pretrain`'s export) to warm-start from when `logdir` has no checkpoint yet, or a
        function that returns one, called only then (after the split checks):
        `@pretrained_checkpoint` pretrains on first use (`wss.experiment`).
      initialize_last_layer: also load the logits layers from `init_checkpoint` (DeepLab's
        flag; False by default, as when the number of classes differs).
      mixed_precision_policy: None, `mixed_bfloat16` (TPU) or `mixed_float16` (GPU, with
        `make_optimizer.loss_scale = True`): Keras's global policy during this call only.
        Steps whose loss-scaled gradients overflow are skipped and not counted.
      palette: colour palette of image summaries (`pascal` or `cityscapes`).
      teacher_checkpoint: required in self-training mode: the log directory or checkpoint
        of a supervised run whose model (this config's model bindings) pseudo-labels the
        unlabelled images; the student still starts from `init_checkpoint`. In semi and weak
        modes with `ema_teacher_decay > 0`: the run whose model and SGC head the EMA teacher
        starts from (with decay 1, a frozen supervised teacher); in semi mode with
        `offline_pseudo_labels`: the supervised run that labels the unlabelled images once.
        Unused otherwise. Either may
        be a function of `labelled_pattern` and `labelled_split` that returns one, called
        after the split checks (also on resume): `@supervised_teacher` trains this config's
        supervised run once and caches it (`wss.method.teacher_stage`).
      ema_teacher_decay: 0 (the paper and reference: the weak view's pseudo label comes from
        the model being trained) or a decay in (0, 1]: semi and weak modes make it with an
        EMA teacher instead (`wss.method.ema_teacher`, an extension); 1 freezes the teacher.
      share_as_teacher: supervised mode: once the run has finished, add its final checkpoint
        to the cache as the teacher that `@supervised_teacher` would train for a run with the
        same bindings (`wss.method.teacher_stage.share_supervised_run`).
      offline_pseudo_labels: semi mode: instead of making pseudo labels online from the weak
        view, label the unlabelled images once before training with `teacher_checkpoint`, each
        object renamed by the pretrained classifier's view of its crop, into
        `LOGDIR/pseudo_labels/` (`wss.method.offline_labels`, gin `offline_pseudo_labels.*`);
        L_u trains the strong view towards them. Needs `ema_teacher_decay = 0`. With
        `offline_pseudo_labels.rounds > 1`, `offline_pseudo_labels.step_shares` splits
        `num_steps` among the rounds (or `round_steps` sets each round's) and
        `offline_pseudo_labels.continue_rounds` starts a round from the round before's final
        weights instead of `init_checkpoint`.

    Returns:
      dict of the last step's named losses (floats), `step`, `history` (the logged steps),
      `preempted`, `finished`, `chief` and `skipped_updates` (loss-scale overflows); in
      self-training mode also `self_training` (the pseudo labels' settings and counts).

    Raises:
      NonFiniteLossError: if a loss becomes NaN or infinite.
      ValueError / FileNotFoundError: for bad configuration (naming the binding, file or
        stream), before any training step.
      wss.training.rundir.LogdirLockedError: when another process trains into `logdir`.
    """
    _check_bindings(num_classes, labelled_batch_size, unlabelled_batch_size, crop_size)
    config_lib.check_bool("train.share_as_teacher", share_as_teacher)
    config_lib.check_bool("train.offline_pseudo_labels", offline_pseudo_labels)
    _check_teacher(mode, teacher_checkpoint, logdir)
    if offline_pseudo_labels:
        _check_offline_labels(mode, teacher_checkpoint, ema_teacher_decay)
    else:
        _check_ema_teacher(mode, ema_teacher_decay, teacher_checkpoint)
    start_from = round_steps = None
    from_teacher = False
    if offline_pseudo_labels and mode == "semi":  # `offline_pseudo_labels.rounds`, ...
        plan = offline_labels.round_plan(num_steps, logdir)
        if plan.round_steps is not None or plan.start_from or plan.from_teacher:
            if plan.start_from:
                origin = (f"the final weights of {plan.start_from} "
                          "(offline_pseudo_labels.continue_rounds)")
            elif plan.from_teacher:
                origin = ("the teacher's final weights "
                          "(offline_pseudo_labels.start_from_teacher)")
            else:
                origin = "train.init_checkpoint"
            print(f"Offline pseudo labels: rounds of {plan.round_steps or num_steps} steps; "
                  f"this is round {plan.rounds} of {plan.rounds}, {plan.num_steps} steps from "
                  f"{origin}", flush=True)
        num_steps, start_from, round_steps = plan.num_steps, plan.start_from, plan.round_steps
        from_teacher = plan.from_teacher
    if callable(teacher_checkpoint) and "init_checkpoint" in inspect.signature(
            teacher_checkpoint).parameters:  # The teacher stage's cache key knows the warm start.
        teacher_checkpoint = functools.partial(teacher_checkpoint,
                                               init_checkpoint=init_checkpoint)
    task = SegmentationTask(
        mode, num_classes, labelled_batch_size, unlabelled_batch_size, crop_size,
        labelled_pattern, labelled_split, unlabelled_pattern, unlabelled_split, palette,
        initialize_last_layer, teacher_checkpoint=teacher_checkpoint,
        ema_teacher_decay=ema_teacher_decay, offline_pseudo_labels=offline_pseudo_labels,
        init_checkpoint=init_checkpoint, start_from=start_from, round_steps=round_steps,
        start_from_teacher=from_teacher)
    options = loop.LoopOptions(
        num_steps=num_steps, log_every=log_every, summary_every=summary_every,
        image_summary_every=image_summary_every, checkpoint_every=checkpoint_every,
        max_to_keep=max_to_keep, init_checkpoint=init_checkpoint, seed=seed,
        deterministic=deterministic, mixed_precision_policy=mixed_precision_policy,
        steps_per_run=steps_per_run, strategy=strategy)
    loop.check_options(options, "train")
    result = loop.run(task, logdir, options)
    if share_as_teacher and mode == "supervised" and result["finished"] and result["chief"]:
        teacher_stage.share_supervised_run(logdir, labelled_pattern, labelled_split,
                                           init_checkpoint=init_checkpoint)
    return result


# A crop side below this leaves at most one feature pixel at output stride 16.
MIN_CROP_SIZE = 17


def _check_bindings(num_classes, labelled_batch_size, unlabelled_batch_size, crop_size):
    """Fails naming the `train` binding whose value cannot train a model."""
    config_lib.check_int("train.num_classes", num_classes, minimum=2)
    config_lib.check_int("train.labelled_batch_size", labelled_batch_size, minimum=1)
    config_lib.check_int("train.unlabelled_batch_size", unlabelled_batch_size, minimum=1)
    config_lib.check_size("train.crop_size", crop_size, minimum=MIN_CROP_SIZE)


def _check_ema_teacher(mode, decay, teacher_checkpoint):
    """Fails naming `train.ema_teacher_decay` for a bad value or a mode without one, or
    `train.teacher_checkpoint` given in semi or weak mode without an EMA teacher to start."""
    config_lib.check_number("train.ema_teacher_decay", decay, minimum=0, maximum=1)
    if decay > 0 and mode not in ONLINE_PSEUDO_LABEL_MODES:
        raise ValueError(f"train.ema_teacher_decay={decay!r}: an EMA teacher makes the online "
                         f"pseudo labels of train.mode 'semi' or 'weak', not {mode!r}")
    if not teacher_checkpoint or mode not in ONLINE_PSEUDO_LABEL_MODES:
        return
    if decay == 0:
        raise ValueError(f"train.teacher_checkpoint={teacher_checkpoint!r} in train.mode "
                         f"{mode!r} starts the EMA teacher: bind train.ema_teacher_decay in "
                         f"(0, 1] (1: a frozen teacher), or leave the checkpoint out")
    if callable(teacher_checkpoint):  # A stage that trains the teacher (after split checks).
        return
    # Before any pretraining or data: a missing teacher fails at once, naming the binding.
    self_training.resolve_teacher(teacher_checkpoint)


def _check_offline_labels(mode, teacher_checkpoint, ema_teacher_decay):
    """Fails naming the binding that `train.offline_pseudo_labels = True` cannot work with."""
    if mode != "semi":
        raise ValueError(f"train.offline_pseudo_labels = True labels unlabelled images for "
                         f"train.mode 'semi', not {mode!r}")
    if not teacher_checkpoint:
        raise ValueError("train.offline_pseudo_labels = True needs train.teacher_checkpoint: "
                         "@supervised_teacher (demo.gin), or a supervised run's log directory")
    if ema_teacher_decay != 0:
        raise ValueError(f"train.ema_teacher_decay={ema_teacher_decay!r}: the offline pseudo "
                         f"labels (train.offline_pseudo_labels = True) replace the online "
                         f"teacher; bind train.ema_teacher_decay = 0.0")
    if not callable(teacher_checkpoint):  # A missing teacher fails at once, naming the binding.
        self_training.resolve_teacher(teacher_checkpoint)


def _check_teacher(mode, teacher_checkpoint, logdir):
    """Fails naming `train.teacher_checkpoint` when self-training cannot use it.

    Whether the checkpoint exists is checked when the pseudo labels are made (a resumed run
    reuses its labels without the teacher).
    """
    if mode != "self_training":
        if teacher_checkpoint and mode not in ONLINE_PSEUDO_LABEL_MODES:
            logging.warning("train.teacher_checkpoint is only used with "
                            "train.mode='self_training' or an EMA teacher; ignored in mode %r",
                            mode)
        return
    if not teacher_checkpoint:
        raise ValueError(
            "train.mode='self_training' needs train.teacher_checkpoint: the log directory (or "
            "a checkpoint path) of a supervised run on the labelled images, e.g. "
            "--gin_bindings=\"train.teacher_checkpoint='runs/demo_supervised'\"")
    if callable(teacher_checkpoint):  # E.g. @supervised_teacher: a cache entry of its own.
        return
    if not isinstance(teacher_checkpoint, str):
        raise ValueError(f"train.teacher_checkpoint={teacher_checkpoint!r}: expected a path "
                         f"or a function that returns one (e.g. @supervised_teacher)")
    if "://" not in teacher_checkpoint and "://" not in logdir:
        teacher = os.path.realpath(teacher_checkpoint)
        own = os.path.realpath(logdir)
        if teacher == own or teacher.startswith(own + os.sep):
            raise ValueError(f"train.teacher_checkpoint={teacher_checkpoint!r} is in this "
                             f"run's own --logdir {logdir}; give the supervised teacher's")


@gin.configurable
def after_training(logdir, evaluate=True, export=False, export_dir=None, evaluate_kept=False):
    """Evaluates (and exports) the final checkpoint; prints where everything is.

    The evaluated checkpoints' best by validation mIoU is kept in LOGDIR/best/ and reported
    with the last one (`wss.evaluation.evaluator.report_best_and_last`).

    Args:
      logdir: the training log directory.
      evaluate: evaluate the latest checkpoint on the validation set.
      export: export a SavedModel.
      export_dir: SavedModel directory (default LOGDIR/export/ckpt-N).
      evaluate_kept: also evaluate the other checkpoints still in LOGDIR (the last
        `train.max_to_keep`), so that the best is chosen among them.

    Returns:
      dict with `miou` (or None), `checkpoint`, `export_dir` (or None) and, when evaluated,
      `best` and `last` (`wss.evaluation.evaluator.best_and_last`).
    """
    from wss import export as export_lib

    checkpoint = experiment.latest_checkpoint_path(logdir)
    summary = {"checkpoint": checkpoint, "miou": None, "export_dir": None}
    if evaluate:
        results, path = evaluation.evaluate_checkpoint(checkpoint)
        print(evaluation.format_results(results))
        summary["miou"] = results["miou"]
        summary["results"] = path
        report = evaluation.report_best_and_last(logdir, checkpoint, results, evaluate_kept)
        summary.update(best=report["best"], last=report["last"])
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
