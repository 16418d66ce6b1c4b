"""Pretraining as a training task: the backbone and image classifier on image-level labels.

The stand-in for DeepLab's ImageNet checkpoints. `PretrainingTask` trains
`wss.models.ImageClassifier` (the backbone, global pooling and the `<network>/logits`
classifier) on TFRecords of image-level labels with the same loop as segmentation
(`wss.training.loop.run`): same strategies, checkpoints, resume and logs. `pretrain()` is the
gin entry behind `python -m wss.pretrain`, which then writes the result under DeepLab's TF1
variable names for `train.init_checkpoint`.

Losses:

* `sigmoid` (multi-label images, e.g. the built-in classification set): mean sigmoid
  cross-entropy over the `C - 1` labels, as PseudoSeg's `L_x`;
* `softmax` (single-label images, ImageNet style): softmax cross-entropy against the labels
  normalised to sum to one (an image without a label contributes nothing).

Plus DeepLab's L2 weight decay on the convolution kernels.
"""

import gin
import tensorflow as tf

from wss import config as config_lib
from wss import experiment
from wss.data import pipeline
from wss.method import losses
from wss.training import loop
from wss.training.task import StepOutput, Task

LOSSES = ("sigmoid", "softmax")
# A crop side below this leaves at most one feature pixel at output stride 16.
MIN_CROP_SIZE = 17


def classification_losses(logits, labels, loss):
    """Per-example classification losses.

    Args:
      logits: `[B, K]` logits.
      labels: `[B, K]` multi-hot labels.
      loss: `sigmoid` (mean over the K labels) or `softmax` (labels normalised to sum to one).

    Returns:
      float32 `[B]`.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.float32)
    if loss == "sigmoid":
        return tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1)
    targets = labels / tf.maximum(tf.reduce_sum(labels, axis=-1, keepdims=True), 1.0)
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def classification_counts(logits, labels, loss):
    """Additive accuracy statistics of a batch: `hits` out of `positives`.

    `softmax`: an image is a hit when its top-1 category is one of its labels (top-1 accuracy
    over images with a label). `sigmoid`: each image scores the number of its `n` labels among
    its `n` highest logits (R-precision), summed over images.

    Returns:
      dict of float32 scalars `hits` and `positives`.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.float32)
    counts = tf.reduce_sum(labels, axis=-1)
    if loss == "softmax":
        top = tf.argmax(logits, axis=-1, output_type=tf.int32)
        hits = tf.cast(tf.gather(labels, top, batch_dims=1) > 0, tf.float32)
        return {"hits": tf.reduce_sum(hits),
                "positives": tf.reduce_sum(tf.cast(counts > 0, tf.float32))}
    # Rank of each logit within its image (0 = highest); a label is a hit when its rank is
    # below the image's number of labels.
    order = tf.argsort(logits, axis=-1, direction="DESCENDING")
    ranks = tf.argsort(order, axis=-1)
    hits = tf.cast(ranks, tf.float32) < counts[:, tf.newaxis]
    return {"hits": tf.reduce_sum(tf.cast(hits, tf.float32) * labels),
            "positives": tf.reduce_sum(counts)}


