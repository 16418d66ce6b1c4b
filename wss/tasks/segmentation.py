"""PseudoSeg as a training task: its streams, models, replica step and summaries.

`SegmentationTask` plugs `wss.method.objective.PseudoSegObjective` (supervised, semi, weak or
self_training mode) into the generic loop (`wss.training.loop.run`):

* preparation (self-training, and semi mode with `train.offline_pseudo_labels`): the teacher's
  offline pseudo labels of the unlabelled images, made once into `LOGDIR/pseudo_labels/` and
  reused on resume (`wss.method.self_training`, `wss.method.offline_labels`);
* streams: `labelled` (weak views of masked images) and, in semi and weak modes, `unlabelled`
  (weak and strong views of the unlabelled or image-labelled images), in self-training mode
  `pseudo_labelled` (the pseudo-labelled images, augmented as the labelled ones);
* models: the DeepLab model and the SGC head (`wss.experiment.build_models`), and with
  `train.ema_teacher_decay > 0` a second pair, the EMA teacher of the online pseudo labels
  (`wss.method.ema_teacher`, saved in the checkpoints);
* step: `PseudoSegObjective.train_step` plus, for TensorBoard, the pseudo labels' accuracy
  against the masks the unlabelled records may have, their ECE (decoder, SGC, fused) and images
  in the dataset's palette;
* warm start: a DeepLab TF1 checkpoint (ImageNet, model zoo, or `wss.pretrain`'s export).
"""

import numpy as np
import tensorflow as tf
from absl import logging

from wss import experiment, visualize
from wss.data import pipeline
from wss.evaluation import metrics
from wss.method.ema_teacher import EmaTeacher
from wss.method.objective import MODES, ONLINE_PSEUDO_LABEL_MODES, PseudoSegObjective
from wss.models import inference
from wss.training.task import StepOutput, Task


