"""PseudoSeg as a training task: its streams, models, replica step and summaries.

`SegmentationTask` plugs `wss.objective.PseudoSegObjective` (supervised, semi or weak mode)
into the generic loop (`wss.training.loop.run`):

* streams: `labelled` (weak views of masked images) and, in semi and weak modes, `unlabelled`
  (weak and strong views of the unlabelled or image-labelled images);
* models: the DeepLab model and the SGC head (`wss.experiment.build_models`);
* step: `PseudoSegObjective.train_step` plus, for TensorBoard, the pseudo labels' accuracy
  against the masks the unlabelled records may have, their ECE (decoder, SGC, fused) and images
  in the dataset's palette;
* warm start: a DeepLab TF1 checkpoint (ImageNet, model zoo, or `wss.pretrain`'s export).
"""

import tensorflow as tf

from wss import experiment, metrics, visualize
from wss.data import pipeline
from wss.objective import MODES, PseudoSegObjective
from wss.training.task import StepOutput, Task


class SegmentationTask(Task):
    """PseudoSeg (or its supervised baseline) on TFRecord streams.

    Args:
      mode: `supervised`, `semi` or `weak`.
      num_classes: classes including background.
      labelled_batch_size: labelled images per replica.
      unlabelled_batch_size: unlabelled or image-labelled images per replica.
      crop_size: training crop (height, width).
      labelled_pattern: TFRecord pattern of the labelled stream.
      labelled_split: optional split file of labelled ids.
      unlabelled_pattern: TFRecord pattern of the unlabelled / image-labelled stream.
      unlabelled_split: optional split file of its ids (None with the labelled records: the
        labelled split's complement).
      palette: colour palette of image summaries.
      initialize_last_layer: also warm-start the logits layers (DeepLab's flag).

    Raises:
      ValueError: for an unknown mode or a semi / weak mode without unlabelled records.
    """

    def __init__(self, mode, num_classes, labelled_batch_size, unlabelled_batch_size,
                 crop_size, labelled_pattern, labelled_split=None, unlabelled_pattern=None,
                 unlabelled_split=None, palette="pascal", initialize_last_layer=False):
        if mode not in MODES:
            raise ValueError(f"train.mode={mode!r}; choose one of {MODES}")
        if mode != "supervised" and not unlabelled_pattern:
            raise ValueError(f"train.mode={mode!r} needs train.unlabelled_pattern")
        self.mode = mode
        self.name = mode
        self.num_classes = num_classes
        self.labelled_batch_size = labelled_batch_size
        self.unlabelled_batch_size = unlabelled_batch_size
        self.crop_size = crop_size
        self.labelled_spec = pipeline.make_spec(labelled_pattern, labelled_split)
        self.unlabelled_spec = None
        if mode != "supervised":
            same_records = unlabelled_pattern == labelled_pattern and not unlabelled_split
            self.unlabelled_spec = pipeline.make_spec(
                unlabelled_pattern, unlabelled_split,
                exclude_file=labelled_split if same_records else None)
        self.palette = visualize.get_palette(palette)
        self.initialize_last_layer = initialize_last_layer
        self.model = self.sgc_head = self.objective = None

    @property
    def semi(self):
        return self.mode != "supervised"

    def check_splits(self):
        """Prints the number of labelled, unlabelled and eval images; fails on bad splits.

        See `wss.data.hygiene.check_splits` (gin: `check_splits.allow_overlap`).
        """
        from wss import evaluation
        from wss.data import hygiene

        return hygiene.check_splits(self.labelled_spec, self.unlabelled_spec,
                                    evaluation.configured_eval_spec())

    def make_streams(self, strategy, seed, skip_batches):
        self.check_splits()
        num_replicas = strategy.num_replicas_in_sync
        streams = {"labelled": pipeline.make_distributed(
            strategy, pipeline.labelled_dataset, spec=self.labelled_spec,
            batch_size=self.labelled_batch_size * num_replicas, num_classes=self.num_classes,
            crop_size=self.crop_size, seed=seed, skip_batches=skip_batches)}
        if self.semi:
            streams["unlabelled"] = pipeline.make_distributed(
                strategy, pipeline.unlabelled_dataset, spec=self.unlabelled_spec,
                batch_size=self.unlabelled_batch_size * num_replicas,
                num_classes=self.num_classes, crop_size=self.crop_size,
                seed=None if seed is None else seed + 1, skip_batches=skip_batches)
        return streams

    def input_specs(self):
        specs = {"labelled": (self.labelled_spec, self.num_classes)}
        if self.semi:
            specs["unlabelled"] = (self.unlabelled_spec, self.num_classes)
        return specs

    def build(self):
        self.model, self.sgc_head = experiment.build_models(num_classes=self.num_classes)
        self.objective = PseudoSegObjective(self.model, self.sgc_head, mode=self.mode)

    @property
    def trainable_variables(self):
        return self.objective.trainable_variables

    @property
    def variables(self):
        return self.model.variables + (self.sgc_head.variables if self.sgc_head else [])

    def checkpoint_objects(self):
        return experiment.checkpoint_objects(self.model, self.sgc_head)

    def warm_start(self, path):
        from wss.models import load_deeplab_checkpoint

        report = load_deeplab_checkpoint(self.model, path, skip_mismatch=True,
                                         skip_last_layer=not self.initialize_last_layer)
        return report.summary()

    @property
    def images_per_step(self):
        return self.labelled_batch_size + (self.unlabelled_batch_size if self.semi else 0)

    def replica_step(self, optimizer, batches, num_replicas, with_images):
        labelled, unlabelled = batches["labelled"], batches.get("unlabelled")
        named, pseudo, strong = self.objective.train_step(optimizer, labelled, unlabelled,
                                                          num_replicas)
        stats = self.objective.diagnostics(unlabelled, pseudo) if self.semi else {}
        images = _summary_images(labelled, unlabelled, pseudo, strong) if with_images else {}
        return StepOutput(named, stats, images)

    def write_scalar_summaries(self, stats):
        """Pseudo-label confidence, accuracy against masks and ECE of decoder / SGC / fusion."""
        for name, value in pseudo_label_quality(stats).items():
            tf.summary.scalar(("calibration/" if name.startswith("ece") else "pseudo_labels/")
                              + name, value)

    def run_summary(self, stats):
        """The pseudo labels' quality over the last quarter of training (`pseudo_labels`)."""
        quality = pseudo_label_quality(stats)
        return {"pseudo_labels": quality} if quality else {}

    def write_image_summaries(self, images):
        for key, value in images.items():
            if value.dtype.is_floating:
                picture = tf.cast(tf.clip_by_value(value, 0, 255), tf.uint8)
            else:
                picture = visualize.colorize(value, self.palette)
            tf.summary.image(key, picture, max_outputs=1)


def pseudo_label_quality(stats):
    """Confidence, accuracy against masks and ECE of the pseudo labels from summed stats.

    Args:
      stats: sums of `PseudoSegObjective.diagnostics` over replicas and steps.

    Returns:
      dict with `confidence` (mean max probability of the targets), and where the unlabelled
      records have masks, `accuracy` and `ece_decoder`, `ece_sgc`, `ece_fused` (floats).
    """
    quality = {}
    pixels = stats.get("pseudo_pixels", 0.0)
    if pixels > 0:
        quality["confidence"] = float(stats["pseudo_confidence_sum"] / pixels)
    labelled = stats.get("pseudo_labelled_pixels", 0.0)
    if labelled > 0:
        quality["accuracy"] = float(stats["pseudo_correct"] / labelled)
        for name in ("decoder", "sgc", "fused"):
            quality[f"ece_{name}"] = float(metrics.ece_from_reliability(
                stats[f"{name}_count"], stats[f"{name}_correct"],
                stats[f"{name}_confidence_sum"]))
    return quality


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