class PretrainingTask(Task):
    """Trains an `ImageClassifier` on image-level labels.

    Args:
      num_classes: ids including the unused 0 (labels are ids 1..C-1; C - 1 logits).
      batch_size: images per replica.
      crop_size: training crop (height, width).
      pattern: TFRecord pattern of the training images.
      split: optional split file of their ids.
      loss: `sigmoid` (multi-label) or `softmax` (single-label).
      weight_decay: DeepLab's L2 factor on convolution kernels.

    Raises:
      ValueError: for an unknown loss.
    """

    name = "pretraining"

    def __init__(self, num_classes, batch_size, crop_size, pattern, split=None, loss="sigmoid",
                 weight_decay=4e-5):
        if loss not in LOSSES:
            raise ValueError(f"pretrain.loss={loss!r}; choose one of {LOSSES}")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.crop_size = crop_size
        self.spec = pipeline.DatasetSpec(pattern, split)
        self.loss = loss
        self.weight_decay = weight_decay
        self.model = None

    def make_streams(self, strategy, seed, skip_batches):
        return {"images": pipeline.make_distributed(
            strategy, pipeline.classification_dataset, spec=self.spec,
            batch_size=self.batch_size * strategy.num_replicas_in_sync,
            num_classes=self.num_classes, crop_size=self.crop_size, seed=seed,
            skip_batches=skip_batches)}

    def input_specs(self):
        return {"images": (self.spec, self.num_classes)}

    def build(self):
        from wss.models import build_image_classifier

        self.model = build_image_classifier(num_logits=self.num_classes - 1)

    @property
    def trainable_variables(self):
        return self.model.trainable_variables

    @property
    def variables(self):
        return self.model.variables

    def checkpoint_objects(self):
        return experiment.checkpoint_objects(self.model)

    def warm_start(self, path):
        from wss.models import load_deeplab_checkpoint

        return load_deeplab_checkpoint(self.model, path, skip_mismatch=True).summary()

    @property
    def images_per_step(self):
        return self.batch_size

    def replica_step(self, optimizer, batches, num_replicas, with_images):
        import keras

        batch = batches["images"]
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(batch["image"], training=True)["logits"]
            loss_cls = tf.reduce_mean(
                classification_losses(logits, batch["class_labels"], self.loss))
            loss_wd = losses.weight_decay_loss(variables, weight=self.weight_decay)
            total = loss_cls + loss_wd
            scaled = total / num_replicas
            if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
                scaled = optimizer.scale_loss(scaled)
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        named = {"loss_cls": loss_cls, "loss_wd": loss_wd, "loss_total": total}
        stats = classification_counts(logits, batch["class_labels"], self.loss)
        images = {"images": batch["image"][:1]} if with_images else {}
        return StepOutput(named, stats, images)

    def write_scalar_summaries(self, stats):
        if stats.get("positives", 0) > 0:
            tf.summary.scalar("accuracy/train", stats["hits"] / stats["positives"])

    def run_summary(self, stats):
        if stats.get("positives", 0) > 0:
            return {"train_accuracy": float(stats["hits"] / stats["positives"])}
        return {}

    def write_image_summaries(self, images):
        for key, value in images.items():
            tf.summary.image(key, tf.cast(tf.clip_by_value(value, 0, 255), tf.uint8))


def evaluate_classifier(model, pattern, num_classes, loss, batch_size=64, split=None):
    """Accuracy of an `ImageClassifier` on a record set, at the images' own size.

    Args:
      model: the classifier.
      pattern: TFRecord pattern.
      num_classes: ids including the unused 0.
      loss: `sigmoid` or `softmax` (decides the accuracy, see `classification_counts`).
      batch_size: evaluation batch (images of one size) .
      split: optional split file.

    Returns:
      dict with `accuracy` (see `classification_counts`) and `num_images`.
    """
    dataset = pipeline.eval_dataset(pipeline.DatasetSpec(pattern, split), num_classes,
                                    batch_size=batch_size)

    @tf.function
    def counts(images, labels):
        return classification_counts(model(images, training=False)["logits"], labels, loss)

    hits = positives = 0.0
    num_images = 0
    for batch in dataset:
        result = counts(batch["image"], batch["class_labels"])
        hits += float(result["hits"])
        positives += float(result["positives"])
        num_images += int(batch["image"].shape[0])
    return {"accuracy": hits / max(positives, 1.0), "num_images": num_images}


def tf1_checkpoint_path(logdir):
    """Where `pretrain` writes its TF1-named export: `LOGDIR/tf1/model.ckpt`."""
    import os

    return os.path.join(logdir, "tf1", "model.ckpt")