class SegmentationTask(Task):
    """PseudoSeg (or its supervised or self-training baseline) on TFRecord streams.

    Args:
      mode: `supervised`, `semi`, `weak` or `self_training`.
      num_classes: classes including background.
      labelled_batch_size: labelled images per replica.
      unlabelled_batch_size: unlabelled, image-labelled or pseudo-labelled images per replica.
      crop_size: training crop (height, width).
      labelled_pattern: TFRecord pattern of the labelled stream.
      labelled_split: optional split file of labelled ids.
      unlabelled_pattern: TFRecord pattern of the unlabelled / image-labelled stream.
      unlabelled_split: optional split file of its ids (None with the labelled records: the
        labelled split's complement).
      palette: colour palette of image summaries.
      initialize_last_layer: also warm-start the logits layers (DeepLab's flag).
      teacher_checkpoint: self-training: the supervised teacher's log directory or checkpoint;
        semi and weak modes with an EMA teacher: the run whose model and SGC head the teacher
        starts from (else it starts from the student).
      ema_teacher_decay: semi and weak modes: 0 (pseudo labels from the model being trained)
        or the decay of an EMA teacher that makes them (`wss.method.ema_teacher`; 1 freezes
        it).
      offline_pseudo_labels: semi mode: the unlabelled stream reads the teacher's offline
        labels with renamed objects (`wss.method.offline_labels`), made by `prepare`.
      init_checkpoint: the run's warm start (or a function that returns it): the crop
        classifier of the offline labels.
      start_from: a log directory whose final weights the model starts from instead of the
        warm start (`start_from_run`; a later round of offline labels that continues the
        round before), or None.
      start_from_teacher: offline labels: start from the teacher's final weights (resolved by
        `prepare`) when `start_from` is None (`offline_pseudo_labels.start_from_teacher`).
      round_steps: every round's step count of the offline labels (`wss.method.offline_labels
        .round_plan`), for the earlier rounds this run trains; None: as bound in gin.

    Raises:
      ValueError: for an unknown mode, a mode other than supervised without unlabelled
        records, or self-training without `teacher_checkpoint`.
    """

    def __init__(self, mode, num_classes, labelled_batch_size, unlabelled_batch_size,
                 crop_size, labelled_pattern, labelled_split=None, unlabelled_pattern=None,
                 unlabelled_split=None, palette="pascal", initialize_last_layer=False,
                 teacher_checkpoint=None, ema_teacher_decay=0.0, offline_pseudo_labels=False,
                 init_checkpoint=None, start_from=None, round_steps=None,
                 start_from_teacher=False):
        if mode not in MODES:
            raise ValueError(f"train.mode={mode!r}; choose one of {MODES}")
        if mode != "supervised" and not unlabelled_pattern:
            raise ValueError(f"train.mode={mode!r} needs train.unlabelled_pattern")
        if mode == "self_training" and not teacher_checkpoint:
            raise ValueError(
                "train.mode='self_training' needs train.teacher_checkpoint: the log directory "
                "(or a checkpoint path) of a supervised run on the labelled images, e.g. "
                "--gin_bindings=\"train.teacher_checkpoint='runs/demo_supervised'\"")
        self.mode = mode
        self.name = mode
        self.num_classes = num_classes
        self.labelled_batch_size = labelled_batch_size
        self.unlabelled_batch_size = unlabelled_batch_size
        self.crop_size = crop_size
        self.labelled_spec = pipeline.make_spec(labelled_pattern, labelled_split)
        self._labelled_source = (labelled_pattern, labelled_split)
        self.unlabelled_spec = None
        if mode != "supervised":
            same_records = unlabelled_pattern == labelled_pattern and not unlabelled_split
            self.unlabelled_spec = pipeline.make_spec(
                unlabelled_pattern, unlabelled_split,
                exclude_file=labelled_split if same_records else None)
        self.palette = visualize.get_palette(palette)
        self.initialize_last_layer = initialize_last_layer
        self.teacher_checkpoint = teacher_checkpoint
        self.ema_teacher_decay = ema_teacher_decay
        self.offline_pseudo_labels = offline_pseudo_labels
        self.init_checkpoint = init_checkpoint
        self.start_from = start_from
        self.start_from_teacher = start_from_teacher
        self.round_steps = round_steps
        self.ema_teacher = None
        self.pseudo_label_spec = None  # Self-training: set by `prepare`.
        self.pseudo_label_summary = None
        self._splits_checked = False
        self.model = self.sgc_head = self.objective = None

    @property
    def semi(self):
        """Whether pseudo labels are made online (semi and weak modes: PseudoSeg itself)."""
        return self.mode in ONLINE_PSEUDO_LABEL_MODES

    @property
    def self_training(self):
        """Whether the second stream is the teacher's offline pseudo-labelled images."""
        return self.mode == "self_training"

    def check_splits(self):
        """Prints the number of labelled, unlabelled and eval images; fails on bad splits.

        See `wss.data.hygiene.check_splits` (gin: `check_splits.allow_overlap`).
        """
        from wss.data import hygiene
        from wss.evaluation import evaluator as evaluation

        self._splits_checked = True
        return hygiene.check_splits(self.labelled_spec, self.unlabelled_spec,
                                    evaluation.configured_eval_spec())

    def prepare(self, logdir, chief):
        """Checks the splits; trains a teacher stage; self-training: makes or reuses the
        teacher's pseudo labels.

        A callable `teacher_checkpoint` (`@supervised_teacher`, `wss.method.teacher_stage`) is
        called here, after the split checks, with the labelled data, and replaced by the
        directory it returns (with offline pseudo labels `prepare_offline_labels` calls it, and
        fits the crop scorer while it trains). See
        `wss.method.self_training.prepare_pseudo_labels` (gin: `self_training.threshold`, ...).
        """
        self.check_splits()
        teacher = self.teacher_checkpoint
        if callable(teacher) and self.mode != "supervised":
            pattern, split = self._labelled_source
            stage = teacher

            def train_teacher():  # Trains the stage (or finds it cached); keeps its directory.
                self.teacher_checkpoint = stage(labelled_pattern=pattern, labelled_split=split)
                return self.teacher_checkpoint

            teacher = train_teacher
            if not self.offline_labels:  # The offline labels call it themselves (below).
                train_teacher()
        if self.self_training:
            from wss.method import self_training

            directory = self_training.pseudo_label_dir(logdir)
            self.pseudo_label_summary = self_training.prepare_pseudo_labels(
                directory, self.teacher_checkpoint, self.unlabelled_spec, self.num_classes,
                chief=chief)
            self.pseudo_label_spec = self_training.pseudo_label_spec(directory)
        if self.offline_labels:
            from wss.method import offline_labels, self_training

            init = self.init_checkpoint
            if callable(init):  # `@pretrained_checkpoint`: cached, so the warm start reuses it.
                init = init()
            directory = self_training.pseudo_label_dir(logdir)
            steps = {} if self.round_steps is None else {"round_steps": self.round_steps}
            self.pseudo_label_summary = offline_labels.prepare_offline_labels(
                directory, teacher, self.labelled_spec, self.unlabelled_spec,
                self.num_classes, init_checkpoint=init, chief=chief, logdir=logdir, **steps)
            self.pseudo_label_spec = self_training.pseudo_label_spec(directory)
            if self.start_from_teacher and not self.start_from:
                self.start_from = self.teacher_checkpoint

    @property
    def offline_labels(self):
        """Whether the unlabelled stream reads offline pseudo labels (semi mode)."""
        return self.semi and self.offline_pseudo_labels

    def make_streams(self, strategy, seed, skip_batches):
        if not self._splits_checked:
            self.check_splits()
        if (self.self_training or self.offline_labels) and self.pseudo_label_spec is None:
            raise RuntimeError("offline pseudo-labelled streams need the pseudo labels: call "
                               "prepare()")
        num_replicas = strategy.num_replicas_in_sync
        streams = {"labelled": pipeline.make_distributed(
            strategy, pipeline.labelled_dataset, spec=self.labelled_spec,
            batch_size=self.labelled_batch_size * num_replicas, num_classes=self.num_classes,
            crop_size=self.crop_size, seed=seed, skip_batches=skip_batches)}
        if self.semi:  # With offline labels: the unlabelled images with them as masks.
            streams["unlabelled"] = pipeline.make_distributed(
                strategy, pipeline.unlabelled_dataset,
                spec=self.pseudo_label_spec if self.offline_labels else self.unlabelled_spec,
                batch_size=self.unlabelled_batch_size * num_replicas,
                num_classes=self.num_classes, crop_size=self.crop_size,
                seed=None if seed is None else seed + 1, skip_batches=skip_batches)
        if self.self_training:  # Augmented as the labelled stream (labelled_dataset's bindings).
            streams["pseudo_labelled"] = pipeline.make_distributed(
                strategy, pipeline.labelled_dataset, spec=self.pseudo_label_spec,
                batch_size=self.unlabelled_batch_size * num_replicas,
                num_classes=self.num_classes, crop_size=self.crop_size,
                seed=None if seed is None else seed + 1, skip_batches=skip_batches)
        return streams

    def input_specs(self):
        specs = {"labelled": (self.labelled_spec, self.num_classes)}
        if self.semi:
            specs["unlabelled"] = (self.pseudo_label_spec if self.offline_labels
                                   and self.pseudo_label_spec is not None
                                   else self.unlabelled_spec, self.num_classes)
        if self.self_training and self.pseudo_label_spec is not None:
            specs["pseudo_labelled"] = (self.pseudo_label_spec, self.num_classes)
        return specs

    def build(self):
        self.model, self.sgc_head = experiment.build_models(num_classes=self.num_classes)
        warning = inference.crop_alignment_warning(self.crop_size, self.model.output_stride)
        if warning:
            logging.warning(warning)
        if self.semi and self.ema_teacher_decay > 0:
            teacher_model, teacher_sgc_head = experiment.build_models(
                num_classes=self.num_classes)
            self.ema_teacher = EmaTeacher(self.model, self.sgc_head, teacher_model,
                                          teacher_sgc_head, self.ema_teacher_decay)
            self.ema_teacher.copy_from_student()
            if self.teacher_checkpoint:  # A supervised run's model (a resumed run's own
                # checkpoint then restores the teacher it saved).
                self._restore_teacher()
        self.objective = PseudoSegObjective(self.model, self.sgc_head, mode=self.mode,
                                            teacher=self.ema_teacher,
                                            offline_labels=self.offline_labels)
        if self.offline_labels:
            print("train.offline_pseudo_labels = True: L_u trains on the offline labels; the "
                  "online pseudo labels' bindings (PseudoLabelConfig.*, "
                  "PseudoSegObjective.teacher_mirror) are unused", flush=True)

    def _restore_teacher(self):
        """Loads `teacher_checkpoint` into the EMA teacher, naming the binding on failure."""
        from wss.method import self_training

        path = self_training.restore_teacher(self.teacher_checkpoint, self.ema_teacher.model,
                                             self.ema_teacher.sgc_head)
        print(f"EMA teacher from {path} (train.teacher_checkpoint)", flush=True)

    @property
    def trainable_variables(self):
        return self.objective.trainable_variables

    @property
    def variables(self):
        return self.model.variables + (self.sgc_head.variables if self.sgc_head else [])

    def checkpoint_objects(self):
        objects = experiment.checkpoint_objects(self.model, self.sgc_head)
        if self.ema_teacher is not None:
            objects["ema_teacher_model"] = experiment.VariableStore(self.ema_teacher.model)
            objects["ema_teacher_sgc_head"] = experiment.VariableStore(self.ema_teacher.sgc_head)
        if self.objective.alignment is not None:
            objects["distribution_alignment"] = self.objective.alignment
        return objects

    def start_from_run(self):
        if not self.start_from:
            return None
        # Every weight of the earlier run's final checkpoint (its logits too; the offline
        # labels' rounds, `wss.method.offline_labels.round_plan`).
        return experiment.restore_models(self.start_from, self.model, self.sgc_head)

    def warm_start(self, path):
        from wss.models import load_deeplab_checkpoint

        report = load_deeplab_checkpoint(self.model, path, skip_mismatch=True,
                                         skip_last_layer=not self.initialize_last_layer)
        if self.ema_teacher is not None and not self.teacher_checkpoint:
            self.ema_teacher.copy_from_student()  # The teacher starts from the student.
        return report.summary()

    @property
    def images_per_step(self):
        second = self.mode != "supervised"
        return self.labelled_batch_size + (self.unlabelled_batch_size if second else 0)

    def replica_step(self, optimizer, batches, num_replicas, with_images):
        labelled = batches["labelled"]
        unlabelled = batches.get("pseudo_labelled" if self.self_training else "unlabelled")
        named, pseudo, strong = self.objective.train_step(optimizer, labelled, unlabelled,
                                                          num_replicas)
        online = self.semi and not self.offline_labels
        # Offline labels are the stream's masks: their quality is in the labels' marker.
        stats = self.objective.diagnostics(unlabelled, pseudo) if online else {}
        images = {}
        if with_images:
            images = _summary_images(labelled, unlabelled if online else None, pseudo, strong)
            if self.offline_labels:
                images.update({"unlabelled/strong": unlabelled["strong"][:1],
                               "unlabelled/offline_label": unlabelled["label"][:1],
                               "unlabelled/strong_prediction": tf.argmax(
                                   strong["logits"][:1], -1, tf.int32)})
            if self.self_training:
                images.update({"pseudo_labelled/image": unlabelled["image"][:1],
                               "pseudo_labelled/label": unlabelled["label"][:1]})
        return StepOutput(named, stats, images)

    def write_scalar_summaries(self, stats):
        """Pseudo-label confidence, accuracy against masks and ECE of decoder / SGC / fusion."""
        for name, value in pseudo_label_quality(stats).items():
            if name == "reliability":  # Per-bin lists: for the run summary only.
                continue
            tf.summary.scalar(("calibration/" if name.startswith("ece") else "pseudo_labels/")
                              + name, value)

    def run_summary(self, stats):
        """The pseudo labels' quality over the last quarter of training (`pseudo_labels`).

        Self-training: `self_training`, the offline pseudo labels' marker (settings, teacher
        checkpoint, images, kept fraction and, where the unlabelled records have masks, the
        accuracy of the kept pixels).
        """
        summary = {}
        quality = pseudo_label_quality(stats)
        if quality:
            summary["pseudo_labels"] = quality
        if self.pseudo_label_summary is not None:
            key = "offline_pseudo_labels" if self.offline_labels else "self_training"
            summary[key] = self.pseudo_label_summary
        return summary

    def write_image_summaries(self, images):
        for key, value in images.items():
            if value.dtype.is_floating:
                picture = tf.cast(tf.clip_by_value(value, 0, 255), tf.uint8)
            else:
                picture = visualize.colorize(value, self.palette)
            tf.summary.image(key, picture, max_outputs=1)


# The distributions whose calibration the diagnostics measure (`PseudoSegObjective.diagnostics`).
CALIBRATED = ("decoder", "sgc", "fused", "targets")


def pseudo_label_quality(stats):
    """Confidence, accuracy against masks and ECE of the pseudo labels from summed stats.

    Args:
      stats: sums of `PseudoSegObjective.diagnostics` over replicas and steps.

    Returns:
      dict with `confidence` (mean max probability of the targets that keep a weight in L_u),
      `kept_fraction` (of the real pixels, those with a weight), and where the unlabelled
      records have masks, `accuracy` (of every pseudo label), `kept_accuracy` (of the kept
      ones) and `ece_decoder`, `ece_sgc`, `ece_fused` (the distribution before sharpening),
      `ece_targets` (the final targets) (floats), and
      `reliability`: per source, the per-bin pixel `count`, mean `confidence` and `accuracy`
      (lists over equal-width confidence bins; None for empty bins), a reliability diagram.
    """
    quality = {}
    pixels = stats.get("pseudo_pixels", 0.0)
    if pixels > 0:
        quality["confidence"] = float(stats["pseudo_confidence_sum"] / pixels)
    real = stats.get("pseudo_real_pixels", 0.0)
    if real > 0:
        quality["kept_fraction"] = float(pixels / real)
    labelled = stats.get("pseudo_labelled_pixels", 0.0)
    if labelled > 0:
        quality["accuracy"] = float(stats["pseudo_correct"] / labelled)
        kept = stats.get("pseudo_kept_labelled_pixels", 0.0)
        if kept > 0:
            quality["kept_accuracy"] = float(stats["pseudo_kept_correct"] / kept)
        for name in CALIBRATED:
            quality[f"ece_{name}"] = float(metrics.ece_from_reliability(
                stats[f"{name}_count"], stats[f"{name}_correct"],
                stats[f"{name}_confidence_sum"]))
        quality["reliability"] = {
            name: _reliability_bins(stats[f"{name}_count"], stats[f"{name}_correct"],
                                    stats[f"{name}_confidence_sum"])
            for name in CALIBRATED}
    return quality


def _reliability_bins(count, correct, confidence_sum):
    """Per-bin pixel counts, mean confidences and accuracies as JSON-ready lists."""
    count = [float(c) for c in np.reshape(count, [-1])]
    correct = np.reshape(correct, [-1])
    confidence_sum = np.reshape(confidence_sum, [-1])
    return {"count": count,
            "confidence": [float(s / c) if c else None for s, c in zip(confidence_sum, count)],
            "accuracy": [float(k / c) if c else None for k, c in zip(correct, count)]}


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