@gin.configurable(denylist=["logdir"])
def pretrain(logdir, num_classes=gin.REQUIRED, train_pattern=gin.REQUIRED, train_split=None,
             val_pattern=None, loss="sigmoid", num_steps=10000, batch_size=32,
             crop_size=(224, 224), weight_decay=4e-5, strategy=None, log_every=50,
             summary_every=50, image_summary_every=1000, checkpoint_every=1000, max_to_keep=3,
             init_checkpoint=None, seed=None, deterministic=False,
             mixed_precision_policy=None, steps_per_run=None):
    """Pretrains the backbone and image classifier; returns the loop's result.

    Model options are the bindings of `build_image_classifier` (use the same backbone, width
    and middle-flow units as the segmentation model that will start from it); the stream's
    augmentation those of `classification_dataset`; the optimizer those of `make_optimizer`.

    Args:
      logdir: checkpoints, TensorBoard events and the gin config.
      num_classes: ids including the unused 0 (the classifier has `num_classes - 1` logits).
      train_pattern: TFRecord pattern of the training images.
      train_split: optional split file of their ids.
      val_pattern: optional TFRecord pattern evaluated after training (accuracy in the result).
      loss: `sigmoid` (multi-label) or `softmax` (single-label, ImageNet style).
      num_steps: optimizer steps.
      batch_size: images per replica.
      crop_size: training crop (height, width).
      weight_decay: L2 factor.
      strategy: a `tf.distribute.Strategy` (default `make_strategy()`).
      log_every: steps between progress lines.
      summary_every: steps between scalar summaries.
      image_summary_every: steps between image summaries (0 disables them).
      checkpoint_every: steps between checkpoints.
      max_to_keep: checkpoints kept.
      init_checkpoint: TF1 checkpoint to start from when `logdir` has none.
      seed: global random seed.
      deterministic: bit-identical reruns (`wss.training.determinism`).
      mixed_precision_policy: Keras dtype policy during the run.
      steps_per_run: stop after this many steps (rerun to continue).

    Returns:
      The loop's result dict; when training finished (on the chief), also `tf1_checkpoint`,
      the TF1-named export (`LOGDIR/tf1/model.ckpt`, see `tf1_checkpoint_path`), and
      `val_accuracy` when `val_pattern` is given.
    """
    config_lib.check_int("pretrain.num_classes", num_classes, minimum=2)
    config_lib.check_int("pretrain.batch_size", batch_size, minimum=1)
    config_lib.check_size("pretrain.crop_size", crop_size, minimum=MIN_CROP_SIZE)
    config_lib.check_number("pretrain.weight_decay", weight_decay, minimum=0)
    task = PretrainingTask(num_classes, batch_size, crop_size, train_pattern, train_split, loss,
                           weight_decay)
    options = loop.LoopOptions(
        num_steps=num_steps, log_every=log_every, summary_every=summary_every,
        image_summary_every=image_summary_every, checkpoint_every=checkpoint_every,
        max_to_keep=max_to_keep, init_checkpoint=init_checkpoint, seed=seed,
        deterministic=deterministic, mixed_precision_policy=mixed_precision_policy,
        steps_per_run=steps_per_run, strategy=strategy, scope="pretrain")
    loop.check_options(options, "pretrain")
    result = loop.run(task, logdir, options)
    if not result["finished"] or not result["chief"]:
        return result
    from wss.models import save_tf1_checkpoint

    result["tf1_checkpoint"] = save_tf1_checkpoint(task.model, tf1_checkpoint_path(logdir))
    print(f"Wrote the backbone and classifier under DeepLab's TF1 names to "
          f"{result['tf1_checkpoint']}", flush=True)
    if val_pattern:
        evaluation = evaluate_classifier(task.model, val_pattern, num_classes, loss)
        result["val_accuracy"] = evaluation["accuracy"]
        print(f"Validation accuracy ({'R-precision' if loss == 'sigmoid' else 'top-1'}): "
              f"{evaluation['accuracy'] * 100:.2f}% on {evaluation['num_images']} images",
              flush=True)
    return result
